//! The `refract` command line.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use refract::{
    AppendRequest, Config, DataDir, EventStore, ExpectedVersion, Filter, Host, NewEvent, Order, Query, ReadModelStore,
    SyncConfig,
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: load every *.wasm in the plugins folder and keep their read models in sync.
    Run(RunArgs),
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
    /// Exit once every projection has reached the head (or faulted), instead of following new events.
    #[arg(long)]
    exit_when_caught_up: bool,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "refract=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs piped to a file or a test stay greppable.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let data = DataDir(cli.data_dir);
    match cli.command {
        Command::Run(args) => run(&data, args).await,
        Command::Append { stream, event_type, payload, metadata, expected_version } => {
            let events = data.open_events().await.context("opening the event store")?;
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
            let models: Arc<dyn ReadModelStore> = data.open_models().await.context("opening the read-model store")?;
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
            let models: Arc<dyn ReadModelStore> = data.open_models().await.context("opening the read-model store")?;
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
            let events = data.open_events().await.context("opening the event store")?;
            let models = data.open_models().await.context("opening the read-model store")?;
            let status = refract::status(events.as_ref(), models.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<10} {:>4} {:>10} {:>10} {:>10}  {:<8} LAST ERROR",
                "PROJECTION", "VERSION", "GEN", "CHECKPOINT", "HEAD", "LAG", "STATE"
            );
            for s in status {
                println!(
                    "{:<24} {:<10} {:>4} {:>10} {:>10} {:>10}  {:<8} {}",
                    s.name,
                    s.version,
                    s.generation,
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
            let models = data.open_models().await.context("opening the read-model store")?;
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
            let models = data.open_models().await.context("opening the read-model store")?;
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

/// The config file: `--config`, else `./refract.toml` if it exists, else the defaults.
fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    let default = std::path::Path::new("refract.toml");
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if default.is_file() => Ok(Config::load(default)?),
        None => Ok(Config::default()),
    }
}

async fn run(data: &DataDir, args: RunArgs) -> Result<()> {
    let sync = SyncConfig {
        batch_size: args.batch_size.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        interval: args.interval_ms.map(Duration::from_millis),
        poll: Duration::from_millis(args.poll_ms.max(1)),
    };
    let events = data.open_events().await.context("opening the event store")?;
    let models = data.open_models().await.context("opening the read-model store")?;
    let config = load_config(args.config.as_deref())?;
    let mut host = Host::with_config(events, models, sync, config)?;
    let failures = host.load_plugins(&args.plugins).await?;
    tracing::info!(
        projections = host.projections().len(),
        rejected = failures.len(),
        plugins = %args.plugins.display(),
        "host running"
    );
    if args.exit_when_caught_up {
        host.wait_until_caught_up().await?;
    } else {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
    }
    host.shutdown().await;
    Ok(())
}

async fn import(data: &DataDir, file: &std::path::Path) -> Result<()> {
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
    let events = data.open_events().await.context("opening the event store")?;
    let appended = events.append(&requests).await?;
    let last = appended.last().map_or(0, |a| a.last_position);
    println!("imported {} events; head is now {last}", appended.len());
    Ok(())
}
