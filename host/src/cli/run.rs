//! `refract run` and `refract dev`: the host, its HTTP API and the plugins
//! folder watch; `dev` also rebuilds plugin projects when their sources change.
//! How a run ends (signals, the `--exit-when-caught-up` verdict) is decided in
//! `signals` and `caught_up`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use refract::{ApiState, Config, Host, LeaseSettings, PluginWatcher, SyncConfig};

use super::Stores;
use super::caught_up;
use super::signals::Shutdown;

/// Where `refract run` serves the HTTP API unless told otherwise.
const DEFAULT_HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7878);

#[derive(clap::Args)]
pub struct RunArgs {
    /// Folder of projection components (*.wasm).
    #[arg(long, env = "REFRACT_PLUGINS_DIR", default_value = "plugins")]
    plugins: PathBuf,
    /// Events per batch (1 = realtime).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Batch strategy: how long a partial batch may wait for more events, in ms.
    #[arg(long, default_value_t = 0)]
    max_wait_ms: u64,
    /// Scheduled strategy: project pending events once per interval, in ms.
    #[arg(long)]
    interval_ms: Option<u64>,
    /// How often an idle projection looks for new events, in ms.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// While catching up, commit at most this many events' changes at once (1 = a commit per batch).
    #[arg(long, default_value_t = 50_000)]
    commit_events: usize,
    /// While catching up, commit at least this often, in ms.
    #[arg(long, default_value_t = 250)]
    commit_interval_ms: u64,
    /// Exit once every projection has reached the head (or faulted), instead of following new events.
    /// Exits non-zero if a projection faulted, a plugin was rejected, or there were no plugins.
    #[arg(long)]
    exit_when_caught_up: bool,
    /// Address the HTTP API listens on [default: 127.0.0.1:7878]. With
    /// --exit-when-caught-up the API is served only if this is given.
    #[arg(long, env = "REFRACT_HTTP", conflicts_with = "no_http")]
    http: Option<SocketAddr>,
    /// Do not serve the HTTP API.
    #[arg(long)]
    no_http: bool,
    /// Sandbox limits and failure policies (TOML); `./refract.toml` is used when it exists.
    #[arg(long, env = "REFRACT_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id among hosts sharing a PostgreSQL store [default:
    /// HOSTNAME-XXXXXXXX, from the host name and the data dir, so a
    /// restarted host takes its leases back at once].
    #[arg(long, env = "REFRACT_NODE_ID")]
    node_id: Option<String>,
    /// How long a lease on a projection lasts without renewal, in ms: how
    /// soon another node takes over from a host that died.
    #[arg(long, env = "REFRACT_LEASE_TTL_MS", default_value_t = 10_000)]
    lease_ttl_ms: u64,
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

/// The config file: `--config`, else `./refract.toml` if it exists, else the defaults.
fn load_config(path: Option<&Path>) -> Result<Config> {
    let default = Path::new("refract.toml");
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if default.is_file() => Ok(Config::load(default)?),
        None => Ok(Config::default()),
    }
}

/// Runs the host until Ctrl-C or SIGTERM (or, with `--exit-when-caught-up`,
/// until every projection has caught up). `dev` adds the plugin project
/// rebuilder. A signal during start-up stops it there: the plugins loaded so
/// far are shut down and the rest are not compiled.
pub async fn run(data: &Stores, mut args: RunArgs, dev: bool) -> Result<()> {
    // First of all, so that no signal from here on kills the process uncleanly.
    let shutdown = Shutdown::listen()?;
    let _lock = data.lock()?;
    // The watcher reports absolute paths; loading by the same absolute paths
    // makes a replaced file a reload of the projection, not a second copy of it.
    args.plugins = std::path::absolute(&args.plugins).context("resolving the plugins folder")?;
    let batch = args.exit_when_caught_up;
    let Some(opened) = shutdown.unless_requested(open(data, &args)).await else {
        return interrupted(batch);
    };
    let (mut host, listener) = opened?;
    // Watch before loading, so a file written meanwhile is not missed.
    let watcher = if batch { None } else { Some(PluginWatcher::new(&args.plugins)?) };
    let rebuilder = if dev { Some(super::dev::spawn_rebuilder(&args.plugins)?) } else { None };
    tracing::info!(plugins = %args.plugins.display(), "loading plugins");
    let failures = match shutdown.unless_requested(host.load_plugins(&args.plugins)).await {
        Some(loaded) => loaded?,
        None => {
            // Loading was abandoned mid-compile; the plugins started before it stop cleanly.
            if let Some(task) = rebuilder {
                task.abort();
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
            Some((stop, tokio::spawn(refract::serve(listener, ApiState::from_host(&host), shutdown))))
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
async fn open(data: &Stores, args: &RunArgs) -> Result<(Host, Option<tokio::net::TcpListener>)> {
    let sync = SyncConfig {
        batch_size: args.batch_size.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        interval: args.interval_ms.map(Duration::from_millis),
        poll: Duration::from_millis(args.poll_ms.max(1)),
        commit_events: args.commit_events.max(1),
        commit_interval: Duration::from_millis(args.commit_interval_ms),
    };
    let config = load_config(args.config.as_deref())?;
    // `[events]` in the config names a foreign stream, which then replaces --events.
    let events: std::sync::Arc<dyn refract::EventStore> = match config.events() {
        Some(mapping) => {
            tracing::info!(url = %mapping.url, "reading events from the foreign JetStream stream in [events]");
            std::sync::Arc::new(
                refract::ForeignStream::open(mapping).await.context("opening the [events] stream of the config")?,
            )
        }
        None => data.open_events().await?,
    };
    let models = data.open_models().await?;
    let lease = LeaseSettings {
        node: args.node_id.clone().unwrap_or_else(|| node_id(data)),
        ttl: Duration::from_millis(args.lease_ttl_ms.max(100)),
    };
    tracing::info!(node = %lease.node, lease_ttl = ?lease.ttl, "node");
    let host =
        Host::with_config(events, models, sync, config)?.with_module_cache(data.module_cache()).with_lease(lease);
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
    let listener = match http {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTP API to {addr} (use --http ADDR or --no-http)"))?,
        ),
    };
    Ok((host, listener))
}
