//! Test fixture: a ledger of bank accounts (per account: the sum of
//! deposits minus withdrawals, and how many there were) that fails on any
//! event whose payload has `"poison": true`: it traps when the payload also
//! has `"trap": true`, writes a document with an empty id (which the host
//! refuses, with the whole batch) when it has `"bad_id": true`, and returns
//! an error otherwise. Built with the
//! `fixed` feature (crate `poison-fixed`) it handles those events like any other.
//! An optional `note` in the payload is kept as the entry's `last_note`, so a
//! test can make a document larger than a `max_document_kib` limit.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Ledger;

#[derive(Default, Serialize, Deserialize)]
struct Entry {
    net: i64,
    movements: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_note: Option<String>,
}

#[derive(Deserialize)]
struct Movement {
    amount: i64,
    #[serde(default)]
    poison: bool,
    #[serde(default)]
    trap: bool,
    #[serde(default)]
    bad_id: bool,
    #[serde(default)]
    note: Option<String>,
}

impl Projection for Ledger {
    fn manifest() -> Manifest {
        Manifest::new("ledger", "1.0.0")
            .event_types(["MoneyDeposited", "MoneyWithdrawn"])
            .collection("entries", ["net"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let m: Movement = event.payload()?;
        if m.poison && !cfg!(feature = "fixed") {
            if m.trap {
                panic!("poison event at position {}", event.position);
            }
            if m.bad_id {
                // The SDK passes the id on; the host refuses the batch's changes.
                return ctx.update("entries", "", |e: &mut Entry| e.movements += 1);
            }
            return Err(Error::msg("poison event"));
        }
        let delta = if event.event_type == "MoneyWithdrawn" { -m.amount } else { m.amount };
        ctx.update("entries", &event.stream_id, |e: &mut Entry| {
            e.net += delta;
            e.movements += 1;
            if m.note.is_some() {
                e.last_note = m.note;
            }
        })
    }
}

refract_sdk::export!(Ledger);
