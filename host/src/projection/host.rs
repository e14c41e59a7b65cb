//! The host: opens the stores, loads the plugins folder, runs one runner per projection.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::db::DbErrorKind;
use crate::model::manifest::CollectionSpec;
use crate::projection::compiles::Compiles;
use crate::projection::config::Config;
use crate::projection::lease::{Heartbeat, LeaseBook, LeaseSettings};
use crate::projection::modules::{ModuleUnavailable, module_by_hash};
use crate::projection::runner::{CommitNotice, Progress, Runner, StoreErrors, Switches, SyncConfig};
use crate::projection::verify::{Plugins, Verifier, VerifyError, VerifyReport};
use crate::projection::verify_schedule;
use crate::projection::watch::{PluginChange, PluginWatcher, WatchError, is_plugin_file};
use crate::runtime::call_thread::CallThread;
use crate::runtime::module_cache::ModuleCache;
use crate::runtime::plugin::{Plugin, PluginError, PluginRuntime, module_hash};
use crate::runtime::tiering::Tiering;
use crate::source::{EventSource, EventStore, SourceError, SqliteEventStore};
use crate::store::document_cache::DocumentCache;
use crate::store::{
    LeaseRecord, ModelKey, ModelWriter, ProjectionRecord, ProjectionState, ReadModelStore, Role, SqliteReadModelStore,
    StoreError, VerifyOutcome,
};

/// How often a following host looks for generations requested by the CLI.
const REGISTRY_POLL: Duration = Duration::from_secs(1);

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
    /// The plugins folder could not be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// Another live host process holds the data directory.
    #[error("another refract host (pid {pid}) is running on {path}")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// Process id of the other host (0 if it had not written it yet).
        pid: u32,
    },
    /// The data directory's lock file could not be written.
    #[error("cannot write {path}: {source}")]
    LockFile {
        /// Lock file.
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

    /// The lock file: locked (`flock`) by the host running on this data dir
    /// for as long as it runs, and holding its pid. It is never deleted:
    /// removing a file another process has open and locked would let a
    /// third process lock a new file of the same name.
    fn pid_file(&self) -> PathBuf {
        self.0.join("refract.pid")
    }

    /// The process id of a live host running on this data dir, if any.
    pub fn running_host(&self) -> Option<u32> {
        let file = std::fs::File::open(self.pid_file()).ok()?;
        // A shared lock is refused exactly while a host holds the exclusive
        // one; a host killed with SIGKILL held it no longer.
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(std::fs::TryLockError::WouldBlock) => Some(holder_pid(&file)).filter(|&pid| pid != std::process::id()),
            Err(std::fs::TryLockError::Error(_)) => None,
        }
    }

    /// Claims the data dir for this process's host until the lock is
    /// dropped (or the process ends, however it ends). Two processes that
    /// try at the same instant cannot both succeed: the lock is an `flock`
    /// on `<data-dir>/refract.pid`, not a check of the pid in it.
    pub fn lock(&self) -> Result<HostLock, HostError> {
        std::fs::create_dir_all(&self.0).map_err(|source| HostError::LockFile { path: self.0.clone(), source })?;
        let path = self.pid_file();
        let failed = |source| HostError::LockFile { path: path.clone(), source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                // `running_host` holds a shared lock for a moment: only a
                // lock still held after a while is another host's.
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(HostError::Locked { path: self.0.clone(), pid: holder_pid(&file) });
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(failed(source)),
            }
        }
        file.set_len(0).map_err(failed)?;
        (&file).write_all(std::process::id().to_string().as_bytes()).map_err(failed)?;
        Ok(HostLock { file })
    }

    /// The module cache (`<data-dir>/cache`).
    pub fn module_cache(&self) -> ModuleCache {
        ModuleCache::new(self.0.join("cache"))
    }

    /// Opens the embedded read-model store.
    pub async fn open_models(&self) -> Result<Arc<SqliteReadModelStore>, StoreError> {
        Ok(Arc::new(SqliteReadModelStore::open(&self.models()).await?))
    }
}

/// Holds a data dir for this process's host; released on drop, or when the
/// process ends.
#[derive(Debug)]
pub struct HostLock {
    file: std::fs::File,
}

impl Drop for HostLock {
    fn drop(&mut self) {
        // Still locked here, so this empties no other host's pid; the file
        // stays (see `DataDir::pid_file`) and closing it releases the lock.
        let _ = self.file.set_len(0);
    }
}

/// How long [`DataDir::lock`] retries a lock that is held, since
/// [`DataDir::running_host`] holds it shared for a moment.
const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// The pid the holder of `file`'s lock wrote in it, waiting a moment for a
/// holder that has just locked it to write it; 0 if it never does.
fn holder_pid(file: &std::fs::File) -> u32 {
    for _ in 0..20 {
        let mut text = String::new();
        let read = file.try_clone().and_then(|mut f| {
            f.seek(SeekFrom::Start(0))?;
            f.read_to_string(&mut text)
        });
        if let Some(pid) = read.ok().and_then(|_| text.trim().parse().ok()) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    0
}

/// One running generation as the host tracks it.
struct Running {
    progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

/// Status of a projection: the registry record plus the event head.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Projection name.
    pub name: String,
    /// The projection's version string.
    pub version: String,
    /// Generation this row describes.
    pub generation: u32,
    /// Active (serving), building (rebuilding in shadow tables) or failed.
    pub role: Role,
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
    /// The store or source error a running host is retrying for it (a full
    /// disk, an unreachable database), as the host's API reports it; none
    /// when read from the registry alone.
    pub store_error: Option<String>,
    /// Whether the host that runs it is alive, where that can be told (a
    /// SQLite data dir's lock); none where it cannot (PostgreSQL stores).
    pub host: Option<HostLiveness>,
    /// Plugin file it was loaded from.
    pub source: String,
    /// When the generation was created, ms since the Unix epoch.
    pub created_at: u64,
    /// When it was swapped in, ms since the Unix epoch.
    pub activated_at: Option<u64>,
    /// The node that holds (or last held) the generation's lease.
    pub owner: Option<String>,
    /// When that lease expires unless renewed, ms since the Unix epoch (the store's clock).
    pub lease_expires_at_ms: Option<i64>,
    /// Paused by an operator (`refract pause`): no host runs it until it is resumed.
    pub paused: bool,
    /// The collections the generation's manifest declares, with their indexed fields.
    pub collections: Vec<CollectionSpec>,
    /// The last verification of this generation (`refract verify`, `POST
    /// …/verify` or the `verify_every` schedule), if it was verified.
    pub verify: Option<VerifyOutcome>,
}

/// Whether a projection recorded as `running` has a live host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostLiveness {
    /// A process holds the data dir's lock.
    Running,
    /// No process holds it: the host that ran the projection was killed
    /// or ended without recording the stop.
    Gone,
}

impl ProjectionStatus {
    /// Combines a registry record with the current head.
    pub fn new(record: ProjectionRecord, head: u64) -> Self {
        Self {
            name: record.key.projection,
            version: record.manifest.version,
            generation: record.key.generation,
            role: record.role,
            module_hash: record.module_hash,
            checkpoint: record.checkpoint,
            head,
            lag: head.saturating_sub(record.checkpoint),
            state: record.state,
            last_error: record.last_error,
            store_error: None,
            host: None,
            source: record.source,
            created_at: record.created_at,
            activated_at: record.activated_at,
            owner: None,
            lease_expires_at_ms: None,
            paused: false,
            collections: record.manifest.collections,
            verify: None,
        }
    }

    /// Adds the projection's last verification, if it was of this generation.
    pub fn with_verify(mut self, last: Option<&VerifyOutcome>) -> Self {
        self.verify = last.filter(|v| v.generation == self.generation).cloned();
        self
    }

    /// Marks it paused or not.
    pub fn with_paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Adds who holds the generation's lease. A `running` generation whose
    /// lease expired has no live host: whoever ran it was killed (a clean
    /// stop records `stopped`), wherever it ran.
    pub fn with_lease(mut self, lease: Option<&LeaseRecord>) -> Self {
        if let Some(l) = lease {
            self.owner = Some(l.owner.clone());
            self.lease_expires_at_ms = Some(l.expires_at_ms);
            if self.state == ProjectionState::Running {
                self.host = Some(if l.expired { HostLiveness::Gone } else { HostLiveness::Running });
            }
        }
        self
    }
}

/// Status of every registered projection, with its lease, read from the
/// stores (works whether or not a host is running on them).
pub async fn status(events: &dyn EventSource, models: &dyn ReadModelStore) -> Result<Vec<ProjectionStatus>, HostError> {
    let head = events.head().await?;
    let leases = models.leases().await?;
    let mut out = Vec::new();
    for r in models.projections().await? {
        let paused = models.is_paused(&r.key.projection).await?;
        let verified = models.last_verification(&r.key.projection).await?;
        let lease = leases.iter().find(|l| l.key == r.key);
        out.push(ProjectionStatus::new(r, head).with_lease(lease).with_paused(paused).with_verify(verified.as_ref()));
    }
    Ok(out)
}

/// A running refract host.
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::HostError> {
/// use refract::{DataDir, Host, SyncConfig};
/// let data = DataDir("data".into());
/// let mut host = Host::new(data.open_events().await?, data.open_models().await?, SyncConfig::default())?
///     .with_module_cache(data.module_cache());
/// for failure in host.load_plugins("plugins".as_ref()).await? {
///     eprintln!("{failure}");
/// }
/// host.wait_until_caught_up().await?;
/// host.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Host {
    runtime: PluginRuntime,
    /// Where runners read events.
    source: Arc<dyn EventSource>,
    /// Where appends go, when the source is refract's own log; `None` for a
    /// read-only source (a table being synced, a foreign stream).
    events: Option<Arc<dyn EventStore>>,
    models: Arc<dyn ReadModelStore>,
    /// What runners commit through: `models`, unless replaced with
    /// [`with_writer`](Host::with_writer).
    writer: Arc<dyn ModelWriter>,
    sync: SyncConfig,
    /// Limits and failure policies, per projection.
    config: Arc<Config>,
    /// Loaded modules by hash, so a generation can be (re)started without
    /// reloading; shared with the verifier.
    plugins: Plugins,
    /// Runs every verification of this host's projections.
    verifier: Verifier,
    /// Which projection each plugin file provides, and the module it had.
    sources: BTreeMap<PathBuf, (String, String)>,
    runners: BTreeMap<ModelKey, Running>,
    switches: Switches,
    store_errors: StoreErrors,
    compiles: Compiles,
    notices: broadcast::Sender<CommitNotice>,
    /// This node's id and lease lifetime: every runner writes under a lease.
    lease: LeaseSettings,
    /// The node's share of the work and its heartbeat, from the first runner on.
    book: Option<(Arc<LeaseBook>, Heartbeat)>,
}

/// How often a standby runner's committed checkpoint is looked at while
/// waiting for every projection to catch up.
const CAUGHT_UP_POLL: Duration = Duration::from_millis(200);

/// How many times a plugin's registration is tried while the database
/// reports a transient failure.
const REGISTER_TRIES: u32 = 6;

/// Runs `attempt` until it succeeds or fails for a reason other than a
/// transient database failure, at most [`REGISTER_TRIES`] times. A
/// registration is one transaction that races other nodes' commits to the
/// same generation; the database may end either side of a deadlock, or drop
/// the connection, and trying again is then right: a transient failure must
/// not reject a good plugin.
async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let (mut delay, mut tries) = (Duration::from_millis(50), 1);
    loop {
        match attempt().await {
            Err(StoreError::Database(e)) if e.kind() == DbErrorKind::Unavailable && tries < REGISTER_TRIES => {
                tracing::warn!(what, error = %e, attempt = tries, "store unavailable; retrying");
                tokio::time::sleep(delay).await;
                (delay, tries) = (delay * 2, tries + 1);
            }
            result => return result,
        }
    }
}

impl Host {
    /// A host over the given stores, with no projection yet.
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
        let mut host = Self::from_source(events.clone(), models, sync, config)?;
        host.events = Some(events);
        Ok(host)
    }

    /// A host that only reads its events: projections follow `source`, and
    /// nothing can be appended through the host or its API.
    pub fn from_source(
        source: Arc<dyn EventSource>,
        models: Arc<dyn ReadModelStore>,
        sync: SyncConfig,
        config: Config,
    ) -> Result<Self, HostError> {
        let runtime = PluginRuntime::with_fuel(config.uses_fuel()).map_err(|e| HostError::Runtime(format!("{e:#}")))?;
        let config = Arc::new(config);
        let plugins = Plugins::default();
        let verifier = Verifier::new(runtime.clone(), plugins.clone(), source.clone(), models.clone(), config.clone());
        Ok(Self {
            runtime,
            source,
            events: None,
            writer: models.clone(),
            models,
            sync,
            config,
            plugins,
            verifier,
            sources: BTreeMap::new(),
            runners: BTreeMap::new(),
            switches: Switches::default(),
            store_errors: StoreErrors::default(),
            compiles: Compiles::default(),
            notices: broadcast::channel(NOTICE_BUFFER).0,
            lease: LeaseSettings::default(),
            book: None,
        })
    }

    /// Commits every runner's batches through `writer` instead of the
    /// read-model store: a seam for wrapping the writer (tests inject
    /// failures here) without reimplementing the registry and the reader.
    pub fn with_writer(mut self, writer: Arc<dyn ModelWriter>) -> Self {
        self.writer = writer;
        self
    }

    /// Runs as node `settings.node`, with leases of `settings.ttl`. Hosts
    /// sharing a store must have distinct node ids; the default,
    /// `{hostname}-{pid}`, is distinct per process.
    pub fn with_lease(mut self, settings: LeaseSettings) -> Self {
        self.lease = settings;
        self
    }

    /// This node's lease settings.
    pub fn lease(&self) -> &LeaseSettings {
        &self.lease
    }

    /// Caches compiled plugins and module bytes in `cache`.
    pub fn with_module_cache(mut self, cache: ModuleCache) -> Self {
        self.runtime = self.runtime.with_cache(cache);
        self.verifier = self.verifier.with_runtime(self.runtime.clone());
        self
    }

    /// Sets when an uncached plugin starts on baseline code (see [`Tiering`]).
    pub fn with_tiering(mut self, tiering: Tiering) -> Self {
        self.runtime = self.runtime.with_tiering(tiering);
        self.verifier = self.verifier.with_runtime(self.runtime.clone());
        self
    }

    /// Where the host reads its events.
    pub fn source(&self) -> Arc<dyn EventSource> {
        self.source.clone()
    }

    /// The event store appends go to; `None` for a read-only source.
    pub fn events(&self) -> Option<Arc<dyn EventStore>> {
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

    /// The store errors its runners are retrying, for the HTTP API.
    pub fn store_errors(&self) -> StoreErrors {
        self.store_errors.clone()
    }

    /// The sender behind [`Host::subscribe`], so a component that outlives a
    /// borrow of the host (the HTTP API) can subscribe whenever it needs to.
    pub fn notices(&self) -> broadcast::Sender<CommitNotice> {
        self.notices.clone()
    }

    /// The plugin runtime, to load plugins by hand.
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// Loads and starts every `*.wasm` in `dir`, in name order. A plugin that
    /// fails to load is skipped and its error returned; the others start.
    pub async fn load_plugins(&mut self, dir: &Path) -> Result<Vec<HostError>, HostError> {
        let mut failures = Vec::new();
        for path in plugin_files(dir)? {
            if let Err(e) = self.load_file(&path).await {
                failures.push(e);
            }
        }
        Ok(failures)
    }

    /// Loads (or reloads) one plugin file and starts what it needs: the
    /// generation of a new module builds beside the active one. If the file
    /// no longer loads and it provided a projection before, the failure is
    /// recorded as a failed generation and the active one keeps serving.
    pub async fn load_file(&mut self, path: &Path) -> Result<(), HostError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Io { path: path.to_owned(), source })?;
        let hash = module_hash(&bytes);
        if self.sources.get(path).is_some_and(|(_, h)| *h == hash) {
            return Ok(()); // Same content: a touch, or a second event for one write.
        }
        let runtime = self.runtime.clone();
        let owned = path.to_owned();
        let compile = self.compiles.start(file_name(path), self.provider(path).await);
        let loaded = tokio::task::spawn_blocking(move || {
            let plugin = runtime.load_bytes(&owned, &bytes)?;
            if let Some(cache) = runtime.cache() {
                if let Err(e) = cache.save_source(plugin.hash(), &bytes) {
                    tracing::warn!(error = %e, "could not keep the module bytes");
                }
            }
            Ok::<_, PluginError>((plugin, bytes))
        })
        .await
        .unwrap_or_else(|e| Err(PluginError::LoadPanicked { path: path.to_owned(), message: e.to_string() }));
        match &loaded {
            Ok((plugin, _)) => compile.finish(plugin.compile_time(), plugin.cached()),
            Err(_) => drop(compile),
        }
        let result = match loaded {
            Ok((plugin, bytes)) => self.deploy(plugin, &bytes).await,
            Err(e) => {
                if let Some((name, _)) = self.sources.get(path) {
                    self.models.record_load_failure(name, &hash, &file_name(path), &e.to_string()).await?;
                    self.sources.insert(path.to_owned(), (name.clone(), hash));
                }
                Err(e.into())
            }
        };
        if let Err(e) = &result {
            tracing::error!("plugin rejected: {e}");
        }
        result
    }

    /// The projection a plugin file provides, as far as the host knows
    /// before compiling it: from this run, else from the registry (a restart).
    async fn provider(&self, path: &Path) -> Option<String> {
        if let Some((name, _)) = self.sources.get(path) {
            return Some(name.clone());
        }
        let source = file_name(path);
        let records = self.models.projections().await.ok()?;
        records.into_iter().find(|r| r.source == source && r.role == Role::Active).map(|r| r.key.projection)
    }

    /// The modules this host is compiling, and how long its compiles took.
    pub fn compiles(&self) -> Compiles {
        self.compiles.clone()
    }

    /// Withdraws the projection a removed plugin file provided: no node
    /// runs it until a module of it is deployed again. Its read model stays
    /// (and keeps answering queries) until `refract drop`.
    pub async fn remove_file(&mut self, path: &Path) {
        let Some((name, _)) = self.sources.remove(path) else { return };
        if let Err(e) = self.models.withdraw(&name).await {
            tracing::warn!(projection = %name, error = %e, "could not record that the projection was withdrawn");
        }
        tracing::info!(projection = %name, path = %path.display(), "plugin removed; projection withdrawn");
        self.stop_projection(&name).await;
    }

    /// Keeps the plugin's module in the store, where every node sharing it
    /// can load it, then [`start`](Self::start)s it.
    pub async fn deploy(&mut self, plugin: Plugin, bytes: &[u8]) -> Result<(), HostError> {
        let models = self.models.clone();
        retrying(&plugin.manifest().name, || models.store_module(bytes)).await?;
        self.start(plugin).await
    }

    /// Registers the plugin's projection and starts the runners it needs.
    /// Its module is not put in the store (see [`deploy`](Self::deploy)):
    /// only this host can run it.
    pub async fn start(&mut self, plugin: Plugin) -> Result<(), HostError> {
        let name = plugin.manifest().name.clone();
        let path = plugin.path().to_owned();
        if let Some((other, _)) = self.sources.iter().find(|(p, (n, _))| *n == name && **p != path) {
            return Err(HostError::DuplicateProjection { name, path, other: other.clone() });
        }
        if let Some((old, _)) = self.sources.get(&path).filter(|(n, _)| *n != name).cloned() {
            self.stop_projection(&old).await; // The file now holds another projection.
        }
        let plugin = Arc::new(plugin);
        let source = file_name(&path);
        let models = self.models.clone();
        let reg = retrying(&name, || models.register(plugin.manifest(), plugin.hash(), &source)).await?;
        tracing::info!(
            projection = %name,
            version = %plugin.manifest().version,
            generation = reg.target.key.generation,
            role = %reg.target.role,
            path = %path.display(),
            "plugin loaded"
        );
        for key in &reg.superseded {
            self.stop_runner(key);
        }
        self.sources.insert(path, (name.clone(), plugin.hash().to_owned()));
        self.plugins.lock().unwrap_or_else(|e| e.into_inner()).insert(plugin.hash().to_owned(), plugin.clone());
        if self.models.is_paused(&name).await? {
            tracing::info!(projection = %name, "projection is paused; `refract resume {name}` starts it");
            return Ok(());
        }
        self.spawn(plugin, &reg.target);
        if let Some(active) = &reg.active {
            self.ensure_running(active).await;
        }
        Ok(())
    }

    /// Makes this host's runners follow the registry: it runs every active
    /// or building generation of every deployed projection, whichever node
    /// or `refract deploy` registered it (modules come from the store), and
    /// stops the runners of generations that were retired or dropped, or
    /// whose projection was paused or withdrawn.
    pub async fn sync_registry(&mut self) -> Result<(), HostError> {
        let mut runnable = HashMap::new();
        let (mut wanted, mut live) = (HashSet::new(), HashSet::new());
        for record in self.models.projections().await? {
            if !matches!(record.role, Role::Active | Role::Building) {
                continue;
            }
            live.insert(record.key.projection.clone());
            let name = record.key.projection.clone();
            let runs = match runnable.get(&name) {
                Some(&r) => r,
                None => {
                    let r = !self.models.is_paused(&name).await? && !self.models.is_withdrawn(&name).await?;
                    *runnable.entry(name).or_insert(r)
                }
            };
            if runs {
                wanted.insert(record.key.clone());
                self.ensure_running(&record).await;
            }
        }
        let unwanted: Vec<ModelKey> = self.runners.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for key in unwanted {
            if self.runners.get(&key).is_some_and(|r| !r.task.is_finished()) {
                tracing::info!(
                    projection = %key.projection,
                    generation = key.generation,
                    "generation stopped: paused, withdrawn, retired or dropped"
                );
                self.stop_runner(&key);
            }
        }
        // A dropped projection is forgotten once its runners have stopped.
        self.runners.retain(|k, r| live.contains(&k.projection) || !r.task.is_finished());
        Ok(())
    }

    /// Follows the plugins folder until `shutdown` completes: new and changed
    /// files are (re)loaded, removed ones stopped, and generations requested
    /// through the registry (`refract rebuild`) are started.
    pub async fn follow(&mut self, mut watcher: PluginWatcher, shutdown: impl Future<Output = ()>) {
        // Ends (aborted) when following does.
        let _verifying = verify_schedule::start(
            self.verifier.clone(),
            self.models.clone(),
            self.config.clone(),
            self.lease.node.clone(),
        );
        let mut registry = tokio::time::interval(REGISTRY_POLL);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                change = watcher.next() => match change {
                    // Load errors are logged and recorded by load_file. A shutdown
                    // does not wait for a (re)load, which may be a long compile.
                    Some(PluginChange::Changed(path)) => tokio::select! {
                        biased;
                        _ = &mut shutdown => return,
                        _ = self.load_file(&path) => {}
                    },
                    Some(PluginChange::Removed(path)) => self.remove_file(&path).await,
                    None => return,
                },
                _ = registry.tick() => {
                    if let Err(e) = self.sync_registry().await {
                        tracing::warn!(error = %e, "could not read the registry");
                    }
                }
            }
        }
    }

    /// Runs a generation recorded in the registry (a requested rebuild, or
    /// one left building by a previous host), loading its module from the
    /// module cache if needed. Returns whether it runs.
    pub async fn run_generation(&mut self, record: &ProjectionRecord) -> bool {
        self.ensure_running(record).await;
        self.runners.get(&record.key).is_some_and(|r| !r.task.is_finished())
    }

    /// Runs a generation unless it already runs or its projection is
    /// paused, loading its module from the loaded ones or the module cache.
    async fn ensure_running(&mut self, record: &ProjectionRecord) {
        match self.models.is_paused(&record.key.projection).await {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(projection = %record.key.projection, error = %e, "could not read whether it is paused");
                return;
            }
        }
        let known_fault = |r: &Running| r.progress.borrow().state == ProjectionState::Faulted;
        if self
            .runners
            .get(&record.key)
            .is_some_and(|r| !r.task.is_finished() || (record.state == ProjectionState::Faulted && known_fault(r)))
        {
            return;
        }
        let loaded = self.plugins.lock().unwrap_or_else(|e| e.into_inner()).get(&record.module_hash).cloned();
        let plugin = match loaded {
            Some(p) => p,
            None => match self.load_stored(&record.module_hash, &record.source).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(
                        projection = %record.key.projection,
                        generation = record.key.generation,
                        error = %e,
                        "generation cannot run: its module is not available; it keeps serving what it has"
                    );
                    return;
                }
            },
        };
        self.spawn(plugin, record);
    }

    /// Loads a generation's module from the module cache or the store.
    async fn load_stored(&mut self, hash: &str, source: &str) -> Result<Arc<Plugin>, ModuleUnavailable> {
        let compile = self.compiles.start(source.to_owned(), self.provider(Path::new(source)).await);
        let plugin = module_by_hash(&self.runtime, &self.plugins, self.models.as_ref(), hash, source).await?;
        compile.finish(plugin.compile_time(), plugin.cached());
        Ok(plugin)
    }

    /// The node's lease book, started (with its heartbeat) on first use.
    fn lease_book(&mut self) -> Arc<LeaseBook> {
        if let Some((book, _)) = &self.book {
            return book.clone();
        }
        let book = LeaseBook::new(self.lease.clone());
        let registry = self.models.clone();
        let heartbeat = book.heartbeat(self.models.clone(), move || {
            let registry = registry.clone();
            async move {
                let live = registry.projections().await?;
                Ok(live.iter().filter(|g| matches!(g.role, Role::Active | Role::Building)).count())
            }
        });
        self.book = Some((book.clone(), heartbeat));
        book
    }

    fn spawn(&mut self, plugin: Arc<Plugin>, record: &ProjectionRecord) {
        if self.runners.get(&record.key).is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let name = &record.key.projection;
        let (progress_tx, progress) = watch::channel(Progress {
            generation: record.key.generation,
            role: record.role,
            checkpoint: record.checkpoint,
            state: record.state,
            last_error: record.last_error.clone(),
            leased: false,
            code: None,
        });
        if record.state == ProjectionState::Faulted {
            tracing::warn!(
                projection = %name,
                checkpoint = record.checkpoint,
                error = record.last_error.as_deref().unwrap_or(""),
                "projection is faulted from an earlier run and stays stopped; `refract retry {name}` resumes it"
            );
            // Nothing to run: a finished task keeps the report for `progress`.
            self.runners.insert(record.key.clone(), Running { progress, task: tokio::spawn(async {}) });
            return;
        }
        let (stop_tx, stop) = watch::channel(false);
        self.switches.lock().expect("switch map lock").insert(record.key.clone(), stop_tx);
        let config = self.config.for_projection(name);
        self.models.set_retention(name, config.changes);
        let cache_bytes = config.limits.document_cache_bytes;
        let runner = Runner {
            plugin,
            key: record.key.clone(),
            role: record.role,
            switches: self.switches.clone(),
            checkpoint: record.checkpoint,
            source: self.source.clone(),
            registry: self.models.clone(),
            writer: self.writer.clone(),
            leased: false,
            leases: self.models.clone(),
            book: self.lease_book(),
            sync: self.sync.clone(),
            config,
            progress: progress_tx,
            notices: self.notices.clone(),
            stop,
            // Checkpoint 0 means no commit has touched the tables: they are empty.
            documents: Arc::new(if record.checkpoint == 0 {
                DocumentCache::for_empty_generation(cache_bytes)
            } else {
                DocumentCache::new(cache_bytes)
            }),
            staged: Default::default(),
            read_ahead: None,
            committing: None,
            calls: CallThread::new(format!("refract-plugin-{name}")),
            refused_to: 0,
            store_errors: self.store_errors.clone(),
        };
        let task = tokio::spawn(runner.run());
        self.runners.insert(record.key.clone(), Running { progress, task });
    }

    fn stop_runner(&mut self, key: &ModelKey) {
        if let Some(switch) = self.switches.lock().expect("switch map lock").get(key) {
            switch.send_replace(true);
        }
    }

    async fn stop_projection(&mut self, name: &str) {
        let keys: Vec<ModelKey> = self.runners.keys().filter(|k| k.projection == name).cloned().collect();
        for key in keys {
            self.stop_runner(&key);
            if let Some(r) = self.runners.remove(&key) {
                let _ = r.task.await;
            }
        }
    }

    /// Names of the projections this host runs: those its plugins folder
    /// provides and those deployed to the store that it runs generations of.
    pub fn projections(&self) -> Vec<String> {
        let files = self.sources.values().map(|(n, _)| n.clone());
        let names: BTreeSet<String> = files.chain(self.runners.keys().map(|k| k.projection.clone())).collect();
        names.into_iter().collect()
    }

    /// Latest progress of a projection's serving generation (or, before
    /// anything serves, of its newest one).
    pub fn progress(&self, name: &str) -> Option<Progress> {
        let all = self.generations(name);
        all.iter().rev().find(|p| p.role == Role::Active && p.state != ProjectionState::Stopped).or(all.last()).cloned()
    }

    /// Latest progress of every generation of a projection this host has run, oldest first.
    pub fn generations(&self, name: &str) -> Vec<Progress> {
        self.runners.iter().filter(|(k, _)| k.projection == name).map(|(_, r)| r.progress.borrow().clone()).collect()
    }

    /// `refract verify`: rebuilds the active module of `name` into a shadow
    /// model up to the active checkpoint and compares the two, listing up
    /// to `limit` differences (see `projection/verify.rs`).
    pub async fn verify(&mut self, name: &str, limit: usize) -> Result<VerifyReport, VerifyError> {
        self.verifier.verify(name, limit).await
    }

    /// What runs this host's verifications, for the HTTP API.
    pub fn verifier(&self) -> Verifier {
        self.verifier.clone()
    }

    /// Waits until every running generation has reached the head as it is
    /// when the wait starts (a building one is swapped in by then), or has
    /// faulted or stopped. In a cluster a generation may be another node's
    /// to run: its committed checkpoint counts, whoever committed it, so
    /// nodes that each hold a share do not wait on each other for ever.
    pub async fn wait_until_caught_up(&self) -> Result<(), HostError> {
        let head = self.source.head().await?;
        for (key, r) in &self.runners {
            let mut rx = r.progress.clone();
            loop {
                let (done, standby) = {
                    let p = rx.borrow_and_update();
                    let done = (p.leased && p.checkpoint >= head && p.role == Role::Active)
                        || p.state != ProjectionState::Running;
                    (done, !p.leased)
                };
                if done || (standby && self.committed_by_another_node(key, head).await) {
                    break;
                }
                // A change of this runner's progress, or a look at the store again soon.
                // An error means the runner ended; its last report says why.
                if let Ok(Err(_)) = tokio::time::timeout(CAUGHT_UP_POLL, rx.changed()).await {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whether the store shows `key` active at `head` with no dead letter
    /// left to replay: done, whichever node did the work.
    async fn committed_by_another_node(&self, key: &ModelKey, head: u64) -> bool {
        let at_head = self.models.generation(key).await.is_ok_and(|g| g.role == Role::Active && g.checkpoint >= head);
        at_head
            && self.models.dead_letters(&key.projection).await.is_ok_and(|letters| letters.iter().all(|l| !l.replay))
    }

    /// Stops every runner after its current batch and waits for them.
    pub async fn shutdown(self) {
        for switch in self.switches.lock().expect("switch map lock").values() {
            switch.send_replace(true);
        }
        for (key, r) in self.runners {
            if tokio::time::timeout(Duration::from_secs(30), r.task).await.is_err() {
                tracing::warn!(projection = %key.projection, generation = key.generation, "runner did not stop within 30 s");
            }
        }
        // The other nodes recount their share at once instead of when this
        // node's announcement expires.
        if let Some((_, heartbeat)) = self.book {
            drop(heartbeat);
            if let Err(e) = self.models.leave(&self.lease.node).await {
                tracing::warn!(node = %self.lease.node, error = %e, "could not record that this node left");
            }
        }
    }
}

/// The `*.wasm` files directly in `dir`, in name order.
pub(crate) fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, HostError> {
    let err = |source| HostError::PluginsDir { path: dir.to_owned(), source };
    // Canonical paths, as the watcher reports them: one file, one identity.
    let dir = dir.canonicalize().map_err(err)?;
    let entries = std::fs::read_dir(&dir).map_err(err)?;
    let mut paths: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_plugin_file(p) && p.is_file()).collect();
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
