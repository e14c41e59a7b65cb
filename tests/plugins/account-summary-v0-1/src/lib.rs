//! Test fixture: the bank account summary as a component of the frozen
//! `refract:projection@0.1.0` world, as plugins were built before 0.2.0.
//! The SDK targets the current world, so this fixture implements the old
//! one with wit-bindgen directly, and uses both of its host imports.

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "projector",
});

use exports::refract::projection::projection::{Change, Event, Guest, Manifest, ProjectionError};
use refract::projection::host;
use refract::projection::types::{CollectionSpec, Document, LogLevel};
use serde_json::{Value, json};

const ACCOUNTS: &str = "accounts";

struct AccountSummaryV01;

impl Guest for AccountSummaryV01 {
    fn describe() -> Manifest {
        Manifest {
            name: "account-summary-v0-1".into(),
            version: "1.0.0".into(),
            event_types: ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"].map(Into::into).into(),
            stream_prefixes: vec!["account-".into()],
            collections: vec![CollectionSpec {
                name: ACCOUNTS.into(),
                indexes: ["balance", "owner", "status", "transactions"].map(Into::into).into(),
            }],
        }
    }

    fn handle(batch: Vec<Event>) -> Result<Vec<Change>, ProjectionError> {
        // The host's `get` sees only what was committed before the batch:
        // the batch's own writes are read back from here.
        let mut written: Vec<(String, Value)> = Vec::new();
        for e in &batch {
            let fail = |message: String| ProjectionError { position: e.position, message };
            let payload: Value = serde_json::from_str(&e.payload).map_err(|err| fail(err.to_string()))?;
            let slot = match written.iter().position(|(id, _)| *id == e.stream_id) {
                Some(i) => i,
                None => {
                    let stored = host::get(ACCOUNTS, &e.stream_id).map_err(|err| fail(format!("get: {err:?}")))?;
                    let account = match stored {
                        Some(body) => serde_json::from_str(&body).map_err(|err| fail(err.to_string()))?,
                        None => json!({"owner": "", "balance": 0, "transactions": 0, "status": "open"}),
                    };
                    written.push((e.stream_id.clone(), account));
                    written.len() - 1
                }
            };
            let account = &mut written[slot].1;
            let amount = payload["amount"].as_i64().unwrap_or(0);
            match e.event_type.as_str() {
                "AccountOpened" => {
                    account["owner"] = payload["owner"].clone();
                    account["balance"] = json!(
                        account["balance"].as_i64().unwrap_or(0) + payload["initial_deposit"].as_i64().unwrap_or(0)
                    );
                }
                "MoneyDeposited" | "MoneyWithdrawn" => {
                    let signed = if e.event_type == "MoneyDeposited" { amount } else { -amount };
                    account["balance"] = json!(account["balance"].as_i64().unwrap_or(0) + signed);
                    account["transactions"] = json!(account["transactions"].as_u64().unwrap_or(0) + 1);
                }
                "AccountClosed" => account["status"] = json!("closed"),
                _ => {}
            }
        }
        host::log(LogLevel::Debug, &format!("projected {} events", batch.len()));
        Ok(written
            .into_iter()
            .map(|(id, account)| {
                Change::Upsert(Document { collection: ACCOUNTS.into(), id, body: account.to_string() })
            })
            .collect())
    }
}

export!(AccountSummaryV01);
