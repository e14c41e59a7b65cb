//! Tiered compilation: which compiler a plugin's first batches run on, and
//! the swap to optimized code.
//!
//! Cranelift compiles an 18 MB Python or 12 MB JavaScript component for
//! seconds to tens of seconds; Winch, wasmtime's baseline compiler, does it
//! an order of magnitude faster into slower code. A large module that is not
//! in the module cache is compiled with Winch and projects at once, while
//! Cranelift compiles it on a background thread; the runner starts a fresh
//! instance of the optimized code between two batches (`Plugin::outdated`),
//! and the optimized code goes into the module cache for the next start.
//! Both tiers run the same module under the same limits, so the read model
//! does not depend on where the switch falls: a projection's state lives in
//! its documents, never in an instance's memory between batches (the
//! runner already replaces an instance whenever a commit fails).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wasmtime::component::Component;

use crate::runtime::module_cache::ModuleCache;
use crate::runtime::plugin::{Compiler, panic_message};
use crate::runtime::world::{ProjectorPre, WitVersion};

/// Modules at least this large run baseline code first under [`Tiering::Auto`]:
/// below it, Cranelift takes well under a second (a Rust plugin, 0.2 MB,
/// takes about 0.1 s), and a second compile would only cost CPU.
pub const AUTO_BASELINE_BYTES: usize = 1 << 20;

/// When a plugin that is not in the module cache starts on baseline code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tiering {
    /// Always compile with Cranelift before the first batch.
    Off,
    /// Baseline code first for modules of [`AUTO_BASELINE_BYTES`] or more,
    /// optimized code in the background.
    #[default]
    Auto,
    /// Baseline code first for every module, optimized code in the background.
    Always,
    /// Baseline code only: no optimizing compile at all, which saves a dev
    /// machine's CPU when projecting speed does not matter.
    BaselineOnly,
}

impl Tiering {
    /// Every setting, as spelt on the command line.
    pub const ALL: [Tiering; 4] = [Tiering::Off, Tiering::Auto, Tiering::Always, Tiering::BaselineOnly];

    /// Whether a module of `len` bytes starts on baseline code.
    pub(crate) fn baseline_first(self, len: usize) -> bool {
        match self {
            Tiering::Off => false,
            Tiering::Auto => len >= AUTO_BASELINE_BYTES,
            Tiering::Always | Tiering::BaselineOnly => true,
        }
    }

    /// Whether baseline code is followed by an optimizing compile.
    pub(crate) fn optimizes(self) -> bool {
        self != Tiering::BaselineOnly
    }

    fn as_str(self) -> &'static str {
        match self {
            Tiering::Off => "off",
            Tiering::Auto => "auto",
            Tiering::Always => "always",
            Tiering::BaselineOnly => "baseline-only",
        }
    }
}

impl fmt::Display for Tiering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tiering {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown tiering `{s}`: expected one of {}", all.join(", "))
        })
    }
}

/// Which compiler produced the code an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeTier {
    /// Winch: compiled fast, runs slower.
    Baseline,
    /// Cranelift: compiled slowly, runs fast.
    Optimized,
}

/// A plugin's linked code: what it started on and, once the background
/// compile is done, its optimized code.
pub(crate) struct Code {
    first: ProjectorPre,
    first_tier: CodeTier,
    optimized: OnceLock<ProjectorPre>,
}

impl Code {
    pub(crate) fn new(first: ProjectorPre, first_tier: CodeTier) -> Arc<Self> {
        Arc::new(Self { first, first_tier, optimized: OnceLock::new() })
    }

    /// The best code there is now, and its tier.
    pub(crate) fn best(&self) -> (&ProjectorPre, CodeTier) {
        match self.optimized.get() {
            Some(pre) => (pre, CodeTier::Optimized),
            None => (&self.first, self.first_tier),
        }
    }

    /// The code the plugin was loaded with (describe ran on it).
    pub(crate) fn first(&self) -> &ProjectorPre {
        &self.first
    }
}

/// What the background compile needs: the module and where its result goes.
pub(crate) struct Optimize {
    pub path: PathBuf,
    pub hash: String,
    pub bytes: Vec<u8>,
    pub version: WitVersion,
    pub compiler: Compiler,
    pub cache: Option<ModuleCache>,
}

/// One optimizing compile at a time, and in a dev loop a module that was
/// replaced while waiting is skipped altogether.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Optimize {
    /// Compiles with Cranelift on a background thread and hands the result
    /// to `code`, unless the plugin was dropped first. A failure leaves the
    /// plugin on its baseline code, logged.
    pub(crate) fn spawn(self, code: Weak<Code>) {
        let spawned = std::thread::Builder::new().name("refract-optimize".into()).spawn(move || {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            if code.strong_count() == 0 {
                return;
            }
            lower_priority();
            let started = Instant::now();
            let path = self.path.display().to_string();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.compile())) {
                Ok(Ok(pre)) => {
                    tracing::info!(path, seconds = started.elapsed().as_secs_f64(), "optimized code ready");
                    if let Some(code) = code.upgrade() {
                        // Set once: this is the only writer.
                        let _ = code.optimized.set(pre);
                    }
                }
                Ok(Err(e)) => tracing::warn!(path, error = %e, "optimizing compile failed: staying on baseline code"),
                Err(panic) => tracing::warn!(
                    path,
                    error = panic_message(panic.as_ref()),
                    "optimizing compile panicked: staying on baseline code"
                ),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the optimizing compile: staying on baseline code");
        }
    }

    fn compile(&self) -> wasmtime::Result<ProjectorPre> {
        let engine = &self.compiler.engine;
        // Another load of the same code (a dev loop's next save of a project
        // run by an interpreter) may have compiled it meanwhile.
        let component = match self.cache.as_ref().and_then(|cache| cache.compiled(engine, &self.hash)) {
            Some(component) => component,
            None => {
                let component = Component::new(engine, &self.bytes)?;
                if let Some(cache) = &self.cache {
                    cache.store_compiled(engine, &self.hash, &component);
                }
                component
            }
        };
        ProjectorPre::new(self.version, self.compiler.linker.instantiate_pre(&component)?)
    }
}

/// Lowers this thread's scheduling priority (nice 10): the compile then
/// takes what the projections, the API and a dev loop's builds leave of the
/// CPU, not its share of it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on this thread's own id; failure only leaves
    // the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_auto_tiers_only_large_modules() {
        for t in Tiering::ALL {
            assert_eq!(t.to_string().parse::<Tiering>(), Ok(t));
        }
        assert_eq!(
            "fast".parse::<Tiering>(),
            Err("unknown tiering `fast`: expected one of off, auto, always, baseline-only".to_owned())
        );
        assert!(!Tiering::Auto.baseline_first(AUTO_BASELINE_BYTES - 1));
        assert!(Tiering::Auto.baseline_first(AUTO_BASELINE_BYTES));
        assert!(Tiering::Always.baseline_first(0) && Tiering::Always.optimizes());
        assert!(Tiering::BaselineOnly.baseline_first(0) && !Tiering::BaselineOnly.optimizes());
        assert!(!Tiering::Off.baseline_first(usize::MAX));
    }
}
