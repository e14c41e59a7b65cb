//! The wasmtime `Engine` every plugin is compiled and run with, and the
//! clock that enforces call deadlines.

use wasmtime::{Config, Engine, OptLevel, Strategy};

use crate::runtime::limits::EPOCH_TICK;
use crate::runtime::tiering::CodeTier;

/// Builds an engine: component model on, epoch interruption for deadlines,
/// and fuel metering when asked for (it slows every call a little, so it is
/// off unless a projection uses it). `tier` picks the compiler: Cranelift
/// optimizing for speed, or Winch (see `tiering`). Code compiled by one
/// engine runs only in stores of that engine. `parallel` compiles a
/// module's functions on every core; the background compile of tiering
/// uses one, so that it does not slow down what runs meanwhile.
pub(crate) fn new_engine(fuel: bool, tier: CodeTier, parallel: bool) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.parallel_compilation(parallel);
    match tier {
        CodeTier::Optimized => {
            config.strategy(Strategy::Cranelift).cranelift_opt_level(OptLevel::Speed);
        }
        CodeTier::Baseline => {
            config.strategy(Strategy::Winch);
        }
    }
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    // `perf` cannot name JIT-compiled guest code on its own; with this set,
    // wasmtime writes /tmp/perf-<pid>.map so profiles show the plugin's
    // functions (BENCHMARKS.md, "Profiling").
    if std::env::var_os("REFRACT_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine)?;
    Ok(engine)
}

/// Advances the epoch every `EPOCH_TICK` so a store's deadline (in ticks)
/// trips a running guest. The thread holds only a weak reference and ends
/// once the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> wasmtime::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("refract-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map_err(|e| wasmtime::format_err!("cannot start the epoch thread: {e}"))?;
    Ok(())
}
