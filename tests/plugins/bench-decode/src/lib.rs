//! The WASM-boundary benchmark fixture: every event crosses into the guest
//! and its payload is decoded exactly as `account-summary` decodes it, but no
//! document is read or written. What `refract-bench` times with it is the
//! cost of the call, the canonical-ABI copy of the events and the decode.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::Deserialize;

#[derive(Default)]
struct BenchDecode;

#[derive(Deserialize)]
#[allow(dead_code)] // Decoded to pay the same cost as account-summary, then dropped.
struct AccountOpened {
    owner: String,
    #[serde(default)]
    initial_deposit: i64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Amount {
    amount: i64,
}

impl Projection for BenchDecode {
    fn manifest() -> Manifest {
        Manifest::new("bench-decode", "1.0.0")
            .event_types(["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"])
            .stream_prefix("account-")
            .collection("accounts", ["balance"])
    }

    fn handle(&mut self, event: &Event, _ctx: &mut Context) -> Result<(), Error> {
        match event.event_type.as_str() {
            "AccountOpened" => drop(event.payload::<AccountOpened>()?),
            "MoneyDeposited" | "MoneyWithdrawn" => drop(event.payload::<Amount>()?),
            _ => {}
        }
        Ok(())
    }
}

refract_sdk::export!(BenchDecode);
