//! "All read models ready": `GET /ready`, `refract wait`, the host-wide
//! change feed `GET /changes` and the `consistency` levels of reads, over a
//! real loopback socket with real plugins: `account-summary` and
//! `order-summary`, which subscribe to disjoint events, and `loop-forever`,
//! which is stuck in its first batch until its deadline faults it.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::http::{Client, EventStream, start_api};
use common::*;
use refract::{Host, ReadModelStore, SyncConfig};
use serde_json::{Value, json};

const ACCOUNTS: &str = "/projections/account-summary/accounts";

fn refract(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refract")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

/// A host running `plugins` (crate names) over a fresh data dir, with the API on loopback.
struct Served {
    host: Host,
    addr: SocketAddr,
    stores: Stores,
    /// Held for the test: dropping it deletes the stores.
    dir: tempfile::TempDir,
}

async fn serve(plugins: &[&str], config: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let sync = SyncConfig { batch_size: 1, poll: Duration::from_millis(5), ..SyncConfig::default() };
    let mut host = stores.host_with(sync, config);
    for name in plugins {
        host.start(host.runtime().load(&plugin(name)).unwrap()).await.unwrap();
    }
    let addr = start_api(&host).await;
    Served { host, addr, stores, dir }
}

async fn checkpoint(models: &dyn ReadModelStore, projection: &str) -> u64 {
    models.projection(projection).await.unwrap().checkpoint
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|p| p["projection"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_only_once_every_projection_committed_the_event_subscribed_or_not() {
    let Served { host, addr, stores, dir } = serve(&["account_summary", "order_summary"], "").await;
    let models = stores.models_dyn();
    let mut client = Client::connect(addr).await;
    client
        .append("account-r", "AccountOpened", json!({ "owner": "ada", "initial_deposit": 0 }), json!("no-stream"))
        .await;
    client.append("order-r", "OrderPlaced", json!({ "customer": "ada", "lines": [] }), json!("no-stream")).await;

    // Each event is subscribed to by one projection only: the other one's
    // checkpoint must still pass it before `/ready` answers.
    let (mut balance, mut lines) = (0, 0);
    for i in 1..=150u64 {
        let token = if i % 2 == 0 {
            balance += i;
            client.append("account-r", "MoneyDeposited", json!({ "amount": i }), json!("any")).await
        } else {
            lines += 1;
            let line = json!({ "sku": format!("s{i}"), "qty": 1, "price": i });
            client.append("order-r", "OrderLineAdded", line, json!("any")).await
        };
        let reply = client.get(&format!("/ready?min_position={token}&timeout_ms=10000")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        // Read the store right after the answer: nothing may still be on its way.
        for projection in ["account-summary", "order-summary"] {
            let at = checkpoint(models.as_ref(), projection).await;
            assert!(at >= token, "/ready answered for {token} with {projection} at {at}");
        }
        let account = models.get_document("account-summary", "accounts", "account-r").await.unwrap().unwrap();
        assert_eq!(serde_json::from_str::<Value>(&account).unwrap()["balance"].as_u64(), Some(balance), "after {i}");
        let order = models.get_document("order-summary", "orders", "order-r").await.unwrap().unwrap();
        let order: Value = serde_json::from_str(&order).unwrap();
        assert_eq!(order["lines"].as_array().unwrap().len(), lines, "after {i}");

        let body = reply.json();
        assert_eq!((body["ready"].as_bool(), body["min_position"].as_u64()), (Some(true), Some(token)), "{body}");
        assert_eq!(names(&body["projections"]), ["account-summary", "order-summary"], "{body}");
        assert!(body["projections"].as_array().unwrap().iter().all(|p| p["checkpoint"].as_u64() >= Some(token)));
    }

    // Without a token: the head when the request arrived.
    let head = client.append("account-r", "MoneyDeposited", json!({ "amount": 1 }), json!("any")).await;
    let reply = client.get("/ready").await;
    assert_eq!((reply.status, reply.json()["min_position"].as_u64()), (200, Some(head)), "{}", reply.text);

    // `refract wait`, a real process reading the same store, agrees.
    let data = dir.path();
    let waited = refract(data, &["wait", "--min-position", &head.to_string(), "--timeout-ms", "10000"]);
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));
    let out: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(names(&out["projections"]), ["account-summary", "order-summary"], "{out}");
    assert!(out["projections"].as_array().unwrap().iter().all(|p| p["checkpoint"].as_u64() >= Some(head)), "{out}");
    let default = refract(data, &["wait"]);
    assert!(default.status.success(), "without --min-position, the head now: {default:?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_projection_behind_then_the_faulted_one_and_so_does_refract_wait() {
    let config = "[projections.loop-forever]\ndeadline_ms = 4000\nretries = 0\n";
    let Served { host, addr, dir, .. } = serve(&["account_summary", "loop_forever"], config).await;
    let mut client = Client::connect(addr).await;
    let token = client
        .append("account-l", "AccountOpened", json!({ "owner": "ada", "initial_deposit": 5 }), json!("no-stream"))
        .await;
    // account-summary gets there; loop-forever is stuck in its first batch.
    let reply = client.get(&format!("{ACCOUNTS}/account-l?min_position={token}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let started = Instant::now();
    let reply = client.get(&format!("/ready?min_position={token}&timeout_ms=300")).await;
    assert_eq!(reply.status, 504, "{}", reply.text);
    assert!(started.elapsed() >= Duration::from_millis(300), "answered before its timeout");
    let body = reply.json();
    assert_eq!(names(&body["behind"]), ["loop-forever"], "only the projection behind is named: {body}");
    assert_eq!((body["behind"][0]["checkpoint"].as_u64(), body["min_position"].as_u64()), (Some(0), Some(token)));
    assert!(body["error"].as_str().unwrap().contains("loop-forever"), "{body}");

    let data = dir.path().to_owned();
    let waited = tokio::task::spawn_blocking(move || {
        refract(&data, &["wait", "--min-position", &token.to_string(), "--timeout-ms", "200"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(!waited.status.success() && stderr.contains("behind: loop-forever"), "{waited:?}");
    assert!(!stderr.contains("account-summary"), "{stderr}");

    // Its deadline faults it. From then on, `/ready` answers at once, even
    // with a long timeout, naming it and its error.
    let deadline = Instant::now() + Duration::from_secs(60);
    let faulted = loop {
        let reply = client.get(&format!("/ready?min_position={token}&timeout_ms=500")).await;
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 504, "{}", reply.text);
        assert!(Instant::now() < deadline, "loop-forever never faulted");
    };
    let body = faulted.json();
    assert_eq!(names(&body["faulted"]), ["loop-forever"], "{body}");
    assert!(body["faulted"][0]["error"].as_str().unwrap().contains("timeout"), "{body}");
    assert!(body["error"].as_str().unwrap().contains("loop-forever"), "{body}");
    let started = Instant::now();
    let again = client.get("/ready?min_position=0&timeout_ms=60000").await;
    assert_eq!(again.status, 503, "{}", again.text);
    assert!(started.elapsed() < Duration::from_secs(2), "a fault is answered at once, not at the timeout");

    let data = dir.path().to_owned();
    let waited = tokio::task::spawn_blocking(move || refract(&data, &["wait", "--min-position", "0"])).await.unwrap();
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(!waited.status.success() && stderr.contains("faulted") && stderr.contains("loop-forever"), "{stderr}");
    assert!(stderr.contains("timeout"), "the error is shown: {stderr}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_reads_see_an_append_made_just_before_without_a_token() {
    let Served { host, addr, dir: _dir, .. } = serve(&["account_summary"], "").await;
    let mut client = Client::connect(addr).await;
    client
        .append("account-s", "AccountOpened", json!({ "owner": "ada", "initial_deposit": 0 }), json!("no-stream"))
        .await;
    let mut balance = 0;
    for i in 1..=200u64 {
        client.append("account-s", "MoneyDeposited", json!({ "amount": i }), json!("any")).await;
        balance += i;
        let reply = client.get(&format!("{ACCOUNTS}/account-s?consistency=strong")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["document"]["balance"].as_u64(), Some(balance), "stale strong read after deposit {i}");
        let filter = common::http::enc(&format!("balance>={balance}"));
        let count = client.get(&format!("{ACCOUNTS}?consistency=strong&count=true&filter={filter}")).await;
        assert_eq!(count.json()["count"].as_u64(), Some(1), "stale strong count after deposit {i}: {}", count.text);
    }
    // `causal` is `min_position` by name; `eventual` answers at once.
    let token = client.append("account-s", "MoneyDeposited", json!({ "amount": 1 }), json!("any")).await;
    let reply = client.get(&format!("{ACCOUNTS}/account-s?consistency=causal&min_position={token}")).await;
    assert_eq!(reply.json()["document"]["balance"].as_u64(), Some(balance + 1));
    assert_eq!(client.get(&format!("{ACCOUNTS}/account-s?consistency=eventual")).await.status, 200);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_read_of_a_stuck_projection_times_out_with_the_head_it_waited_for() {
    let config = "[projections.loop-forever]\ndeadline_ms = 4000\nretries = 0\n";
    let Served { host, addr, dir: _dir, .. } = serve(&["loop_forever"], config).await;
    let mut client = Client::connect(addr).await;
    let head = client.append("s", "Anything", json!({}), json!("no-stream")).await;
    let reply = client.get("/projections/loop-forever/docs/x?consistency=strong&timeout_ms=100").await;
    assert_eq!(reply.status, 504, "{}", reply.text);
    assert_eq!((reply.json()["min_position"].as_u64(), reply.json()["checkpoint"].as_u64()), (Some(head), Some(0)));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_json_naming_them() {
    let Served { host, addr, dir: _dir, .. } = serve(&["account_summary"], "").await;
    let mut client = Client::connect(addr).await;
    for (path, needle) in [
        ("/ready?min_position=x", "`min_position`"),
        ("/ready?min_position=-1", "`min_position`"),
        ("/ready?timeout_ms=999999", "`timeout_ms`"),
        ("/ready?timeout_ms=soon", "`timeout_ms`"),
        ("/ready?consistency=strong", "`consistency`"),
        ("/ready?colour=red", "`colour`"),
        ("/changes?after=3", "no parameters"),
        (&format!("{ACCOUNTS}/a?consistency=causal"), "needs `min_position`"),
        (&format!("{ACCOUNTS}/a?consistency=strong&min_position=1"), "does not take `min_position`"),
        (&format!("{ACCOUNTS}/a?consistency=eventual&min_position=1"), "does not take `min_position`"),
        (&format!("{ACCOUNTS}/a?consistency=eventual&timeout_ms=10"), "`timeout_ms`"),
        (&format!("{ACCOUNTS}?consistency=linearizable"), "eventual, causal or strong"),
        (&format!("{ACCOUNTS}?count=true&consistency=causal"), "needs `min_position`"),
        ("/projections/account-summary?consistency=sometimes", "`consistency`"),
        ("/projections?consistency=causal", "needs `min_position`"),
    ] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert!(reply.content_type.starts_with("application/json"), "{path}: {}", reply.content_type);
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{path}: {error}");
    }
    // The routes and the parameter are in the OpenAPI document.
    let doc = client.get("/openapi.json").await.json();
    for path in ["/ready", "/changes"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} is not documented");
    }
    let params = doc["paths"]["/projections/{name}/{collection}/{id}"]["get"]["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["name"] == "consistency"), "consistency is not documented");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_feed_carries_every_projections_commits_and_ready_at_the_head() {
    let Served { host, addr, dir: _dir, .. } = serve(&["account_summary", "order_summary"], "").await;
    let mut feed = EventStream::open(addr, "/changes").await;
    let (name, subscribed) = feed.next().await;
    assert_eq!(name, "subscribed", "{subscribed}");
    assert_eq!(subscribed["head"].as_u64(), Some(0), "{subscribed}");
    assert_eq!(names(&subscribed["projections"]), ["account-summary", "order-summary"]);
    let (name, ready) = feed.next().await;
    assert_eq!((name.as_str(), ready["checkpoint"].as_u64()), ("ready", Some(0)), "all at the empty head: {ready}");

    let mut client = Client::connect(addr).await;
    for i in 1..=20u64 {
        let token = if i % 2 == 0 {
            client.append("account-f", "MoneyDeposited", json!({ "amount": 1 }), json!("any")).await
        } else {
            client.append("order-f", "OrderPlaced", json!({ "customer": "ada", "lines": [] }), json!("any")).await
        };
        assert_eq!(token, i);
        // Both projections commit position i, in either order, and only
        // then comes `ready` for it.
        let mut committed = Vec::new();
        loop {
            let (name, data) = feed.next().await;
            match name.as_str() {
                "commit" => {
                    assert_eq!(data["checkpoint"].as_u64(), Some(i), "{data}");
                    committed.push(data["projection"].as_str().unwrap().to_owned());
                    let subscribed = (i % 2 == 0) == (data["projection"] == "account-summary");
                    assert_eq!(data["events"].as_u64(), Some(u64::from(subscribed)), "{data}");
                }
                "ready" => {
                    assert_eq!(data["checkpoint"].as_u64(), Some(i), "{data}");
                    committed.sort();
                    assert_eq!(committed, ["account-summary", "order-summary"], "ready before both committed {i}");
                    break;
                }
                other => panic!("unexpected {other}: {data}"),
            }
        }
    }
    host.shutdown().await;
}
