"""Projects bank-account streams into one `accounts` document per account.

The Python port of plugins/account-summary: it writes the same documents.
"""

import refract

ACCOUNTS = "accounts"


def new_account():
    # Same fields, in the same order, as the Rust `Account`.
    return {"owner": "", "balance": 0, "transactions": 0, "status": "open", "opened_at": 0, "last_activity": 0}


class AccountSummary:
    manifest = refract.Manifest(
        "account-summary-py",
        "1.0.0",
        event_types=["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"],
        stream_prefixes=["account-"],
        collections={ACCOUNTS: ["balance", "owner", "status", "transactions"]},
        # Unlike the Rust original, owners are searchable: this port exercises
        # the helper's `search`, and writes the same documents.
    ).search(["owner"])

    def handle(self, event, ctx):
        kind = event.event_type
        # Decode before touching the document so a bad payload changes nothing.
        if kind == "AccountOpened":
            p = event.payload()
            owner, initial = p["owner"], p.get("initial_deposit", 0)
        elif kind in ("MoneyDeposited", "MoneyWithdrawn"):
            amount = event.payload()["amount"]
        elif kind != "AccountClosed":
            return  # the host only delivers the manifest's types

        account = ctx.get(ACCOUNTS, event.stream_id) or new_account()
        if kind == "AccountOpened":
            account["owner"] = owner
            account["balance"] += initial  # opening money is not a transaction
            account["opened_at"] = event.timestamp
        elif kind == "MoneyDeposited":
            account["balance"] += amount
            account["transactions"] += 1
        elif kind == "MoneyWithdrawn":
            account["balance"] -= amount
            account["transactions"] += 1
        else:
            account["status"] = "closed"
        account["last_activity"] = event.timestamp
        ctx.upsert(ACCOUNTS, event.stream_id, account)


Projection = refract.export(AccountSummary)
