//! Test fixture: recurses without bound in `handle` (`trap`: call stack exhausted).

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct StackOverflow;

/// Recurses through a function pointer the optimizer cannot see through,
/// with work after the call, so it is neither inlined nor turned into a
/// loop. Frames stay small in linear memory (Rust's shadow stack) and use
/// the wasm call stack, which the host bounds: a trap, not a corrupted heap.
#[inline(never)]
fn dive(depth: u64) -> u64 {
    let next: fn(u64) -> u64 = std::hint::black_box(dive);
    next(depth + 1).wrapping_mul(3).wrapping_add(depth)
}

impl Projection for StackOverflow {
    fn manifest() -> Manifest {
        Manifest::new("stack-overflow", "1.0.0").collection("docs", ["n"])
    }

    fn handle(&mut self, _event: &Event, _ctx: &mut Context) -> Result<(), Error> {
        std::hint::black_box(dive(0));
        Ok(())
    }
}

refract_sdk::export!(StackOverflow);
