//! Test fixture: never returns from `handle`; the host must interrupt it at
//! the batch deadline (`timeout`).

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct LoopForever;

impl Projection for LoopForever {
    fn manifest() -> Manifest {
        Manifest::new("loop-forever", "1.0.0").collection("docs", ["n"])
    }

    fn handle(&mut self, _event: &Event, _ctx: &mut Context) -> Result<(), Error> {
        let mut n: u64 = 0;
        loop {
            // black_box keeps the loop from being optimized away.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

refract_sdk::export!(LoopForever);
