//! The one place that generates host bindings for the WIT world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "projector",
    // Host imports return `wasmtime::Result<T>`: an `Err` traps the guest
    // (a host fault), while WIT-level errors inside `T` go back to the plugin.
    imports: { default: trappable },
});

pub use self::exports::refract::projection::projection::{Change, Event, Manifest};
pub use self::refract::projection::types::{GetError, LogLevel};
