//! The wasmtime `Engine` every plugin is compiled and run with.

use wasmtime::{Config, Engine, OptLevel};

/// Builds the engine: component model on, Cranelift optimizing for speed.
pub(crate) fn new_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.cranelift_opt_level(OptLevel::Speed);
    Engine::new(&config)
}
