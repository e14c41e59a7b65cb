// Projects bank-account streams into one `accounts` document per account.
// The JavaScript port of plugins/account-summary: it writes the same documents.
import { Manifest, exportProjection } from "../sdk/refract.js";

const ACCOUNTS = "accounts";

// Same fields, in the same order, as the Rust `Account`.
const newAccount = () => ({ owner: "", balance: 0, transactions: 0, status: "open", opened_at: 0, last_activity: 0 });

export const projection = exportProjection({
  // Unlike the Rust original, owners are searchable: this port exercises the
  // helper's `search`, and writes the same documents.
  manifest: new Manifest("account-summary-js", "1.0.0", {
    eventTypes: ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"],
    streamPrefixes: ["account-"],
  })
    .collection(ACCOUNTS, ["balance", "owner", "status", "transactions"])
    .search(["owner"]),

  handle(event, ctx) {
    // Decode before touching the document so a bad payload changes nothing.
    let opened, amount;
    switch (event.eventType) {
      case "AccountOpened":
        opened = event.payload();
        break;
      case "MoneyDeposited":
      case "MoneyWithdrawn":
        amount = event.payload().amount;
        break;
      case "AccountClosed":
        break;
      default:
        return; // the host only delivers the manifest's types
    }
    const account = ctx.get(ACCOUNTS, event.streamId) ?? newAccount();
    switch (event.eventType) {
      case "AccountOpened":
        account.owner = opened.owner;
        account.balance += opened.initial_deposit ?? 0; // opening money is not a transaction
        account.opened_at = event.timestamp;
        break;
      case "MoneyDeposited":
        account.balance += amount;
        account.transactions += 1;
        break;
      case "MoneyWithdrawn":
        account.balance -= amount;
        account.transactions += 1;
        break;
      case "AccountClosed":
        account.status = "closed";
        break;
    }
    account.last_activity = event.timestamp;
    ctx.upsert(ACCOUNTS, event.streamId, account);
  },
});
