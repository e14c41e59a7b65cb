//! Table sync sources failing while the host runs: the source database
//! unreachable (its connections go through a proxy the test kills, then
//! brings back), the tracking column renamed, its type changed. Each time
//! the source must show an error naming itself and what is wrong (in
//! `GET /sources`, `/metrics` and `refract sources`), the projection must
//! keep serving, and after recovery the events must be exactly the row
//! changes the test made, none lost, none doubled. Also the rows-pending
//! figure: changes made while the host is stopped are counted, then fall
//! to 0 once synced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use refract::{EventSource, SqliteEventStore, Subscription};
use serde_json::{Value, json};

use crate::common::cli::{Background, refract, succeed};
use crate::common::http::Client;
use crate::common::plugins_dir;
use crate::common::proxy::Proxy;
use crate::common::tables::{Backend, SourceDb};
use crate::sync_workload::{items_config, wait_for_copy};

/// One row change as its event must show it: type, `n`, `note`.
type Change = (String, i64, String);

/// The SQL for "now" in the tracking column's type.
fn now(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "now()",
        Backend::MariaDb => "NOW(6)",
        Backend::Sqlite => "strftime('%Y-%m-%d %H:%M:%f', 'now')",
    }
}

/// The changes the test made, by stream, in order: what the events must be.
#[derive(Default)]
struct Expected(BTreeMap<String, Vec<Change>>);

impl Expected {
    fn upsert(&mut self, id: i64, n: i64, note: &str) {
        self.0.entry(format!("items-{id}")).or_default().push(("RowUpserted".into(), n, note.into()));
    }
    fn delete(&mut self, id: i64, n: i64, note: &str) {
        self.0.entry(format!("items-{id}")).or_default().push(("RowDeleted".into(), n, note.into()));
    }
}

/// Every event in the host's store, as the same map.
async fn emitted(data: &Path) -> BTreeMap<String, Vec<Change>> {
    let store = SqliteEventStore::open(&data.join("events.db")).await.unwrap();
    let head = store.head().await.unwrap();
    let mut out: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for e in store.read(0, head, &Subscription::default(), usize::MAX).await.unwrap() {
        let p: Value = serde_json::from_str(&e.payload).unwrap();
        out.entry(e.stream_id).or_default().push((
            e.event_type,
            p["n"].as_i64().unwrap(),
            p["note"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// Where a `refract run --http 127.0.0.1:0` child serves, from its log.
fn http_addr(host: &mut Background) -> SocketAddr {
    host.wait_for_log("HTTP API listening", Duration::from_secs(60));
    let log = host.log();
    let line = log.lines().find(|l| l.contains("HTTP API listening")).unwrap();
    let at = line.find("127.0.0.1:").unwrap();
    let end = line[at..].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).map_or(line.len(), |e| at + e);
    line[at..end].parse().unwrap()
}

/// Polls `GET /sources` until the `items` entry satisfies `done`; returns it.
async fn wait_source(client: &mut Client, host: &Background, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let sources = client.get("/sources").await.json();
        let items = sources.as_array().unwrap().iter().find(|s| s["name"] == "items").cloned().unwrap();
        if done(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "the source never {what}: {items}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// While the source fails: the error is shown everywhere, naming the
/// source; the projection still answers with what it had.
async fn assert_failing(client: &mut Client, data: &Path, toml: &Path, error: &str, copied: usize) {
    let metrics = client.get("/metrics").await.text;
    assert!(metrics.contains("refract_source_errors{source=\"items\"} 1\n"), "{metrics}");
    let listed = succeed(refract(data).arg("sources").arg("--config").arg(toml));
    let line = listed.lines().find(|l| l.starts_with("items ")).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.ends_with(error), "{listed}");
    let count = client.get("/projections/copy/rows?count=true").await;
    assert_eq!((count.status, count.json()), (200, json!({ "count": copied })));
}

async fn faults(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceDb::fresh(backend, dir.path()).await;
    src.create_items().await;
    let ts = now(backend);
    let mut want = Expected::default();
    for id in 1..=40 {
        src.exec(&[&format!("INSERT INTO items (id, n, note, updated_at) VALUES ({id}, {id}, 'v1', {ts})")]).await;
        want.upsert(id, id, "v1");
    }
    // PostgreSQL and MariaDB are reached through a proxy the test can kill.
    let (mut proxy, url) = match backend {
        Backend::Sqlite => (None, src.url.clone()),
        _ => {
            let (p, url) = Proxy::for_url(&src.url).await;
            (Some(p), url)
        }
    };
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["copy"]);
    let toml = dir.path().join("refract.toml");
    std::fs::write(&toml, items_config(&url, "")).unwrap();
    let mut cmd = refract(&data);
    cmd.arg("run").arg("--plugins").arg(&plugins).arg("--config").arg(&toml).arg("--http").arg("127.0.0.1:0");
    let mut host = Background::spawn(&mut cmd);
    let mut client = Client::connect(http_addr(&mut host)).await;

    wait_source(&mut client, &host, "synced the first rows", |s| s["rows"] == 40 && s["rows_pending"] == 0).await;
    wait_for_copy(&src, &data, &host, Duration::from_secs(60)).await;
    let metrics = client.get("/metrics").await.text;
    assert!(metrics.contains("refract_source_rows_pending{source=\"items\"} 0\n"), "{metrics}");
    assert!(metrics.contains("refract_source_errors{source=\"items\"} 0\n"), "{metrics}");
    let mut synced = 40;
    // Documents in the copy: rows not soft-deleted.
    let mut live = 40;

    if let Some(proxy) = proxy.as_mut() {
        // The database goes out of reach; the table keeps changing.
        proxy.kill().await;
        for id in 1..=10 {
            src.exec(&[&format!("UPDATE items SET n = n + 100, note = 'v2', updated_at = {ts} WHERE id = {id}")]).await;
            want.upsert(id, id + 100, "v2");
        }
        for id in 41..=60 {
            src.exec(&[&format!("INSERT INTO items (id, n, note, updated_at) VALUES ({id}, {id}, 'v1', {ts})")]).await;
            want.upsert(id, id, "v1");
        }
        for id in 11..=15 {
            src.exec(&[&format!("UPDATE items SET deleted_at = {ts}, updated_at = {ts} WHERE id = {id}")]).await;
            want.delete(id, id, "v1");
        }
        let failing = wait_source(&mut client, &host, "showed the outage", |s| s["last_error"].is_string()).await;
        let error = failing["last_error"].as_str().unwrap().to_owned();
        assert!(error.starts_with("source `items`: the source database is unreachable: "), "{failing}");
        // Nothing counted while it cannot be asked, nothing lost from what was synced.
        assert_eq!((failing["rows"].clone(), failing["rows_pending"].clone()), (json!(40), Value::Null));
        assert_failing(&mut client, &data, &toml, &error, 40).await;

        proxy.revive().await;
        synced += 35;
        live += 20 - 5;
        wait_source(&mut client, &host, "recovered from the outage", |s| {
            s["last_error"].is_null() && s["rows"] == synced
        })
        .await;
        wait_for_copy(&src, &data, &host, Duration::from_secs(60)).await;
        assert_eq!(emitted(&data).await, want.0, "{}", host.log());
    }

    // The tracking column renamed while running: the source names the
    // setting that no longer fits; changes made meanwhile are synced after.
    src.exec(&["ALTER TABLE items RENAME COLUMN updated_at TO changed_at"]).await;
    let missing = "source `items`: `column`: no column `updated_at` in table `items`";
    let failing = wait_source(&mut client, &host, "showed the renamed column", |s| s["last_error"] == missing).await;
    assert_eq!((failing["rows"].clone(), failing["rows_pending"].clone()), (json!(synced), Value::Null));
    for id in 16..=20 {
        src.exec(&[&format!("UPDATE items SET n = n + 1000, note = 'v3', changed_at = {ts} WHERE id = {id}")]).await;
        want.upsert(id, id + 1000, "v3");
    }
    assert_failing(&mut client, &data, &toml, missing, live).await;
    src.exec(&["ALTER TABLE items RENAME COLUMN changed_at TO updated_at"]).await;
    synced += 5;
    wait_source(&mut client, &host, "recovered from the rename", |s| s["last_error"].is_null() && s["rows"] == synced)
        .await;
    wait_for_copy(&src, &data, &host, Duration::from_secs(60)).await;
    assert_eq!(emitted(&data).await, want.0, "{}", host.log());

    // Its type changed to text, and back (SQLite has no column types to change).
    if backend != Backend::Sqlite {
        let (to_text, text, back, text_now) = match backend {
            Backend::Postgres => (
                "ALTER TABLE items ALTER COLUMN updated_at TYPE TEXT",
                "text",
                "ALTER TABLE items ALTER COLUMN updated_at TYPE TIMESTAMP(6) USING updated_at::timestamp(6)",
                "now()::timestamp(6)::text",
            ),
            _ => (
                "ALTER TABLE items MODIFY updated_at VARCHAR(40) NOT NULL",
                "varchar(40)",
                "ALTER TABLE items MODIFY updated_at DATETIME(6) NOT NULL",
                "NOW(6)",
            ),
        };
        src.exec(&[to_text]).await;
        let wrong = format!(
            "source `items`: `column`: column `updated_at` has type {text}: timestamp tracking needs a timestamp column"
        );
        wait_source(&mut client, &host, "showed the changed type", |s| s["last_error"] == wrong.as_str()).await;
        for id in 21..=25 {
            src.exec(&[&format!(
                "UPDATE items SET n = n + 1000, note = 'v4', updated_at = {text_now} WHERE id = {id}"
            )])
            .await;
            want.upsert(id, id + 1000, "v4");
        }
        assert_failing(&mut client, &data, &toml, &wrong, live).await;
        src.exec(&[back]).await;
        synced += 5;
        wait_source(&mut client, &host, "recovered from the type change", |s| {
            s["last_error"].is_null() && s["rows"] == synced
        })
        .await;
        wait_for_copy(&src, &data, &host, Duration::from_secs(60)).await;
        assert_eq!(emitted(&data).await, want.0, "{}", host.log());
    }
    host.signal(libc::SIGTERM);
    host.wait(Duration::from_secs(30));
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_renamed_and_retyped_column() {
    faults(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_renamed_and_retyped_column() {
    faults(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_renamed_column() {
    faults(Backend::Sqlite).await;
}

/// `refract sources --json` for the `items` source.
fn listed(data: &Path, toml: &Path) -> Value {
    let out = succeed(refract(data).arg("sources").arg("--config").arg(toml).arg("--json"));
    let all: Value = serde_json::from_str(&out).unwrap();
    all.as_array().unwrap().iter().find(|s| s["name"] == "items").cloned().unwrap()
}

/// Waits until `refract sources` shows `rows` synced.
fn wait_listed(data: &Path, toml: &Path, rows: u64, host: &Background) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = listed(data, toml);
        if s["rows"] == rows {
            return s;
        }
        assert!(Instant::now() < deadline, "{s}\n{}", host.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rows-pending figure: 0 when synced; with the host stopped, one per
/// row changed; 0 again once the restarted host has synced them.
async fn rows_pending(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceDb::fresh(backend, dir.path()).await;
    src.create_items().await;
    let ts = now(backend);
    for id in 1..=10 {
        src.exec(&[&format!("INSERT INTO items (id, n, note, updated_at) VALUES ({id}, {id}, 'a', {ts})")]).await;
    }
    let data = dir.path().join("data");
    let toml = dir.path().join("refract.toml");
    std::fs::write(&toml, items_config(&src.url, "")).unwrap();
    let empty = dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let run = || {
        let mut cmd = refract(&data);
        cmd.arg("run").arg("--plugins").arg(&empty).arg("--config").arg(&toml).arg("--no-http");
        let mut host = Background::spawn(&mut cmd);
        host.wait_for_log("host running", Duration::from_secs(60));
        host
    };
    let mut host = run();
    let s = wait_listed(&data, &toml, 10, &host);
    assert_eq!(s["rows_pending"], 0, "{s}");
    host.signal(libc::SIGTERM);
    host.wait(Duration::from_secs(30));

    // Stopped: 3 updates, 1 soft delete, 4 inserts.
    for id in 1..=3 {
        src.exec(&[&format!("UPDATE items SET n = n + 1, updated_at = {ts} WHERE id = {id}")]).await;
    }
    src.exec(&[&format!("UPDATE items SET deleted_at = {ts}, updated_at = {ts} WHERE id = 4")]).await;
    for id in 11..=14 {
        src.exec(&[&format!("INSERT INTO items (id, n, note, updated_at) VALUES ({id}, {id}, 'b', {ts})")]).await;
    }
    let s = listed(&data, &toml);
    assert_eq!((s["rows"].clone(), s["rows_pending"].clone()), (json!(10), json!(8)), "{s}");
    let table = succeed(refract(&data).arg("sources").arg("--config").arg(&toml));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table.lines().find(|l| l.starts_with("items ")).unwrap().split_whitespace().collect();
    assert_eq!((header[3], row[3]), ("PENDING", "8"), "{table}");

    let mut host = run();
    let s = wait_listed(&data, &toml, 18, &host);
    assert_eq!(s["rows_pending"], 0, "{s}");
    host.signal(libc::SIGTERM);
    host.wait(Duration::from_secs(30));
}

#[tokio::test]
async fn rows_pending_on_postgres() {
    rows_pending(Backend::Postgres).await;
}

#[tokio::test]
async fn rows_pending_on_mariadb() {
    rows_pending(Backend::MariaDb).await;
}

#[tokio::test]
async fn rows_pending_on_sqlite() {
    rows_pending(Backend::Sqlite).await;
}
