//! The HTTP API over a real loopback socket, with the real `account-summary`
//! plugin: read-your-writes with the consistency token, the change feed,
//! filters and cursor paging over 10,000 documents, error statuses, metrics,
//! and a short load run (the 30 s benchmark is `#[ignore]`d; see BENCHMARKS.md).

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::{Client, EventStream, all_pages, enc, start_api};
use common::*;
use refract::{Host, SyncConfig};
use serde_json::{Value, json};

const ACCOUNTS: &str = "/projections/account-summary/accounts";

/// Polls often so a read-after-write waits little on the runner; the wait
/// itself is woken by the commit notice, not by polling.
fn quick_sync(batch_size: usize) -> SyncConfig {
    SyncConfig { batch_size, poll: Duration::from_millis(2), ..SyncConfig::default() }
}

/// A host running `account-summary` over a fresh data dir, with the API on loopback.
struct Served {
    host: Host,
    addr: SocketAddr,
    stores: Stores,
    _dir: tempfile::TempDir,
}

async fn serve_bank(sync: SyncConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let mut host = stores.host(sync);
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    let addr = start_api(&host).await;
    Served { host, addr, stores, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_with_the_token_are_never_stale_and_the_feed_reports_every_commit() {
    // One event per batch: a projection at the head commits every batch.
    let Served { host, addr, _dir, .. } = serve_bank(quick_sync(1)).await;

    const DEPOSITS: u64 = 1_000;
    let mut feed = EventStream::open(addr, "/projections/account-summary/changes").await;
    let (name, ready) = feed.next().await;
    assert_eq!((name.as_str(), ready["checkpoint"].as_u64()), ("ready", Some(0)), "{ready}");
    let collector = tokio::spawn(async move {
        let mut commits = Vec::new();
        let mut changed = BTreeSet::new();
        while commits.last() != Some(&(DEPOSITS + 1)) {
            let (name, data) = feed.next().await;
            assert_eq!(name, "commit", "{data}");
            assert_eq!(data["projection"], "account-summary");
            commits.push(data["checkpoint"].as_u64().unwrap());
            for c in data["changed"].as_array().unwrap() {
                changed.insert(c["id"].as_str().unwrap().to_owned());
            }
        }
        (commits, changed)
    });

    let mut client = Client::connect(addr).await;
    let opened = client
        .append("account-rw", "AccountOpened", json!({ "owner": "ada", "initial_deposit": 0 }), json!("no-stream"))
        .await;
    assert_eq!(opened, 1);
    let mut balance = 0;
    for i in 1..=DEPOSITS {
        let token = client.append("account-rw", "MoneyDeposited", json!({ "amount": i }), json!(i)).await;
        balance += i;
        let reply = client.get(&format!("{ACCOUNTS}/account-rw?min_position={token}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let doc = reply.json();
        assert_eq!(doc["id"], "account-rw");
        assert_eq!(doc["document"]["balance"].as_u64(), Some(balance), "stale read after deposit {i}: {doc}");
        assert_eq!(doc["document"]["transactions"].as_u64(), Some(i), "stale read after deposit {i}");
    }

    let (commits, changed) = tokio::time::timeout(Duration::from_secs(30), collector).await.unwrap().unwrap();
    // Each deposit is read back before the next append, so each is a commit
    // of its own; the opening event, appended without waiting, may share the
    // first deposit's commit (a projection that is behind groups commits).
    let expected: Vec<u64> = (2..=DEPOSITS + 1).collect();
    let tail = if commits.first() == Some(&1) { &commits[1..] } else { &commits[..] };
    assert_eq!(tail, expected, "every committed position, in order");
    assert_eq!(changed, BTreeSet::from(["account-rw".to_owned()]));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_order_and_cursors_over_10000_documents_match_independent_results() {
    let Served { host, addr, stores, _dir } = serve_bank(SyncConfig::default()).await;
    let events = bank_events(10_000, 14_000, 23);
    append_all(stores.events.as_ref(), &events).await;
    let expected = expected_accounts(&events);
    let mut client = Client::connect(addr).await;
    // The token is the head: one read with it replaces wait_until_caught_up.
    let head = events.len();
    let reply = client.get(&format!("/projections/account-summary?min_position={head}&timeout_ms=60000")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["lag"], 0);

    // Everything, by id, in pages of 2,500.
    let got: Vec<String> =
        all_pages(&mut client, &format!("{ACCOUNTS}?order=id"), 2_500).await.into_iter().map(|d| d.0).collect();
    let want: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(got.len(), 10_000);
    assert_eq!(got, want);

    // Range plus equality, descending balance, ties broken by id descending.
    let path = format!("{ACCOUNTS}?filter={}&filter={}&order=-balance", enc("balance>=300"), enc("status=open"));
    let got = all_pages(&mut client, &path, 333).await;
    for (id, doc) in &got {
        assert_eq!(doc["balance"].as_i64(), Some(expected[id].balance), "{id}");
    }
    let got: Vec<String> = got.into_iter().map(|d| d.0).collect();
    let mut want: Vec<(&String, &ExpectedAccount)> =
        expected.iter().filter(|(_, a)| a.balance >= 300 && !a.closed).collect();
    want.sort_by(|(ia, a), (ib, b)| b.balance.cmp(&a.balance).then(ib.cmp(ia)));
    let want: Vec<String> = want.into_iter().map(|(id, _)| id.clone()).collect();
    assert!(want.len() > 1_000, "the filter should leave many pages, left {}", want.len());
    assert_eq!(got, want);

    // `in` on a string field, ascending by it, with a half-open range on another.
    let path = format!(
        "{ACCOUNTS}?filter={}&filter={}&filter={}&order=owner",
        enc(r#"owner=in:["owner-3","owner-17","owner-30"]"#),
        enc("transactions>0"),
        enc("transactions<3")
    );
    let got: Vec<String> = all_pages(&mut client, &path, 97).await.into_iter().map(|d| d.0).collect();
    let mut want: Vec<(&str, &String)> = expected
        .iter()
        .filter(|(_, a)| ["owner-3", "owner-17", "owner-30"].contains(&a.owner.as_str()))
        .filter(|(_, a)| a.transactions > 0 && a.transactions < 3)
        .map(|(id, a)| (a.owner.as_str(), id))
        .collect();
    want.sort();
    let want: Vec<String> = want.into_iter().map(|(_, id)| id.clone()).collect();
    assert!(want.len() > 97, "several pages expected, got {}", want.len());
    assert_eq!(got, want);

    // Count agrees with the same filter computed here.
    let reply = client.get(&format!("{ACCOUNTS}?count=true&filter={}", enc("status!=open"))).await;
    assert_eq!(reply.json()["count"].as_u64(), Some(expected.values().filter(|a| a.closed).count() as u64));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let Served { host, addr, _dir, .. } = serve_bank(quick_sync(100)).await;
    let mut setup = Client::connect(addr).await;
    let token = setup.append("account-1", "AccountOpened", json!({ "owner": "ada" }), json!("no-stream")).await;
    assert_eq!(setup.get(&format!("{ACCOUNTS}/account-1?min_position={token}")).await.status, 200);

    let append = |body: Value| body.to_string().into_bytes();
    let one_event = json!({ "events": [{ "type": "MoneyDeposited", "payload": { "amount": 1 } }] });
    let mut too_large = br#"{"events":[{"type":"X","payload":""#.to_vec();
    too_large.resize(refract::BODY_LIMIT + 1024, b'a');
    too_large.extend_from_slice(br#""}]}"#);
    let long_stream = "s".repeat(300);
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("GET", "/projections/nope".into(), vec![], 404, "unknown projection `nope`"),
        ("GET", "/projections/nope/accounts/x".into(), vec![], 404, "unknown projection `nope`"),
        ("GET", "/projections/account-summary/nope".into(), vec![], 404, "has no collection `nope`"),
        ("GET", "/projections/account-summary/nope/x?min_position=99999".into(), vec![], 404, "has no collection"),
        ("GET", format!("{ACCOUNTS}/missing"), vec![], 404, "no document `missing`"),
        ("GET", format!("{ACCOUNTS}?filter=balance"), vec![], 400, "bad filter `balance`"),
        ("GET", format!("{ACCOUNTS}?filter={}", enc("balance>true")), vec![], 400, "bad value for `balance`"),
        ("GET", format!("{ACCOUNTS}?filter={}", enc("opened_at>0")), vec![], 400, "`opened_at` is not indexed"),
        ("GET", format!("{ACCOUNTS}?order=opened_at"), vec![], 400, "`opened_at` is not indexed"),
        ("GET", format!("{ACCOUNTS}?limit=0"), vec![], 400, "`limit`"),
        ("GET", format!("{ACCOUNTS}?limit=20000"), vec![], 400, "limit must be between 1 and 10000"),
        ("GET", format!("{ACCOUNTS}?limit=ten"), vec![], 400, "`limit` must be a non-negative integer"),
        ("GET", format!("{ACCOUNTS}?cursor=zz"), vec![], 400, "bad cursor"),
        ("GET", format!("{ACCOUNTS}?colour=red"), vec![], 400, "unknown query parameter `colour`"),
        ("GET", format!("{ACCOUNTS}/account-1?min_position=soon"), vec![], 400, "`min_position`"),
        ("GET", format!("{ACCOUNTS}/account-1?timeout_ms=3600000"), vec![], 400, "`timeout_ms` must be at most"),
        (
            "GET",
            format!("{ACCOUNTS}/account-1?min_position=99999&timeout_ms=150"),
            vec![],
            504,
            "did not reach position 99999",
        ),
        ("GET", format!("{ACCOUNTS}?min_position=99999&timeout_ms=50"), vec![], 504, "its checkpoint is 1"),
        ("GET", "/projections/account-summary?min_position=99999&timeout_ms=50".into(), vec![], 504, "checkpoint is 1"),
        ("GET", "/projections/nope/changes".into(), vec![], 404, "unknown projection"),
        ("GET", "/projections/account-summary/changes?from=3".into(), vec![], 400, "unknown query parameter `from`"),
        ("POST", "/streams/account-2/events".into(), b"{not json".to_vec(), 400, "bad append body"),
        ("POST", "/streams/account-2/events".into(), vec![], 400, "bad append body"),
        ("POST", "/streams/account-2/events".into(), append(json!({ "evnts": [] })), 400, "unknown field `evnts`"),
        ("POST", "/streams/account-2/events".into(), append(json!({ "events": [] })), 400, "at least one event"),
        (
            "POST",
            "/streams/account-2/events".into(),
            append(json!({ "events": [{ "type": "", "payload": 1 }] })),
            400,
            "event type is empty",
        ),
        (
            "POST",
            "/streams/account-2/events".into(),
            append(json!({ "events": [{ "type": "X" }] })),
            400,
            "missing field `payload`",
        ),
        (
            "POST",
            "/streams/account-2/events".into(),
            append(json!({ "expected_version": "soon", "events": one_event["events"] })),
            400,
            "expected version must be",
        ),
        (
            "POST",
            "/streams/account-2/events".into(),
            append(json!({ "expected_version": -1, "events": one_event["events"] })),
            400,
            "`expected_version`",
        ),
        (
            "POST",
            "/streams/account-1/events".into(),
            append(json!({ "expected_version": 5, "events": one_event["events"] })),
            409,
            "expected version 5, but it is at 1",
        ),
        (
            "POST",
            format!("/streams/{long_stream}/events"),
            append(one_event.clone()),
            400,
            "stream id must be 1 to 256 bytes",
        ),
        ("POST", "/streams/account-2/events".into(), too_large, 413, "larger than the limit"),
        ("GET", "/nowhere".into(), vec![], 404, "no such endpoint: /nowhere"),
        ("DELETE", "/projections".into(), vec![], 405, "method not allowed"),
        ("GET", "/streams/account-1/events".into(), vec![], 405, "method not allowed"),
    ];
    for (method, path, body, status, needle) in cases {
        // A fresh connection each time: the server may close one after a 413.
        let reply = Client::connect(addr).await.request(method, &path, body).await;
        let shown = &path[..path.len().min(120)];
        assert_eq!(reply.status, status, "{method} {shown}: {}", reply.text);
        assert_eq!(reply.content_type, "application/json", "{method} {shown}");
        let error =
            reply.json()["error"].as_str().unwrap_or_else(|| panic!("{method} {shown}: {}", reply.text)).to_owned();
        assert!(error.contains(needle), "{method} {shown}: `{error}` lacks `{needle}`");
        if status == 504 {
            assert_eq!(reply.json()["checkpoint"], 1, "{}", reply.text);
        }
        if status == 409 {
            assert_eq!(
                (reply.json()["expected_version"].clone(), reply.json()["actual_version"].clone()),
                (json!(5), json!(1))
            );
        }
    }
    // Nothing above appended anything, and the host is still serving.
    let health = setup.get("/health").await;
    assert_eq!((health.status, health.json()), (200, json!({ "status": "ok", "head": 1 })));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_and_openapi_describe_the_running_host() {
    let Served { host, addr, _dir, .. } = serve_bank(quick_sync(50)).await;
    let mut client = Client::connect(addr).await;
    let events = bank_events(20, 200, 3);
    let mut token = 0;
    for e in &events {
        token = client.append(&e.stream, e.event_type, e.payload.clone(), Value::Null).await;
    }
    // A non-subscribed event still moves the checkpoint: the token after it is reachable.
    token = token.max(client.append("other-1", "Unrelated", json!({}), Value::Null).await);
    let reply = client.get(&format!("/projections?min_position={token}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let list = reply.json();
    let status = &list[0];
    assert_eq!(status["name"], "account-summary");
    assert_eq!(
        (status["checkpoint"].as_u64(), status["head"].as_u64(), status["lag"].as_u64()),
        (Some(token), Some(token), Some(0))
    );
    assert_eq!(status["state"], "running");
    assert!(status["events_per_second"].as_f64().unwrap() > 0.0, "{status}");

    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain; version=0.0.4"));
    let line = |name: &str| {
        let prefix = format!("{name}{{projection=\"account-summary\",generation=\"1\",role=\"active\"}} ");
        let value = metrics
            .text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in\n{}", metrics.text));
        value.parse::<f64>().unwrap()
    };
    assert_eq!(line("refract_events_processed_total"), events.len() as f64);
    assert_eq!(line("refract_projection_checkpoint"), token as f64);
    assert_eq!(line("refract_projection_lag"), 0.0);
    assert_eq!(line("refract_projection_errors"), 0.0);
    assert_eq!(line("refract_batch_duration_seconds_count"), line("refract_batches_committed_total"));
    assert!(metrics.text.contains(
        "refract_batch_duration_seconds_bucket{projection=\"account-summary\",generation=\"1\",role=\"active\",le=\"+Inf\"}"
    ));

    let api = client.get("/openapi.json").await.json();
    assert_eq!(api["openapi"], "3.1.0");
    let paths: BTreeSet<&str> = api["paths"].as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let routes = [
        "/streams/{stream}/events",
        "/projections",
        "/projections/{name}",
        "/projections/{name}/changes",
        "/projections/{name}/changes/consumers/{consumer}/ack",
        "/projections/{name}/{collection}",
        "/projections/{name}/{collection}/{id}",
        "/aggregate/{name}/{collection}",
        "/ready",
        "/changes",
        "/metrics",
        "/health",
        "/openapi.json",
        "/projections/{name}/pause",
        "/projections/{name}/resume",
        "/projections/{name}/reset",
        "/projections/{name}/retry",
        "/projections/{name}/drop",
        "/streams/{stream}",
        "/events",
        "/",
        "/console/console.css",
        "/console/console.js",
        "/projections/{name}/dead-letters",
        "/projections/{name}/rebuild",
        "/projections/{name}/verify",
        "/sources",
    ];
    assert_eq!(paths, BTreeSet::from(routes));
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{method} {path}");
            // Every path parameter in the template is declared.
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(['{', '}']);
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{method} {path} does not declare `{name}`");
            }
        }
    }
    host.shutdown().await;
}

/// What a load run saw.
struct LoadReport {
    operations: u64,
    errors: u64,
    stale: u64,
    appends: Vec<Duration>,
    reads: Vec<Duration>,
    elapsed: Duration,
}

/// The `p` quantile (nearest rank) of `samples`, in ms.
fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let rank = ((samples.len() as f64 * p).ceil() as usize).saturating_sub(1);
    samples.get(rank).copied().unwrap_or_default().as_secs_f64() * 1e3
}

/// What each client of a load run does.
#[derive(Clone, Copy, PartialEq)]
enum Mix {
    /// Appends a deposit, then reads the balance back with its token.
    AppendThenRead,
    /// Only appends; reads the balance once, with the last token, at the end.
    AppendsOnly,
}

/// `clients` concurrent clients, each depositing into its own account for
/// `duration` as `mix` says, and checking the balance it reads against its
/// own sum. An operation is one append or one read; its latency is the
/// request's round trip.
async fn load(addr: SocketAddr, clients: usize, duration: Duration, mix: Mix) -> LoadReport {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                let stream = format!("account-load-{c}");
                let (mut ops, mut errors, mut stale) = (0u64, 0u64, 0u64);
                let (mut appends, mut reads) = (Vec::new(), Vec::new());
                let opened = json!({ "expected_version": "no-stream", "events": [{ "type": "AccountOpened", "payload": { "owner": stream } }] });
                assert_eq!(client.post(&format!("/streams/{stream}/events"), &opened).await.status, 200);
                let (mut version, mut balance, mut last) = (1u64, 0i64, 0u64);
                while Instant::now() < deadline {
                    let amount = 1 + (version % 97) as i64;
                    let body = json!({ "expected_version": version, "events": [{ "type": "MoneyDeposited", "payload": { "amount": amount } }] });
                    let t = Instant::now();
                    let reply = client.post(&format!("/streams/{stream}/events"), &body).await;
                    appends.push(t.elapsed());
                    ops += 1;
                    if reply.status != 200 {
                        errors += 1;
                        continue;
                    }
                    let token = reply.json()["position"].as_u64().unwrap();
                    version += 1;
                    balance += amount;
                    last = token;
                    if mix == Mix::AppendsOnly {
                        continue;
                    }
                    let t = Instant::now();
                    let reply = client.get(&format!("{ACCOUNTS}/{stream}?min_position={token}")).await;
                    reads.push(t.elapsed());
                    ops += 1;
                    if reply.status != 200 {
                        errors += 1;
                    } else if reply.json()["document"]["balance"].as_i64() != Some(balance) {
                        stale += 1;
                    }
                }
                if mix == Mix::AppendsOnly {
                    let reply = client.get(&format!("{ACCOUNTS}/{stream}?min_position={last}")).await;
                    if reply.status != 200 {
                        errors += 1;
                    } else if reply.json()["document"]["balance"].as_i64() != Some(balance) {
                        stale += 1;
                    }
                }
                (ops, errors, stale, appends, reads)
            })
        })
        .collect();
    let mut report = LoadReport {
        operations: 0,
        errors: 0,
        stale: 0,
        appends: Vec::new(),
        reads: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (ops, errors, stale, appends, reads) = t.await.unwrap();
        report.operations += ops;
        report.errors += errors;
        report.stale += stale;
        report.appends.extend(appends);
        report.reads.extend(reads);
    }
    report.elapsed = started.elapsed();
    report
}

/// A load run against a host with default settings.
async fn load_run(duration: Duration, mix: Mix) -> LoadReport {
    let Served { host, addr, _dir, .. } = serve_bank(SyncConfig::default()).await;
    let mut report = load(addr, 8, duration, mix).await;
    let mut all: Vec<Duration> = report.appends.iter().chain(&report.reads).copied().collect();
    let secs = report.elapsed.as_secs_f64();
    println!(
        "8 clients, {secs:.1} s: {} requests ({:.0}/s; {} appends, {:.0}/s; {} reads with a token, {:.0}/s), {} errors, {} stale reads",
        report.operations,
        report.operations as f64 / secs,
        report.appends.len(),
        report.appends.len() as f64 / secs,
        report.reads.len(),
        report.reads.len() as f64 / secs,
        report.errors,
        report.stale,
    );
    let reads = match mix {
        Mix::AppendThenRead => format!(
            "; read with min_position {:.2} / {:.2}",
            percentile_ms(&mut report.reads, 0.5),
            percentile_ms(&mut report.reads, 0.99)
        ),
        Mix::AppendsOnly => String::new(),
    };
    println!(
        "latency ms (p50 / p99): all {:.2} / {:.2}; append {:.2} / {:.2}{reads}",
        percentile_ms(&mut all, 0.5),
        percentile_ms(&mut all, 0.99),
        percentile_ms(&mut report.appends, 0.5),
        percentile_ms(&mut report.appends, 0.99),
    );
    host.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_load_has_no_errors_and_no_stale_reads() {
    for mix in [Mix::AppendThenRead, Mix::AppendsOnly] {
        let report = load_run(Duration::from_secs(2), mix).await;
        assert!(report.operations > 100, "only {} operations in 2 s", report.operations);
        assert_eq!((report.errors, report.stale), (0, 0));
    }
}

/// The benchmark in BENCHMARKS.md: run it explicitly with
/// `cargo test --release -p refract --test all -- --ignored --nocapture http_api::load_benchmark`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 30 s benchmark, not a test; see BENCHMARKS.md"]
async fn load_benchmark() {
    for mix in [Mix::AppendThenRead, Mix::AppendsOnly] {
        let report = load_run(Duration::from_secs(30), mix).await;
        assert_eq!((report.errors, report.stale), (0, 0));
    }
}

/// `refract run --http` serves the API, and Ctrl-C stops it promptly even
/// with a change feed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refract_run_serves_the_api_and_stops_on_ctrl_c() {
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["run", "--poll-ms", "5", "--http", "127.0.0.1:0", "--plugins"])
        .arg(&plugins)
        .env("RUST_LOG", "refract=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Port 0 lets the OS pick a free port; the log line says which.
    let addr = common::http::listening_addr(&mut child);

    let mut client = Client::connect(addr).await;
    let mut feed = EventStream::open(addr, "/projections/account-summary/changes").await;
    assert_eq!(feed.next().await.0, "ready");
    let token = client
        .append("account-cli", "AccountOpened", json!({ "owner": "ada", "initial_deposit": 5 }), json!("no-stream"))
        .await;
    let reply = client.get(&format!("{ACCOUNTS}/account-cli?min_position={token}")).await;
    assert_eq!(reply.json()["document"]["balance"], 5, "{}", reply.text);
    assert_eq!(feed.next().await.1["checkpoint"], token);

    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "refract run did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
