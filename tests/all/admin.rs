//! Admin over the CLI and HTTP against real `refract run` processes: pause
//! stops a projection while appends go on and resume catches it up (on a
//! running host and across a restart); reset re-projects from a position;
//! retry and drop work over HTTP; mistakes get 4xx JSON naming them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::cli::{output, refract, succeed};
use crate::common::http::Client;
use crate::common::plugins_dir;
use crate::common::served::serve;

const P: &str = "account-summary";

/// Appends a deposit (or, for a new account, an opening) and returns its position.
async fn deposit(c: &mut Client, account: &str, amount: i64, opening: bool) -> u64 {
    if opening {
        c.append(account, "AccountOpened", json!({ "owner": account, "initial_deposit": amount }), json!("any")).await
    } else {
        c.append(account, "MoneyDeposited", json!({ "amount": amount }), json!("any")).await
    }
}

/// The test's own model of account-summary: balance and transactions per account.
#[derive(Default, Debug, Clone, PartialEq)]
struct Model(BTreeMap<String, (i64, u64)>);

impl Model {
    fn apply(&mut self, account: &str, amount: i64, opening: bool) {
        let e = self.0.entry(account.to_owned()).or_default();
        e.0 += amount;
        if !opening {
            e.1 += 1;
        }
    }
}

/// The documents as the API serves them, read once the projection reached `position`.
async fn documents(c: &mut Client, position: u64) -> Model {
    let reply = c.get(&format!("/projections/{P}/accounts?limit=1000&min_position={position}&timeout_ms=30000")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut m = Model::default();
    for d in reply.json()["documents"].as_array().unwrap() {
        let doc = &d["document"];
        m.0.insert(
            d["id"].as_str().unwrap().to_owned(),
            (doc["balance"].as_i64().unwrap(), doc["transactions"].as_u64().unwrap()),
        );
    }
    m
}

async fn status(c: &mut Client) -> Value {
    let reply = c.get(&format!("/projections/{P}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// Appends `n` deposits over three accounts (opening them first when `open`),
/// mirrored in `model`; returns the last position.
async fn traffic(c: &mut Client, model: &mut Model, n: usize, open: bool, seed: i64) -> u64 {
    let mut last = 0;
    for (i, account) in ["account-1", "account-2", "account-3"].into_iter().enumerate() {
        if open {
            let amount = 100 * (i as i64 + 1);
            last = deposit(c, account, amount, true).await;
            model.apply(account, amount, true);
        }
    }
    for i in 0..n {
        let account = ["account-1", "account-2", "account-3"][i % 3];
        let amount = seed + i as i64;
        last = deposit(c, account, amount, false).await;
        model.apply(account, amount, false);
    }
    last
}

/// Whether the checkpoint stays at `at` for `quiet`: nothing is projected.
async fn assert_stays(c: &mut Client, at: u64, quiet: Duration) {
    let started = Instant::now();
    while started.elapsed() < quiet {
        let s = status(c).await;
        assert_eq!(s["checkpoint"], at, "a paused projection moved: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cli(data: &Path, args: &[&str]) -> String {
    succeed(refract(data).args(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_projection_while_appends_go_on_and_resume_catches_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let args = ["--plugins", plugins.to_str().unwrap()];
    let (host, addr) = serve(&data, "127.0.0.1:0", &args);
    let mut c = Client::connect(addr).await;
    let mut model = Model::default();
    let before = traffic(&mut c, &mut model, 30, true, 7).await;
    assert_eq!(documents(&mut c, before).await, model);

    // The CLI, with a host running on the data dir: it stops the projection.
    let out = cli(&data, &["pause", P]);
    assert!(out.contains(&format!("{P}: paused at checkpoint {before}")), "{out}");
    let s = status(&mut c).await;
    assert_eq!((s["paused"].clone(), s["checkpoint"].clone()), (json!(true), json!(before)), "{s}");
    assert!(cli(&data, &["status"]).contains("paused"));

    let paused_model = model.clone();
    let last = traffic(&mut c, &mut model, 20, false, 1000).await;
    assert_stays(&mut c, before, Duration::from_millis(1500)).await;
    let s = status(&mut c).await;
    assert_eq!(s["lag"], last - before, "{s}");
    let eventual = c.get(&format!("/projections/{P}/accounts?limit=1000")).await.json();
    assert_eq!(eventual["documents"].as_array().unwrap().len(), paused_model.0.len());

    let out = cli(&data, &["resume", P]);
    assert!(out.contains(&format!("{P}: resumed from checkpoint {before}")), "{out}");
    assert_eq!(documents(&mut c, last).await, model, "resumed and caught up");
    assert_eq!(status(&mut c).await["paused"], false);

    // Over HTTP, then across a restart: the pause is durable.
    let r = c.post(&format!("/projections/{P}/pause"), &json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({ "projection": P, "paused": true, "changed": true, "checkpoint": last }));
    let again = c.post(&format!("/projections/{P}/pause"), &json!(null)).await.json();
    assert_eq!(again["changed"], false, "{again}");
    drop(c);
    host.signal(libc::SIGTERM);
    let mut host = host;
    assert!(host.wait(Duration::from_secs(30)).success());
    // Appended with no host running, then a host starts: it must not run the projection.
    let mut expected = model.clone();
    let mut head = last;
    for i in 0..5 {
        let out = cli(&data, &["append", "account-2", "MoneyDeposited", &format!("{{\"amount\": {}}}", 50 + i)]);
        head = out.trim().parse().unwrap();
        expected.apply("account-2", 50 + i, false);
    }
    let (mut host, addr) = serve(&data, "127.0.0.1:0", &args);
    host.wait_for_log("projection is paused", Duration::from_secs(30));
    let mut c = Client::connect(addr).await;
    assert_stays(&mut c, last, Duration::from_millis(1500)).await;
    assert_eq!(status(&mut c).await["paused"], true);
    let r = c.post(&format!("/projections/{P}/resume"), &json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["paused"], false);
    assert_eq!(documents(&mut c, head).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_work_without_a_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    cli(&data, &["append", "account-1", "AccountOpened", "{\"owner\": \"a\", \"initial_deposit\": 3}"]);
    let batch = ["run", "--exit-when-caught-up", "--plugins", plugins.to_str().unwrap()];
    cli(&data, &batch);
    let out = cli(&data, &["pause", P]);
    assert!(out.contains("paused at checkpoint 1"), "{out}");
    cli(&data, &["append", "account-1", "MoneyDeposited", "{\"amount\": 4}"]);
    cli(&data, &batch);
    let doc: Value = serde_json::from_str(&cli(&data, &["get", P, "accounts", "account-1"])).unwrap();
    assert_eq!(doc["balance"], 3, "paused: the deposit is not projected");
    let out = cli(&data, &["resume", P]);
    assert!(out.contains("resumed from checkpoint 1"), "{out}");
    cli(&data, &batch);
    let doc: Value = serde_json::from_str(&cli(&data, &["get", P, "accounts", "account-1"])).unwrap();
    assert_eq!(doc["balance"], 7);
    let unknown = output(refract(&data).args(["pause", "nope"]));
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown projection `nope`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reprojects_from_a_position_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let (_host, addr) = serve(&data, "127.0.0.1:0", &["--plugins", plugins.to_str().unwrap()]);
    let mut c = Client::connect(addr).await;
    // Positions 1..=5: an opening of 0, then deposits of 10, 20, 30, 40.
    let amounts = [0, 10, 20, 30, 40];
    let mut last = 0;
    for (i, a) in amounts.iter().enumerate() {
        last = deposit(&mut c, "account-1", *a, i == 0).await;
    }
    assert_eq!(last, 5);
    let mut once = Model::default();
    for (i, a) in amounts.iter().enumerate() {
        once.apply("account-1", *a, i == 0);
    }
    assert_eq!(documents(&mut c, last).await, once);

    // The CLI, with the host running: the events after 3 are projected again,
    // on top of the documents as they were.
    let out = cli(&data, &["reset", P, "--to", "3"]);
    assert!(out.contains("checkpoint moved from 5 to 3"), "{out}");
    let mut twice = once.clone();
    for a in &amounts[3..] {
        twice.apply("account-1", *a, false);
    }
    assert_eq!(documents(&mut c, last).await, twice);
    assert_eq!(status(&mut c).await["paused"], false, "a reset of a running projection resumes it");

    // Over HTTP, to 0: the read model is emptied and rebuilt from the whole log.
    let r = c.post(&format!("/projections/{P}/reset?to=0"), &json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({ "projection": P, "from": 5, "to": 0, "paused": false }));
    assert_eq!(documents(&mut c, last).await, once);

    // A paused projection stays paused, at the new checkpoint.
    assert_eq!(c.post(&format!("/projections/{P}/pause"), &json!(null)).await.status, 200);
    let r = c.post(&format!("/projections/{P}/reset?to=4"), &json!(null)).await.json();
    assert_eq!(r["paused"], true, "{r}");
    let s = status(&mut c).await;
    assert_eq!((s["checkpoint"].clone(), s["paused"].clone()), (json!(4), json!(true)), "{s}");

    // Mistakes: 4xx JSON naming what is wrong.
    for (path, status, needle) in [
        (format!("/projections/{P}/reset?to=99"), 400, "position 99 is past the head of the log (5)"),
        (format!("/projections/{P}/reset?to=abc"), 400, "`to` must be a non-negative integer"),
        (format!("/projections/{P}/reset"), 400, "`to` is required"),
        (format!("/projections/{P}/reset?to=1&x=2"), 400, "unknown query parameter `x`"),
        ("/projections/nope/reset?to=1".to_owned(), 404, "unknown projection `nope`"),
        ("/projections/nope/pause".to_owned(), 404, "unknown projection `nope`"),
        ("/projections/nope/resume".to_owned(), 404, "unknown projection `nope`"),
    ] {
        let r = c.post(&path, &json!(null)).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{path}: {}", r.text);
    }
    let out = output(refract(&data).args(["reset", P, "--to", "6"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("position 6 is past the head of the log (5)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_drop_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["poison", "account_summary"]);
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, "[defaults]\nretries = 0\nbackoff_ms = 1\n").unwrap();
    let args = ["--plugins", plugins.to_str().unwrap(), "--config", config.to_str().unwrap()];
    let (host, addr) = serve(&data, "127.0.0.1:0", &args);
    let mut c = Client::connect(addr).await;
    c.append("ledger-1", "MoneyDeposited", json!({ "amount": 5 }), json!("any")).await;
    c.append("ledger-1", "MoneyDeposited", json!({ "amount": 1, "poison": true }), json!("any")).await;
    let faulted = |s: &Value| s["state"] == "faulted";
    let wait_faulted = async |c: &mut Client| {
        let started = Instant::now();
        loop {
            let s = c.get("/projections/ledger").await.json();
            if faulted(&s) {
                return s;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "not faulted: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let s = wait_faulted(&mut c).await;
    assert_eq!(s["checkpoint"], 1, "{s}");
    let r = c.post("/projections/ledger/retry", &json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({ "projection": "ledger", "cleared_fault": true, "replays": 0 }));
    // The host picks the retry up and runs the projection again: it meets the
    // poison event again and faults a second time.
    let started = Instant::now();
    while host.log().matches("projection faulted").count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_faulted(&mut c).await;

    let r = c.post("/projections/ledger/drop", &json!(null)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({ "projection": "ledger", "dropped": true }));
    let gone = c.get("/projections/ledger").await;
    assert_eq!(gone.status, 404);
    for action in ["drop", "retry"] {
        let r = c.post(&format!("/projections/ledger/{action}"), &json!(null)).await;
        assert_eq!(r.status, 404, "{action}: {}", r.text);
        assert!(r.json()["error"].as_str().unwrap().contains("unknown projection `ledger`"), "{}", r.text);
    }
    assert_eq!(c.get(&format!("/projections/{P}")).await.status, 200, "other projections are untouched");
}
