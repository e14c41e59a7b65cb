//! Verified read models (issue 21, section 3): `Host::verify` (what
//! `refract verify` runs) rebuilds the active module into a shadow model up
//! to the active checkpoint and reports every document that differs. On
//! SQLite and PostgreSQL, with the `kv` fixture, whose `KeyStamped` writes
//! the wall-clock time into a document. Then the same over HTTP (`POST
//! /projections/{name}/verify`, admin scope), and `verify_every` /
//! `verify_policy` in `refract.toml` on a running `refract run`.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::cli::{refract, succeed};
use common::http::{Client, start_api};
use common::served::{bearer, make_token, serve};
use common::*;
use refract::{
    AppendRequest, Config, DifferenceKind, EventStore, ExpectedVersion, Host, ModelKey, NewEvent, ProjectionState,
    ReadModelStore, SyncConfig,
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

/// Edits three documents of generation 1 by hand: one changed, one deleted,
/// one forged. Returns what a verify must report, by id.
async fn edit_three(r: &Running) -> Vec<(String, &'static str)> {
    let stored = all_documents(r.models.as_ref(), "kv", "entries").await;
    let mut ids = stored.keys();
    let (edited, deleted) = (ids.next().unwrap().clone(), ids.next().unwrap().clone());
    let table = "\"rm:kv:g1:entries\"";
    by_hand(&r.url, &format!("UPDATE {table} SET doc = '{{\"value\": -1, \"sets\": 1}}' WHERE id = '{edited}'")).await;
    by_hand(&r.url, &format!("DELETE FROM {table} WHERE id = '{deleted}'")).await;
    by_hand(&r.url, &format!("INSERT INTO {table} (id, doc) VALUES ('key-forged', '{{\"value\": 1, \"sets\": 1}}')"))
        .await;
    let mut want = vec![(edited, "differs"), (deleted, "missing_in_store"), ("key-forged".to_owned(), "not_rebuilt")];
    want.sort();
    want
}

async fn post(c: &mut Client, path: &str) -> (u16, Value) {
    let reply = c.request("POST", path, Vec::new()).await;
    (reply.status, reply.json())
}

async fn the_endpoint_reports_clean_then_the_ids_edited_by_hand(backend: Backend) {
    let r = run(backend).await;
    project(&r, &script(&[])).await;
    let stored = all_documents(r.models.as_ref(), "kv", "entries").await;
    let mut c = Client::connect(start_api(&r.host).await).await;

    let (status, clean) = post(&mut c, "/projections/kv/verify").await;
    assert_eq!(status, 200, "{clean}");
    assert_eq!(clean["clean"], true, "{clean}");
    assert_eq!((clean["different"].as_u64(), clean["documents"].as_u64()), (Some(0), Some(stored.len() as u64)));
    assert_eq!(clean["differences"], json!([]));
    assert_eq!(clean["generation"], 1);

    let want = edit_three(&r).await;
    let (status, report) = post(&mut c, "/projections/kv/verify?limit=10").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["clean"].clone(), report["different"].clone()), (json!(false), json!(3)), "{report}");
    let found: Vec<(String, &str)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d["kind"].as_str().unwrap()))
        .collect();
    let want_found: Vec<(String, &str)> = want.iter().map(|(id, kind)| (id.clone(), *kind)).collect();
    assert_eq!(found, want_found, "{report}");
    let edited = report["differences"].as_array().unwrap().iter().find(|d| d["kind"] == "differs").unwrap();
    assert_eq!(edited["stored"]["value"], -1);
    assert_eq!(edited["rebuilt"], stored[edited["id"].as_str().unwrap()]);
    // The limit cuts the list, not the count.
    let (_, cut) = post(&mut c, "/projections/kv/verify?limit=1").await;
    assert_eq!((cut["different"].as_u64(), cut["differences"].as_array().unwrap().len()), (Some(3), 1));

    // The last outcome is in the projection's status and in /metrics.
    let status = c.get("/projections/kv").await.json();
    let v = &status["verify"];
    assert_eq!(
        (v["result"].clone(), v["different"].clone(), v["generation"].clone()),
        (json!("differences"), json!(3), json!(1))
    );
    assert_eq!(v["runs"], json!({ "clean": 1, "differences": 2, "error": 0 }), "{v}");
    let metrics = c.get("/metrics").await.text;
    let l = "projection=\"kv\",generation=\"1\",role=\"active\"";
    for line in [
        format!("refract_verify_last_differences{{{l}}} 3\n"),
        format!("refract_verify_runs_total{{{l},result=\"clean\"}} 1\n"),
        format!("refract_verify_runs_total{{{l},result=\"differences\"}} 2\n"),
        format!("refract_verify_runs_total{{{l},result=\"error\"}} 0\n"),
    ] {
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }

    // Unknown projection, bad parameters.
    let (status, missing) = post(&mut c, "/projections/nope/verify").await;
    assert_eq!((status, missing["error"].as_str()), (404, Some("unknown projection `nope`")));
    let (status, bad) = post(&mut c, "/projections/kv/verify?limit=all").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("`limit`"), "{bad}");
    let (status, bad) = post(&mut c, "/projections/kv/verify?deep=1").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("unknown query parameter `deep`"), "{bad}");

    // A faulted projection, then one being rebuilt: 409, saying why; neither counts as a run.
    let g1 = ModelKey { projection: "kv".into(), generation: 1 };
    r.models.set_state(&g1, ProjectionState::Faulted, Some("trap: boom")).await.unwrap();
    let (status, faulted) = post(&mut c, "/projections/kv/verify").await;
    assert_eq!(status, 409, "{faulted}");
    assert!(faulted["error"].as_str().unwrap().contains("`kv` is faulted (trap: boom)"), "{faulted}");
    r.models.set_state(&g1, ProjectionState::Running, None).await.unwrap();
    let building = r.models.request_rebuild("kv").await.unwrap();
    let (status, rebuilding) = post(&mut c, "/projections/kv/verify").await;
    assert_eq!(status, 409, "{rebuilding}");
    let why = format!("`kv` is being rebuilt (generation {} is building)", building.key.generation);
    assert!(rebuilding["error"].as_str().unwrap().contains(&why), "{rebuilding}");
    let v = c.get("/projections/kv").await.json()["verify"].clone();
    assert_eq!(v["runs"], json!({ "clean": 1, "differences": 2, "error": 0 }), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_verify_endpoint_reports_clean_then_the_ids_edited_by_hand() {
    the_endpoint_reports_clean_then_the_ids_edited_by_hand(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_verify_endpoint_reports_clean_then_the_ids_edited_by_hand() {
    the_endpoint_reports_clean_then_the_ids_edited_by_hand(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_endpoint_needs_a_token_with_the_admin_scope() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["kv"]);
    let reader = make_token(&data, "reader", &["read"]);
    let admin = make_token(&data, "ops", &["admin"]);
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, format!("{}\n{}", reader.entry, admin.entry)).unwrap();
    let (_host, addr) =
        serve(&data, "127.0.0.1:0", &["--plugins", plugins.to_str().unwrap(), "--tokens", tokens.to_str().unwrap()]);
    let mut c = Client::connect(addr).await;
    let path = "/projections/kv/verify";
    let none = c.request("POST", path, Vec::new()).await;
    assert_eq!(none.status, 401, "{}", none.text);
    let read = c.request_with("POST", path, &[("authorization", &bearer(&reader.secret))], Vec::new()).await;
    assert_eq!((read.status, read.json()["scope"].clone()), (403, json!("admin")), "{}", read.text);
    let ok = c.request_with("POST", path, &[("authorization", &bearer(&admin.secret))], Vec::new()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!((ok.json()["clean"].clone(), ok.json()["documents"].clone()), (json!(true), json!(0)));
}

/// A data dir with the script's events appended, a `refract run` on it with
/// `config` and the kv plugin, caught up; a client, and the models' URL.
struct Served {
    host: common::cli::Background,
    client: Client,
    data: std::path::PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

async fn serve_with(config: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = script(&[]);
    {
        let stores = Stores::open(&data).await;
        for chunk in events.chunks(500) {
            stores.events.append(chunk).await.unwrap();
        }
    }
    let plugins = plugins_dir(dir.path(), &["kv"]);
    let file = dir.path().join("refract.toml");
    std::fs::write(&file, config).unwrap();
    let (host, addr) =
        serve(&data, "127.0.0.1:0", &["--plugins", plugins.to_str().unwrap(), "--config", file.to_str().unwrap()]);
    let mut client = Client::connect(addr).await;
    let caught_up = client.get(&format!("/projections/kv?min_position={}&timeout_ms=60000", events.len())).await;
    assert_eq!(caught_up.status, 200, "{}", caught_up.text);
    let url = format!("sqlite://{}", data.join("models.db").display());
    Served { host, client, data, url, _dir: dir }
}

/// Polls the projection's status until `done` holds for it; gives up
/// (failing) only after two minutes, which no passing run comes near.
async fn wait_for_status(c: &mut Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = c.get("/projections/kv").await.json();
        if done(&status) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}; last status: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_verifies_on_its_schedule_and_status_shows_the_result() {
    let mut s = serve_with("[projections.kv]\nverify_every = \"1s\"\n").await;
    let documents = s.client.get("/projections/kv/entries?count=true").await.json()["count"].as_u64().unwrap();
    let status = wait_for_status(&mut s.client, "verified clean", |p| p["verify"]["result"] == "clean").await;
    assert_eq!(status["verify"]["documents"].as_u64(), Some(documents), "{status}");
    assert_eq!(status["verify"]["generation"], 1);

    let first = s.client.get("/projections/kv/entries?limit=1").await.json()["documents"][0]["id"].clone();
    let id = first.as_str().unwrap().to_owned();
    by_hand(
        &s.url,
        &format!("UPDATE \"rm:kv:g1:entries\" SET doc = '{{\"value\": -1, \"sets\": 1}}' WHERE id = '{id}'"),
    )
    .await;
    let status = wait_for_status(&mut s.client, "reported the edit", |p| p["verify"]["result"] == "differences").await;
    let v = &status["verify"];
    assert_eq!((v["different"].as_u64(), v["rebuild"].clone()), (Some(1), Value::Null), "{status}");
    assert!(v["runs"]["clean"].as_u64().unwrap() >= 1, "{status}");
    // `report` changes nothing: the edit stays, and so does the generation.
    let doc = s.client.get(&format!("/projections/kv/entries/{id}")).await.json();
    assert_eq!(doc["document"]["value"], -1, "{doc}");
    assert_eq!(status["generation"], 1);

    // `refract status` shows it too, from the store.
    let json: Value = serde_json::from_str(&succeed(refract(&s.data).args(["status", "--json"]))).unwrap();
    let kv = json.as_array().unwrap().iter().find(|p| p["name"] == "kv").unwrap().clone();
    assert_eq!((kv["verify"]["result"].clone(), kv["verify"]["different"].clone()), (json!("differences"), json!(1)));
    let text = succeed(refract(&s.data).args(["status"]));
    let line =
        text.lines().find(|l| l.starts_with("kv ") && l.contains("differences")).unwrap_or_else(|| panic!("{text}"));
    // kv, generation, "N s ago", checkpoint, documents, differ, result.
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((words[1], words[7], words[8]), ("1", "1", "differences"), "{line}");
    drop(s.host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_policy_rebuild_a_hand_edit_is_fixed_by_a_new_generation() {
    let mut s = serve_with("[projections.kv]\nverify_every = \"1s\"\nverify_policy = \"rebuild\"\n").await;
    let first = s.client.get("/projections/kv/entries?limit=1").await.json()["documents"][0].clone();
    let id = first["id"].as_str().unwrap().to_owned();
    by_hand(
        &s.url,
        &format!("UPDATE \"rm:kv:g1:entries\" SET doc = '{{\"value\": -1, \"sets\": 1}}' WHERE id = '{id}'"),
    )
    .await;
    // A new generation is swapped in, and its own verification is clean.
    let status = wait_for_status(&mut s.client, "rebuilt and verified clean", |p| {
        p["generation"].as_u64() > Some(1) && p["verify"]["result"] == "clean"
    })
    .await;
    assert_eq!(status["role"], "active", "{status}");
    let doc = s.client.get(&format!("/projections/kv/entries/{id}")).await.json();
    assert_eq!(doc["document"], first["document"], "the rebuilt generation has the document the log makes");
    assert!(s.host.log().contains("verify found differences; rebuilding"), "{}", s.host.log());
    drop(s.host);
}
