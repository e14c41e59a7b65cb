//! The host: opens the stores, loads the plugins folder, runs one runner per projection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::plugin::{Plugin, PluginError, PluginRuntime};
use crate::runner::{CommitNotice, Progress, Runner, SyncConfig};
use crate::source::{EventStore, SourceError, SqliteEventStore};
use crate::store::{ProjectionRecord, ProjectionState, ReadModelStore, SqliteReadModelStore, StoreError};

/// Commit notices buffered per subscriber before it is told it lagged.
const NOTICE_BUFFER: usize = 4096;

/// Errors starting the host or a projection.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The event store failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The read-model store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Two plugins declare the same projection name.
    #[error("{path}: projection `{name}` is already loaded from {other}")]
    DuplicateProjection {
        /// Projection name.
        name: String,
        /// The rejected plugin.
        path: PathBuf,
        /// The plugin that has the name.
        other: PathBuf,
    },
    /// The plugins folder could not be listed.
    #[error("cannot list plugins folder {path}: {source}")]
    PluginsDir {
        /// Folder.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The wasmtime engine could not be set up.
    #[error("cannot start the WebAssembly runtime: {0}")]
    Runtime(String),
}

/// The files of an embedded (SQLite) data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// The event store file.
    pub fn events(&self) -> PathBuf {
        self.0.join("events.db")
    }

    /// The read-model store file.
    pub fn models(&self) -> PathBuf {
        self.0.join("models.db")
    }

    /// Opens the embedded event store.
    pub async fn open_events(&self) -> Result<Arc<SqliteEventStore>, SourceError> {
        Ok(Arc::new(SqliteEventStore::open(&self.events()).await?))
    }

    /// Opens the embedded read-model store.
    pub async fn open_models(&self) -> Result<Arc<SqliteReadModelStore>, StoreError> {
        Ok(Arc::new(SqliteReadModelStore::open(&self.models()).await?))
    }
}

/// One running projection as the host tracks it.
struct Running {
    path: PathBuf,
    progress: watch::Receiver<Progress>,
    /// `None` for a projection left faulted from an earlier run: it is not
    /// started until `refract retry` (or a new module) clears the fault.
    task: Option<JoinHandle<()>>,
}

/// Status of a projection: the registry record plus the event head.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Projection name.
    pub name: String,
    /// The projection's version string.
    pub version: String,
    /// Active generation.
    pub generation: u32,
    /// Module hash (SHA-256, hex).
    pub module_hash: String,
    /// Position of the last projected event.
    pub checkpoint: u64,
    /// Newest event position in the store.
    pub head: u64,
    /// `head - checkpoint`.
    pub lag: u64,
    /// Lifecycle state.
    pub state: ProjectionState,
    /// Why it faulted, if it did.
    pub last_error: Option<String>,
}

impl ProjectionStatus {
    /// Combines a registry record with the current head.
    pub fn new(record: ProjectionRecord, head: u64) -> Self {
        Self {
            name: record.key.projection,
            version: record.manifest.version,
            generation: record.key.generation,
            module_hash: record.module_hash,
            checkpoint: record.checkpoint,
            head,
            lag: head.saturating_sub(record.checkpoint),
            state: record.state,
            last_error: record.last_error,
        }
    }
}

/// Status of every registered projection, read from the stores (works
/// whether or not a host is running on them).
pub async fn status(events: &dyn EventStore, models: &dyn ReadModelStore) -> Result<Vec<ProjectionStatus>, HostError> {
    let head = events.head().await?;
    Ok(models.projections().await?.into_iter().map(|r| ProjectionStatus::new(r, head)).collect())
}

/// A running refract host.
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::HostError> {
/// use refract::{DataDir, Host, SyncConfig};
/// let data = DataDir("data".into());
/// let mut host = Host::new(data.open_events().await?, data.open_models().await?, SyncConfig::default())?;
/// for failure in host.load_plugins("plugins".as_ref()).await? {
///     eprintln!("{failure}");
/// }
/// host.wait_until_caught_up().await?;
/// host.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Host {
    runtime: PluginRuntime,
    events: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    sync: SyncConfig,
    config: Config,
    running: BTreeMap<String, Running>,
    stop: watch::Sender<bool>,
    notices: broadcast::Sender<CommitNotice>,
}

impl Host {
    /// A host over the given stores, with no projection yet, and the
    /// default limits and failure policy for every projection.
    pub fn new(
        events: Arc<dyn EventStore>,
        models: Arc<dyn ReadModelStore>,
        sync: SyncConfig,
    ) -> Result<Self, HostError> {
        Self::with_config(events, models, sync, Config::default())
    }

    /// Like [`new`](Self::new), with limits and failure policies from `config`.
    pub fn with_config(
        events: Arc<dyn EventStore>,
        models: Arc<dyn ReadModelStore>,
        sync: SyncConfig,
        config: Config,
    ) -> Result<Self, HostError> {
        let runtime = PluginRuntime::with_fuel(config.uses_fuel()).map_err(|e| HostError::Runtime(format!("{e:#}")))?;
        let notices = broadcast::channel(NOTICE_BUFFER).0;
        Ok(Self {
            runtime,
            events,
            models,
            sync,
            config,
            running: BTreeMap::new(),
            stop: watch::channel(false).0,
            notices,
        })
    }

    /// The event store the host reads (and the API appends to).
    pub fn events(&self) -> Arc<dyn EventStore> {
        self.events.clone()
    }

    /// The read-model store the host writes.
    pub fn models(&self) -> Arc<dyn ReadModelStore> {
        self.models.clone()
    }

    /// A feed of every committed batch of every projection. A receiver that
    /// falls more than a few thousand notices behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<CommitNotice> {
        self.notices.subscribe()
    }

    /// The plugin runtime, to load plugins by hand.
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// Loads and starts every `*.wasm` in `dir`, in name order. A plugin that
    /// fails to load is skipped and its error returned; the others start.
    pub async fn load_plugins(&mut self, dir: &Path) -> Result<Vec<HostError>, HostError> {
        let entries =
            std::fs::read_dir(dir).map_err(|source| HostError::PluginsDir { path: dir.to_owned(), source })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        paths.sort();
        let mut failures = Vec::new();
        for path in paths {
            let runtime = self.runtime.clone();
            let loaded =
                tokio::task::spawn_blocking(move || runtime.load(&path)).await.expect("plugin loading does not panic");
            let result = match loaded {
                Ok(plugin) => self.start(plugin).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = result {
                tracing::error!("plugin rejected: {e}");
                failures.push(e);
            }
        }
        Ok(failures)
    }

    /// Registers the plugin's projection and starts its runner.
    pub async fn start(&mut self, plugin: Plugin) -> Result<(), HostError> {
        let name = plugin.manifest().name.clone();
        if let Some(other) = self.running.get(&name) {
            return Err(HostError::DuplicateProjection {
                name,
                path: plugin.path().to_owned(),
                other: other.path.clone(),
            });
        }
        let record = self.models.register(plugin.manifest(), plugin.hash()).await?;
        tracing::info!(
            projection = %name,
            version = %record.manifest.version,
            generation = record.key.generation,
            path = %plugin.path().display(),
            "plugin loaded"
        );
        let path = plugin.path().to_owned();
        if record.state == ProjectionState::Faulted {
            tracing::warn!(
                projection = %name,
                checkpoint = record.checkpoint,
                error = record.last_error.as_deref().unwrap_or(""),
                "projection is faulted from an earlier run and stays stopped; `refract retry {name}` resumes it"
            );
            let progress = watch::channel(Progress {
                checkpoint: record.checkpoint,
                state: ProjectionState::Faulted,
                last_error: record.last_error,
            })
            .1;
            self.running.insert(name, Running { path, progress, task: None });
            return Ok(());
        }
        let (progress_tx, progress) = watch::channel(Progress {
            checkpoint: record.checkpoint,
            state: ProjectionState::Running,
            last_error: None,
        });
        let config = self.config.for_projection(&name);
        let runner = Runner {
            plugin: Arc::new(plugin),
            key: record.key,
            checkpoint: record.checkpoint,
            source: self.events.clone(),
            store: self.models.clone(),
            sync: self.sync.clone(),
            config,
            progress: progress_tx,
            notices: self.notices.clone(),
            stop: self.stop.subscribe(),
        };
        let task = tokio::spawn(runner.run());
        self.running.insert(name, Running { path, progress, task: Some(task) });
        Ok(())
    }

    /// Names of the projections this host runs.
    pub fn projections(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Latest progress of a running projection.
    pub fn progress(&self, name: &str) -> Option<Progress> {
        self.running.get(name).map(|r| r.progress.borrow().clone())
    }

    /// Waits until every running projection has reached the head as it is
    /// when the wait starts, or has faulted.
    pub async fn wait_until_caught_up(&self) -> Result<(), HostError> {
        let head = self.events.head().await?;
        for r in self.running.values() {
            let mut rx = r.progress.clone();
            // An error means the runner ended; its last report says why.
            let _ = rx.wait_for(|p| p.checkpoint >= head || p.state != ProjectionState::Running).await;
        }
        Ok(())
    }

    /// Stops every runner after its current batch and waits for them.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for (name, task) in self.running.into_iter().filter_map(|(name, r)| Some((name, r.task?))) {
            if tokio::time::timeout(Duration::from_secs(30), task).await.is_err() {
                tracing::warn!(projection = %name, "runner did not stop within 30 s");
            }
        }
    }
}
