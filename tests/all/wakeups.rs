//! Issue 17, wake-ups instead of polls: an append wakes the runners, so a
//! read with a fresh consistency token succeeds while the runner's poll
//! interval is a minute. Each read may wait 10 s, far less than the poll,
//! so it can only succeed if the append woke the runner: through the host
//! (HTTP and the library), from another process on the same SQLite data
//! dir (the `refract append` CLI beside `refract run`), and on PostgreSQL
//! from the same store and from another connection (another node).
//!
//! These are behaviour tests, not speed tests: the latency is measured by
//! `refract-bench --latency` (BENCHMARKS.md).

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{Client, start_api};
use common::*;
use refract::{AppendRequest, EventStore, ExpectedVersion, Host, NewEvent, SyncConfig};
use serde_json::json;

/// A poll no test waits for: anything seen sooner was seen by a wake-up.
const POLL: Duration = Duration::from_secs(60);
/// How long a read may wait for its token: well under [`POLL`].
const WAIT_MS: u64 = 10_000;

fn slow_poll() -> SyncConfig {
    SyncConfig { poll: POLL, ..SyncConfig::default() }
}

/// Reads `account` with `min_position = token`, asserting it arrives in
/// time with `balance`, and after fewer than `WAIT_MS` ms.
async fn read_fresh(client: &mut Client, account: &str, token: u64, balance: i64) {
    let started = Instant::now();
    let reply = client
        .get(&format!("/projections/account-summary/accounts/{account}?min_position={token}&timeout_ms={WAIT_MS}"))
        .await;
    assert_eq!(reply.status, 200, "position {token} not visible without a poll: {}", reply.text);
    assert_eq!(reply.json()["document"]["balance"], balance, "{}", reply.text);
    assert!(started.elapsed() < Duration::from_millis(WAIT_MS), "took {:?}", started.elapsed());
}

fn deposit(account: &str, amount: i64) -> AppendRequest {
    AppendRequest {
        stream_id: account.into(),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new("MoneyDeposited", json!({ "amount": amount }).to_string())],
    }
}

/// Appends through HTTP and through the host's own store, and reads each
/// append back with its token.
async fn appends_through_the_host_are_read_at_once(host: &Host, addr: SocketAddr) {
    let mut client = Client::connect(addr).await;
    let opened = client
        .append("account-w", "AccountOpened", json!({ "owner": "ada", "initial_deposit": 10 }), json!("no-stream"))
        .await;
    // The first may be read by the runner's first step; the runner then
    // pauses for the poll, and every later read needs a wake-up.
    read_fresh(&mut client, "account-w", opened, 10).await;
    let mut balance = 10;
    for amount in 1..=3 {
        let token = client.append("account-w", "MoneyDeposited", json!({ "amount": amount }), json!("any")).await;
        balance += amount;
        read_fresh(&mut client, "account-w", token, balance).await;
    }
    let store = host.events().unwrap();
    let token = store.append(&[deposit("account-w", 100)]).await.unwrap()[0].last_position;
    read_fresh(&mut client, "account-w", token, balance + 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_appends_through_the_host_wake_a_runner_that_polls_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let mut host = stores.host(slow_poll());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    let addr = start_api(&host).await;
    appends_through_the_host_are_read_at_once(&host, addr).await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_from_this_host_or_another_node_wake_a_runner_that_polls_once_a_minute() {
    let schema = pg::fresh_schema().await;
    let events = refract::open_events(&schema.url).await.unwrap();
    let models = refract::open_models(&schema.url).await.unwrap();
    let mut host = Host::new(events.clone(), models.clone(), slow_poll()).unwrap();
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    let addr = start_api(&host).await;
    appends_through_the_host_are_read_at_once(&host, addr).await;

    // Another node: its own connections and its own store, so only the
    // notification sent with the append can tell this host's runner.
    let other: Arc<dyn EventStore> = refract::open_events(&schema.url).await.unwrap();
    let mut client = Client::connect(addr).await;
    let mut balance = 10 + 1 + 2 + 3 + 100;
    for amount in [1_000, 2_000, 3_000] {
        let token = other.append(&[deposit("account-w", amount)]).await.unwrap()[0].last_position;
        balance += amount;
        read_fresh(&mut client, "account-w", token, balance).await;
    }
    host.shutdown().await;
    drop((other, events, models));
}

/// A `refract run` child, killed if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_appends_by_another_process_wake_a_runner_that_polls_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let mut host = Running(
        Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(&data)
            .args(["run", "--poll-ms", &POLL.as_millis().to_string(), "--http", "127.0.0.1:0", "--plugins"])
            .arg(&plugins)
            .env("RUST_LOG", "refract=info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Port 0 lets the OS pick a free port; the log line says which.
    let addr = common::http::listening_addr(&mut host.0);

    // `refract append`, another process on the same data dir; prints the token.
    let append = |event_type: &str, payload: serde_json::Value| -> u64 {
        let out = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(&data)
            .args(["append", "account-cli", event_type, &payload.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "refract append: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    };
    let mut client = Client::connect(addr).await;
    let opened = append("AccountOpened", json!({ "owner": "ada", "initial_deposit": 5 }));
    read_fresh(&mut client, "account-cli", opened, 5).await;
    let mut balance = 5;
    for amount in 1..=3 {
        let token = append("MoneyDeposited", json!({ "amount": amount }));
        balance += amount;
        read_fresh(&mut client, "account-cli", token, balance).await;
    }
    assert!(host.0.try_wait().unwrap().is_none(), "refract run exited");
}
