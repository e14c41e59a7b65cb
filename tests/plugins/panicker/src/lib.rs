//! Test fixture: panics in `handle` (`trap`).

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct Panicker;

impl Projection for Panicker {
    fn manifest() -> Manifest {
        Manifest::new("panicker", "1.0.0").collection("docs", ["n"])
    }

    fn handle(&mut self, event: &Event, _ctx: &mut Context) -> Result<(), Error> {
        panic!("panicker refuses event {}", event.position)
    }
}

refract_sdk::export!(Panicker);
