//! Fixture: a changed `account-summary` (version 2.0.0) whose documents
//! differ from version 1, so a test can tell which generation answered.
//! Documents: `{"owner", "balance", "transactions", "status", "tier"}`
//! where `tier` is `gold` (balance >= 5000), `silver` (>= 1000) or `bronze`.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct AccountSummaryV2;

#[derive(Default, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    transactions: u64,
    status: String,
    tier: String,
}

#[derive(Deserialize)]
struct Opened {
    owner: String,
    #[serde(default)]
    initial_deposit: i64,
}

#[derive(Deserialize)]
struct Amount {
    amount: i64,
}

impl Projection for AccountSummaryV2 {
    fn manifest() -> Manifest {
        Manifest::new("account-summary", "2.0.0")
            .event_types(["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"])
            .stream_prefix("account-")
            .collection("accounts", ["balance", "owner", "status", "tier"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let (opened, delta) = match event.event_type.as_str() {
            "AccountOpened" => (Some(event.payload::<Opened>()?), 0),
            "MoneyDeposited" => (None, event.payload::<Amount>()?.amount),
            "MoneyWithdrawn" => (None, -event.payload::<Amount>()?.amount),
            _ => (None, 0),
        };
        let closed = event.event_type == "AccountClosed";
        ctx.update("accounts", &event.stream_id, |a: &mut Account| {
            if let Some(o) = opened {
                a.owner = o.owner;
                a.balance += o.initial_deposit;
                a.status = "open".into();
            } else if closed {
                a.status = "closed".into();
            } else {
                a.balance += delta;
                a.transactions += 1;
            }
            a.tier = tier(a.balance).into();
        })
    }
}

fn tier(balance: i64) -> &'static str {
    match balance {
        5000.. => "gold",
        1000.. => "silver",
        _ => "bronze",
    }
}

refract_sdk::export!(AccountSummaryV2);
