//! Watching the plugins folder, debounced so that a file is reloaded once
//! its writer is done with it.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long a plugin file must stay untouched before it is (re)loaded. A
/// build that writes the file in several steps produces one reload, and a
/// half-written file is never loaded.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// A settled change to the plugins folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginChange {
    /// A plugin file was created or replaced and has settled.
    Changed(PathBuf),
    /// A plugin file is gone.
    Removed(PathBuf),
}

/// Errors setting up the watch.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    /// The folder.
    pub path: PathBuf,
    /// Underlying error.
    pub source: notify::Error,
}

/// Watches a folder for `*.wasm` changes. Dropping it stops the watch.
pub struct PluginWatcher {
    _watcher: RecommendedWatcher,
    changes: mpsc::Receiver<PluginChange>,
}

impl PluginWatcher {
    /// Starts watching `dir` (not recursively).
    pub fn new(dir: &Path) -> Result<Self, WatchError> {
        let err = |source| WatchError { path: dir.to_owned(), source };
        // Canonical, like `plugin_files`, so both name a file the same way.
        let dir = &dir.canonicalize().map_err(|e| err(notify::Error::io(e)))?;
        let (raw_tx, raw_rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Loading a plugin reads it, which raises access events: only writes count.
            if is_write(&event.kind) {
                for path in event.paths.into_iter().filter(|p| is_plugin_file(p)) {
                    let _ = raw_tx.send(path);
                }
            }
        })
        .map_err(err)?;
        watcher.watch(dir, RecursiveMode::NonRecursive).map_err(err)?;
        let (tx, changes) = mpsc::channel(64);
        // Whatever the file is once it has settled decides the change.
        tokio::spawn(debounce(raw_rx, move |path| {
            let tx = tx.clone();
            async move {
                let change = if path.is_file() { PluginChange::Changed(path) } else { PluginChange::Removed(path) };
                tx.send(change).await.is_ok()
            }
        }));
        Ok(Self { _watcher: watcher, changes })
    }

    /// The next settled change; `None` when the watch ended.
    pub async fn next(&mut self) -> Option<PluginChange> {
        self.changes.recv().await
    }
}

/// Whether an event changes a file (reads and metadata-only changes do not).
pub fn is_write(kind: &notify::EventKind) -> bool {
    use notify::event::{EventKind, ModifyKind};
    matches!(kind, EventKind::Create(_) | EventKind::Remove(_))
        || matches!(kind, EventKind::Modify(m) if !matches!(m, ModifyKind::Metadata(_)))
}

/// Calls `settled` with each path once it has been quiet for `DEBOUNCE`,
/// until `raw` closes or `settled` returns false. Shared by the plugin
/// watcher and `refract dev`'s source watcher.
pub async fn debounce<F, Fut>(mut raw: mpsc::UnboundedReceiver<PathBuf>, mut settled: F)
where
    F: FnMut(PathBuf) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(DEBOUNCE / 4);
    loop {
        tokio::select! {
            path = raw.recv() => match path {
                Some(path) => { pending.insert(path, Instant::now()); }
                None => return,
            },
            _ = tick.tick() => {
                let quiet: Vec<PathBuf> =
                    pending.iter().filter(|(_, t)| t.elapsed() >= DEBOUNCE).map(|(p, _)| p.clone()).collect();
                for path in quiet {
                    pending.remove(&path);
                    if !settled(path).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether a path names a plugin (`*.wasm`, not a hidden or temporary file).
pub(crate) fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "wasm")
        && path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}
