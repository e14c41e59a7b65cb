//! Table sync under concurrent writers: 4 writers insert, update, soft- and
//! hard-delete 50,000 rows over 20 s, many rows sharing a timestamp, some
//! transactions committing late with lower values. The `copy` projection's
//! read model must then equal the table row for row, with no row change
//! emitted twice; on PostgreSQL the reference design's naive query, run
//! alongside, must be shown to lose rows on the same workload.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use refract::{DataDir, Subscription};

use crate::common::cli::{Background, refract};
use crate::common::pg::fresh_schema;
use crate::common::tables::{Backend, Db, SourceDb, copied, naive_copy, writer};
use crate::common::{all_documents, plugins_dir};

const WRITERS: u64 = 4;
const CHANGES: u64 = 50_000;
const OVER: Duration = Duration::from_secs(20);

/// refract.toml for the `items` table of the workload.
pub fn items_config(url: &str, extra: &str) -> String {
    format!(
        "[sources.items]\nurl = \"{url}\"\ntable = \"items\"\nkey = \"id\"\ntracking = \"timestamp\"\n\
         column = \"updated_at\"\ndeleted = \"deleted_at\"\nbatch_size = 500\ninterval_ms = 100\nlookback_ms = 3000\n\
         detect_hard_deletes = true\ndelete_scan_interval_ms = 1000\n{extra}"
    )
}

/// Waits until the copy equals the live rows of the table; panics with the
/// differences after `timeout`.
pub async fn wait_for_copy(src: &SourceDb, data: &std::path::Path, host: &Background, timeout: Duration) {
    let models = DataDir(data.to_owned()).open_models().await.unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let want = src.live_items().await;
        let got = copied(&all_documents(models.as_ref(), "copy", "rows").await);
        if want == got {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(*k)).take(5).collect();
            panic!(
                "the copy differs from the table ({} rows vs {}): wrong or missing {missing:?}, extra {extra:?}\n{}",
                got.len(),
                want.len(),
                host.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every row change was emitted once: no (stream, type, tracking value) twice.
pub async fn assert_no_doubles(events_url: &str) {
    let store = refract::open_events(events_url).await.unwrap();
    let head = store.head().await.unwrap();
    let events = store.read(0, head, &Subscription::default(), usize::MAX).await.unwrap();
    let mut seen: HashMap<(String, String, String), u32> = HashMap::new();
    for e in &events {
        let meta: serde_json::Value = serde_json::from_str(&e.metadata).unwrap();
        if meta.get("hard_delete").is_some() {
            continue;
        }
        *seen.entry((e.stream_id.clone(), e.event_type.clone(), meta["tracking"].to_string())).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "row changes emitted more than once: {doubled:?}");
    assert!(!events.is_empty());
}

async fn concurrent_writers(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let src = Arc::new(SourceDb::fresh(backend, dir.path()).await);
    src.create_items().await;
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["copy"]);
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, items_config(&src.url, "")).unwrap();
    // PostgreSQL sources write to a PostgreSQL event store; the others to the embedded one.
    let events_schema = if backend == Backend::Postgres { Some(fresh_schema().await) } else { None };
    let events_url = match &events_schema {
        Some(s) => s.url.clone(),
        None => format!("sqlite://{}", data.join("events.db").display()),
    };
    let mut cmd = refract(&data);
    cmd.arg("--events").arg(&events_url).arg("run").arg("--plugins").arg(&plugins);
    cmd.arg("--config").arg(&config).arg("--no-http");
    let mut host = Background::spawn(&mut cmd);
    host.wait_for_log("host running", Duration::from_secs(60));

    let stop_naive = Arc::new(AtomicBool::new(false));
    let naive = match &src.db {
        Db::Pg(pool) => {
            let (pool, stop) = (pool.clone(), stop_naive.clone());
            Some(tokio::spawn(async move { naive_copy(&pool, &stop).await }))
        }
        _ => None,
    };
    let writers: Vec<_> = (1..=WRITERS)
        .map(|w| {
            let src = src.clone();
            tokio::spawn(async move { writer(&src, w, CHANGES / WRITERS, OVER).await })
        })
        .collect();
    let mut late = 0;
    let mut deletes = (0, 0);
    for w in writers {
        let done = w.await.unwrap();
        late += done.late;
        deletes.0 += done.soft_deletes;
        deletes.1 += done.hard_deletes;
    }
    assert!(late > 20 && deletes.0 > 100 && deletes.1 > 100, "workload too tame: {late} late, {deletes:?} deletes");

    wait_for_copy(&src, &data, &host, Duration::from_secs(120)).await;
    host.signal(libc::SIGTERM);
    host.wait(Duration::from_secs(30));
    assert_no_doubles(&events_url).await;

    if let Some(naive) = naive {
        stop_naive.store(true, std::sync::atomic::Ordering::Relaxed);
        let naive = naive.await.unwrap();
        let want = src.live_items().await;
        let wrong = want.iter().filter(|(k, v)| naive.get(*k) != Some(v)).count()
            + naive.keys().filter(|k| !want.contains_key(*k)).count();
        assert!(wrong > 0, "the naive query kept up with the workload: the test would not catch a regression to it");
        eprintln!("naive query: {wrong} of {} rows wrong or missing", want.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_copy_equals_table_and_naive_query_loses_rows() {
    concurrent_writers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_copy_equals_table() {
    concurrent_writers(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_copy_equals_table() {
    concurrent_writers(Backend::Sqlite).await;
}
