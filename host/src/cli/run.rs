//! `refract run` and `refract dev`: the host, its HTTP API and the plugins
//! folder watch; `dev` also rebuilds plugin projects when their sources change.
//! How a run ends (signals, the `--exit-when-caught-up` verdict) is decided in
//! `signals` and `caught_up`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use refract::{ApiState, Config, Cors, Host, LeaseSettings, PluginWatcher, SyncConfig, Tokens};

use super::Stores;
use super::caught_up;
use super::signals::Shutdown;

/// Where `refract run` serves the HTTP API unless told otherwise.
const DEFAULT_HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7878);

/// The flags of `run`, `dev` and `config`. Each can also be set by its
/// environment variable or under `[host]` in the config file (`cli/settings.rs`).
#[derive(clap::Args)]
pub struct RunArgs {
    /// Folder of projection components (*.wasm).
    #[arg(long, env = "REFRACT_PLUGINS_DIR", default_value = "plugins")]
    plugins: PathBuf,
    /// Events per batch (1 = realtime).
    #[arg(long, env = "REFRACT_BATCH_SIZE", default_value_t = 1000)]
    batch_size: usize,
    /// Batch strategy: how long a partial batch may wait for more events, in ms.
    #[arg(long, env = "REFRACT_MAX_WAIT_MS", default_value_t = 0)]
    max_wait_ms: u64,
    /// Scheduled strategy: project pending events once per interval, in ms.
    #[arg(long, env = "REFRACT_INTERVAL_MS")]
    interval_ms: Option<u64>,
    /// How often an idle projection looks for new events, in ms.
    #[arg(long, env = "REFRACT_POLL_MS", default_value_t = 100)]
    poll_ms: u64,
    /// While catching up, commit at most this many events' changes at once (1 = a commit per batch).
    #[arg(long, env = "REFRACT_COMMIT_EVENTS", default_value_t = 50_000)]
    commit_events: usize,
    /// While catching up, commit at least this often, in ms.
    #[arg(long, env = "REFRACT_COMMIT_INTERVAL_MS", default_value_t = 250)]
    commit_interval_ms: u64,
    /// Exit once every projection has reached the head (or faulted), instead of following new events.
    /// Exits non-zero if a projection faulted, a plugin was rejected, or there were no plugins.
    #[arg(long, env = "REFRACT_EXIT_WHEN_CAUGHT_UP")]
    exit_when_caught_up: bool,
    /// Address the HTTP API listens on [default: 127.0.0.1:7878]. With
    /// --exit-when-caught-up the API is served only if this is given.
    #[arg(long, env = "REFRACT_HTTP", conflicts_with = "no_http")]
    http: Option<SocketAddr>,
    /// Do not serve the HTTP API.
    #[arg(long, env = "REFRACT_NO_HTTP")]
    no_http: bool,
    /// This node's id among hosts sharing a PostgreSQL store [default:
    /// HOSTNAME-XXXXXXXX, from the host name and the data dir, so a
    /// restarted host takes its leases back at once].
    #[arg(long, env = "REFRACT_NODE_ID")]
    node_id: Option<String>,
    /// How long a lease on a projection lasts without renewal, in ms: how
    /// soon another node takes over from a host that died.
    #[arg(long, env = "REFRACT_LEASE_TTL_MS", default_value_t = 10_000)]
    lease_ttl_ms: u64,
    /// API tokens file (`[[tokens]]` entries, as `refract token` prints them), in addition to
    /// those in refract.toml. With tokens, every route but /health and /openapi.json needs one.
    #[arg(long, env = "REFRACT_TOKENS_FILE", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Serve the API without tokens on a non-loopback address (refused otherwise).
    #[arg(long, env = "REFRACT_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Let browser apps on this origin call the API (CORS), e.g. https://app.example.com;
    /// `*` for any. Repeat, or separate with commas.
    #[arg(long = "cors-origin", env = "REFRACT_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// When a plugin not yet in the module cache starts projecting on quickly compiled
    /// baseline code (Winch) while optimized code compiles in the background: `auto` (modules
    /// of 1 MiB or more, such as Python and JavaScript builds), `always`, `off` (optimize first)
    /// or `baseline-only` (never optimize).
    #[arg(long, env = "REFRACT_TIERING", default_value = "auto", value_name = "WHEN")]
    tiering: refract::Tiering,
    /// With `dev`: build Python and JS projects into components on every save (componentize-py,
    /// componentize-js), instead of running their source in refract dev's interpreters (built
    /// once; a save then takes milliseconds).
    #[arg(long, env = "REFRACT_COMPONENTIZE")]
    componentize: bool,
}

impl RunArgs {
    /// Settles `--http` against `--no-http` when they came from different
    /// places: clap refuses the two together on the command line, but the
    /// file may say `no_http = true` under a typed `--http ADDR`, and the
    /// stronger source (flag > env > file) must win.
    pub fn settle(&mut self, matches: &clap::ArgMatches) {
        if self.no_http && self.http.is_some() && matches.value_source("http") > matches.value_source("no_http") {
            self.no_http = false;
        }
    }
}

/// The node id a data dir's host runs as: readable, stable across restarts
/// (the data-dir lock makes it unique on the machine), distinct for two
/// data dirs with the same name.
fn node_id(data: &Stores) -> String {
    use sha2::{Digest, Sha256};
    let dir = data.0.canonicalize().unwrap_or_else(|_| data.0.clone());
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{short}", refract::hostname())
}

/// Runs the host until Ctrl-C or SIGTERM (or, with `--exit-when-caught-up`,
/// until every projection has caught up). `dev` adds the plugin project
/// rebuilder. A signal during start-up stops it there: the plugins loaded so
/// far are shut down and the rest are not compiled.
pub async fn run(data: &Stores, mut args: RunArgs, config: Config, dev: bool) -> Result<()> {
    // First of all, so that no signal from here on kills the process uncleanly.
    let shutdown = Shutdown::listen()?;
    let _lock = data.lock()?;
    // The watcher reports absolute paths; loading by the same absolute paths
    // makes a replaced file a reload of the projection, not a second copy of it.
    args.plugins = std::path::absolute(&args.plugins).context("resolving the plugins folder")?;
    let batch = args.exit_when_caught_up;
    let Some(opened) = shutdown.unless_requested(open(data, &args, config)).await else {
        return interrupted(batch);
    };
    let (mut host, listener, tokens, syncers) = opened?;
    // The API's state, and so its metrics collector, before any plugin
    // loads: the first projection catches up while the next ones compile,
    // and those commits must be counted too.
    let mut api = listener.as_ref().map(|_| ApiState::from_host(&host));
    let _compiling = super::compiling::publish(data, host.compiles());
    // Watch before loading, so a file written meanwhile is not missed.
    let watcher = if batch { None } else { Some(PluginWatcher::new(&args.plugins)?) };
    let rebuilder = if dev { Some(super::dev::spawn_rebuilder(&args.plugins, !args.componentize)?) } else { None };
    tracing::info!(plugins = %args.plugins.display(), "loading plugins");
    let failures = match shutdown.unless_requested(host.load_plugins(&args.plugins)).await {
        Some(loaded) => loaded?,
        None => {
            // Loading was abandoned mid-compile; the plugins started before it stop cleanly.
            if let Some(task) = rebuilder {
                task.abort();
            }
            if let Some((s, _, _)) = syncers {
                s.shutdown().await;
            }
            host.shutdown().await;
            return interrupted(batch);
        }
    };
    host.sync_registry().await?;
    tracing::info!(
        projections = host.projections().len(),
        rejected = failures.len(),
        plugins = %args.plugins.display(),
        "host running"
    );
    let server = match listener {
        Some(listener) => {
            tracing::info!(addr = %listener.local_addr()?, "HTTP API listening");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let mut api = api.take().unwrap_or_else(|| ApiState::from_host(&host));
            api = api.with_tokens(tokens).with_cors(Cors::new(&args.cors_origins));
            if let Some((_, log, configs)) = &syncers {
                api = api.with_sources(log.clone(), configs.clone());
            }
            Some((stop, tokio::spawn(refract::serve(listener, api, shutdown))))
        }
        None => None,
    };
    let outcome = match watcher {
        None => match shutdown.unless_requested(host.wait_until_caught_up()).await {
            Some(caught_up) => {
                caught_up.map_err(Into::into).and_then(|()| caught_up::verdict(&host, &failures, &args.plugins))
            }
            None => Err(anyhow::anyhow!(NOT_CAUGHT_UP)),
        },
        Some(watcher) => {
            host.follow(watcher, shutdown.requested()).await;
            tracing::info!("shutting down");
            Ok(())
        }
    };
    if let Some(task) = rebuilder {
        task.abort();
    }
    // Stop the API first so no request waits on a projection that is stopping.
    if let Some((stop, task)) = server {
        let _ = stop.send(());
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP API failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP API task failed"),
            Err(_) => tracing::warn!("HTTP API did not stop within 10 s"),
        }
    }
    if let Some((s, _, _)) = syncers {
        s.shutdown().await;
    }
    host.shutdown().await;
    outcome
}

/// Why a `--exit-when-caught-up` run stopped by a signal fails: the batch job did not finish.
const NOT_CAUGHT_UP: &str = "stopped by a signal before every projection caught up";

/// The end of a run stopped during start-up: a clean stop for a host that
/// follows events, a failure for a batch job that was meant to catch up.
fn interrupted(batch: bool) -> Result<()> {
    tracing::info!("stopped during start-up");
    if batch { Err(anyhow::anyhow!(NOT_CAUGHT_UP)) } else { Ok(()) }
}

/// Opens the stores and the host, and binds the HTTP API: everything before
/// the plugins are loaded.
/// The running table syncers, with what the API shows of them.
type Sources = (refract::Syncers, std::sync::Arc<dyn refract::SyncLog>, Vec<refract::SourceConfig>);

async fn open(
    data: &Stores,
    args: &RunArgs,
    config: Config,
) -> Result<(Host, Option<tokio::net::TcpListener>, Tokens, Option<Sources>)> {
    let sync = SyncConfig {
        batch_size: args.batch_size.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        interval: args.interval_ms.map(Duration::from_millis),
        poll: Duration::from_millis(args.poll_ms.max(1)),
        commit_events: args.commit_events.max(1),
        commit_interval: Duration::from_millis(args.commit_interval_ms),
    };
    // `[events]` in the config names a foreign stream, which then replaces --events.
    let (events, sync_log): (std::sync::Arc<dyn refract::EventStore>, _) = match config.events() {
        Some(mapping) => {
            tracing::info!(url = %mapping.url, "reading events from the foreign JetStream stream in [events]");
            let stream =
                refract::ForeignStream::open(mapping).await.context("opening the [events] stream of the config")?;
            (std::sync::Arc::new(stream), None)
        }
        None => data.open_events_with_sync().await?,
    };
    let models = data.open_models().await?;
    let mut tokens = config.tokens().clone();
    if let Some(path) = &args.tokens {
        tokens = tokens.merge(Tokens::load(path)?);
    }
    let sources = config.sources()?;
    let lease = LeaseSettings {
        node: args.node_id.clone().unwrap_or_else(|| node_id(data)),
        ttl: Duration::from_millis(args.lease_ttl_ms.max(100)),
    };
    tracing::info!(node = %lease.node, lease_ttl = ?lease.ttl, "node");
    let host = Host::with_config(events, models, sync, config)?
        .with_module_cache(data.module_cache())
        .with_tiering(args.tiering)
        .with_lease(lease);
    // Sources are checked against their tables before anything else starts,
    // so a bad `[sources.NAME]` stops the run at once.
    let syncers = if sources.is_empty() {
        None
    } else {
        let scheme = data.events_url().split("://").next().unwrap_or_default();
        let log = sync_log.ok_or_else(|| refract::SyncError::Unsupported(format!("{scheme}://")))?;
        Some((refract::Syncers::start(sources.clone(), log.clone()).await?, log, sources))
    };
    // Bind before loading plugins so a taken port fails at once, not after
    // every module has been compiled.
    // A run that exits once caught up is a batch job: it serves HTTP only
    // when asked, so such jobs do not fight over the default port.
    let http = match (args.no_http, args.http) {
        (true, _) => None,
        (false, Some(addr)) => Some(addr),
        (false, None) if args.exit_when_caught_up => None,
        (false, None) => Some(DEFAULT_HTTP),
    };
    if let Some(addr) = http
        && !addr.ip().is_loopback()
        && tokens.is_empty()
        && !args.insecure_no_auth
    {
        anyhow::bail!(
            "refusing to serve the API on {addr} without tokens: anyone who can reach it could append and administer. \
             Make a token with `refract token NAME --scope read` and pass --tokens FILE (or add it to refract.toml), \
             bind to 127.0.0.1 behind a reverse proxy, or pass --insecure-no-auth"
        );
    }
    if http.is_some() && !tokens.is_empty() {
        tracing::info!(tokens = tokens.len(), "API tokens required");
    }
    let listener = match http {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTP API to {addr} (use --http ADDR or --no-http)"))?,
        ),
    };
    Ok((host, listener, tokens, syncers))
}
