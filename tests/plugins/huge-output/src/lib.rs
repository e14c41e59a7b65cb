//! Test fixture: returns 5,000 documents per event, far more than a test's
//! `max_changes` allows (`output too large`).

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct HugeOutput;

impl Projection for HugeOutput {
    fn manifest() -> Manifest {
        Manifest::new("huge-output", "1.0.0").collection("docs", ["n"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        for n in 0..5_000 {
            ctx.upsert("docs", &format!("{}-{n}", event.position), &serde_json::json!({ "n": n }))?;
        }
        Ok(())
    }
}

refract_sdk::export!(HugeOutput);
