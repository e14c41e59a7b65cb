//! Append → visible latency: the time from the start of an append until the
//! account-summary projection has committed it (the commit notice that
//! HTTP reads with `min_position` wait on), with default settings (poll
//! 100 ms, batch 1,000). Appends come from the host's own store, from
//! another process (a child of this binary, as the `refract append` CLI
//! would be), and on PostgreSQL from another node's connection; each is
//! measured with wake-ups and, as the baseline, with them hidden (poll only).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_trait::async_trait;
use refract::{
    AppendRequest, Appended, DataDir, Event, EventSource, EventStore, ExpectedVersion, Host, NewEvent, SourceError,
    Subscription, SyncConfig,
};
use tokio::sync::broadcast::error::RecvError;

const PROJECTION: &str = "account-summary";
const ACCOUNT: &str = "account-latency";
/// How long one append may take to become visible before the run fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the latency part measures.
pub struct Settings<'a> {
    pub work_dir: &'a Path,
    pub plugin: &'a Path,
    /// Appends per measurement with wake-ups.
    pub appends: usize,
    /// Appends per measurement with wake-ups hidden (each waits for a poll).
    pub baseline_appends: usize,
    /// A PostgreSQL server to measure on too.
    pub postgres: Option<&'a str>,
}

/// Measures every combination and prints the table.
pub async fn run(s: &Settings<'_>) -> Result<()> {
    println!("\n## Append → visible latency, default settings (poll 100 ms, batch 1000)\n");
    println!("| events / models | appended by | runner learns of appends by | appends | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    let schema = match s.postgres {
        Some(url) => Some(PgSchema::create(url).await?),
        None => None,
    };
    for (wakeups, appends) in [(true, s.appends), (false, s.baseline_appends)] {
        if appends == 0 {
            continue;
        }
        let how = if wakeups { "wake-up (poll as fallback)" } else { "poll only (before)" };
        let dir = s.work_dir.join("latency");
        let _ = std::fs::remove_dir_all(&dir);
        let data = DataDir(dir.clone());
        let url = format!("sqlite://{}", data.events().display());
        let events: Arc<dyn EventStore> = data.open_events().await?;
        let models = data.open_models().await?;
        let host = start(events.clone(), models, s.plugin, wakeups).await?;
        let inproc = measure(&host, &mut Appender::Store(events.clone()), appends).await?;
        print_row("SQLite", "the host (library / HTTP)", how, &inproc);
        let other = measure(&host, &mut Appender::child(&url)?, appends).await?;
        print_row("SQLite", "another process", how, &other);
        host.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);

        if let Some(schema) = &schema {
            schema.reset().await?;
            let events = refract::open_events(&schema.url).await?;
            let models = refract::open_models(&schema.url).await?;
            let host = start(events.clone(), models, s.plugin, wakeups).await?;
            let inproc = measure(&host, &mut Appender::Store(events.clone()), appends).await?;
            print_row("PostgreSQL", "the host (library / HTTP)", how, &inproc);
            let node = refract::open_events(&schema.url).await?;
            let other = measure(&host, &mut Appender::Store(node), appends).await?;
            print_row("PostgreSQL", "another node (own connections)", how, &other);
            host.shutdown().await;
        }
    }
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    Ok(())
}

/// A host running account-summary with default settings.
async fn start(
    events: Arc<dyn EventStore>,
    models: Arc<dyn refract::ReadModelStore>,
    plugin: &Path,
    wakeups: bool,
) -> Result<Host> {
    let events: Arc<dyn EventStore> = if wakeups { events } else { Arc::new(PollOnly(events)) };
    let mut host = Host::new(events, models, SyncConfig::default())?;
    let plugin = host.runtime().load(plugin)?;
    host.start(plugin).await?;
    host.wait_until_caught_up().await?;
    Ok(host)
}

/// Appends `n` deposits one after the other, each once the previous one is
/// visible, and returns how long each took to become visible.
async fn measure(host: &Host, appender: &mut Appender, n: usize) -> Result<Vec<Duration>> {
    let mut notices = host.subscribe();
    // Not measured: the account is opened (or found) first.
    let opened = appender.append("AccountOpened", r#"{"owner":"ada"}"#).await?;
    visible(host, &mut notices, opened).await?;
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let token = appender.append("MoneyDeposited", r#"{"amount":1}"#).await?;
        visible(host, &mut notices, token).await?;
        took.push(started.elapsed());
    }
    Ok(took)
}

/// Waits for the commit notice that covers `token`.
async fn visible(
    host: &Host,
    notices: &mut tokio::sync::broadcast::Receiver<refract::CommitNotice>,
    token: u64,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if host.progress(PROJECTION).is_some_and(|p| p.checkpoint >= token) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Err(_) => bail!("position {token} was not visible within {TIMEOUT:?}"),
            Ok(Ok(n)) if n.projection == PROJECTION && n.checkpoint >= token => return Ok(()),
            Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            Ok(Err(RecvError::Closed)) => bail!("the host stopped"),
        }
    }
}

fn print_row(stores: &str, by: &str, how: &str, took: &[Duration]) {
    let mut ms: Vec<f64> = took.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: usize| ms[(ms.len() * q / 100).min(ms.len() - 1)];
    let max = ms.last().copied().unwrap_or(f64::NAN);
    println!("| {stores} | {by} | {how} | {} | {:.2} | {:.2} | {max:.2} |", ms.len(), at(50), at(99));
}

/// Where the measured appends come from.
enum Appender {
    /// A store in this process: the host's own, or another node's.
    Store(Arc<dyn EventStore>),
    /// Another process, appending one event per line it is sent.
    Child { child: Child, to: ChildStdin, from: BufReader<ChildStdout> },
}

impl Appender {
    /// A child of this binary in `--append-child` mode.
    fn child(url: &str) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--append-child", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the appending process")?;
        let to = child.stdin.take().context("child stdin")?;
        let from = BufReader::new(child.stdout.take().context("child stdout")?);
        Ok(Self::Child { child, to, from })
    }

    async fn append(&mut self, event_type: &str, payload: &str) -> Result<u64> {
        match self {
            Self::Store(store) => Ok(store.append(&[request(event_type, payload)]).await?[0].last_position),
            Self::Child { to, from, .. } => tokio::task::block_in_place(|| {
                writeln!(to, "{event_type} {payload}")?;
                to.flush()?;
                let mut line = String::new();
                from.read_line(&mut line)?;
                line.trim().parse().with_context(|| format!("the appending process said {line:?}"))
            }),
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        if let Self::Child { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn request(event_type: &str, payload: &str) -> AppendRequest {
    AppendRequest {
        stream_id: ACCOUNT.into(),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(event_type, payload)],
    }
}

/// `--append-child URL`: appends one event per line of stdin (`TYPE PAYLOAD`)
/// to the store at `URL`, answering each with its position.
pub async fn child(url: &str) -> Result<()> {
    let store = refract::open_events(url).await?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let (event_type, payload) = line.split_once(' ').context("expected `TYPE PAYLOAD`")?;
        let appended = store.append(&[request(event_type, payload)]).await?;
        writeln!(out, "{}", appended[0].last_position)?;
        out.flush()?;
    }
    Ok(())
}

/// The host's store with its wake-ups hidden: runners only poll, as before
/// issue 17. Everything else goes to the store itself.
struct PollOnly(Arc<dyn EventStore>);

#[async_trait]
impl EventSource for PollOnly {
    async fn head(&self) -> Result<u64, SourceError> {
        self.0.head().await
    }

    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError> {
        self.0.read(after, up_to, subscription, limit).await
    }
}

#[async_trait]
impl EventStore for PollOnly {
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        self.0.append(requests).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError> {
        self.0.stream_version(stream_id).await
    }
}

/// A schema of the benchmark's own on the PostgreSQL server, emptied before
/// each measurement and dropped at the end.
pub(crate) struct PgSchema {
    server: String,
    name: String,
    pub(crate) url: String,
}

impl PgSchema {
    async fn create(server: &str) -> Result<Self> {
        Self::create_for(server, "latency").await
    }

    /// A schema for the part `part` of the benchmark.
    pub(crate) async fn create_for(server: &str, part: &str) -> Result<Self> {
        let name = format!("refract_bench_{part}_{}", std::process::id());
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options[search_path]={name}");
        let schema = Self { server: server.to_owned(), name, url };
        schema.reset().await?;
        Ok(schema)
    }

    async fn reset(&self) -> Result<()> {
        self.execute(&format!("DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}", self.name)).await
    }

    pub(crate) async fn drop(self) -> Result<()> {
        self.execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).await
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.server).await.context("connecting to PostgreSQL")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }
}
