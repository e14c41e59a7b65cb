//! Test fixture: allocates (and touches) memory until something stops it;
//! the host must stop it at its memory limit (`memory limit`).

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct MemoryBomb;

impl Projection for MemoryBomb {
    fn manifest() -> Manifest {
        Manifest::new("memory-bomb", "1.0.0").collection("docs", ["n"])
    }

    fn handle(&mut self, _event: &Event, _ctx: &mut Context) -> Result<(), Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Filled with non-zero bytes so the pages are really committed.
            hoard.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
        }
    }
}

refract_sdk::export!(MemoryBomb);
