//! The `refract` command line.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use refract::{
    ApiState, AppendRequest, Config, DataDir, EventStore, ExpectedVersion, Filter, Host, NewEvent, Order,
    PluginWatcher, Query, ReadModelStore, Role, SyncConfig,
};
use serde::Deserialize;

/// Keeps CQRS read models in sync with an event stream, running projections
/// as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory of the embedded stores (events.db, models.db).
    #[arg(long, global = true, env = "REFRACT_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Event store URL: sqlite://PATH or postgres://USER@HOST:PORT/DB[?options[search_path]=SCHEMA].
    /// Default: sqlite://<data-dir>/events.db.
    #[arg(long, global = true, env = "REFRACT_EVENTS", value_name = "URL")]
    events: Option<String>,
    /// Read-model store URL, as for --events. Default: sqlite://<data-dir>/models.db.
    #[arg(long, global = true, env = "REFRACT_STORE", value_name = "URL")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: load every *.wasm in the plugins folder and keep their read models in sync.
    /// The folder is watched: new files start projections, replaced ones rebuild blue/green, removed ones stop.
    Run(RunArgs),
    /// `run`, plus: rebuild plugin projects (Rust crates, Python `app.py`, JS `package.json`)
    /// under the plugins folder when their sources change.
    Dev(RunArgs),
    /// Scaffold a working projection under the plugins folder, ready for `refract dev`.
    New {
        /// Projection name (lowercase ASCII letters, digits, `-`, `_`).
        name: String,
        /// Language of the projection.
        #[arg(long, value_enum, default_value = "rust")]
        lang: NewLang,
        /// Folder of projection components and projects.
        #[arg(long, env = "REFRACT_PLUGINS_DIR", default_value = "plugins")]
        plugins: PathBuf,
    },
    /// Rebuild a projection's read model from position 0 as a new generation, then swap it in.
    /// Works with a host running on the data dir (it does the work) or without one (this command does).
    Rebuild {
        /// Projection name.
        projection: String,
    },
    /// Forget a projection: drop all its generations' tables and registry entries.
    Drop {
        /// Projection name.
        projection: String,
    },
    /// Append one event to a stream; prints its global position.
    Append {
        /// Stream id, e.g. account-42.
        stream: String,
        /// Event type, e.g. MoneyDeposited.
        event_type: String,
        /// Payload as JSON text.
        payload: String,
        /// Metadata as JSON text.
        #[arg(long, default_value = "{}")]
        metadata: String,
        /// Refuse the append unless the stream is at this version (`no-stream` = must not exist, `any` = no check).
        #[arg(long, default_value = "any")]
        expected_version: ExpectedVersion,
    },
    /// Append events from a JSON-lines file, all or nothing. Each line:
    /// {"stream": "...", "type": "...", "payload": {...}, "metadata": {...}, "expected_version": N}
    Import {
        /// The .jsonl file (`-` for standard input).
        file: PathBuf,
    },
    /// Print one document of a read model.
    Get {
        /// Projection name.
        projection: String,
        /// Collection name.
        collection: String,
        /// Document id.
        id: String,
    },
    /// Query a collection on its indexed fields; prints a JSON page.
    Query {
        /// Projection name.
        projection: String,
        /// Collection name.
        collection: String,
        /// Filter: field=value, field!=value, field>value, field>=value, field<value, field<=value, field=in:[a,b]. Repeatable.
        #[arg(long = "where", value_name = "FILTER")]
        filters: Vec<String>,
        /// Order by a field; prefix with `-` for descending.
        #[arg(long)]
        order: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = refract::DEFAULT_LIMIT)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print only the number of matching documents.
        #[arg(long)]
        count: bool,
        /// Print one line per document (`id<TAB>json`) instead of a JSON page; the next cursor goes to stderr.
        #[arg(long)]
        lines: bool,
    },
    /// Show each projection: version, generation, checkpoint, head, lag, state, last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the events a projection skipped (`on_failure = "skip"`), with their errors.
    DeadLetters {
        /// Projection name.
        projection: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Clear a projection's fault so the next `run` resumes from its checkpoint,
    /// and mark its dead letters to be replayed by the next `run` before new events.
    Retry {
        /// Projection name.
        projection: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NewLang {
    Rust,
    Python,
    Js,
}

/// Where `refract run` serves the HTTP API unless told otherwise.
const DEFAULT_HTTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7878);

#[derive(clap::Args)]
struct RunArgs {
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    payload: serde_json::Value,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    expected_version: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    refract::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "refract=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs piped to a file or a test stay greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let data = Stores::new(DataDir(cli.data_dir), cli.events, cli.store);
    match cli.command {
        Command::Run(args) => run(&data, args, false).await,
        Command::Dev(args) => run(&data, args, true).await,
        Command::New { name, lang, plugins } => {
            let lang = match lang {
                NewLang::Rust => refract::Lang::Rust,
                NewLang::Python => refract::Lang::Python,
                NewLang::Js => refract::Lang::Js,
            };
            let (dir, written) = refract::new_project(&plugins, &name, lang)?;
            for file in written {
                println!("created {}", file.display());
            }
            let tool = match lang {
                refract::Lang::Rust => "the wasm32-wasip2 Rust target".to_owned(),
                refract::Lang::Python => {
                    "componentize-py 0.25.1 on PATH or in .tools/venv next to the plugins folder".to_owned()
                }
                // `npm install`, not `npm ci`: npm 11's ci refuses a lock without other platforms' binaries.
                refract::Lang::Js => format!("Node.js 20+ and `npm install` in {}", plugins.join("js").display()),
            };
            println!(
                "\nnext: refract dev --plugins {} (needs {tool}), then in another terminal:\n      refract import {}",
                plugins.display(),
                dir.join("events.jsonl").display()
            );
            Ok(())
        }
        Command::Rebuild { projection } => rebuild(&data, &projection).await,
        Command::Drop { projection } => {
            let models = data.open_models().await?;
            models.drop_projection(&projection).await?;
            println!("dropped {projection}");
            if let Some(pid) = data.running_host() {
                eprintln!(
                    "note: host {pid} is running; if its plugins folder still has {projection}'s .wasm, replacing or re-adding that file registers it again from position 0"
                );
            }
            Ok(())
        }
        Command::Append { stream, event_type, payload, metadata, expected_version } => {
            let events = data.open_events().await?;
            let request = AppendRequest {
                stream_id: stream,
                expected: expected_version,
                events: vec![NewEvent::new(event_type, payload).with_metadata(metadata)],
            };
            let appended = events.append(&[request]).await?;
            println!("{}", appended[0].last_position);
            Ok(())
        }
        Command::Import { file } => import(&data, &file).await,
        Command::Get { projection, collection, id } => {
            let models = data.open_models().await?;
            match models.get_document(&projection, &collection, &id).await? {
                Some(doc) => {
                    let value: serde_json::Value = serde_json::from_str(&doc)?;
                    println!("{}", serde_json::to_string_pretty(&value)?);
                    Ok(())
                }
                None => bail!("no document `{id}` in {projection}/{collection}"),
            }
        }
        Command::Query { projection, collection, filters, order, limit, cursor, count, lines } => {
            let models = data.open_models().await?;
            let filters = filters.iter().map(|f| Filter::parse(f)).collect::<Result<Vec<_>, _>>()?;
            if count {
                println!("{}", models.count_documents(&projection, &collection, &filters).await?);
                return Ok(());
            }
            let query = Query { filters, order: order.as_deref().map(Order::parse), limit, cursor };
            let page = models.query_documents(&projection, &collection, &query).await?;
            if lines {
                for d in &page.documents {
                    println!("{}\t{}", d.id, d.body);
                }
                if let Some(next) = page.next_cursor {
                    eprintln!("next cursor: {next}");
                }
                return Ok(());
            }
            let documents = page
                .documents
                .iter()
                .map(|d| Ok(serde_json::json!({ "id": d.id, "document": serde_json::from_str::<serde_json::Value>(&d.body)? })))
                .collect::<Result<Vec<_>>>()?;
            let out = serde_json::json!({ "documents": documents, "next_cursor": page.next_cursor });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Status { json } => {
            let events = data.open_events().await?;
            let models = data.open_models().await?;
            let status = refract::status(events.as_ref(), models.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<8} LAST ERROR",
                "PROJECTION", "VERSION", "GEN", "ROLE", "CHECKPOINT", "HEAD", "LAG", "STATE"
            );
            for s in status {
                println!(
                    "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<8} {}",
                    s.name,
                    s.version,
                    s.generation,
                    s.role,
                    s.checkpoint,
                    s.head,
                    s.lag,
                    s.state,
                    s.last_error.unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::DeadLetters { projection, json } => {
            let models = data.open_models().await?;
            let letters = models.dead_letters(&projection).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
                return Ok(());
            }
            println!("{:>10}  {:<24} {:<20} {:<6} {:<12} ERROR", "POSITION", "STREAM", "TYPE", "REPLAY", "MODULE");
            for l in letters {
                println!(
                    "{:>10}  {:<24} {:<20} {:<6} {:<12} {}",
                    l.position,
                    l.stream_id,
                    l.event_type,
                    if l.replay { "yes" } else { "no" },
                    &l.module_hash[..l.module_hash.len().min(12)],
                    l.error
                );
            }
            Ok(())
        }
        Command::Retry { projection } => {
            let models = data.open_models().await?;
            let r = models.request_retry(&projection).await?;
            if r.cleared_fault {
                println!("{projection}: fault cleared; the next `refract run` resumes from the checkpoint");
            } else {
                println!("{projection}: was not faulted");
            }
            println!("{projection}: {} dead letter(s) will be replayed by the next `refract run`", r.replays);
            Ok(())
        }
    }
}

/// Where the stores are: URLs for events and read models, and the data dir,
/// which keeps the host's pid lock and module cache whatever the backends.
struct Stores {
    dir: DataDir,
    events: String,
    models: String,
}

impl Stores {
    fn new(dir: DataDir, events: Option<String>, models: Option<String>) -> Self {
        let sqlite = |path: PathBuf| format!("sqlite://{}", path.display());
        let events = events.unwrap_or_else(|| sqlite(dir.events()));
        let models = models.unwrap_or_else(|| sqlite(dir.models()));
        Self { dir, events, models }
    }

    async fn open_events(&self) -> Result<Arc<dyn EventStore>> {
        refract::open_events(&self.events).await.context("opening the event store")
    }

    async fn open_models(&self) -> Result<Arc<dyn ReadModelStore>> {
        refract::open_models(&self.models).await.context("opening the read-model store")
    }
}

impl std::ops::Deref for Stores {
    type Target = DataDir;

    fn deref(&self) -> &DataDir {
        &self.dir
    }
}

/// The config file: `--config`, else `./refract.toml` if it exists, else the defaults.
fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    let default = std::path::Path::new("refract.toml");
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if default.is_file() => Ok(Config::load(default)?),
        None => Ok(Config::default()),
    }
}

async fn run(data: &Stores, mut args: RunArgs, dev: bool) -> Result<()> {
    let _lock = data.lock()?;
    // The watcher reports absolute paths; loading by the same absolute paths
    // makes a replaced file a reload of the projection, not a second copy of it.
    args.plugins = std::path::absolute(&args.plugins).context("resolving the plugins folder")?;
    let sync = SyncConfig {
        batch_size: args.batch_size.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        interval: args.interval_ms.map(Duration::from_millis),
        poll: Duration::from_millis(args.poll_ms.max(1)),
        commit_events: args.commit_events.max(1),
        commit_interval: Duration::from_millis(args.commit_interval_ms),
    };
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let config = load_config(args.config.as_deref())?;
    let mut host = Host::with_config(events, models, sync, config)?.with_module_cache(data.module_cache());
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
    // Watch before loading, so a file written meanwhile is not missed.
    let watcher = if args.exit_when_caught_up { None } else { Some(PluginWatcher::new(&args.plugins)?) };
    let rebuilder = if dev { Some(refract::spawn_rebuilder(&args.plugins)?) } else { None };
    let failures = host.load_plugins(&args.plugins).await?;
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
    match watcher {
        None => host.wait_until_caught_up().await?,
        Some(watcher) => {
            host.follow(watcher, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            tracing::info!("shutting down");
        }
    }
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
    Ok(())
}

/// Starts a rebuild and shows its progress until the new generation is swapped in.
async fn rebuild(data: &Stores, projection: &str) -> Result<()> {
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let mut offline = None;
    let running = data.running_host();
    let lock = if running.is_none() { Some(data.lock()?) } else { None };
    let record = models.request_rebuild(projection).await?;
    let key = record.key.clone();
    match running {
        Some(pid) => {
            eprintln!("host {pid} is running on this data dir: it builds generation {} and swaps it in", key.generation)
        }
        None => {
            let mut host = Host::new(events.clone(), models.clone(), SyncConfig::default())?
                .with_module_cache(data.module_cache());
            if !host.run_generation(&record).await {
                models.fail_generation(&key, "module not in the module cache").await?;
                bail!(
                    "the module of `{projection}` is not in {}: start the host with its .wasm instead",
                    data.0.join("cache").display()
                );
            }
            offline = Some(host);
        }
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{projection} generation {}", key.generation));
    let outcome = loop {
        let g = models.generation(&key).await?;
        bar.set_length(events.head().await?);
        bar.set_position(g.checkpoint);
        match g.role {
            Role::Building if running.is_some() && data.running_host().is_none() => {
                break Err(anyhow::anyhow!(
                    "the host stopped before the rebuild finished; run `refract run` to resume it"
                ));
            }
            Role::Building => tokio::time::sleep(Duration::from_millis(100)).await,
            Role::Active => break Ok(()),
            Role::Failed => break Err(anyhow::anyhow!("rebuild failed: {}", g.last_error.unwrap_or_default())),
            Role::Retired => break Err(anyhow::anyhow!("rebuild superseded by a newer generation")),
        }
    };
    bar.finish();
    if let Some(host) = offline {
        host.shutdown().await;
    }
    drop(lock);
    outcome?;
    println!("{projection}: generation {} is active", key.generation);
    Ok(())
}

async fn import(data: &Stores, file: &std::path::Path) -> Result<()> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let mut requests = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: ImportLine =
            serde_json::from_str(&line).with_context(|| format!("line {}: not a valid event line", n + 1))?;
        requests.push(AppendRequest {
            stream_id: l.stream,
            expected: l.expected_version.map_or(ExpectedVersion::Any, ExpectedVersion::Exact),
            events: vec![NewEvent {
                event_type: l.event_type,
                payload: l.payload.to_string(),
                metadata: l.metadata.map_or_else(|| "{}".to_owned(), |m| m.to_string()),
            }],
        });
    }
    let events = data.open_events().await?;
    let appended = events.append(&requests).await?;
    let last = appended.last().map_or(0, |a| a.last_position);
    println!("imported {} events; head is now {last}", appended.len());
    Ok(())
}
