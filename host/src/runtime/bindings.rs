//! The one place that generates host bindings for the WIT world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "projector",
    // Host imports return `wasmtime::Result<T>`: an `Err` traps the guest
    // (a host fault), while WIT-level errors inside `T` go back to the plugin.
    imports: { default: trappable },
    // Export parameters borrow: a batch's events are lowered into the guest
    // straight from the runner's `Event`s, not from per-call copies.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use self::exports::refract::projection::projection::{Change, Event, Manifest};
pub use self::refract::projection::types::{GetError, LogLevel};
