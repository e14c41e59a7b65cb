//! Fixture: an `account-summary` replacement that loads fine but traps on
//! its first event, to show a broken rebuild leaves the old generation serving.

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct Broken;

impl Projection for Broken {
    fn manifest() -> Manifest {
        Manifest::new("account-summary", "3.0.0-broken")
            .event_types(["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"])
            .stream_prefix("account-")
            .collection("accounts", ["balance"])
    }

    fn handle(&mut self, event: &Event, _ctx: &mut Context) -> Result<(), Error> {
        panic!("deliberate bug at position {}", event.position)
    }
}

refract_sdk::export!(Broken);
