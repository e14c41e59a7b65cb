//! Verified read models (issue 21, section 3): `Host::verify` (what
//! `refract verify` runs) rebuilds the active module into a shadow model up
//! to the active checkpoint and reports every document that differs. On
//! SQLite and PostgreSQL, with the `kv` fixture, whose `KeyStamped` writes
//! the wall-clock time into a document.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use refract::{
    AppendRequest, Config, DifferenceKind, EventStore, ExpectedVersion, Host, NewEvent, ReadModelStore, SyncConfig,
};
use serde_json::{Value, json};
use sqlx::Connection;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Running {
    host: Host,
    events: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    /// Where the documents can be edited by hand.
    url: String,
    _dir: tempfile::TempDir,
    _schema: Option<pg::Schema>,
}

async fn run(backend: Backend) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (events, models, url, schema): (Arc<dyn EventStore>, Arc<dyn ReadModelStore>, String, _) = match backend {
        Backend::Sqlite => {
            let stores = Stores::open(dir.path()).await;
            let url = format!("sqlite://{}", stores.data.models().display());
            (stores.events, stores.models, url, None)
        }
        Backend::Postgres => {
            let schema = pg::fresh_schema().await;
            let events = refract::open_events(&schema.url).await.unwrap();
            let models = refract::open_models(&schema.url).await.unwrap();
            (events, models, schema.url.clone(), Some(schema))
        }
    };
    let sync = SyncConfig { poll: Duration::from_millis(5), ..SyncConfig::default() };
    let mut host = Host::with_config(events.clone(), models.clone(), sync, Config::default()).unwrap();
    host.start(host.runtime().load(&plugin("kv")).unwrap()).await.unwrap();
    Running { host, events, models, url, _dir: dir, _schema: schema }
}

fn event(key: u64, event_type: &str, payload: Value) -> AppendRequest {
    AppendRequest {
        stream_id: format!("key-{key}"),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(event_type, payload.to_string())],
    }
}

/// Sets, updates and removes over 200 keys; `stamped` keys also get a `KeyStamped`.
fn script(stamped: &[u64]) -> Vec<AppendRequest> {
    let mut rng = Rng::new(3);
    let mut out: Vec<AppendRequest> = (0..5_000)
        .map(|_| {
            let key = rng.below(200);
            if rng.below(8) == 0 {
                event(key, "KeyRemoved", json!({}))
            } else {
                event(key, "KeySet", json!({ "value": rng.below(1000) }))
            }
        })
        .collect();
    for key in stamped {
        out.push(event(*key, "KeySet", json!({ "value": 1 })));
        out.push(event(*key, "KeyStamped", json!({})));
    }
    out
}

async fn project(r: &Running, events: &[AppendRequest]) {
    for chunk in events.chunks(500) {
        r.events.append(chunk).await.unwrap();
    }
    r.host.wait_until_caught_up().await.unwrap();
}

async fn a_deterministic_projection_verifies_clean(backend: Backend) {
    let mut r = run(backend).await;
    let events = script(&[]);
    project(&r, &events).await;
    let stored = all_documents(r.models.as_ref(), "kv", "entries").await;
    assert!(!stored.is_empty());
    let report = r.host.verify("kv", 100).await.unwrap();
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.documents, stored.len() as u64);
    assert_eq!(report.checkpoint, events.len() as u64);
    assert_eq!(report.generation, 1);
}

async fn wall_clock_time_is_reported_with_the_differing_ids(backend: Backend) {
    let mut r = run(backend).await;
    let stamped = [5, 17, 123];
    project(&r, &script(&stamped)).await;
    let report = r.host.verify("kv", 100).await.unwrap();
    assert_eq!(report.different, stamped.len() as u64, "{report:?}");
    let ids: BTreeSet<String> = report.differences.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, stamped.iter().map(|k| format!("key-{k}")).collect());
    for d in &report.differences {
        assert_eq!((d.kind, d.collection.as_str()), (DifferenceKind::Differs, "entries"));
        let (stored, rebuilt) = (d.stored.as_ref().unwrap(), d.rebuilt.as_ref().unwrap());
        assert_ne!(stored["stamped_at"], rebuilt["stamped_at"], "{d:?}");
        assert_eq!(stored["value"], rebuilt["value"], "only the clock differs");
    }
    // The limit cuts the list, not the count.
    let cut = r.host.verify("kv", 1).await.unwrap();
    assert_eq!((cut.different, cut.differences.len()), (stamped.len() as u64, 1));
}

/// Runs one statement on the models store, as an operator with a SQL shell would.
async fn by_hand(url: &str, sql: &str) {
    if url.starts_with("sqlite://") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
}

async fn documents_changed_by_hand_are_reported(backend: Backend) {
    let mut r = run(backend).await;
    project(&r, &script(&[])).await;
    let stored = all_documents(r.models.as_ref(), "kv", "entries").await;
    let mut ids = stored.keys();
    let (edited, deleted) = (ids.next().unwrap().clone(), ids.next().unwrap().clone());
    let table = "\"rm:kv:g1:entries\"";
    by_hand(&r.url, &format!("UPDATE {table} SET doc = '{{\"value\": -1, \"sets\": 1}}' WHERE id = '{edited}'")).await;
    by_hand(&r.url, &format!("DELETE FROM {table} WHERE id = '{deleted}'")).await;
    by_hand(&r.url, &format!("INSERT INTO {table} (id, doc) VALUES ('key-forged', '{{\"value\": 1, \"sets\": 1}}')"))
        .await;
    let report = r.host.verify("kv", 100).await.unwrap();
    let found: Vec<(String, DifferenceKind)> = report.differences.iter().map(|d| (d.id.clone(), d.kind)).collect();
    let mut want = vec![
        (edited.clone(), DifferenceKind::Differs),
        (deleted, DifferenceKind::MissingInStore),
        ("key-forged".to_owned(), DifferenceKind::NotRebuilt),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found, want, "{report:?}");
    let d = report.differences.iter().find(|d| d.id == edited).unwrap();
    assert_eq!(d.stored.as_ref().unwrap()["value"], -1);
    assert_eq!(d.rebuilt.as_ref(), Some(&stored[&edited]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_deterministic_projection_verifies_clean() {
    a_deterministic_projection_verifies_clean(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deterministic_projection_verifies_clean() {
    a_deterministic_projection_verifies_clean(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wall_clock_time_in_documents_is_reported_with_the_differing_ids() {
    wall_clock_time_is_reported_with_the_differing_ids(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wall_clock_time_in_documents_is_reported_with_the_differing_ids() {
    wall_clock_time_is_reported_with_the_differing_ids(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_documents_changed_by_hand_are_reported() {
    documents_changed_by_hand_are_reported(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_documents_changed_by_hand_are_reported() {
    documents_changed_by_hand_are_reported(Backend::Postgres).await;
}
