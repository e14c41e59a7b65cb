//! Event stores side by side, in one run: append throughput (one event per
//! append, several appenders at once, which every backend takes, JetStream
//! included) and projection throughput of the account-summary plugin
//! reading each backend into SQLite read models.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use refract::{AppendRequest, DataDir, EventStore, ExpectedVersion, Host, NewEvent};

use super::latency::PgSchema;
use super::{median, pad, sync};

/// What the part measures, from the command line.
pub struct Settings<'a> {
    pub work_dir: &'a std::path::Path,
    pub plugin: &'a std::path::Path,
    /// Events each backend is filled with and projected.
    pub events: usize,
    /// Timed single-event appends per backend.
    pub appends: usize,
    /// Appenders at once.
    pub appenders: usize,
    pub accounts: usize,
    pub runs: usize,
    pub postgres: Option<&'a str>,
    pub nats: Option<&'a str>,
}

/// The `n`th bank event of the benchmark's sequence.
fn event(i: usize, accounts: usize) -> AppendRequest {
    let (stream, event_type, payload) = if i < accounts {
        let p = format!(r#"{{"owner":"owner-{}","initial_deposit":{}"#, i % 37, (i % 5) * 100);
        (format!("account-{i}"), "AccountOpened", p)
    } else {
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let kind = if h.is_multiple_of(3) { "MoneyWithdrawn" } else { "MoneyDeposited" };
        (format!("account-{}", (h >> 8) % accounts as u64), kind, format!(r#"{{"amount":{}"#, 1 + (h >> 32) % 500))
    };
    AppendRequest {
        stream_id: stream,
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(event_type, pad(payload))],
    }
}

/// Appends events `from..to`, one per append, from `appenders` tasks; events/s.
async fn append_each(
    store: &Arc<dyn EventStore>,
    from: usize,
    to: usize,
    appenders: usize,
    accounts: usize,
) -> Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut i = from + t;
                while i < to {
                    store.append(&[event(i, accounts)]).await?;
                    i += appenders;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((to - from) as f64 / started.elapsed().as_secs_f64())
}

/// Fills the store up to `n` events the fastest way it takes them.
async fn fill(
    store: &Arc<dyn EventStore>,
    jetstream: Option<&str>,
    from: usize,
    n: usize,
    s: &Settings<'_>,
) -> Result<()> {
    if let Some(url) = jetstream {
        return publish(url, from, n, s.accounts).await;
    }
    let mut i = from;
    while i < n {
        let to = (i + 10_000).min(n);
        let requests: Vec<_> = (i..to).map(|i| event(i, s.accounts)).collect();
        store.append(&requests).await?;
        i = to;
    }
    Ok(())
}

/// Fills refract's JetStream stream at `url` with events `from..n` as a
/// producer outside refract would: plain publishes in refract's message
/// format (subject `refract.STREAM.ID`, version and type headers), sent
/// back to back with their acknowledgements awaited in bulk. Refract's own
/// append takes one event and three round trips, too slow to fill 1M.
async fn publish(url: &str, from: usize, n: usize, accounts: usize) -> Result<()> {
    let (server, stream) = url.rsplit_once('/').context("a nats://HOST:PORT/STREAM url")?;
    let js = async_nats::jetstream::new(async_nats::connect(server).await?);
    let mut versions = std::collections::HashMap::<String, u64>::new();
    for i in 0..from {
        *versions.entry(event(i, accounts).stream_id).or_default() += 1;
    }
    // The client lets 5,000 acknowledgements be awaited at once (max_ack_inflight)
    // and holds further publishes until they are: a larger chunk never ends.
    let mut acks = Vec::with_capacity(1_000);
    for i in from..n {
        let r = event(i, accounts);
        let version = versions.entry(r.stream_id.clone()).or_default();
        *version += 1;
        let e = &r.events[0];
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Refract-Stream-Version", version.to_string().as_str());
        headers.insert("Refract-Event-Type", serde_json::to_string(&e.event_type)?.as_str());
        let subject = format!("refract.{stream}.{}", r.stream_id);
        acks.push(js.publish_with_headers(subject, headers, e.payload.clone().into()).await?);
        if acks.len() == 1_000 || i + 1 == n {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    Ok(())
}

/// Projects the whole store into fresh SQLite models; events/s.
async fn project(dir: &std::path::Path, store: &Arc<dyn EventStore>, plugin: &std::path::Path) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let models = DataDir(dir.to_owned()).open_models().await?;
    let mut host = Host::new(store.clone(), models.clone(), sync(1000, 50_000))?;
    let loaded = host.runtime().load(plugin)?;
    let head = store.head().await?;
    let started = Instant::now();
    host.start(loaded).await?;
    host.wait_until_caught_up().await?;
    let rate = head as f64 / started.elapsed().as_secs_f64();
    super::check_caught_up(&*models, "account-summary", head).await?;
    host.shutdown().await;
    models.close().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(rate)
}

pub async fn run(s: &Settings<'_>) -> Result<()> {
    println!(
        "\n## Event stores side by side: {} timed single-event appends ({} appenders), then {} events projected \
         (batch 1000) into SQLite, median of {} runs\n",
        s.appends, s.appenders, s.events, s.runs
    );
    println!("| events in | appends/s (1 event each) | projection events/s | projection vs SQLite |");
    println!("|---|---|---|---|");
    let mut backends: Vec<(&str, String, bool)> = Vec::new();
    let sqlite = s.work_dir.join("backends-events.db");
    let _ = std::fs::remove_file(&sqlite);
    let _ = std::fs::remove_file(sqlite.with_extension("db-wal"));
    backends.push(("SQLite", format!("sqlite://{}", sqlite.display()), false));
    let schema = match s.postgres {
        Some(server) => Some(PgSchema::create_for(server, "backends").await?),
        None => None,
    };
    if let Some(schema) = &schema {
        backends.push(("PostgreSQL", schema.url.clone(), false));
    }
    let stream = format!("REFRACT_BENCH_{}", std::process::id());
    if let Some(nats) = s.nats {
        backends.push(("JetStream", format!("{}/{stream}", nats.trim_end_matches('/')), true));
    }
    let mut baseline = f64::NAN;
    for (name, url, single_only) in &backends {
        let store = refract::open_events(url).await.with_context(|| format!("opening {name}"))?;
        let appended = append_each(&store, 0, s.appends, s.appenders, s.accounts).await?;
        eprintln!("filling {name} to {} events ...", s.events);
        fill(&store, single_only.then_some(url.as_str()), s.appends, s.events, s).await?;
        let mut rates = Vec::new();
        for _ in 0..s.runs {
            rates.push(project(&s.work_dir.join("backends-models"), &store, s.plugin).await?);
        }
        let rate = median(&mut rates);
        if baseline.is_nan() {
            baseline = rate;
        }
        println!("| {name} | {appended:.0} | {rate:.0} | {:.2} |", rate / baseline);
    }
    if let Some(schema) = schema {
        schema.drop().await?;
    }
    if let Some(nats) = s.nats {
        let client = async_nats::connect(nats).await?;
        let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
    }
    let _ = std::fs::remove_file(&sqlite);
    Ok(())
}
