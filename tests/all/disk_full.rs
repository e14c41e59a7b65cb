//! Issue 16, item 6: a full disk must not wedge the host, and must show.
//!
//! The data dir lives on a small tmpfs (the tests run as root, as CI does).
//! The disk is filled for real, with a filler file, while a projection has
//! events to commit; its commits and new appends fail with SQLite's
//! "database or disk is full". `Progress`, `/health` and `/metrics` must
//! show the error while it lasts. Once the filler is deleted, the same host,
//! without a restart, must accept appends again and bring the projection to
//! the head with every account right.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;

use common::http::{Client, start_api};
use common::*;
use refract::{EventStore, ProjectionState, SyncConfig};
use serde_json::json;

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_kib: u64) -> Self {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("could not run `mount`");
        assert!(
            out.status.success(),
            "mounting a {size_kib} KiB tmpfs on {} failed: this test must run as root (as CI runs it) \
             to fill a real disk: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file a leaked handle still holds must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An account opening whose owner name is wide, so the event and its
/// document both take real space.
fn wide_open(i: usize) -> BankEvent {
    BankEvent {
        stream: format!("account-{i}"),
        event_type: "AccountOpened",
        payload: json!({ "owner": format!("owner-{i}-{}", "x".repeat(400)), "initial_deposit": 100 }),
    }
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 16 * 1024];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    // Whatever is left is smaller than a block: take it too.
    for _ in 0..16 * 1024 {
        if f.write(&[0u8]).is_err() {
            break;
        }
    }
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_shows_and_the_host_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let _tmpfs = Tmpfs::mount(&data, 16 * 1024);
    let stores = Stores::open(&data).await;

    // Scheduled mode: after catching up the runner sleeps 10 s, the window
    // in which the test fills the disk behind its back.
    let sync = SyncConfig { interval: Some(Duration::from_secs(10)), ..SyncConfig::default() };
    let mut host = stores.host(sync);
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    let addr = start_api(&host).await;
    // A connection per request: the test waits longer than the server keeps
    // an idle connection open (its header deadline).
    let http = || async move { Client::connect(addr).await };

    let mut all = bank_events(100, 1_000, 16);
    append_all(stores.events.as_ref(), &all).await;
    host.wait_until_caught_up().await.unwrap();
    let caught_up = host.progress("account-summary").unwrap().checkpoint;
    assert_eq!(caught_up, 1_000);

    // Events the projection has not seen, then a full disk.
    let pending: Vec<BankEvent> = (100..2_100).map(wide_open).collect();
    append_all(stores.events.as_ref(), &pending).await;
    all.extend(pending);
    let filler = data.join("filler");
    fill(&filler);
    // Appends fail once SQLite's free pages are used up.
    let mut next = 2_100;
    let full = loop {
        let batch: Vec<BankEvent> = (next..next + 50).map(wide_open).collect();
        match stores.events.append(&requests(&batch)).await {
            Ok(_) => {
                all.extend(batch);
                next += 50;
                assert!(next < 20_000, "appends kept succeeding on a full 16 MiB tmpfs");
            }
            Err(e) => break e.to_string(),
        }
    };
    assert!(full.contains("full"), "the append failed, but not for a full disk: {full}");
    let progress = host.progress("account-summary").unwrap();
    assert_eq!(
        progress.checkpoint, caught_up,
        "the runner projected before the disk was full (a machine too slow for the 10 s window?)"
    );

    // The runner wakes up, cannot commit, and says so while it retries.
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let p = host.progress("account-summary").unwrap();
        if p.last_error.is_some() || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(progress.state, ProjectionState::Running, "{progress:?}");
    let error = progress.last_error.clone().unwrap_or_default();
    assert!(error.starts_with("store unavailable") && error.contains("full"), "{progress:?}");
    let health = http().await.get("/health").await;
    assert_eq!(health.status, 503, "{}", health.text);
    let body = health.json();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["store_errors"][0]["projection"], "account-summary", "{body}");
    assert!(body["store_errors"][0]["error"].as_str().unwrap().contains("full"), "{body}");
    let metrics = http().await.get("/metrics").await.text;
    assert!(
        metrics.contains(
            "refract_projection_store_error{projection=\"account-summary\",generation=\"1\",role=\"active\"} 1"
        ),
        "{metrics}"
    );
    let listed = http().await.get("/projections").await.json();
    assert!(listed[0]["store_error"].as_str().unwrap().contains("full"), "{listed}");

    // Space comes back: the same host, not restarted, takes appends again
    // (the connection the failure broke is not reused) and catches up.
    std::fs::remove_file(&filler).unwrap();
    // Deposits to the wide accounts, which are open.
    let after: Vec<BankEvent> = (0..500)
        .map(|i| BankEvent {
            stream: format!("account-{}", 100 + i * 3),
            event_type: "MoneyDeposited",
            payload: json!({ "amount": 1 + i }),
        })
        .collect();
    stores.events.append(&requests(&after)).await.expect("appends must succeed once space is freed");
    all.extend(after);
    let head = all.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let progress = loop {
        let p = host.progress("account-summary").unwrap();
        if (p.checkpoint >= head && p.last_error.is_none()) || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(progress.checkpoint, head, "the host did not recover by itself: {progress:?}");
    assert_eq!(progress.state, ProjectionState::Running, "{progress:?}");
    assert_eq!(progress.last_error, None);
    let health = http().await.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let metrics = http().await.get("/metrics").await.text;
    assert!(
        metrics.contains(
            "refract_projection_store_error{projection=\"account-summary\",generation=\"1\",role=\"active\"} 0"
        ),
        "{metrics}"
    );
    host.shutdown().await;

    let docs = all_documents(stores.models_dyn().as_ref(), "account-summary", "accounts").await;
    let expected = expected_accounts(&all);
    assert_eq!(docs.len(), expected.len());
    assert_accounts(&docs, &expected);
    drop(stores);
}
