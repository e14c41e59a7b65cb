//! The one place that generates host bindings: one module per version of the
//! `refract:projection` package the host loads. Which version is current,
//! and how a component's version is told, is decided in `runtime::world`.

/// `refract:projection@0.2.0` (`wit/projection.wit`): collections declare
/// search fields.
pub mod v0_2 {
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
}

/// `refract:projection@0.1.0` (`wit/v0.1.0/projection.wit`, frozen): the
/// first contract, still loaded. Generated with the same options as `v0_2`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "projector",
        imports: { default: trappable },
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}
