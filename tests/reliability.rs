//! Holes an adversarial pass found outside the store layer (issue 16):
//! the data-dir lock under a race, a panic on the plugin call thread,
//! hostile component bytes, names and queries no backend should take, and
//! subscriptions larger than the event stores can read by.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use refract::{
    ChangeSet, DataDir, DeadLetter, Filter, HostError, Manifest, ModelKey, Page, ProjectionRecord, ProjectionState,
    Query, ReadModelStore, Registration, RetryRequest, StoreError, SyncConfig,
};

// ---------------------------------------------------------------------------
// 1. The data-dir lock

/// Set in a child process of this test binary: the data dir it locks.
const LOCK_CHILD: &str = "REFRACT_RELIABILITY_LOCK_CHILD";

/// Not a test of its own: the body of a child process that waits for "go"
/// on stdin, tries to lock the data dir, prints the outcome and holds the
/// lock (if it got it) until its stdin is closed.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD) else { return };
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let lock = DataDir(dir.into()).lock();
    match &lock {
        Ok(_) => println!("LOCK won {}", std::process::id()),
        Err(HostError::Locked { pid, .. }) => println!("LOCK lost {pid}"),
        Err(e) => println!("LOCK error {e}"),
    }
    std::io::stdout().flush().unwrap();
    std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
    drop(lock);
}

/// A process trying to lock `dir` when told to.
struct Contender {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Contender {
    fn spawn(dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
            .env(LOCK_CHILD, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    /// `won PID` or `lost PID`.
    fn outcome(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "the child ended without trying");
            // The test harness may have begun the line with the test's name.
            if let Some(at) = line.find("LOCK ") {
                return line[at + "LOCK ".len()..].trim().to_owned();
            }
        }
    }

    /// Closes its stdin, so it lets go of the lock and exits.
    fn release(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// Two `refract run` started at the same instant both ran in 2 of 20
/// tries: the lock checked the pid file, then wrote it. Here 20 pairs of
/// processes are told to lock a data dir at the same moment: exactly one of
/// each pair wins, and the other names the winner. The loser exiting
/// leaves the winner's lock and pid alone, and so does a later attempt.
#[test]
fn of_two_hosts_started_at_once_exactly_one_gets_the_data_dir() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let mut pair = [Contender::spawn(dir.path()), Contender::spawn(dir.path())];
        for c in &mut pair {
            c.go();
        }
        let outcomes = pair.each_mut().map(|c| c.outcome());
        let [a, b] = pair;
        let (winner, loser) = match (outcomes[0].starts_with("won"), outcomes[1].starts_with("won")) {
            (true, false) => (a, b),
            (false, true) => (b, a),
            _ => panic!("round {round}: {outcomes:?}: exactly one must win"),
        };
        let pid = winner.child.id();
        assert!(outcomes.contains(&format!("won {pid}")), "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&format!("lost {pid}")), "round {round}: the loser names the winner: {outcomes:?}");
        loser.release();

        let pid_file = dir.path().join("refract.pid");
        let data = DataDir(dir.path().to_owned());
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string(), "round {round}");
        assert_eq!(data.running_host(), Some(pid), "round {round}");
        match data.lock() {
            Err(HostError::Locked { pid: named, .. }) => assert_eq!(named, pid, "round {round}"),
            other => panic!("round {round}: a third host got {other:?} while the winner runs"),
        }
        winner.release();
        assert_eq!(data.running_host(), None, "round {round}: the winner is gone");
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "", "round {round}: no stale pid");
        let lock = data.lock().expect("free again once the winner exited");
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), std::process::id().to_string());
        drop(lock);
        assert!(pid_file.exists(), "round {round}: the lock file is never removed");
    }
}

/// Inside one process too, a second lock of the same data dir is refused,
/// and dropping it leaves the holder's lock and pid where they were.
#[test]
fn a_refused_or_dropped_lock_does_not_touch_the_holders_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir(dir.path().to_owned());
    let pid_file = dir.path().join("refract.pid");
    let held = data.lock().unwrap();
    let me = std::process::id();
    match data.lock() {
        Err(e @ HostError::Locked { .. }) => {
            assert_eq!(e.to_string(), format!("another refract host (pid {me}) is running on {}", dir.path().display()))
        }
        other => panic!("a second lock: {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), me.to_string());
    drop(held);
    assert!(pid_file.exists());
    let again = data.lock().unwrap();
    assert!(matches!(data.lock(), Err(HostError::Locked { .. })), "the new holder is protected like the first");
    drop(again);
}

// ---------------------------------------------------------------------------
// 2. A panic on the plugin call thread

/// The real store, except that the `panic_on`-th `get` (counted from 1)
/// panics: a panic on the plugin call thread, as a bug in a host import
/// would raise.
struct PanickingGets {
    inner: Arc<dyn ReadModelStore>,
    gets: AtomicUsize,
    panic_on: usize,
}

#[async_trait::async_trait]
impl ReadModelStore for PanickingGets {
    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        let call = self.gets.fetch_add(1, Ordering::SeqCst) + 1;
        assert_ne!(call, self.panic_on, "injected panic in get");
        self.inner.get(key, collection, id).await
    }
    async fn commit(&self, key: &ModelKey, changes: &ChangeSet, from: u64, to: u64) -> Result<(), StoreError> {
        self.inner.commit(key, changes, from, to).await
    }
    async fn register(&self, m: &Manifest, hash: &str, source: &str) -> Result<Registration, StoreError> {
        self.inner.register(m, hash, source).await
    }
    async fn record_load_failure(&self, name: &str, hash: &str, source: &str, error: &str) -> Result<(), StoreError> {
        self.inner.record_load_failure(name, hash, source, error).await
    }
    async fn request_rebuild(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        self.inner.request_rebuild(name).await
    }
    async fn activate(&self, key: &ModelKey) -> Result<Option<ModelKey>, StoreError> {
        self.inner.activate(key).await
    }
    async fn fail_generation(&self, key: &ModelKey, error: &str) -> Result<(), StoreError> {
        self.inner.fail_generation(key, error).await
    }
    async fn drop_projection(&self, name: &str) -> Result<(), StoreError> {
        self.inner.drop_projection(name).await
    }
    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        self.inner.projections().await
    }
    async fn projection(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        self.inner.projection(name).await
    }
    async fn generation(&self, key: &ModelKey) -> Result<ProjectionRecord, StoreError> {
        self.inner.generation(key).await
    }
    async fn set_state(&self, key: &ModelKey, state: ProjectionState, error: Option<&str>) -> Result<(), StoreError> {
        self.inner.set_state(key, state, error).await
    }
    async fn skip_event(&self, key: &ModelKey, letter: &DeadLetter, from: u64, to: u64) -> Result<(), StoreError> {
        self.inner.skip_event(key, letter, from, to).await
    }
    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(name).await
    }
    async fn request_retry(&self, name: &str) -> Result<RetryRequest, StoreError> {
        self.inner.request_retry(name).await
    }
    async fn finish_replay(
        &self,
        key: &ModelKey,
        position: u64,
        outcome: Result<&ChangeSet, &str>,
    ) -> Result<(), StoreError> {
        self.inner.finish_replay(key, position, outcome).await
    }
    async fn get_document(&self, projection: &str, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        self.inner.get_document(projection, collection, id).await
    }
    async fn query_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<Page, StoreError> {
        self.inner.query_documents(projection, collection, query).await
    }
    async fn count_documents(&self, projection: &str, collection: &str, filters: &[Filter]) -> Result<u64, StoreError> {
        self.inner.count_documents(projection, collection, filters).await
    }
    async fn tables(&self, projection: &str) -> Result<Vec<String>, StoreError> {
        self.inner.tables(projection).await
    }
}

/// `call_plugin` answered a panicked call with an empty list of events, so
/// the retry projected nothing, successfully, and the checkpoint moved past
/// the whole batch. A panic now fails the batch like a trap: it is retried
/// with its events, and every account matches the test's own model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_during_a_plugin_call_fails_the_batch_instead_of_skipping_it() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(50, 2_000, 3);
    let (before, after) = events.split_at(1_000);
    append_all(stores.events.as_ref(), before).await;
    // A first run, so that the second starts from a checkpoint and its
    // plugin reads the accounts through `get` from the store.
    let mut host = stores.host(SyncConfig::default());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;
    append_all(stores.events.as_ref(), after).await;

    let panicking = Arc::new(PanickingGets { inner: stores.models_dyn(), gets: AtomicUsize::new(0), panic_on: 3 });
    let config = refract::Config::parse("[defaults]\nbackoff_ms = 10").unwrap();
    let mut host =
        refract::Host::with_config(stores.events.clone(), panicking.clone(), SyncConfig::default(), config).unwrap();
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let progress = host.progress("account-summary").unwrap();
    host.shutdown().await;
    assert!(panicking.gets.load(Ordering::SeqCst) > 3, "the panic was reached");
    assert_eq!((progress.checkpoint, progress.state), (2_000, ProjectionState::Running), "{progress:?}");

    let docs = all_documents(stores.models_dyn().as_ref(), "account-summary", "accounts").await;
    let got: Vec<(String, i64, u64)> = docs
        .iter()
        .map(|(id, d)| (id.clone(), d["balance"].as_i64().unwrap(), d["transactions"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, i64, u64)> =
        expected_accounts(&events).into_iter().map(|(id, a)| (id, a.balance, a.transactions)).collect();
    assert_eq!(got, want);
}
