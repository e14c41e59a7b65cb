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

/// Peak RSS (VmHWM) of a child process, sampled every 10 ms until it exits
/// (VmHWM only grows, so the last sample is the peak up to 10 ms before exit).
fn run_sampling_peak(mut cmd: std::process::Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(exit) = child.try_wait().unwrap() {
            return (exit, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A real `refract run` projecting `events` through the `flood` fixture;
/// its peak RSS in KiB.
fn flood_run(events: &[BankEvent]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["flood"]);
    write_jsonl(&dir.path().join("flood.jsonl"), events);
    let refract = env!("CARGO_BIN_EXE_refract");
    let import = std::process::Command::new(refract)
        .arg("--data-dir")
        .arg(&data)
        .arg("import")
        .arg(dir.path().join("flood.jsonl"))
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let mut cmd = std::process::Command::new(refract);
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["run", "--exit-when-caught-up", "--batch-size", "10", "--plugins"])
        .arg(&plugins)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let (status, peak) = run_sampling_peak(cmd);
    assert!(status.success(), "the host failed under the flood: {status}");
    peak
}

fn flood_events(event_type: &'static str, n: usize) -> Vec<BankEvent> {
    (0..n).map(|i| BankEvent { stream: format!("f-{i}"), event_type, payload: serde_json::json!({}) }).collect()
}

/// 2,000 events, each reading 64 distinct absent documents by 512-byte ids
/// (128,000 distinct reads): the host caches reads within its byte budget.
#[test]
fn peak_rss_stays_bounded_under_a_get_flood() {
    let peak = flood_run(&flood_events("GetFlood", 2_000));
    println!("peak RSS under a get flood: {} MiB", peak / 1024);
    assert!(peak < 300 * 1024, "peak RSS {} MiB", peak / 1024);
}

/// 100 events, each logging five 4 MiB messages (2 GiB asked for): the
/// host cuts each line to 1 KiB and rate-limits them.
#[test]
fn peak_rss_stays_bounded_under_a_log_flood() {
    let peak = flood_run(&flood_events("LogFlood", 100));
    println!("peak RSS under a log flood: {} MiB", peak / 1024);
    assert!(peak < 300 * 1024, "peak RSS {} MiB", peak / 1024);
}
