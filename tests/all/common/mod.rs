//! Shared helpers for the end-to-end tests: plugin paths, a deterministic
//! bank-event generator and the expected read model computed without refract.
#![allow(dead_code)]

pub mod cli;
pub mod http;
pub mod pg;
pub mod proxy;
pub mod running;
pub mod served;
pub mod tables;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use refract::{AppendRequest, DataDir, EventStore, ExpectedVersion, Host, NewEvent, ReadModelStore, SyncConfig};
use serde_json::{Value, json};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// A plugin built by `scripts/build-plugins` (crate name with `_`).
pub fn plugin(name: &str) -> PathBuf {
    let path = root().join("target/wasm32-wasip2/plugin").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with `scripts/build-plugins` (scripts/test does it)",
        path.display()
    );
    path
}

/// A folder holding copies of the named plugins, as a user's plugins dir would.
pub fn plugins_dir(dir: &std::path::Path, names: &[&str]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in names {
        std::fs::copy(plugin(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    plugins
}

/// xorshift64*: deterministic and good enough to spread events over accounts.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One generated bank event.
#[derive(Clone, Debug)]
pub struct BankEvent {
    pub stream: String,
    pub event_type: &'static str,
    pub payload: Value,
}

/// The account model as the test computes it, independently of refract.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpectedAccount {
    pub owner: String,
    pub balance: i64,
    pub transactions: u64,
    pub closed: bool,
}

/// `total` bank events over `accounts` accounts: every account is opened
/// first, then deposits and withdrawals at random, and every tenth account
/// is closed at the end.
pub fn bank_events(accounts: usize, total: usize, seed: u64) -> Vec<BankEvent> {
    let mut rng = Rng::new(seed);
    let closes = accounts / 10;
    assert!(total >= accounts + closes);
    let mut out = Vec::with_capacity(total);
    for i in 0..accounts {
        out.push(BankEvent {
            stream: format!("account-{i}"),
            event_type: "AccountOpened",
            payload: json!({ "owner": format!("owner-{}", i % 37), "initial_deposit": (i % 5) * 100 }),
        });
    }
    for _ in 0..total - accounts - closes {
        let i = rng.below(accounts as u64);
        let amount = 1 + rng.below(500) as i64;
        let event_type = if rng.below(3) == 0 { "MoneyWithdrawn" } else { "MoneyDeposited" };
        out.push(BankEvent { stream: format!("account-{i}"), event_type, payload: json!({ "amount": amount }) });
    }
    for i in (0..accounts).step_by(10) {
        out.push(BankEvent { stream: format!("account-{i}"), event_type: "AccountClosed", payload: json!({}) });
    }
    out
}

/// The expected read model, computed straight from the generated events.
pub fn expected_accounts(events: &[BankEvent]) -> BTreeMap<String, ExpectedAccount> {
    let mut accounts: BTreeMap<String, ExpectedAccount> = BTreeMap::new();
    for e in events {
        let a = accounts.entry(e.stream.clone()).or_default();
        match e.event_type {
            "AccountOpened" => {
                a.owner = e.payload["owner"].as_str().unwrap().to_owned();
                a.balance += e.payload["initial_deposit"].as_i64().unwrap_or(0);
            }
            "MoneyDeposited" => {
                a.balance += e.payload["amount"].as_i64().unwrap();
                a.transactions += 1;
            }
            "MoneyWithdrawn" => {
                a.balance -= e.payload["amount"].as_i64().unwrap();
                a.transactions += 1;
            }
            "AccountClosed" => a.closed = true,
            other => panic!("unexpected {other}"),
        }
    }
    accounts
}

/// One unchecked append request per event.
pub fn requests(events: &[BankEvent]) -> Vec<AppendRequest> {
    events
        .iter()
        .map(|e| AppendRequest {
            stream_id: e.stream.clone(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new(e.event_type, e.payload.to_string())],
        })
        .collect()
}

/// Appends the events in chunks of atomic appends.
pub async fn append_all(store: &dyn EventStore, events: &[BankEvent]) {
    for chunk in events.chunks(5_000) {
        store.append(&requests(chunk)).await.unwrap();
    }
}

/// Writes the events as a JSON-lines file for `refract import`.
pub fn write_jsonl(path: &std::path::Path, events: &[BankEvent]) {
    let text: String = events
        .iter()
        .map(|e| format!("{}\n", json!({ "stream": e.stream, "type": e.event_type, "payload": e.payload })))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// An embedded data dir with both stores open.
pub struct Stores {
    pub data: DataDir,
    pub events: Arc<refract::SqliteEventStore>,
    pub models: Arc<refract::SqliteReadModelStore>,
}

impl Stores {
    pub async fn open(dir: &std::path::Path) -> Self {
        let data = DataDir(dir.to_owned());
        let events = data.open_events().await.unwrap();
        let models = data.open_models().await.unwrap();
        Self { data, events, models }
    }

    pub fn host(&self, sync: SyncConfig) -> Host {
        Host::new(self.events.clone(), self.models.clone(), sync).unwrap()
    }

    pub fn host_with(&self, sync: SyncConfig, config: &str) -> Host {
        let config = refract::Config::parse(config).unwrap();
        Host::with_config(self.events.clone(), self.models.clone(), sync, config).unwrap()
    }

    pub fn models_dyn(&self) -> Arc<dyn ReadModelStore> {
        self.models.clone()
    }
}

/// Polls a projection's progress until `done` holds; panics naming `what`
/// after `limit`.
pub async fn wait_for_progress(
    host: &Host,
    projection: &str,
    what: &str,
    limit: std::time::Duration,
    done: impl Fn(&refract::Progress) -> bool,
) -> refract::Progress {
    let started = std::time::Instant::now();
    loop {
        let p = host.progress(projection);
        if let Some(p) = p.as_ref().filter(|p| done(p)) {
            return p.clone();
        }
        assert!(started.elapsed() < limit, "{projection}: waited {limit:?} for {what}; progress: {p:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Every document of a collection, by id, read through the public query API.
pub async fn all_documents(models: &dyn ReadModelStore, projection: &str, collection: &str) -> BTreeMap<String, Value> {
    let store: &dyn ReadModelStore = models;
    let mut out = BTreeMap::new();
    let mut cursor = None;
    loop {
        let query = refract::Query { limit: refract::MAX_LIMIT, cursor, ..Default::default() };
        let page = store.query_documents(projection, collection, &query).await.unwrap();
        for d in page.documents {
            out.insert(d.id, serde_json::from_str(&d.body).unwrap());
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Every expected account's document has the balance, transaction count,
/// owner and status computed in the test.
pub fn assert_accounts(docs: &BTreeMap<String, Value>, expected: &BTreeMap<String, ExpectedAccount>) {
    for (id, want) in expected {
        let got = &docs[id];
        assert_eq!(got["balance"].as_i64(), Some(want.balance), "balance of {id}");
        assert_eq!(got["transactions"].as_u64(), Some(want.transactions), "transactions of {id}");
        assert_eq!(got["owner"].as_str(), Some(want.owner.as_str()), "owner of {id}");
        let status = if want.closed { "closed" } else { "open" };
        assert_eq!(got["status"].as_str(), Some(status), "status of {id}");
    }
}

/// The `ledger` fixture's model (net, movements per account), computed without refract.
pub fn expected_ledger(events: &[BankEvent]) -> BTreeMap<String, (i64, u64)> {
    let mut out: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for e in events {
        let amount = match e.event_type {
            "MoneyDeposited" => e.payload["amount"].as_i64().unwrap(),
            "MoneyWithdrawn" => -e.payload["amount"].as_i64().unwrap(),
            _ => continue,
        };
        let entry = out.entry(e.stream.clone()).or_default();
        entry.0 += amount;
        entry.1 += 1;
    }
    out
}

/// The `ledger` model as stored: (net, movements) per entry.
pub async fn ledger(models: &dyn ReadModelStore) -> BTreeMap<String, (i64, u64)> {
    all_documents(models, "ledger", "entries")
        .await
        .into_iter()
        .map(|(id, d)| (id, (d["net"].as_i64().unwrap(), d["movements"].as_u64().unwrap())))
        .collect()
}
