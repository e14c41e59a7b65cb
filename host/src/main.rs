//! The `refract` command line.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use refract::{
    ApiState, AppendRequest, DataDir, EventStore, ExpectedVersion, Filter, Host, NewEvent, Order, Query,
    ReadModelStore, SyncConfig,
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
    let mut host = Host::new(events, models, sync)?;
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
    let failures = host.load_plugins(&args.plugins).await?;
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
    if args.exit_when_caught_up {
        host.wait_until_caught_up().await?;
    } else {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
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
