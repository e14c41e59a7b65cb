//! Corrupt pages in `events.db` fault the projection with SQLite's own
//! message, instead of leaving it `running` and retrying a read that can
//! never succeed.

use crate::common;

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use common::*;
use refract::{ProjectionState, SyncConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_pages_in_the_event_store_fault_the_projection_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let stores = Stores::open(dir.path()).await;
        append_all(stores.events.as_ref(), &bank_events(200, 5_000, 8)).await;
    }
    // Everything in the file itself, none of it in the WAL.
    let path = dir.path().join("events.db");
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    let wal = dir.path().join("events.db-wal");
    assert!(std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0, "the WAL was checkpointed into events.db");

    // Garbage over the middle fifth of the file: event pages, well past the
    // header and the schema on the first pages.
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 64 * 4096, "events.db is {len} bytes");
    let (from, to) = (len * 2 / 5 / 4096 * 4096, len * 3 / 5 / 4096 * 4096);
    let mut rng = Rng::new(99);
    let garbage: Vec<u8> = (from..to).map(|_| rng.next() as u8).collect();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(from)).unwrap();
    file.write_all(&garbage).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let stores = Stores::open(dir.path()).await;
    let mut host = stores.host(SyncConfig { batch_size: 500, ..SyncConfig::default() });
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), host.wait_until_caught_up())
        .await
        .expect("the projection faults instead of retrying a corrupt read forever")
        .unwrap();
    let progress = host.progress("account-summary").unwrap();
    host.shutdown().await;
    assert_eq!(progress.state, ProjectionState::Faulted, "{progress:?}");
    let error = progress.last_error.clone().unwrap_or_default();
    assert!(error.contains("malformed") || error.contains("corrupt"), "{error}");
    assert!(progress.checkpoint < 5_000, "{progress:?}");
}
