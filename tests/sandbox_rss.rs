//! The host's memory stays bounded while a memory-bomb plugin is retried.
//! Its own test binary, so the peak RSS it reads is this test's alone (the
//! other end-to-end tests share `tests/all/`).

#[path = "all/common/mod.rs"]
mod common;

use common::*;
use refract::{ProjectionState, SyncConfig};

/// Peak resident set size of this process so far, in KiB (Linux `VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_rss_stays_bounded_under_a_memory_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    append_all(stores.events.as_ref(), &bank_events(10, 64, 2)).await;
    let before = peak_rss_kib();
    // 64 MiB per instance, 3 retries plus bisection over 8-event batches:
    // the bomb is instantiated and stopped at its cap about ten times.
    let config = "[defaults]\nmemory_mib = 64\nretries = 3\nbackoff_ms = 10";
    let mut host = stores.host_with(SyncConfig { batch_size: 8, ..SyncConfig::default() }, config);
    host.start(host.runtime().load(&plugin("memory_bomb")).unwrap()).await.unwrap();
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let bomb = host.progress("memory-bomb").unwrap();
    assert_eq!(bomb.state, ProjectionState::Faulted);
    assert!(bomb.last_error.as_deref().unwrap_or("").starts_with("memory limit: "), "{bomb:?}");
    assert_eq!(host.progress("account-summary").unwrap().checkpoint, 64);
    host.shutdown().await;
    let peak = peak_rss_kib();
    println!("peak RSS: {} MiB (before the bomb: {} MiB)", peak / 1024, before / 1024);
    // Unbounded, the bomb would take the whole 4 GiB of a wasm32 memory.
    assert!(peak < 400 * 1024, "peak RSS {} MiB", peak / 1024);
}
