//! Untrusted plugins: each adversarial fixture is stopped with a named
//! failure while a well-behaved projection keeps going; poison events are
//! isolated and then halted on or skipped into the dead-letter table.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use refract::{
    AppendRequest, Appended, ChangeSet, CodeTier, DatabaseError, DbErrorKind, DeadLetter, Event, EventSource,
    EventStore, FailurePolicy, ModelKey, ModelWriter, ProjectionState, ReadModelStore, SourceError, StoreError,
    Subscription, SyncConfig, Tiering,
};
use serde_json::{Value, json};

fn refract(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refract")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

/// Small limits and fast retries so the whole file runs in seconds.
const TEST_LIMITS: &str = "
[defaults]
deadline_ms = 300
memory_mib = 64
retries = 1
backoff_ms = 10
max_changes = 1000
";

/// Every fixture, what it must fail with, and a piece of its message.
const ADVERSARIES: &[(&str, &str, &str)] = &[
    ("loop_forever", "loop-forever", "timeout: the batch ran longer than its 300 ms deadline"),
    ("memory_bomb", "memory-bomb", "memory limit: linear memory would grow to"),
    ("panicker", "panicker", "trap: "),
    ("stack_overflow", "stack-overflow", "trap: "),
    ("huge_output", "huge-output", "output too large: 5000 changes in one batch; the limit is 1000"),
    ("invalid_json", "invalid-json", "invalid document `probe-1` in collection `docs`: not valid JSON"),
    ("undeclared_collection", "undeclared-collection", "undeclared collection `accounts`"),
];

#[test]
fn each_adversary_is_stopped_by_name_while_account_summary_reaches_the_head() {
    adversaries_are_stopped_by_name(&[]);
}

/// Baseline (Winch) code, which large modules start on, is held to the same
/// deadline, memory, stack and capability limits as optimized code.
#[test]
fn each_adversary_is_stopped_by_name_on_baseline_code_too() {
    adversaries_are_stopped_by_name(&["--tiering", "baseline-only"]);
}

fn adversaries_are_stopped_by_name(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut names: Vec<&str> = ADVERSARIES.iter().map(|a| a.0).collect();
    names.extend(["capabilities", "account_summary"]);
    let plugins = plugins_dir(dir.path(), &names);
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, format!("{TEST_LIMITS}\n[projections.capabilities]\non_failure = \"skip\"\n")).unwrap();

    let mut events = vec![BankEvent { stream: "probe-1".into(), event_type: "Probe", payload: json!({}) }];
    for t in ["ReadFile", "ReadEnv", "OpenSocket", "ReadArgs"] {
        events.push(BankEvent { stream: "probe-1".into(), event_type: t, payload: json!({}) });
    }
    let bank = bank_events(20, 300, 11);
    events.extend(bank.iter().cloned());
    write_jsonl(&dir.path().join("events.jsonl"), &events);
    assert!(refract(&data, &["import", dir.path().join("events.jsonl").to_str().unwrap()]).status.success());

    let started = std::time::Instant::now();
    let mut args = vec![
        "run",
        "--exit-when-caught-up",
        "--batch-size",
        "16",
        "--plugins",
        plugins.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(extra);
    let run = refract(&data, &args);
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    // Every adversary faulted, which the run's exit status reports.
    assert_eq!(run.status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("{} projections faulted", ADVERSARIES.len())), "{log}");
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());

    let status = refract(&data, &["status", "--json"]);
    let status: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap();
    let by_name: BTreeMap<&str, &Value> = status.iter().map(|s| (s["name"].as_str().unwrap(), s)).collect();
    for (_, name, error) in ADVERSARIES {
        let s = by_name[name];
        assert_eq!(s["state"], "faulted", "{name}: {s}");
        let last = s["last_error"].as_str().unwrap();
        assert!(last.starts_with(error) || last.contains(error), "{name}: {last}");
        assert_eq!(s["checkpoint"], 0, "{name} fails on the first event: {s}");
        let kind = error.split(':').next().unwrap().split(" `").next().unwrap();
        assert!(
            log.lines().any(|l| l.contains("projection faulted")
                && l.contains(&format!("projection={name} "))
                && l.contains(kind)),
            "{name}: no `projection faulted` log line with `{kind}`\n{log}"
        );
    }
    let stack = by_name["stack-overflow"]["last_error"].as_str().unwrap();
    assert!(stack.contains("call stack exhausted"), "{stack}");
    // The guest's stderr (its panic message) reaches the host log, tagged.
    assert!(log.lines().any(|l| l.contains("projection=panicker") && l.contains("panicker refuses event 1")), "{log}");

    // Every capability attempt was denied and named; nothing escaped. The
    // environment is simply empty: reading it is not counted as an attempt.
    let letters = refract(&data, &["dead-letters", "capabilities", "--json"]);
    let letters: Vec<Value> = serde_json::from_slice(&letters.stdout).unwrap();
    let got: Vec<(u64, &str)> =
        letters.iter().map(|l| (l["position"].as_u64().unwrap(), l["error"].as_str().unwrap())).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, 2);
    assert!(got[0].1.starts_with("capability denied: the plugin tried to use the filesystem"), "{}", got[0].1);
    assert_eq!(got[1].0, 3);
    assert!(got[1].1.contains("ReadEnv failed: environment variable not found"), "{}", got[1].1);
    assert_eq!(got[2].0, 4);
    assert!(got[2].1.starts_with("capability denied: the plugin tried to use the network"), "{}", got[2].1);
    // `retry` on the stopped data dir clears a fault and marks dead letters for replay.
    let out = |o: Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let retried = out(refract(&data, &["retry", "loop-forever"]));
    assert!(
        retried.contains("loop-forever: fault cleared; the next `refract run` resumes from the checkpoint"),
        "{retried}"
    );
    let retried = out(refract(&data, &["retry", "capabilities"]));
    assert!(retried.contains("capabilities: 3 dead letter(s) will be replayed"), "{retried}");
    let table = out(refract(&data, &["dead-letters", "capabilities"]));
    let row = table.lines().find(|l| l.contains("ReadFile")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" yes ") && row.contains("capability denied"), "{row}");
    let after: Vec<Value> = serde_json::from_slice(&refract(&data, &["status", "--json"]).stdout).unwrap();
    let looped = after.iter().find(|s| s["name"] == "loop-forever").unwrap();
    assert_eq!((looped["state"].as_str(), &looped["last_error"]), (Some("stopped"), &Value::Null), "{looped}");

    let caps = by_name["capabilities"];
    assert_eq!((caps["state"].as_str(), &caps["checkpoint"]), (Some("stopped"), &caps["head"]), "{caps}");

    // The well-behaved projection, run beside all of them, is complete and right.
    let summary = by_name["account-summary"];
    assert_eq!((summary["state"].as_str(), &summary["checkpoint"]), (Some("stopped"), &summary["head"]), "{summary}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stores = Stores::open(&data).await;
        let escaped = stores.models.count_documents_by("capabilities", "escaped").await;
        assert_eq!(escaped, 0);
        let docs = all_documents(stores.models.as_ref(), "account-summary", "accounts").await;
        let expected = expected_accounts(&bank);
        assert_eq!(docs.len(), expected.len());
        for (id, want) in expected {
            let d = &docs[&id];
            assert_eq!(d["balance"].as_i64(), Some(want.balance), "{id}");
            assert_eq!(d["transactions"].as_u64(), Some(want.transactions), "{id}");
        }
    });
}

/// Counts documents in a collection through the public API.
trait CountBy {
    async fn count_documents_by(&self, projection: &str, collection: &str) -> u64;
}

impl CountBy for refract::SqliteReadModelStore {
    async fn count_documents_by(&self, projection: &str, collection: &str) -> u64 {
        let store: &dyn ReadModelStore = self;
        store.count_documents(projection, collection, &refract::Query::new()).await.unwrap()
    }
}

/// On optimized and on baseline code alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_stops_a_busy_loop() {
    for (tiering, tier) in [(Tiering::Off, CodeTier::Optimized), (Tiering::BaselineOnly, CodeTier::Baseline)] {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(dir.path()).await;
        append_all(stores.events.as_ref(), &bank_events(2, 2, 1)).await;
        let mut host = stores
            .host_with(SyncConfig::default(), "[defaults]\nfuel = 1000000\nretries = 0\ndeadline_ms = 10000")
            .with_tiering(tiering);
        let looping = host.runtime().load(&plugin("loop_forever")).unwrap();
        assert_eq!(looping.code_tier(), tier);
        host.start(looping).await.unwrap();
        let started = std::time::Instant::now();
        host.wait_until_caught_up().await.unwrap();
        let p = host.progress("loop-forever").unwrap();
        assert_eq!(p.state, ProjectionState::Faulted);
        let error = p.last_error.unwrap();
        assert!(error.starts_with("fuel exhausted: the batch used more than its 1000000 units"), "{tiering}: {error}");
        assert!(started.elapsed().as_secs() < 5, "{tiering}: fuel, not the 10 s deadline, stopped it");
        host.shutdown().await;
    }
}

/// 10,000 bank events for the ledger with poison events at the given
/// indexes: the second traps, the third writes a document id the host
/// refuses, the others return an error.
fn poisoned_stream(total: usize, poison_at: &[usize]) -> Vec<BankEvent> {
    let mut events = bank_events(100, total - poison_at.len(), 21);
    for (n, &i) in poison_at.iter().enumerate() {
        let payload = json!({ "amount": 1000, "poison": true, "trap": n == 1, "bad_id": n == 2 });
        events.insert(i, BankEvent { stream: format!("account-{}", i % 100), event_type: "MoneyDeposited", payload });
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_records_each_poison_event_and_projects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let poison_at = [1234, 5000, 8765];
    let events = poisoned_stream(10_000, &poison_at);
    append_all(stores.events.as_ref(), &events).await;

    let config = "[defaults]\nretries = 2\nbackoff_ms = 5\n[projections.ledger]\non_failure = \"skip\"";
    assert_eq!(refract::Config::parse(config).unwrap().for_projection("ledger").on_failure, FailurePolicy::Skip);
    let mut host = stores.host_with(SyncConfig { batch_size: 500, ..SyncConfig::default() }, config);
    host.start(host.runtime().load(&plugin("poison")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let p = host.progress("ledger").unwrap();
    assert_eq!((p.state, p.checkpoint), (ProjectionState::Running, 10_000));
    host.shutdown().await;

    let models = stores.models_dyn();
    let letters = models.dead_letters("ledger").await.unwrap();
    let positions: Vec<u64> = letters.iter().map(|l| l.position).collect();
    assert_eq!(positions, poison_at.iter().map(|&i| i as u64 + 1).collect::<Vec<_>>());
    assert!(letters[0].error.starts_with("projection error at position 1235: poison event"), "{}", letters[0].error);
    assert!(letters[1].error.starts_with("trap: "), "{}", letters[1].error);
    assert!(letters[2].error.starts_with("invalid document id"), "{}", letters[2].error);
    let hash = host_hash("poison");
    assert!(letters.iter().all(|l| l.module_hash == hash && l.event_type == "MoneyDeposited" && !l.replay));

    // Each refused or failed attempt counted its batch's movements in the
    // instance (the SDK keeps documents decoded): the runner must replace
    // it before a retry, or those movements would be counted twice.
    let clean: Vec<BankEvent> =
        events.iter().enumerate().filter(|(i, _)| !poison_at.contains(i)).map(|(_, e)| e.clone()).collect();
    assert_eq!(ledger(models.as_ref()).await, expected_ledger(&clean));
}

/// SHA-256 of a built fixture, as the host records it.
fn host_hash(name: &str) -> String {
    let rt = refract::PluginRuntime::new().unwrap();
    rt.load(&plugin(name)).unwrap().hash().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_stops_before_the_poison_event_until_retried_or_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = poisoned_stream(2_000, &[1500]);
    append_all(stores.events.as_ref(), &events).await;
    let config = "[defaults]\nretries = 1\nbackoff_ms = 5";
    let sync = SyncConfig { batch_size: 256, ..SyncConfig::default() };

    let mut host = stores.host_with(sync.clone(), config);
    host.start(host.runtime().load(&plugin("poison")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let p = host.progress("ledger").unwrap();
    assert_eq!((p.state, p.checkpoint), (ProjectionState::Faulted, 1500), "stops exactly before position 1501");
    host.shutdown().await;
    let models = stores.models_dyn();
    let record = models.projection("ledger").await.unwrap();
    assert_eq!(record.state, ProjectionState::Faulted);
    assert!(record.last_error.unwrap().starts_with("projection error at position 1501: poison event"));
    assert_eq!(ledger(models.as_ref()).await, expected_ledger(&events[..1500]));

    // A restart with the same module does not run it again: the fault stays.
    let mut host = stores.host_with(sync.clone(), config);
    host.start(host.runtime().load(&plugin("poison")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    assert_eq!(host.progress("ledger").unwrap().state, ProjectionState::Faulted);
    host.shutdown().await;

    // `retry` clears it; the same module fails again at the same event.
    let request = models.request_retry("ledger").await.unwrap();
    assert!(request.cleared_fault);
    assert_eq!(models.projection("ledger").await.unwrap().state, ProjectionState::Stopped);
    let mut host = stores.host_with(sync.clone(), config);
    host.start(host.runtime().load(&plugin("poison")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let p = host.progress("ledger").unwrap();
    assert_eq!((p.state, p.checkpoint), (ProjectionState::Faulted, 1500));
    host.shutdown().await;

    // The fixed module is a new generation, rebuilt from 0, and reaches the head.
    let mut host = stores.host_with(sync, config);
    host.start(host.runtime().load(&plugin("poison_fixed")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let p = host.progress("ledger").unwrap();
    assert_eq!((p.state, p.checkpoint), (ProjectionState::Running, stores.events.head().await.unwrap()));
    host.shutdown().await;
    assert_eq!(models.projection("ledger").await.unwrap().key.generation, 2);
    assert_eq!(ledger(models.as_ref()).await, expected_ledger(&events));
}

/// A dead letter caused by a limit is replayed by the next run after the
/// limit is raised and `retry` is asked for; one that still fails stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_replays_dead_letters_through_the_current_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let mut events = bank_events(10, 100, 4);
    let note = "n".repeat(2000);
    events.insert(
        50,
        BankEvent {
            stream: "account-3".into(),
            event_type: "MoneyDeposited",
            payload: json!({ "amount": 7, "note": note }),
        },
    );
    events.insert(
        70,
        BankEvent {
            stream: "account-4".into(),
            event_type: "MoneyDeposited",
            payload: json!({ "amount": 9, "poison": true }),
        },
    );
    append_all(stores.events.as_ref(), &events).await;
    let sync = SyncConfig { batch_size: 32, ..SyncConfig::default() };
    let strict = "[defaults]\nretries = 0\non_failure = \"skip\"\nmax_document_kib = 1";

    let mut host = stores.host_with(sync.clone(), strict);
    host.start(host.runtime().load(&plugin("poison")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;
    let models = stores.models_dyn();
    let letters = models.dead_letters("ledger").await.unwrap();
    assert_eq!(letters.iter().map(|l| l.position).collect::<Vec<_>>(), [51, 71]);
    assert!(letters[0].error.starts_with("output too large: document `account-3`"), "{}", letters[0].error);

    let request = models.request_retry("ledger").await.unwrap();
    assert_eq!((request.cleared_fault, request.replays), (false, 2));
    let relaxed = "[defaults]\nretries = 0\non_failure = \"skip\"\nmax_document_kib = 4";
    let mut host = stores.host_with(sync, relaxed);
    host.start(host.runtime().load(&plugin("poison")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;

    let letters = models.dead_letters("ledger").await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].position, letters[0].replay), (71, false));
    let without_poison: Vec<BankEvent> =
        events.iter().enumerate().filter(|(i, _)| *i != 70).map(|(_, e)| e.clone()).collect();
    let docs = ledger(models.as_ref()).await;
    assert_eq!(docs, expected_ledger(&without_poison));
    let account_3 = all_documents(models.as_ref(), "ledger", "entries").await["account-3"].clone();
    assert_eq!(account_3["last_note"].as_str().map(str::len), Some(2000));
}

/// A writer whose commits fail, before reaching the store, on the calls
/// listed in `fail_on` (counted from 1); everything else is the real
/// store's writer. It implements the writer role only: the host keeps the
/// real registry and reader.
struct FlakyCommits {
    inner: Arc<dyn ReadModelStore>,
    calls: AtomicUsize,
    fail_on: Vec<usize>,
}

#[async_trait::async_trait]
impl ModelWriter for FlakyCommits {
    async fn commit(&self, key: &ModelKey, changes: &ChangeSet, from: u64, to: u64) -> Result<(), StoreError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_on.contains(&call) {
            return Err(StoreError::Database(DatabaseError::new(DbErrorKind::Unavailable, "injected: pool timed out")));
        }
        self.inner.commit(key, changes, from, to).await
    }
    async fn skip_event(&self, key: &ModelKey, letter: &DeadLetter, from: u64, to: u64) -> Result<(), StoreError> {
        self.inner.skip_event(key, letter, from, to).await
    }
    async fn finish_replay(
        &self,
        key: &ModelKey,
        position: u64,
        outcome: Result<&ChangeSet, &str>,
    ) -> Result<bool, StoreError> {
        self.inner.finish_replay(key, position, outcome).await
    }
    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        self.inner.get(key, collection, id).await
    }
}

/// Failed commits (the store unreachable for a moment) make the runner
/// read again from its committed checkpoint. The plugin instance projected
/// those events already and keeps the documents it wrote, so it must be
/// replaced too: otherwise every balance of a failed group would count
/// twice. Compared account by account with a model computed in the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_are_projected_again_without_counting_twice() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(200, 12_000, 5);
    append_all(stores.events.as_ref(), &events).await;
    let flaky =
        Arc::new(FlakyCommits { inner: stores.models_dyn(), calls: AtomicUsize::new(0), fail_on: vec![2, 5, 6] });
    project_to_head(stores.events.clone(), stores.models_dyn(), Some(flaky.clone()), 12_000).await;
    assert!(flaky.calls.load(Ordering::SeqCst) > 6, "the failing commits were reached");

    assert_accounts_match(&stores, &events).await;
}

/// The event store, failing the reads whose call numbers are in `fail_on`
/// (counting every read, those made ahead of the runner included).
struct FlakyReads {
    inner: Arc<refract::SqliteEventStore>,
    calls: AtomicUsize,
    fail_on: Vec<usize>,
}

#[async_trait::async_trait]
impl EventSource for FlakyReads {
    async fn head(&self) -> Result<u64, SourceError> {
        self.inner.head().await
    }
    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_on.contains(&call) {
            return Err(SourceError::Database(DatabaseError::new(
                DbErrorKind::Unavailable,
                "injected: pool timed out",
            )));
        }
        self.inner.read(after, up_to, subscription, limit).await
    }
}

#[async_trait::async_trait]
impl EventStore for FlakyReads {
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        self.inner.append(requests).await
    }
    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError> {
        self.inner.stream_version(stream_id).await
    }
}

/// The runner reads batches ahead of the one it projects. A read that
/// fails, ahead or not, is made again from where the runner is: no batch
/// is skipped or delivered twice (each would show in the balances).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reads_are_read_again_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(200, 12_000, 7);
    append_all(stores.events.as_ref(), &events).await;
    // Reads 2 and 3 are the first reads ahead; 3 and 4 fail in a row; 9 is
    // in the middle of the run.
    let flaky =
        Arc::new(FlakyReads { inner: stores.events.clone(), calls: AtomicUsize::new(0), fail_on: vec![2, 3, 4, 9] });
    project_to_head(flaky.clone(), stores.models_dyn(), None, 12_000).await;
    assert!(flaky.calls.load(Ordering::SeqCst) > 9, "the failing reads were reached");

    assert_accounts_match(&stores, &events).await;
}

/// Runs `account-summary` over `events` into `models` in batches of 250,
/// committing every 1,000 events (so a run has many reads and commits to
/// fail), until it has reached `head`.
async fn project_to_head(
    events: Arc<dyn EventStore>,
    models: Arc<dyn ReadModelStore>,
    writer: Option<Arc<dyn ModelWriter>>,
    head: u64,
) {
    let sync = SyncConfig { batch_size: 250, commit_events: 1_000, ..SyncConfig::default() };
    let mut host = refract::Host::new(events, models, sync).unwrap();
    if let Some(writer) = writer {
        host = host.with_writer(writer);
    }
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    assert_eq!(host.progress("account-summary").unwrap().checkpoint, head);
    host.shutdown().await;
}

/// Every account's balance and transaction count equal those computed in
/// the test: an event lost or applied twice changes one of them.
async fn assert_accounts_match(stores: &Stores, events: &[BankEvent]) {
    let docs = all_documents(stores.models_dyn().as_ref(), "account-summary", "accounts").await;
    let got: BTreeMap<String, (i64, u64)> = docs
        .iter()
        .map(|(id, d)| (id.clone(), (d["balance"].as_i64().unwrap(), d["transactions"].as_u64().unwrap())))
        .collect();
    let want: BTreeMap<String, (i64, u64)> =
        expected_accounts(events).into_iter().map(|(id, a)| (id, (a.balance, a.transactions))).collect();
    assert_eq!(got, want);
}
