//! The durable change feed (issue 21, section 1): the change log written
//! with each commit, read as JSON pages and as a resumable event stream,
//! named consumers' acknowledgements, retention's 410 and the reset after a
//! rebuild. Every test runs on SQLite and on PostgreSQL, with the `kv`
//! fixture, which creates, updates and deletes documents.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Client, EventStream, start_api};
use common::*;
use refract::{AppendRequest, Config, EventStore, ExpectedVersion, Host, NewEvent, ReadModelStore, SyncConfig};
use serde_json::{Value, json};

const FEED: &str = "/projections/kv/changes";
const STREAM: [(&str, &str); 1] = [("accept", "text/event-stream")];

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A host running `kv` with the API on loopback, over fresh stores.
struct Served {
    host: Host,
    addr: SocketAddr,
    events: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    _dir: tempfile::TempDir,
    _schema: Option<pg::Schema>,
}

async fn serve(backend: Backend, sync: SyncConfig, config: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (events, models, schema): (Arc<dyn EventStore>, Arc<dyn ReadModelStore>, _) = match backend {
        Backend::Sqlite => {
            let stores = Stores::open(dir.path()).await;
            (stores.events, stores.models, None)
        }
        Backend::Postgres => {
            let schema = pg::fresh_schema().await;
            let events = refract::open_events(&schema.url).await.unwrap();
            let models = refract::open_models(&schema.url).await.unwrap();
            (events, models, Some(schema))
        }
    };
    let mut host = Host::with_config(events.clone(), models.clone(), sync, Config::parse(config).unwrap()).unwrap();
    host.start(host.runtime().load(&plugin("kv")).unwrap()).await.unwrap();
    let addr = start_api(&host).await;
    Served { host, addr, events, models, _dir: dir, _schema: schema }
}

/// One commit per event, so every change has its own entry.
fn one_by_one() -> SyncConfig {
    SyncConfig { batch_size: 1, commit_events: 1, poll: Duration::from_millis(5), ..SyncConfig::default() }
}

fn event(key: &str, event_type: &str, payload: Value) -> AppendRequest {
    AppendRequest {
        stream_id: format!("key-{key}"),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(event_type, payload.to_string())],
    }
}

fn set(key: &str, value: i64) -> AppendRequest {
    event(key, "KeySet", json!({ "value": value }))
}

fn remove(key: &str) -> AppendRequest {
    event(key, "KeyRemoved", json!({}))
}

/// `total` events over `keys` keys: mostly sets, one in ten a removal.
fn kv_events(keys: u64, total: usize, seed: u64) -> Vec<AppendRequest> {
    let mut rng = Rng::new(seed);
    (0..total)
        .map(|_| {
            let key = rng.below(keys).to_string();
            if rng.below(10) == 0 { remove(&key) } else { set(&key, rng.below(1_000_000) as i64) }
        })
        .collect()
}

/// The `entries` model, computed from the events without refract.
fn expected(events: &[AppendRequest]) -> BTreeMap<String, Value> {
    let mut model: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for e in events {
        let event = &e.events[0];
        match event.event_type.as_str() {
            "KeySet" => {
                let value = serde_json::from_str::<Value>(&event.payload).unwrap()["value"].as_i64().unwrap();
                let entry = model.entry(e.stream_id.clone()).or_default();
                entry.0 = value;
                entry.1 += 1;
            }
            "KeyRemoved" => {
                model.remove(&e.stream_id);
            }
            other => panic!("unexpected {other}"),
        }
    }
    model.into_iter().map(|(id, (value, sets))| (id, json!({ "value": value, "sets": sets }))).collect()
}

/// Applies one `change` entry to a model rebuilt from the feed, checking
/// that its kind agrees with what the model held.
fn apply(model: &mut BTreeMap<String, Value>, e: &Value) {
    let id = e["id"].as_str().unwrap().to_owned();
    assert_eq!(e["collection"], "entries");
    match e["kind"].as_str().unwrap() {
        "created" => {
            assert!(!model.contains_key(&id), "created {id}, which existed: {e}");
            model.insert(id, e["document"].clone());
        }
        "updated" => {
            assert!(model.contains_key(&id), "updated {id}, which did not exist: {e}");
            model.insert(id, e["document"].clone());
        }
        "deleted" => {
            assert!(e.get("document").is_none(), "{e}");
            assert!(model.remove(&id).is_some(), "deleted {id}, which did not exist: {e}");
        }
        other => panic!("unknown kind {other}"),
    }
}

async fn ack(client: &mut Client, consumer: &str, generation: u64, sequence: u64) -> Value {
    let reply = client
        .post(&format!("{FEED}/consumers/{consumer}/ack"), &json!({ "generation": generation, "sequence": sequence }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

async fn log_head(client: &mut Client) -> (u64, u64) {
    let page = client.get(&format!("{FEED}?after=0&limit=1")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let page = page.json();
    (page["generation"].as_u64().unwrap(), page["head"].as_u64().unwrap())
}

async fn reconstructs_the_model_from_the_feed_alone_across_20_reconnects(backend: Backend) {
    let sync = SyncConfig { poll: Duration::from_millis(5), ..SyncConfig::default() };
    let served = serve(backend, sync, "").await;
    let events = kv_events(5_000, 50_000, 21);
    let want = expected(&events);
    // Appended at a pace, so that the consumer reconnects while they arrive.
    let appender = {
        let store = served.events.clone();
        let events = events.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(250) {
                store.append(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let mut client = Client::connect(served.addr).await;
    // What the consumer applied, and the state as of its last acknowledgement.
    let mut model: BTreeMap<String, Value>;
    let mut acked_model = BTreeMap::new();
    let (mut acked, mut generation) = (0u64, 1u64);
    let (mut reconnects, mut resumed_by_id) = (0, 0);
    let started = Instant::now();
    'connections: loop {
        // Half of the reconnects as the named consumer, half with the
        // position of the last acknowledged event, as a browser would.
        let mut feed = if reconnects % 2 == 0 {
            EventStream::open_with(served.addr, &format!("{FEED}?consumer=reader"), &STREAM).await
        } else {
            resumed_by_id += 1;
            let id = format!("{generation}:{acked}");
            EventStream::open_with(served.addr, FEED, &[("accept", "text/event-stream"), ("last-event-id", &id)]).await
        };
        let (name, ready) = feed.next().await;
        assert_eq!(name, "ready", "{ready}");
        assert_eq!(ready["after"], acked, "a reconnect starts after the acknowledged sequence");
        // Drops its unacknowledged work: the feed must deliver it again.
        model = acked_model.clone();
        let mut applied = acked;
        let mut received = 0;
        loop {
            assert!(started.elapsed() < Duration::from_secs(240), "the consumer did not catch up");
            let Ok((name, e)) = tokio::time::timeout(Duration::from_millis(500), feed.next()).await else {
                if appender.is_finished() {
                    served.host.wait_until_caught_up().await.unwrap();
                    let (g, head) = log_head(&mut client).await;
                    assert_eq!(g, generation);
                    if applied == head {
                        break 'connections;
                    }
                }
                continue;
            };
            assert_eq!(name, "change", "{e}");
            let sequence = e["sequence"].as_u64().unwrap();
            assert_eq!(sequence, applied + 1, "entries arrive in order, none missing, none twice");
            generation = e["generation"].as_u64().unwrap();
            apply(&mut model, &e);
            applied = sequence;
            received += 1;
            if received % 300 == 0 {
                let stored = ack(&mut client, "reader", generation, applied).await;
                assert_eq!(stored["sequence"], applied);
                acked = applied;
                acked_model = model.clone();
            }
            // Disconnects with some of its work unacknowledged.
            if reconnects < 20 && received == 1_000 + 17 * reconnects {
                reconnects += 1;
                continue 'connections;
            }
        }
    }
    appender.await.unwrap();
    assert_eq!(reconnects, 20);
    assert_eq!(resumed_by_id, 10);
    assert_eq!(model, want, "the model rebuilt from the feed is the model computed from the events");
    assert_eq!(all_documents(served.models.as_ref(), "kv", "entries").await, want, "and the one in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_consumer_reconnecting_20_times_during_50000_events_rebuilds_the_model_from_the_feed() {
    reconstructs_the_model_from_the_feed_alone_across_20_reconnects(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_consumer_reconnecting_20_times_during_50000_events_rebuilds_the_model_from_the_feed() {
    reconstructs_the_model_from_the_feed_alone_across_20_reconnects(Backend::Postgres).await;
}

async fn kinds_are_right_for_every_kind_of_change(backend: Backend) {
    let served = serve(backend, one_by_one(), "").await;
    let script = [
        (set("a", 1), Some(("key-a", "created", Some(json!({ "value": 1, "sets": 1 }))))),
        (set("a", 2), Some(("key-a", "updated", Some(json!({ "value": 2, "sets": 2 }))))),
        (set("b", 7), Some(("key-b", "created", Some(json!({ "value": 7, "sets": 1 }))))),
        (remove("a"), Some(("key-a", "deleted", None))),
        // Removing what is not there changes nothing, so logs nothing.
        (remove("c"), None),
        (set("a", 3), Some(("key-a", "created", Some(json!({ "value": 3, "sets": 1 }))))),
        (set("b", 8), Some(("key-b", "updated", Some(json!({ "value": 8, "sets": 2 }))))),
        (remove("b"), Some(("key-b", "deleted", None))),
    ];
    let mut want = Vec::new();
    for (request, logged) in &script {
        let position = served.events.append(std::slice::from_ref(request)).await.unwrap()[0].last_position;
        if let Some((id, kind, document)) = logged {
            want.push(json!({ "checkpoint": position, "id": id, "kind": kind, "document": document }));
        }
    }
    served.host.wait_until_caught_up().await.unwrap();
    let mut client = Client::connect(served.addr).await;
    let page = client.get(&format!("{FEED}?after=0")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.content_type, "application/json");
    let page = page.json();
    assert_eq!(page["reset"], false);
    assert_eq!(page["head"], want.len());
    assert_eq!(page["next_after"], want.len());
    let got: Vec<Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["sequence"], i + 1);
            assert_eq!(e["collection"], "entries");
            json!({ "checkpoint": e["checkpoint"], "id": e["id"], "kind": e["kind"], "document": e.get("document") })
        })
        .collect();
    assert_eq!(got, want);

    // Paging: two at a time from a position, the same entries.
    let mut after = 2;
    let mut paged = Vec::new();
    loop {
        let page = client.get(&format!("{FEED}?after={after}&limit=2")).await.json();
        let entries = page["entries"].as_array().unwrap().clone();
        if entries.is_empty() {
            break;
        }
        assert!(entries.len() <= 2);
        after = page["next_after"].as_u64().unwrap();
        paged.extend(entries.into_iter().map(|e| e["sequence"].as_u64().unwrap()));
    }
    assert_eq!(paged, (3..=want.len() as u64).collect::<Vec<_>>());

    // The same log as a stream, resumed from a position.
    let mut feed = EventStream::open_with(served.addr, &format!("{FEED}?after=4"), &STREAM).await;
    let (name, ready) = feed.next().await;
    assert_eq!((name.as_str(), &ready["head"], &ready["generation"]), ("ready", &json!(want.len()), &json!(1)));
    for w in &want[4..] {
        let (name, e) = feed.next().await;
        assert_eq!(name, "change");
        assert_eq!((&e["id"], &e["kind"], &e["checkpoint"]), (&w["id"], &w["kind"], &w["checkpoint"]));
    }
    // A new change arrives live on the open stream.
    let position = served.events.append(&[set("z", 5)]).await.unwrap()[0].last_position;
    let (name, e) = feed.next().await;
    assert_eq!(name, "change");
    assert_eq!((&e["id"], &e["kind"], &e["checkpoint"]), (&json!("key-z"), &json!("created"), &json!(position)));

    // Bad parameters are named.
    for (query, message) in [
        ("?after=x", "`after` must be an integer"),
        ("?limit=0", "`limit` must be 1 to 10000"),
        ("?consumer=a%20b", "invalid consumer name"),
        ("?from=1", "unknown query parameter `from`"),
    ] {
        let reply = client.get(&format!("{FEED}{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        assert!(reply.json()["error"].as_str().unwrap().contains(message), "{query}: {}", reply.text);
    }
    let beyond = client.post(&format!("{FEED}/consumers/c/ack"), &json!({ "generation": 1, "sequence": 999 })).await;
    assert_eq!(beyond.status, 400, "{}", beyond.text);
    assert!(beyond.text.contains("beyond the head"), "{}", beyond.text);
    let unknown = client.get("/projections/nope/changes?after=0").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_created_updated_and_deleted_are_right_for_every_kind_of_change() {
    kinds_are_right_for_every_kind_of_change(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_created_updated_and_deleted_are_right_for_every_kind_of_change() {
    kinds_are_right_for_every_kind_of_change(Backend::Postgres).await;
}

async fn a_pruned_sequence_is_410(backend: Backend) {
    let served = serve(backend, one_by_one(), "[projections.kv]\nchanges_max_entries = 10\n").await;
    let mut client = Client::connect(served.addr).await;
    for i in 0..5 {
        served.events.append(&[set(&i.to_string(), i)]).await.unwrap();
    }
    served.host.wait_until_caught_up().await.unwrap();
    ack(&mut client, "slow", 1, 3).await;
    for i in 5..50 {
        served.events.append(&[set(&i.to_string(), i)]).await.unwrap();
    }
    served.host.wait_until_caught_up().await.unwrap();
    // 50 entries, the newest 10 kept: 41 to 50.
    for query in ["?after=0".to_owned(), "?after=39".to_owned(), "?consumer=slow".to_owned()] {
        let reply = client.get(&format!("{FEED}{query}")).await;
        assert_eq!(reply.status, 410, "{query}: {}", reply.text);
        let body = reply.json();
        assert_eq!((&body["first"], &body["generation"]), (&json!(41), &json!(1)), "{body}");
        assert!(body["error"].as_str().unwrap().contains("pruned"), "{body}");
    }
    let reply = client.get(&format!("{FEED}?after=40")).await.json();
    let sequences: Vec<u64> =
        reply["entries"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (41..=50).collect::<Vec<_>>());
    // A stream from a pruned position is refused before it starts.
    let mut raw = Client::connect(served.addr).await;
    let response = raw.send_with("GET", &format!("{FEED}?after=0"), &STREAM, Vec::new()).await;
    assert_eq!(response.status(), 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_request_for_a_pruned_sequence_gets_410() {
    a_pruned_sequence_is_410(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_request_for_a_pruned_sequence_gets_410() {
    a_pruned_sequence_is_410(Backend::Postgres).await;
}

async fn a_rebuild_resets_consumers(backend: Backend) {
    let mut served = serve(backend, one_by_one(), "").await;
    let mut client = Client::connect(served.addr).await;
    let events: Vec<AppendRequest> = (0..12).map(|i| set(&(i % 5).to_string(), i)).chain([remove("1")]).collect();
    served.events.append(&events).await.unwrap();
    served.host.wait_until_caught_up().await.unwrap();
    let (_, head) = log_head(&mut client).await;
    ack(&mut client, "mirror", 1, head).await;
    let mut feed = EventStream::open_with(served.addr, &format!("{FEED}?consumer=mirror"), &STREAM).await;
    let (name, ready) = feed.next().await;
    assert_eq!((name.as_str(), &ready["after"], &ready["generation"]), ("ready", &json!(head), &json!(1)));

    let record = served.models.request_rebuild("kv").await.unwrap();
    assert_eq!(record.key.generation, 2);
    assert!(served.host.run_generation(&record).await);
    served.host.wait_until_caught_up().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.models.projection("kv").await.unwrap().key.generation != 2 {
        assert!(Instant::now() < deadline, "the rebuild was not swapped in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The open stream says so, then follows the new generation's log from its start.
    let (name, reset) = tokio::time::timeout(Duration::from_secs(10), feed.next()).await.unwrap();
    assert_eq!((name.as_str(), &reset["generation"]), ("reset", &json!(2)), "{reset}");
    let want = expected(&events);
    let (_, new_head) = log_head(&mut client).await;
    let mut model = BTreeMap::new();
    for sequence in 1..=new_head {
        let (name, e) = feed.next().await;
        assert_eq!((name.as_str(), &e["sequence"], &e["generation"]), ("change", &json!(sequence), &json!(2)));
        apply(&mut model, &e);
    }
    assert_eq!(model, want, "the new generation's log alone rebuilds the model");

    // Until it acknowledges in the new generation, the consumer is told to reset.
    let page = client.get(&format!("{FEED}?consumer=mirror")).await.json();
    assert_eq!((&page["reset"], &page["generation"], &page["entries"]), (&json!(true), &json!(2), &json!([])));
    let stale = client.post(&format!("{FEED}/consumers/mirror/ack"), &json!({ "generation": 1, "sequence": 1 })).await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    assert_eq!(stale.json()["generation"], 2);
    let by_id = [("accept", "text/event-stream"), ("last-event-id", "1:3")];
    let mut resumed = EventStream::open_with(served.addr, FEED, &by_id).await;
    assert_eq!(resumed.next().await.0, "ready");
    assert_eq!(resumed.next().await, ("reset".to_owned(), json!({ "projection": "kv", "generation": 2 })));
    ack(&mut client, "mirror", 2, new_head).await;
    let page = client.get(&format!("{FEED}?consumer=mirror")).await.json();
    assert_eq!((&page["reset"], &page["next_after"], &page["entries"]), (&json!(false), &json!(new_head), &json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_rebuild_resets_consumers_to_the_new_generation() {
    a_rebuild_resets_consumers(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_rebuild_resets_consumers_to_the_new_generation() {
    a_rebuild_resets_consumers(Backend::Postgres).await;
}
