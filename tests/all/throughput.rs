//! Projection throughput: N small bank events through `account-summary`
//! into each read-model backend. Benchmarks, not tests: `#[ignore]`d, run with
//! `REFRACT_BENCH_EVENTS=1000000 cargo test --release -p refract --test all -- --ignored --nocapture --test-threads 1 throughput::`.
//! Numbers are in BENCHMARKS.md.

use crate::common;

use std::time::Instant;

use common::*;
use refract::{EventStore, Host, ReadModelStore, SyncConfig};
use std::sync::Arc;

fn events_wanted() -> usize {
    std::env::var("REFRACT_BENCH_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000)
}

async fn measure(label: &str, events: Arc<dyn EventStore>, models: Arc<dyn ReadModelStore>) {
    let n = events_wanted();
    let generated = bank_events(10_000, n, 1);
    let started = Instant::now();
    append_all(events.as_ref(), &generated).await;
    let appended = started.elapsed();
    let (read_median, read_max) = stream_reads(events.as_ref()).await;
    let mut host = Host::new(events.clone(), models.clone(), SyncConfig::default()).unwrap();
    let plugin = host.runtime().load(&plugin("account_summary")).unwrap();
    let started = Instant::now();
    host.start(plugin).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let projected = started.elapsed();
    assert_eq!(host.progress("account-summary").unwrap().checkpoint, n as u64);
    host.shutdown().await;
    eprintln!(
        "{label}: appended {n} events in {:.1} s ({:.0}/s); read one stream's events in {:.2} ms (median of 200, max {:.2}); projected in {:.1} s, {:.0} events/s",
        appended.as_secs_f64(),
        n as f64 / appended.as_secs_f64(),
        read_median * 1e3,
        read_max * 1e3,
        projected.as_secs_f64(),
        n as f64 / projected.as_secs_f64()
    );
}

/// How long reading one whole stream takes (as `GET /streams/{id}` does),
/// over 200 of the streams just appended to: median and max, in seconds.
async fn stream_reads(events: &dyn EventStore) -> (f64, f64) {
    let mut times = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        let read = events.read_stream(&format!("account-{}", i * 37), 0, 10_000).await.unwrap();
        times.push(started.elapsed().as_secs_f64());
        assert!(!read.is_empty() && read.iter().zip(1..).all(|(e, v)| e.stream_version == v));
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; see BENCHMARKS.md"]
async fn sqlite_projection_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let url = |f: &str| format!("sqlite://{}", dir.path().join(f).display());
    let events = refract::open_events(&url("events.db")).await.unwrap();
    let models = refract::open_models(&url("models.db")).await.unwrap();
    measure("sqlite", events, models).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; see BENCHMARKS.md"]
async fn postgres_projection_throughput() {
    let schema = pg::fresh_schema().await;
    let url = schema.url.clone();
    let events = refract::open_events(&url).await.unwrap();
    let models = refract::open_models(&url).await.unwrap();
    measure("postgres", events, models).await;
}
