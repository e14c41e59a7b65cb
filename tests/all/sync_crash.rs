//! Table sync under SIGKILL: the host is killed again and again while it
//! ingests a 30,000-row PostgreSQL table that two writers keep changing.
//! No row change may be lost (the copy equals the table at the end) or
//! doubled (no row change is in the event log twice). Kills are timed by
//! committed progress, not by the clock, as in `crash.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::cli::{Background, refract};
use crate::common::plugins_dir;
use crate::common::tables::{Backend, SourceDb, writer};
use crate::sync_workload::{assert_no_doubles, items_config, wait_for_copy};

const ROWS: i64 = 30_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_ingest_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(SourceDb::fresh(Backend::Postgres, dir.path()).await);
    src.create_items().await;
    // 50 rows share each timestamp, so kills land inside runs of ties.
    src.exec(&[&format!(
        "INSERT INTO items (id, n, note, updated_at) SELECT i, 0, 'seed ' || i, \
         TIMESTAMP '2024-01-01' + (i / 50) * INTERVAL '1 millisecond' FROM generate_series(1, {ROWS}) AS i"
    )])
    .await;
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["copy"]);
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, items_config(&src.url, "")).unwrap();
    let events_url = format!("sqlite://{}", data.join("events.db").display());
    std::fs::create_dir_all(&data).unwrap();
    let events = refract::open_events(&events_url).await.unwrap();
    let host = || {
        let mut cmd = refract(&data);
        cmd.arg("run").arg("--plugins").arg(&plugins).arg("--config").arg(&config).arg("--no-http");
        cmd.arg("--batch-size").arg("100");
        Background::spawn(&mut cmd)
    };

    let writers: Vec<_> = (1..=2)
        .map(|w| {
            let src = src.clone();
            tokio::spawn(async move { writer(&src, w, 4_000, Duration::from_secs(12)).await })
        })
        .collect();
    let mut rng = crate::common::Rng::new(7);
    for round in 0..6 {
        let mut h = host();
        let from = events.head().await.unwrap();
        let step = 300 + rng.below(2_000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while events.head().await.unwrap() < from + step && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.signal(libc::SIGKILL);
        h.wait(Duration::from_secs(10));
        eprintln!("round {round}: killed at {} events", events.head().await.unwrap());
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut h = host();
    h.wait_for_log("host running", Duration::from_secs(60));
    wait_for_copy(&src, &data, &h, Duration::from_secs(120)).await;
    h.signal(libc::SIGTERM);
    h.wait(Duration::from_secs(30));
    assert_no_doubles(&events_url).await;
}
