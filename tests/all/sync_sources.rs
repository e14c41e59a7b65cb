//! Table sync sources one by one: each tracking strategy on each backend
//! with the exact payloads (type conversions), keyset ties at page
//! boundaries, resets, and every bad configuration by its exact error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use refract::{Event, EventSource, SqliteEventStore, Subscription, Syncers};
use serde_json::{Value, json};

use crate::common::cli::{output, refract, succeed};
use crate::common::plugins_dir;
use crate::common::tables::{Backend, SourceDb};

/// A source named `t` on `url` with `extra` settings.
fn config(url: &str, extra: &str) -> Vec<refract::SourceConfig> {
    refract::Config::parse(&format!("[sources.t]\nurl = \"{url}\"\ninterval_ms = 20\n{extra}"))
        .unwrap()
        .sources()
        .unwrap()
}

async fn log(dir: &std::path::Path) -> Arc<SqliteEventStore> {
    Arc::new(SqliteEventStore::open(&dir.join("events.db")).await.unwrap())
}

/// Waits until the store holds `n` events; all of them.
async fn events(store: &SqliteEventStore, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let head = store.head().await.unwrap();
        if head as usize >= n {
            // A little longer: nothing more may come.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let head = store.head().await.unwrap();
            return store.read(0, head, &Subscription::default(), usize::MAX).await.unwrap();
        }
        assert!(Instant::now() < deadline, "only {head} events of {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(events: &[Event]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .map(|e| (e.stream_id.clone(), e.event_type.clone(), serde_json::from_str(&e.payload).unwrap()))
        .collect()
}

fn ts_type(b: Backend) -> &'static str {
    match b {
        Backend::Postgres => "TIMESTAMP(6)",
        Backend::MariaDb => "DATETIME(6)",
        Backend::Sqlite => "TEXT",
    }
}

/// Timestamp tracking: two rows share a timestamp across a page boundary
/// (batch_size 1), one is updated, one soft-deleted; payloads converted.
async fn timestamp_strategy(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceDb::fresh(backend, dir.path()).await;
    let ts = ts_type(backend);
    let (dec, bin) = match backend {
        Backend::Postgres => ("NUMERIC(10,2)", "BYTEA"),
        Backend::MariaDb => ("DECIMAL(10,2)", "VARBINARY(10)"),
        Backend::Sqlite => ("NUMERIC", "BLOB"),
    };
    let blob = match backend {
        Backend::Postgres => "'\\x00ff10'::bytea",
        _ => "x'00ff10'",
    };
    src.exec(&[
        &format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(20), price {dec}, raw {bin}, updated_at {ts}, deleted_at {ts})"
        ),
        &format!("INSERT INTO t VALUES (2, 'b,2', 12.50, {blob}, '2024-01-15 10:30:00.123456', NULL)"),
        "INSERT INTO t VALUES (1, NULL, 0.10, NULL, '2024-01-15 10:30:00.123456', NULL)",
        "INSERT INTO t VALUES (3, 'c', -3, NULL, '2024-01-15 10:30:01', NULL)",
    ])
    .await;
    let store = log(dir.path()).await;
    let cfg = config(
        &src.url,
        "table = \"t\"\nkey = \"id\"\ntracking = \"timestamp\"\ncolumn = \"updated_at\"\ndeleted = \"deleted_at\"\nbatch_size = 1",
    );
    let syncers = Syncers::start(cfg, store.clone()).await.unwrap();
    let first = events(&store, 3).await;
    // SQLite keeps what was stored: its timestamps are text as written,
    // its decimals numbers; the other backends convert.
    let (t1, t3, price2, price1, price3) = match backend {
        Backend::Sqlite => {
            (json!("2024-01-15 10:30:00.123456"), json!("2024-01-15 10:30:01"), json!(12.5), json!(0.1), json!(-3))
        }
        _ => (
            json!("2024-01-15T10:30:00.123456Z"),
            json!("2024-01-15T10:30:01.000000Z"),
            json!("12.50"),
            json!("0.10"),
            json!("-3.00"),
        ),
    };
    assert_eq!(
        summary(&first),
        vec![
            (
                "t-1".into(),
                "RowUpserted".into(),
                json!({"id": 1, "name": null, "price": price1, "raw": null, "updated_at": t1, "deleted_at": null})
            ),
            (
                "t-2".into(),
                "RowUpserted".into(),
                json!({"id": 2, "name": "b,2", "price": price2, "raw": "AP8Q", "updated_at": t1, "deleted_at": null})
            ),
            (
                "t-3".into(),
                "RowUpserted".into(),
                json!({"id": 3, "name": "c", "price": price3, "raw": null, "updated_at": t3, "deleted_at": null})
            ),
        ]
    );
    let meta: Value = serde_json::from_str(&first[0].metadata).unwrap();
    assert_eq!(meta, json!({"source": "t", "table": "t", "tracking": t1}));
    src.exec(&[
        "UPDATE t SET name = 'a', updated_at = '2024-01-15 10:30:02' WHERE id = 1",
        "UPDATE t SET deleted_at = '2024-01-15 10:30:02', updated_at = '2024-01-15 10:30:02' WHERE id = 3",
    ])
    .await;
    let all = events(&store, 5).await;
    let later: Vec<(String, String)> = all[3..].iter().map(|e| (e.stream_id.clone(), e.event_type.clone())).collect();
    assert_eq!(later, [("t-1".into(), "RowUpserted".into()), ("t-3".into(), "RowDeleted".into())]);
    assert_eq!(summary(&all[3..4])[0].2["name"], json!("a"));
    syncers.shutdown().await;
    // The state says how far it got.
    let status = refract::source_status(store.as_ref(), &[]).await.unwrap();
    assert_eq!((status[0].name.as_str(), status[0].rows, status[0].last_error.as_deref()), ("t", 5, None));
}

/// Sequence tracking: new rows only, by an auto-increment id; an update
/// (same id) is not a change for it.
async fn sequence_strategy(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceDb::fresh(backend, dir.path()).await;
    let create = match backend {
        Backend::Postgres => "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, body TEXT)",
        Backend::MariaDb => "CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, body TEXT)",
        Backend::Sqlite => "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT)",
    };
    src.exec(&[create, "INSERT INTO t (body) VALUES ('a')", "INSERT INTO t (body) VALUES ('b')"]).await;
    let store = log(dir.path()).await;
    let cfg = config(&src.url, "table = \"t\"\nkey = \"id\"\ntracking = \"sequence\"\ncolumn = \"id\"\nbatch_size = 1");
    let syncers = Syncers::start(cfg, store.clone()).await.unwrap();
    events(&store, 2).await;
    src.exec(&["UPDATE t SET body = 'changed' WHERE id = 1", "INSERT INTO t (body) VALUES ('c')"]).await;
    let all = events(&store, 3).await;
    assert_eq!(
        summary(&all),
        vec![
            ("t-1".into(), "RowUpserted".into(), json!({"id": 1, "body": "a"})),
            ("t-2".into(), "RowUpserted".into(), json!({"id": 2, "body": "b"})),
            ("t-3".into(), "RowUpserted".into(), json!({"id": 3, "body": "c"})),
        ]
    );
    syncers.shutdown().await;
}

/// Version tracking with a composite text key: every change sets a larger
/// version; ties in version are broken by the key.
async fn version_strategy(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceDb::fresh(backend, dir.path()).await;
    src.exec(&[
        "CREATE TABLE t (region VARCHAR(10) NOT NULL, code VARCHAR(10) NOT NULL, qty INTEGER, version BIGINT NOT NULL, \
         PRIMARY KEY (region, code))",
        "INSERT INTO t VALUES ('eu', 'a,b', 1, 1)",
        "INSERT INTO t VALUES ('eu', 'x', 2, 1)",
        "INSERT INTO t VALUES ('us', 'x', 3, 1)",
    ])
    .await;
    let store = log(dir.path()).await;
    let cfg = config(
        &src.url,
        "table = \"t\"\nkey = [\"region\", \"code\"]\ntracking = \"version\"\ncolumn = \"version\"\nbatch_size = 2",
    );
    let syncers = Syncers::start(cfg, store.clone()).await.unwrap();
    events(&store, 3).await;
    src.exec(&["UPDATE t SET qty = 20, version = 2 WHERE region = 'eu' AND code = 'x'"]).await;
    let all = events(&store, 4).await;
    assert_eq!(
        all.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(),
        ["t-eu,a%2Cb", "t-eu,x", "t-us,x", "t-eu,x"]
    );
    assert_eq!(summary(&all)[3].2, json!({"region": "eu", "code": "x", "qty": 20, "version": 2}));
    syncers.shutdown().await;
}

#[tokio::test]
async fn timestamp_on_postgres() {
    timestamp_strategy(Backend::Postgres).await;
}
#[tokio::test]
async fn timestamp_on_mariadb() {
    timestamp_strategy(Backend::MariaDb).await;
}
#[tokio::test]
async fn timestamp_on_sqlite() {
    timestamp_strategy(Backend::Sqlite).await;
}
#[tokio::test]
async fn sequence_on_postgres() {
    sequence_strategy(Backend::Postgres).await;
}
#[tokio::test]
async fn sequence_on_mariadb() {
    sequence_strategy(Backend::MariaDb).await;
}
#[tokio::test]
async fn sequence_on_sqlite() {
    sequence_strategy(Backend::Sqlite).await;
}
#[tokio::test]
async fn version_on_postgres() {
    version_strategy(Backend::Postgres).await;
}
#[tokio::test]
async fn version_on_mariadb() {
    version_strategy(Backend::MariaDb).await;
}
#[tokio::test]
async fn version_on_sqlite() {
    version_strategy(Backend::Sqlite).await;
}

/// Each bad configuration, by its exact error, on each backend.
#[tokio::test]
async fn bad_configuration_is_refused_naming_source_and_key() {
    for backend in [Backend::Postgres, Backend::MariaDb, Backend::Sqlite] {
        let dir = tempfile::tempdir().unwrap();
        let src = SourceDb::fresh(backend, dir.path()).await;
        src.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, note VARCHAR(10), score REAL, n INTEGER)"]).await;
        let store = log(dir.path()).await;
        let real = match backend {
            Backend::Postgres => "real",
            Backend::MariaDb => "double",
            Backend::Sqlite => "REAL",
        };
        let text = match backend {
            Backend::Postgres => "character varying(10)",
            Backend::MariaDb => "varchar(10)",
            Backend::Sqlite => "VARCHAR(10)",
        };
        let cases = [
            (
                "table = \"nope\"\nkey = \"id\"\ntracking = \"sequence\"\ncolumn = \"id\"",
                "source `t`: `table`: no table `nope` in the source database".to_owned(),
            ),
            (
                "table = \"t\"\nkey = \"nope\"\ntracking = \"sequence\"\ncolumn = \"id\"",
                "source `t`: `key`: no column `nope` in table `t`".to_owned(),
            ),
            (
                "table = \"t\"\nkey = \"id\"\ntracking = \"sequence\"\ncolumn = \"nope\"",
                "source `t`: `column`: no column `nope` in table `t`".to_owned(),
            ),
            (
                "table = \"t\"\nkey = \"id\"\ntracking = \"sequence\"\ncolumn = \"id\"\ndeleted = \"nope\"",
                "source `t`: `deleted`: no column `nope` in table `t`".to_owned(),
            ),
            (
                "table = \"t\"\nkey = \"score\"\ntracking = \"sequence\"\ncolumn = \"id\"",
                format!("source `t`: `key`: column `score` has type {real}: a key must be an integer or text"),
            ),
            (
                "table = \"t\"\nkey = \"id\"\ntracking = \"version\"\ncolumn = \"note\"",
                format!(
                    "source `t`: `column`: column `note` has type {text}: version tracking needs an integer column"
                ),
            ),
        ];
        for (settings, want) in cases {
            let err = Syncers::start(config(&src.url, settings), store.clone()).await.err().expect(want.as_str());
            assert_eq!(err.to_string(), want, "{backend:?}");
        }
        if backend != Backend::Sqlite {
            // SQLite has no types to refuse a timestamp column by.
            let err = Syncers::start(
                config(&src.url, "table = \"t\"\nkey = \"id\"\ntracking = \"timestamp\"\ncolumn = \"n\""),
                store.clone(),
            )
            .await
            .err()
            .unwrap();
            let int = if backend == Backend::Postgres { "integer" } else { "int(11)" };
            assert_eq!(
                err.to_string(),
                format!("source `t`: `column`: column `n` has type {int}: timestamp tracking needs a timestamp column")
            );
        }
    }
}

/// Through the command line: a bad source stops `refract run` with the
/// error; a missing key is named by the config parser; `refract sources`
/// shows progress; `reset` re-syncs from the start.
#[tokio::test]
async fn cli_refuses_bad_sources_and_resets() {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceDb::fresh(Backend::Sqlite, dir.path()).await;
    src.exec(&["CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)", "INSERT INTO t VALUES (1, 'a'), (2, 'b')"]).await;
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["copy"]);
    let toml = dir.path().join("refract.toml");
    let run = |extra: &str| {
        std::fs::write(&toml, format!("[sources.t]\nurl = \"{}\"\ntable = \"t\"\ntracking = \"sequence\"\ncolumn = \"id\"\ninterval_ms = 10\n{extra}", src.url)).unwrap();
        let mut cmd = refract(&data);
        cmd.arg("run").arg("--plugins").arg(&plugins).arg("--config").arg(&toml).arg("--exit-when-caught-up");
        output(&mut cmd)
    };
    let out = run("key = \"nope\"");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("source `t`: `key`: no column `nope` in table `t`"), "{stderr}");
    let out = run("");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing field `key`"), "{stderr}");

    // A host that syncs, then `refract sources` and a reset.
    std::fs::write(
        &toml,
        format!("[sources.t]\nurl = \"{}\"\ntable = \"t\"\nkey = \"id\"\ntracking = \"sequence\"\ncolumn = \"id\"\ninterval_ms = 10\n", src.url),
    )
    .unwrap();
    let mut cmd = refract(&data);
    cmd.arg("run").arg("--plugins").arg(&plugins).arg("--config").arg(&toml).arg("--http").arg("127.0.0.1:0");
    let mut host = crate::common::cli::Background::spawn(&mut cmd);
    host.wait_for_log("HTTP API listening", Duration::from_secs(30));
    let addr: std::net::SocketAddr = {
        let log = host.log();
        let line = log.lines().find(|l| l.contains("HTTP API listening")).unwrap();
        let at = line.find("127.0.0.1:").unwrap();
        let end =
            line[at..].find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).map_or(line.len(), |e| at + e);
        line[at..end].parse().unwrap()
    };
    let mut client = crate::common::http::Client::connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sources = client.get("/sources").await.json();
        if sources[0]["rows"] == json!(2) {
            assert_eq!(sources[0]["name"], "t");
            assert_eq!(sources[0]["table"], "t");
            assert_eq!(sources[0]["last_value"], json!(2));
            assert_eq!(sources[0]["last_error"], Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "{sources}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = client.get("/metrics").await.text;
    assert!(metrics.contains("refract_source_rows_total{source=\"t\"} 2\n"), "{metrics}");
    assert!(metrics.contains("refract_source_errors{source=\"t\"} 0\n"), "{metrics}");
    let listed = succeed(refract(&data).arg("sources").arg("--config").arg(&toml).arg("--json"));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["rows"], json!(2));
    succeed(refract(&data).args(["sources", "reset", "t"]));
    // The running host re-syncs both rows: 4 events in all.
    let store = SqliteEventStore::open(&data.join("events.db")).await.unwrap();
    let all = events(&store, 4).await;
    assert_eq!(all.len(), 4, "{}", host.log());
    assert_eq!(all[2].stream_id, "t-1");
    let status = succeed(refract(&data).arg("status"));
    assert!(status.contains("SOURCE") && status.lines().any(|l| l.starts_with("t ") && l.contains(" 2 ")), "{status}");
    host.signal(libc::SIGTERM);
    host.wait(Duration::from_secs(20));
}
