//! Test fixture: one document per stream in `counts`, holding how many events
//! of that stream it has seen. Each event takes at least [`PER_EVENT`] of
//! wall-clock time, so a test can watch a projection that is behind the head
//! move forward step by step; a busy loop on the clock, not a count of
//! iterations, keeps that true on a machine of any speed.

use std::time::{Duration, Instant};

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

const COUNTS: &str = "counts";
const PER_EVENT: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Slow;

#[derive(Default, Serialize, Deserialize)]
struct Count {
    events: u64,
}

impl Projection for Slow {
    fn manifest() -> Manifest {
        Manifest::new("slow", "1.0.0").collection(COUNTS, ["events"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let start = Instant::now();
        while start.elapsed() < PER_EVENT {
            std::hint::spin_loop();
        }
        ctx.update(COUNTS, event.stream_id.as_str(), |c: &mut Count| c.events += 1)
    }
}

refract_sdk::export!(Slow);
