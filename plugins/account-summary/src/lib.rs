//! Projects bank-account streams into one `accounts` document per account.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

const ACCOUNTS: &str = "accounts";

/// The projection; all of its state lives in the read model.
#[derive(Default)]
struct AccountSummary;

/// An `accounts` document; its id is the account's stream id.
#[derive(Default, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    /// Deposits and withdrawals; the initial deposit is not counted.
    transactions: u64,
    status: Status,
    /// Timestamp (ms) of `AccountOpened`.
    opened_at: u64,
    /// Timestamp (ms) of the stream's latest event.
    last_activity: u64,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    #[default]
    Open,
    Closed,
}

#[derive(Deserialize)]
struct AccountOpened {
    owner: String,
    #[serde(default)]
    initial_deposit: i64,
}

/// Payload of `MoneyDeposited` and `MoneyWithdrawn`.
#[derive(Deserialize)]
struct Amount {
    amount: i64,
}

/// What an event does to its account, decoded from the payload.
enum Change {
    Opened(AccountOpened),
    Deposited(i64),
    Withdrawn(i64),
    Closed,
}

impl Projection for AccountSummary {
    fn manifest() -> Manifest {
        Manifest::new("account-summary", "1.0.0")
            .event_types(["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"])
            .stream_prefix("account-")
            .collection(ACCOUNTS, ["balance", "owner", "status", "transactions"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        // Decode before touching the document so a bad payload changes nothing.
        let change = match event.event_type.as_str() {
            "AccountOpened" => Change::Opened(event.payload()?),
            "MoneyDeposited" => Change::Deposited(event.payload::<Amount>()?.amount),
            "MoneyWithdrawn" => Change::Withdrawn(event.payload::<Amount>()?.amount),
            // The payload (`{}` or a `reason`) carries nothing the document keeps.
            "AccountClosed" => Change::Closed,
            // The host only delivers the manifest's types; ignore others
            // rather than fail should the manifest and this match drift apart.
            _ => return Ok(()),
        };
        ctx.update(ACCOUNTS, &event.stream_id, |account: &mut Account| {
            match change {
                Change::Opened(opened) => {
                    account.owner = opened.owner;
                    // Opening money is not a transaction.
                    account.balance += opened.initial_deposit;
                    account.opened_at = event.timestamp;
                }
                // Balances may go negative: the projection records, the
                // write side validates.
                Change::Deposited(amount) => {
                    account.balance += amount;
                    account.transactions += 1;
                }
                Change::Withdrawn(amount) => {
                    account.balance -= amount;
                    account.transactions += 1;
                }
                Change::Closed => account.status = Status::Closed,
            }
            account.last_activity = event.timestamp;
        })
    }
}

refract_sdk::export!(AccountSummary);
