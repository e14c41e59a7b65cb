//! Loading projection components, checking them against the world, and calling them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::model::changes::{Change, MAX_ID_LEN};
use crate::model::event::Event;
use crate::model::manifest::{Manifest, ManifestError};
use crate::runtime::capabilities::{self, Capability};
use crate::runtime::guest_output::{Channel, GuestOutput};
use crate::runtime::limits::{Limits, MemoryLimitHit, MemoryLimiter};
use crate::runtime::module_cache::ModuleCache;
use crate::runtime::native::{NativeInstance, NativeProjection};
use crate::runtime::source_bundle::{self, SourceFiles};
use crate::runtime::tiering::{Code, CodeTier, Optimize, Tiering};
use crate::runtime::world::{self, Projector, ProjectorPre, WitVersion};
use crate::store::document_cache::DocumentCache;
use crate::store::{ModelKey, ModelWriter};

/// Deepest nesting of components inside components a plugin may have.
/// Toolchains nest a few levels; wasmtime's memory grows with the square of
/// the depth (a 358 KB file of 30,000 nested empty components took 18 GB),
/// so a hostile file is refused before it is compiled.
const MAX_COMPONENT_NESTING: usize = 100;

/// Errors loading or running a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Plugin file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("{path}: not a WebAssembly file (no `\\0asm` header)")]
    NotWasm {
        /// Plugin file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "{path}: a core WebAssembly module, not a component: build the plugin for `wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// Plugin file.
        path: PathBuf,
    },
    /// The component failed to compile.
    #[error("{path}: invalid component: {reason}")]
    Compile {
        /// Plugin file.
        path: PathBuf,
        /// Compiler message.
        reason: String,
    },
    /// The component implements no version of the `projector` world the host loads.
    #[error("{path}: does not implement the refract:projection `projector` world: {reason}")]
    WrongWorld {
        /// Plugin file.
        path: PathBuf,
        /// What is missing or mismatched.
        reason: String,
    },
    /// `describe` returned a manifest the host refuses.
    #[error("{path}: bad manifest: {source}")]
    Manifest {
        /// Plugin file.
        path: PathBuf,
        /// What is wrong with it.
        source: ManifestError,
    },
    /// Loading panicked in the host or in wasmtime: a bug, which a hostile
    /// component must still not turn into a crashed host.
    #[error("{path}: loading failed inside the host: {message}")]
    LoadPanicked {
        /// Plugin file.
        path: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// The guest trapped (panic, unreachable, stack overflow, out-of-bounds access...).
    #[error("trap: {0}")]
    Trap(String),
    /// The batch ran past its wall-clock deadline and was interrupted.
    #[error("timeout: the batch ran longer than its {} ms deadline", .deadline.as_millis())]
    Timeout {
        /// The deadline that was exceeded.
        deadline: Duration,
    },
    /// The plugin asked for more linear memory than its limit.
    #[error("memory limit: {0}")]
    MemoryLimit(String),
    /// The batch used up its fuel.
    #[error("fuel exhausted: the batch used more than its {fuel} units of fuel")]
    FuelExhausted {
        /// The fuel the batch had.
        fuel: u64,
    },
    /// The batch returned more changes, bytes or a larger document than allowed.
    #[error("output too large: {0}")]
    OutputTooLarge(String),
    /// The plugin tried to reach something it has no capability for, then failed.
    #[error("capability denied: the plugin tried to use {capability}, which projections cannot reach ({detail})")]
    CapabilityDenied {
        /// What it tried to use.
        capability: Capability,
        /// How the batch then failed.
        detail: String,
    },
    /// The projection returned an error for an event.
    #[error("projection error at position {position}: {message}")]
    Failed {
        /// Global position of the failing event.
        position: u64,
        /// The projection's message.
        message: String,
    },
}

impl PluginError {
    /// A short, stable name of the kind of failure, as shown in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::NotWasm { .. } => "not wasm",
            Self::CoreModule { .. } => "core module",
            Self::Compile { .. } => "invalid component",
            Self::WrongWorld { .. } => "wrong world",
            Self::Manifest { .. } => "bad manifest",
            Self::LoadPanicked { .. } => "load panic",
            Self::Trap(_) => "trap",
            Self::Timeout { .. } => "timeout",
            Self::MemoryLimit(_) => "memory limit",
            Self::FuelExhausted { .. } => "fuel exhausted",
            Self::OutputTooLarge(_) => "output too large",
            Self::CapabilityDenied { .. } => "capability denied",
            Self::Failed { .. } => "projection error",
        }
    }

    /// Turns a failed guest call into the most specific error: the limit it
    /// hit, or a capability it tried before it failed.
    fn from_call(e: wasmtime::Error, limits: &Limits, denied: Option<Capability>) -> Self {
        if let Some(hit) = e.chain().find_map(|c| c.downcast_ref::<MemoryLimitHit>()) {
            return Self::MemoryLimit(hit.to_string());
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return Self::Timeout { deadline: limits.deadline },
            Some(Trap::OutOfFuel) => return Self::FuelExhausted { fuel: limits.fuel.unwrap_or(0) },
            _ => {}
        }
        // The wasm backtrace can run to thousands of frames (a stack
        // overflow): keep it in the debug log, and name only the trap.
        tracing::debug!(error = ?e, "plugin call failed");
        let reason = match (e.downcast_ref::<Trap>(), e.downcast_ref::<wasmtime_wasi::I32Exit>()) {
            (Some(trap), _) => trap.to_string(),
            (_, Some(exit)) => format!("the plugin exited with status {}", exit.0),
            _ => e.root_cause().to_string(),
        };
        match denied {
            Some(capability) => Self::CapabilityDenied { capability, detail: reason },
            None => Self::Trap(reason),
        }
    }
}

/// What a running instance may reach through the `get` import: its own
/// collections of its own generation, nothing else.
#[derive(Clone)]
pub(crate) struct ModelAccess {
    pub store: Arc<dyn ModelWriter>,
    pub key: ModelKey,
    pub collections: HashSet<String>,
    pub runtime: tokio::runtime::Handle,
    /// Staged and committed documents, shared with the runner that commits them.
    pub documents: Arc<DocumentCache>,
}

/// Per-instance state behind the host imports.
pub(crate) struct HostState {
    projection: String,
    access: Option<ModelAccess>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The first denied capability the plugin tried during the current call.
    denied: Option<Capability>,
    /// Where the `log` import writes: cut and rate-limited like stdout.
    log: GuestOutput,
    /// What the `source` import hands an interpreter.
    source: Arc<SourceFiles>,
    /// The last message the plugin logged at error level: a failed
    /// `describe` names it, since `describe` has no error to return.
    logged_error: Option<String>,
}

/// The most characters of a logged error a load error repeats.
const MAX_LOGGED_ERROR: usize = 500;

impl HostState {
    pub(crate) fn new(projection: String, access: Option<ModelAccess>, limits: &Limits) -> Self {
        // An empty WasiCtx: no preopened directories, environment, arguments
        // or sockets. Guests built with Rust std import WASI interfaces, so
        // they must be linked, but they reach nothing of the host. Only
        // stdout and stderr go somewhere: the host log.
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(&projection, Channel::Stdout))
            .stderr(GuestOutput::new(&projection, Channel::Stderr))
            .build();
        let log = GuestOutput::new(&projection, Channel::Log);
        Self {
            projection,
            access,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter { memory_bytes: limits.memory_bytes },
            denied: None,
            log,
            source: Arc::default(),
            logged_error: None,
        }
    }

    /// Hands `source` to the instance through the `source` import.
    pub(crate) fn with_source(mut self, source: Arc<SourceFiles>) -> Self {
        self.source = source;
        self
    }

    /// The `source` import: the files an interpreter runs.
    pub(crate) fn source_files(&self) -> SourceFiles {
        self.source.as_ref().clone()
    }
}

impl capabilities::NotesDenials for HostState {
    fn denied(&mut self, capability: Capability) {
        tracing::debug!(projection = %self.projection, %capability, "capability denied");
        self.denied.get_or_insert(capability);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Why `get` gave no document, before it becomes the `get-error` of the
/// caller's WIT version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GetRefusal {
    /// The collection is not one the projection declared.
    UnknownCollection(String),
    /// The store could not be read, or the id cannot exist.
    Unavailable(String),
}

impl HostState {
    /// The `log` import: cut and rate-limited like stdout.
    pub(crate) fn log_message(&mut self, level: tracing::Level, message: &str) {
        if level == tracing::Level::ERROR {
            // Cut at a char boundary: this may go into a load error.
            let end = message.char_indices().nth(MAX_LOGGED_ERROR).map_or(message.len(), |(i, _)| i);
            self.logged_error = Some(message[..end].to_owned());
        }
        self.log.log(level, message);
    }

    /// The `get` import: a document of the projection's own collections, as committed.
    pub(crate) fn read(&mut self, collection: String, id: String) -> Result<Option<String>, GetRefusal> {
        let Some(access) = &self.access else {
            return Err(GetRefusal::Unavailable("no read model is attached during describe".into()));
        };
        if !access.collections.contains(&collection) {
            return Err(GetRefusal::UnknownCollection(collection));
        }
        if id.len() > MAX_ID_LEN {
            // No document has such an id, and the document cache would keep it.
            return Err(GetRefusal::Unavailable(format!(
                "document id of {} bytes: ids are 1 to {MAX_ID_LEN} bytes",
                id.len()
            )));
        }
        if let Some(doc) = access.documents.get(&collection, &id) {
            return Ok(doc);
        }
        // Plugin calls run on a blocking thread, so waiting on the async store is allowed.
        match access.runtime.block_on(access.store.get(&access.key, &collection, &id)) {
            Ok(doc) => {
                access.documents.remember(&collection, &id, doc.clone());
                Ok(doc)
            }
            Err(e) => {
                // The plugin gets a generic message: no SQL text or file paths.
                tracing::warn!(projection = %self.projection, error = %e, "get failed");
                Err(GetRefusal::Unavailable("the read model store is unavailable".into()))
            }
        }
    }
}

/// An engine of one compiler, and the host's imports linked for it.
#[derive(Clone)]
pub(crate) struct Compiler {
    pub engine: Engine,
    pub linker: Arc<Linker<HostState>>,
}

impl Compiler {
    /// WASI (with an empty context) and the refract host imports, linked.
    fn new(fuel: bool, tier: CodeTier, parallel: bool) -> wasmtime::Result<Self> {
        let engine = crate::runtime::engine::new_engine(fuel, tier, parallel)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        capabilities::deny(&mut linker)?;
        world::add_to_linker(&mut linker)?;
        Ok(Self { engine, linker: Arc::new(linker) })
    }
}

/// Compiles and links plugins. One per host; cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    optimizing: Compiler,
    /// `None` where Winch cannot run (then every module is optimized first).
    baseline: Option<Compiler>,
    /// Cranelift on one core, for the optimizing compile behind baseline code.
    background: Compiler,
    tiering: Tiering,
    cache: Option<ModuleCache>,
    /// Code that loaded plugins hold, by code hash (see `live_code`).
    live: Arc<Mutex<HashMap<String, Weak<Code>>>>,
}

impl PluginRuntime {
    /// An engine with WASI (empty context) and the refract host imports
    /// linked, without fuel metering.
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_fuel(false)
    }

    /// Like [`new`](Self::new); `fuel` turns on fuel metering, needed by any
    /// projection whose limits set fuel.
    pub fn with_fuel(fuel: bool) -> wasmtime::Result<Self> {
        let optimizing = Compiler::new(fuel, CodeTier::Optimized, true)?;
        let background = Compiler::new(fuel, CodeTier::Optimized, false)?;
        let baseline = Compiler::new(fuel, CodeTier::Baseline, true)
            .inspect_err(
                |e| tracing::warn!(error = %e, "no baseline compiler: every plugin is optimized before it runs"),
            )
            .ok();
        Ok(Self { optimizing, baseline, background, tiering: Tiering::default(), cache: None, live: Arc::default() })
    }

    /// Sets when an uncached plugin starts on baseline code (see [`Tiering`]).
    pub fn with_tiering(mut self, tiering: Tiering) -> Self {
        self.tiering = tiering;
        self
    }

    /// When an uncached plugin starts on baseline code.
    pub fn tiering(&self) -> Tiering {
        self.tiering
    }

    /// Keeps compiled components (and module bytes) in `cache`, so unchanged
    /// plugins are not recompiled on the next start.
    pub fn with_cache(mut self, cache: ModuleCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The module cache, if any.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    /// Loads, checks and describes the plugin at `path`.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Io { path: path.to_owned(), source })?;
        self.load_bytes(path, &bytes)
    }

    /// Loads a plugin from bytes; `path` only names it in messages. Whatever
    /// the bytes, this returns: a panic on the way (a bug in the host or in
    /// wasmtime that some input reaches) is [`PluginError::LoadPanicked`].
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Plugin, PluginError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load_unguarded(path, bytes))).unwrap_or_else(
            |payload| {
                Err(PluginError::LoadPanicked { path: path.to_owned(), message: panic_message(payload.as_ref()) })
            },
        )
    }

    fn load_unguarded(&self, path: &Path, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let path = path.to_owned();
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(PluginError::CoreModule { path }),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(PluginError::NotWasm { path }),
        }
        if nesting_exceeds(bytes, MAX_COMPONENT_NESTING) {
            let reason = format!("components are nested more than {MAX_COMPONENT_NESTING} deep");
            return Err(PluginError::Compile { path, reason });
        }
        // The whole file is the module's identity (its generation); its code
        // is the file without a `refract:source` section, so projects run by
        // one interpreter share its compiled code.
        let hash = module_hash(bytes);
        let (code_bytes, source) =
            source_bundle::split(bytes).map_err(|reason| PluginError::Compile { path: path.clone(), reason })?;
        let code_hash = if code_bytes.len() == bytes.len() { hash.clone() } else { module_hash(&code_bytes) };
        let source = Arc::new(source);
        let started = std::time::Instant::now();
        let (code, compiled) = match self.live_code(&code_hash) {
            Some(code) => (code, None),
            None => {
                let (component, cached, tier) = self.compile(&path, &code_hash, &code_bytes)?;
                let compiler = self.compiler(tier);
                let version = self.check_world(&path, compiler, &component)?;
                let pre = compiler
                    .linker
                    .instantiate_pre(&component)
                    .and_then(|pre| ProjectorPre::new(version, pre))
                    .map_err(|e| PluginError::WrongWorld { path: path.clone(), reason: format!("{e:#}") })?;
                (Code::new(pre, tier), Some(cached))
            }
        };
        let compile_time = started.elapsed();
        // `describe` runs under the default limits: a plugin that hangs or
        // bombs at load time is refused like any other bad plugin.
        let limits = Limits::default();
        let (pre, tier) = code.best();
        let mut instance = ComponentInstance::new(pre, tier, "describe".into(), None, &limits, source.clone())?;
        instance.arm(&limits)?;
        let manifest = instance.bindings.describe(&mut instance.store).map_err(|e| {
            let state = instance.store.data();
            match (PluginError::from_call(e, &limits, state.denied), &state.logged_error) {
                // What the plugin logged of its failure beats what the host
                // infers: an interpreter that reads a source line for its
                // error message opens a file, which counts as a denied
                // capability, but the error is the project's.
                (PluginError::Trap(m) | PluginError::CapabilityDenied { detail: m, .. }, Some(logged)) => {
                    PluginError::Trap(format!("in describe: {m}; it logged: {logged}"))
                }
                (PluginError::Trap(m), None) => PluginError::Trap(format!("in describe: {m}")),
                (other, _) => other,
            }
        })?;
        if let Err(source) = manifest.validate() {
            return Err(PluginError::Manifest { path, source });
        }
        // Code compiled now is shared from here on, and optimized behind
        // baseline code; shared code already is, or is being, optimized.
        if compiled.is_some() {
            self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(code_hash.clone(), Arc::downgrade(&code));
            if tier == CodeTier::Baseline && self.tiering.optimizes() {
                let optimize = Optimize {
                    path: path.clone(),
                    hash: code_hash,
                    bytes: code_bytes.into_owned(),
                    version: code.first().version(),
                    compiler: self.background.clone(),
                    cache: self.cache.clone(),
                };
                optimize.spawn(Arc::downgrade(&code));
            }
        }
        // Shared code was not compiled now, as with code from the cache.
        let cached = compiled.unwrap_or(true);
        Ok(Plugin { path, hash, body: Body::Component(code, source), manifest, cached, compile_time })
    }

    /// The code of `code_hash` if a plugin this runtime loaded still holds
    /// it: a load of the same code (the next save of a project that an
    /// interpreter runs) shares its compiled code, and its optimized code
    /// once that is ready, instead of compiling again.
    fn live_code(&self, code_hash: &str) -> Option<Arc<Code>> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, code| code.strong_count() > 0);
        live.get(code_hash).and_then(Weak::upgrade)
    }

    fn compiler(&self, tier: CodeTier) -> &Compiler {
        match (tier, &self.baseline) {
            (CodeTier::Baseline, Some(baseline)) => baseline,
            _ => &self.optimizing,
        }
    }

    /// The compiled component and its tier: optimized code from the cache
    /// when it has it, else baseline code when tiering says so, else
    /// optimized code, compiled now and cached.
    fn compile(&self, path: &Path, hash: &str, bytes: &[u8]) -> Result<(Component, bool, CodeTier), PluginError> {
        let engine = &self.optimizing.engine;
        if let Some(component) = self.cache.as_ref().and_then(|c| c.compiled(engine, hash)) {
            tracing::debug!(path = %path.display(), "compiled module loaded from cache");
            return Ok((component, true, CodeTier::Optimized));
        }
        if let Some(baseline) = self.baseline.as_ref().filter(|_| self.tiering.baseline_first(bytes.len())) {
            match Component::new(&baseline.engine, bytes) {
                Ok(component) => return Ok((component, false, CodeTier::Baseline)),
                // Winch lacks some proposals (exceptions, GC, tail calls):
                // such a module, or a broken one, is left to Cranelift,
                // whose verdict is the one reported.
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %format!("{e:#}"), "baseline compile refused")
                }
            }
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| PluginError::Compile { path: path.to_owned(), reason: format!("{e:#}") })?;
        if let Some(cache) = &self.cache {
            cache.store_compiled(engine, hash, &component);
        }
        Ok((component, false, CodeTier::Optimized))
    }

    /// The version of the world the component targets. Names what the
    /// component lacks or imports that the host cannot give, before
    /// wasmtime's own (less specific) linking errors.
    fn check_world(&self, path: &Path, compiler: &Compiler, component: &Component) -> Result<WitVersion, PluginError> {
        let engine = &compiler.engine;
        let ty = component.component_type();
        let wrong = |reason: String| PluginError::WrongWorld { path: path.to_owned(), reason };
        let Some(version) = WitVersion::of(engine, component) else {
            let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
            let wanted: Vec<String> = WitVersion::ALL.iter().map(|v| format!("`{}`", v.projection_export())).collect();
            return Err(wrong(format!(
                "missing export {} (it exports: {})",
                wanted.join(" or "),
                if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
            )));
        };
        for (name, _) in ty.imports(engine) {
            let known = name.starts_with("wasi:") || name.starts_with("refract:projection/");
            if !known {
                return Err(wrong(format!(
                    "imports `{name}`, which the host does not provide (only `refract:projection/host` and WASI)"
                )));
            }
        }
        Ok(version)
    }
}

/// Whether the component in `bytes` nests components more than `max` deep
/// (the outermost is depth 0). Reads only section headers; bytes that do
/// not parse are left to the compiler to refuse with its own message.
fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    /// Section id of a nested component.
    const COMPONENT_SECTION: u8 = 4;
    source_bundle::sections(bytes)
        .any(|(id, _, body)| id == COMPONENT_SECTION && (max == 0 || nesting_exceeds(body, max - 1)))
}

/// The message a panic was raised with, if it was text.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// SHA-256 of a module, hex: identifies a module across renames and restarts.
pub fn module_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled, checked projection plugin.
pub struct Plugin {
    path: PathBuf,
    hash: String,
    body: Body,
    manifest: Manifest,
    cached: bool,
    compile_time: std::time::Duration,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("manifest", &self.manifest)
            .finish()
    }
}

/// What a plugin runs.
enum Body {
    /// A component's code, and the source files it is handed (none unless
    /// it is an interpreter: see `source_bundle`).
    Component(Arc<Code>, Arc<SourceFiles>),
    /// Native code in place of a component (see [`NativeProjection`]).
    Native(Arc<dyn NativeProjection>),
}

impl Plugin {
    /// A native projection in place of a component, named by `path`, for
    /// measuring the sandbox's cost against it: not sandboxed, so not for
    /// user code.
    #[doc(hidden)]
    pub fn native(path: &Path, manifest: Manifest, projection: Arc<dyn NativeProjection>) -> Result<Self, PluginError> {
        if let Err(source) = manifest.validate() {
            return Err(PluginError::Manifest { path: path.to_owned(), source });
        }
        Ok(Self {
            path: path.to_owned(),
            hash: module_hash(format!("native:{}", manifest.name).as_bytes()),
            body: Body::Native(projection),
            manifest,
            cached: false,
            compile_time: Duration::ZERO,
        })
    }

    /// The manifest returned by `describe`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The version of the `refract:projection` world the component targets,
    /// e.g. `0.2.0`.
    pub fn wit_version(&self) -> &'static str {
        match &self.body {
            Body::Component(code, _) => code.first().version().as_str(),
            Body::Native(_) => WitVersion::CURRENT.as_str(),
        }
    }

    /// SHA-256 of the module bytes, hex: identifies the module across restarts.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether the compiled component came from the module cache (no compilation).
    pub fn cached(&self) -> bool {
        self.cached
    }

    /// How long compiling the component took (or loading it from the cache).
    pub fn compile_time(&self) -> std::time::Duration {
        self.compile_time
    }

    /// The best code the plugin has now: baseline until its optimizing
    /// compile is done (see [`Tiering`]). Native code counts as optimized.
    pub fn code_tier(&self) -> CodeTier {
        match &self.body {
            Body::Component(code, _) => code.best().1,
            Body::Native(_) => CodeTier::Optimized,
        }
    }

    /// Whether `instance` runs code the plugin now has better of: the
    /// runner then starts a new instance before the next batch.
    pub(crate) fn outdated(&self, instance: &Instance) -> bool {
        instance.tier() != self.code_tier()
    }

    /// Where the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `batches` through one fresh instance with no read model
    /// attached (its `get` answers `unavailable`), under the default limits,
    /// and returns how many changes came back. This is the WASM boundary
    /// alone, without runner, event store or read-model store: what
    /// `refract-bench` measures it with.
    #[doc(hidden)]
    pub fn handle_detached(&self, batches: &[Vec<Event>]) -> Result<usize, PluginError> {
        let limits = Limits::default();
        let mut instance = self.instance(None, &limits)?;
        let mut changes = 0;
        for batch in batches {
            changes += instance.handle(batch, &limits)?.len();
        }
        Ok(changes)
    }

    pub(crate) fn instantiate(&self, access: ModelAccess, limits: &Limits) -> Result<Instance, PluginError> {
        self.instance(Some(access), limits)
    }

    fn instance(&self, access: Option<ModelAccess>, limits: &Limits) -> Result<Instance, PluginError> {
        let name = self.manifest.name.clone();
        Ok(match &self.body {
            Body::Component(code, source) => {
                let (pre, tier) = code.best();
                Instance::Component(ComponentInstance::new(pre, tier, name, access, limits, source.clone())?)
            }
            Body::Native(projection) => Instance::Native(NativeInstance::new(projection.clone(), name, access, limits)),
        })
    }
}

/// A live instance of a plugin, reused across batches until it traps.
pub(crate) enum Instance {
    Component(ComponentInstance),
    Native(NativeInstance),
}

impl Instance {
    /// Which compiler's code the instance runs.
    pub(crate) fn tier(&self) -> CodeTier {
        match self {
            Self::Component(i) => i.tier,
            Self::Native(_) => CodeTier::Optimized,
        }
    }

    /// Projects one batch under `limits`. Blocks: call from a blocking thread.
    pub(crate) fn handle(&mut self, events: &[Event], limits: &Limits) -> Result<Vec<Change>, PluginError> {
        match self {
            Self::Component(i) => i.handle(events, limits),
            Self::Native(i) => i.handle(events, limits),
        }
    }
}

/// A live instance of a component.
pub(crate) struct ComponentInstance {
    store: Store<HostState>,
    bindings: Projector,
    tier: CodeTier,
}

impl ComponentInstance {
    fn new(
        pre: &ProjectorPre,
        tier: CodeTier,
        projection: String,
        access: Option<ModelAccess>,
        limits: &Limits,
        source: Arc<SourceFiles>,
    ) -> Result<Self, PluginError> {
        let mut store = Store::new(pre.engine(), HostState::new(projection, access, limits).with_source(source));
        store.limiter(|s| &mut s.limiter);
        arm_store(&mut store, limits)?;
        let bindings =
            pre.instantiate(&mut store).map_err(|e| match PluginError::from_call(e, limits, store.data().denied) {
                PluginError::Trap(m) => PluginError::Trap(format!("during instantiation: {m}")),
                other => other,
            })?;
        Ok(Self { store, bindings, tier })
    }

    /// Sets the deadline and fuel for the next call.
    fn arm(&mut self, limits: &Limits) -> Result<(), PluginError> {
        arm_store(&mut self.store, limits)
    }

    fn handle(&mut self, events: &[Event], limits: &Limits) -> Result<Vec<Change>, PluginError> {
        self.arm(limits)?;
        self.store.data_mut().denied = None;
        let result = self.bindings.handle(&mut self.store, events);
        let denied = self.store.data().denied;
        let result = result.map_err(|e| PluginError::from_call(e, limits, denied))?;
        let changes = result.map_err(|e| match denied {
            Some(capability) => PluginError::CapabilityDenied {
                capability,
                detail: format!("it then failed at position {}: {}", e.position, e.message),
            },
            None => PluginError::Failed { position: e.position, message: e.message },
        })?;
        limits.check_output(&changes).map_err(PluginError::OutputTooLarge)?;
        Ok(changes)
    }
}

/// Gives the store a fresh deadline and, when metered, a fresh fuel tank.
fn arm_store(store: &mut Store<HostState>, limits: &Limits) -> Result<(), PluginError> {
    store.set_epoch_deadline(limits.deadline_ticks());
    // `get_fuel` fails exactly when the engine does not meter fuel.
    if store.get_fuel().is_ok() {
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .map_err(|e| PluginError::Trap(format!("cannot set fuel: {e:#}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::bindings::v0_2::refract::projection::host::Host as _;
    use crate::runtime::bindings::v0_2::refract::projection::types::{GetError, LogLevel};

    /// A writer into a shared buffer, for the log capture.
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Everything logged on this thread while `f` runs, as text.
    fn captured(f: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    /// Five 4 MiB `log` calls per event once wrote 400 MiB of log from 20
    /// events. Each message is now cut at 1 KiB, at most 100 per second get
    /// through, and the rest are counted in the line stdout uses.
    #[test]
    fn log_messages_are_cut_rate_limited_and_counted_like_stdout() {
        const CALLS: usize = 150;
        let message = "x".repeat(64 * 1024);
        let log = captured(|| {
            let mut state = HostState::new("chatty".into(), None, &Limits::default());
            for _ in 0..CALLS {
                state.log(LogLevel::Warn, message.clone()).unwrap();
            }
            // Not visible to the host: below the level it logs.
            state.log(LogLevel::Debug, "quiet".into()).unwrap();
            drop(state); // Reports the count of the last window.
        });
        let logged: Vec<&str> = log.lines().filter(|l| l.contains("xxxx")).collect();
        assert_eq!(logged.len(), 100, "the stdout rate limit: 100 lines per second");
        let cut = "x".repeat(1024);
        assert!(logged.iter().all(|l| l.contains(&cut) && !l.contains(&format!("{cut}x"))), "cut at 1 KiB");
        assert!(logged.iter().all(|l| l.contains("WARN") && l.contains("projection=chatty")), "{}", logged[0]);
        let dropped: Vec<&str> = log.lines().filter(|l| l.contains("lines dropped")).collect();
        assert_eq!(dropped.len(), 1, "{log}");
        assert!(dropped[0].contains(r#"stream="log""#) && dropped[0].contains("dropped=50"), "{}", dropped[0]);
        assert!(log.len() < 110 * 1024, "{} bytes of log from {} bytes of messages", log.len(), CALLS * message.len());
    }

    /// An id no document can have is refused before the document cache or
    /// the store sees it: a plugin reading distinct 1 MiB ids grew the
    /// host's memory by 1 MiB per call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn get_refuses_an_id_longer_than_any_document_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteReadModelStore::open(&dir.path().join("models.db")).await.unwrap();
        let documents = Arc::new(DocumentCache::default());
        let access = ModelAccess {
            store: Arc::new(store),
            key: ModelKey { projection: "p".into(), generation: 1 },
            collections: ["c".to_owned()].into(),
            runtime: tokio::runtime::Handle::current(),
            documents: documents.clone(),
        };
        let mut state = HostState::new("p".into(), Some(access), &Limits::default());
        let answers = tokio::task::spawn_blocking(move || {
            [MAX_ID_LEN + 1, 1 << 20].map(|len| match state.get("c".into(), "i".repeat(len)).unwrap() {
                Err(GetError::Unavailable(message)) => message,
                other => panic!("{len}-byte id: {other:?}"),
            })
        })
        .await
        .unwrap();
        assert_eq!(answers[0], "document id of 513 bytes: ids are 1 to 512 bytes");
        assert_eq!(answers[1], "document id of 1048576 bytes: ids are 1 to 512 bytes");
        assert_eq!(documents.get("c", &"i".repeat(MAX_ID_LEN + 1)), None, "nothing was cached");
    }
}
