//! Module compiles: which plugin files the host is compiling right now (so
//! status can say `compiling` instead of nothing while a large Python or JS
//! component compiles for seconds), and how long finished compiles took
//! (the compile-time histogram of `/metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A module being compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiling {
    /// The plugin file's name.
    pub source: String,
    /// The projection the file provided or provides, when the host knows it
    /// before the compile (a reload, a restart); a new file's manifest is
    /// only read once it has compiled.
    pub projection: Option<String>,
    /// When the compile started, ms since the Unix epoch.
    pub started_at: u64,
}

/// One finished compile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompileTime {
    /// How long it took.
    pub duration: Duration,
    /// Whether the compiled code came from the module cache.
    pub cached: bool,
}

#[derive(Default)]
struct Inner {
    next: u64,
    now: BTreeMap<u64, Compiling>,
    done: Vec<CompileTime>,
}

/// The host's compiles, shared with the API. Cheap to clone.
#[derive(Clone, Default)]
pub struct Compiles {
    inner: Arc<Mutex<Inner>>,
}

/// Marks a compile as under way until it is dropped.
pub struct CompileGuard {
    compiles: Compiles,
    id: u64,
}

impl Compiles {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `source` starts compiling; it is listed until the guard drops.
    pub fn start(&self, source: String, projection: Option<String>) -> CompileGuard {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.now.insert(id, Compiling { source, projection, started_at: crate::clock::now_ms().max(0) as u64 });
        CompileGuard { compiles: self.clone(), id }
    }

    /// The modules being compiled now, oldest first.
    pub fn now(&self) -> Vec<Compiling> {
        self.lock().now.values().cloned().collect()
    }

    /// Every finished compile since the host started.
    pub fn times(&self) -> Vec<CompileTime> {
        self.lock().done.clone()
    }
}

impl CompileGuard {
    /// Ends the compile and records its duration (of the compile alone:
    /// a module loaded from the cache is `cached`).
    pub fn finish(self, duration: Duration, cached: bool) {
        self.compiles.lock().done.push(CompileTime { duration, cached });
    }
}

impl Drop for CompileGuard {
    fn drop(&mut self) {
        self.compiles.lock().now.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_is_listed_until_its_guard_drops_and_only_finished_ones_are_timed() {
        let c = Compiles::default();
        let a = c.start("a.wasm".into(), None);
        let b = c.start("b.wasm".into(), Some("bee".into()));
        let now: Vec<_> = c.now().into_iter().map(|x| (x.source, x.projection)).collect();
        assert_eq!(now, [("a.wasm".to_owned(), None), ("b.wasm".to_owned(), Some("bee".to_owned()))]);
        a.finish(Duration::from_millis(1500), false);
        drop(b); // A failed compile: no time recorded.
        assert!(c.now().is_empty());
        assert_eq!(c.times(), [CompileTime { duration: Duration::from_millis(1500), cached: false }]);
    }
}
