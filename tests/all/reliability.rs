//! Holes an adversarial pass found outside the store layer (issue 16):
//! the data-dir lock under a race, a panic on the plugin call thread,
//! hostile component bytes, names and queries no backend should take, and
//! subscriptions larger than the event stores can read by.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use refract::{
    AppendRequest, ChangeSet, DataDir, DeadLetter, EventStore, ExpectedVersion, Filter, HostError, InvalidName,
    MAX_EVENT_TYPES, MAX_FILTERS, MAX_IN_VALUES, MAX_NAME_LEN, MAX_STREAM_PREFIXES, Manifest, ModelKey, ModelWriter,
    NameField, NewEvent, Op, PluginError, PluginRuntime, ProjectionState, Query, QueryError, ReadModelStore,
    SourceError, StoreError, Subscription, SyncConfig,
};
use serde_json::{Value, json};

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
            .args(["--exact", "reliability::lock_child", "--nocapture", "--test-threads=1"])
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
impl ModelWriter for PanickingGets {
    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        let call = self.gets.fetch_add(1, Ordering::SeqCst) + 1;
        assert_ne!(call, self.panic_on, "injected panic in get");
        self.inner.get(key, collection, id).await
    }
    async fn commit(&self, key: &ModelKey, changes: &ChangeSet, from: u64, to: u64) -> Result<(), StoreError> {
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
        refract::Host::with_config(stores.events.clone(), stores.models_dyn(), SyncConfig::default(), config)
            .unwrap()
            .with_writer(panicking.clone());
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

// ---------------------------------------------------------------------------
// 5. Hostile component bytes

/// The 8-byte preamble of a component (magic, version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 0x01, 0];

/// Malformed, foreign and truncated bytes are each refused with the error
/// that names what is wrong, and no input makes loading panic.
#[test]
fn hostile_bytes_are_refused_by_name_and_never_panic_the_host() {
    let runtime = PluginRuntime::new().unwrap();
    let path = Path::new("hostile.wasm");
    let load = |bytes: &[u8]| runtime.load_bytes(path, bytes);

    for bytes in [&b""[..], b"\0as", b"MZ\x90\0\x03\0\0\0 a PE file", b"(component)"] {
        assert!(matches!(load(bytes), Err(PluginError::NotWasm { .. })), "{bytes:?}");
    }
    let core = load(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(core, PluginError::CoreModule { .. }), "{core}");
    assert!(core.to_string().starts_with("hostile.wasm: a core WebAssembly module, not a component"), "{core}");

    let mut garbage = COMPONENT_HEADER.to_vec();
    garbage.extend([0xff; 64]);
    match load(&garbage) {
        Err(PluginError::Compile { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
    match load(&COMPONENT_HEADER) {
        Err(e @ PluginError::WrongWorld { .. }) => assert_eq!(
            e.to_string(),
            "hostile.wasm: does not implement the refract:projection `projector` world: missing export \
             `refract:projection/projection@0.2.0` or `refract:projection/projection@0.1.0` (it exports: nothing)"
        ),
        other => panic!("an empty component: {other:?}"),
    }

    // A real component cut anywhere: an invalid component (or, cut right
    // after a section, a valid one without the projection), every time.
    let good = std::fs::read(plugin("account_summary")).unwrap();
    let step = good.len() / 61;
    let mut invalid = 0;
    for len in (9..good.len()).step_by(step).chain([good.len() - 1]) {
        match load(&good[..len]) {
            Err(PluginError::Compile { .. }) => invalid += 1,
            Err(PluginError::WrongWorld { .. }) => {}
            other => panic!("cut at {len} of {}: {:?}", good.len(), other.map(|p| p.manifest().clone())),
        }
    }
    assert!(invalid >= 55, "{invalid} of 62 cuts are invalid components");
    // Bytes flipped anywhere: whatever comes of it, an answer, not a panic.
    let mut rng = Rng::new(16);
    for _ in 0..24 {
        let mut bytes = good.clone();
        let at = 8 + rng.below(bytes.len() as u64 - 8) as usize;
        bytes[at] ^= 1 << rng.below(8);
        if let Err(e @ PluginError::LoadPanicked { .. }) = load(&bytes) {
            panic!("byte {at}: {e}");
        }
    }
}

/// A component holding a component holding a component... `depth` times.
fn nested_components(depth: usize) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                return out.push(byte);
            }
            out.push(byte | 0x80);
        }
    }
    // Sizes from the innermost (an empty component) out, then the bytes
    // from the outermost in: each level is a header and one section (id 4).
    let mut sizes = vec![COMPONENT_HEADER.len()];
    for _ in 0..depth {
        let inner = *sizes.last().unwrap();
        let mut len = Vec::new();
        leb128(inner, &mut len);
        sizes.push(COMPONENT_HEADER.len() + 1 + len.len() + inner);
    }
    let mut bytes = Vec::with_capacity(sizes[depth]);
    for inner in sizes[..depth].iter().rev() {
        bytes.extend(COMPONENT_HEADER);
        bytes.push(4);
        leb128(*inner, &mut bytes);
    }
    bytes.extend(COMPONENT_HEADER);
    assert_eq!(bytes.len(), sizes[depth]);
    bytes
}

/// 30,000 empty components nested in each other, 358 KB, made wasmtime
/// use 18 GB while compiling (50,000 got the host killed for memory): the
/// cost grows with the square of the depth. Nesting is now refused past 100
/// levels, before compiling; real plugins nest one level.
#[test]
fn deeply_nested_components_are_refused_before_compiling() {
    let runtime = PluginRuntime::new().unwrap();
    let load = |depth: usize| runtime.load_bytes(Path::new("nested.wasm"), &nested_components(depth));
    assert!(matches!(load(100), Err(PluginError::WrongWorld { .. })), "100 levels compile (and export nothing)");
    for depth in [101, 30_000] {
        let started = std::time::Instant::now();
        match load(depth) {
            Err(PluginError::Compile { reason, .. }) => {
                assert_eq!(reason, "components are nested more than 100 deep", "{depth}")
            }
            other => panic!("{depth} levels: {other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{depth}: refused before compiling");
    }
    let good = runtime.load(&plugin("account_summary")).unwrap();
    assert_eq!(good.manifest().name, "account-summary");
}

/// The host loads plugin files the same way: a bad file is an error
/// returned to the caller, and the host goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reports_a_hostile_file_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let file = dir.path().join("hostile.wasm");
    let mut bytes = COMPONENT_HEADER.to_vec();
    bytes.extend(b"\x00\xff\xff\xff\xff\x0f");
    std::fs::write(&file, bytes).unwrap();
    let mut host = stores.host(SyncConfig::default());
    match host.load_file(&file).await {
        Err(HostError::Plugin(PluginError::Compile { path, .. })) => assert_eq!(path, file),
        other => panic!("{other:?}"),
    }
    let good = dir.path().join("account_summary.wasm");
    std::fs::copy(plugin("account_summary"), &good).unwrap();
    host.load_file(&good).await.unwrap();
    assert_eq!(host.projections(), ["account-summary"]);
    host.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6 and 7. Names and queries every backend refuses alike

/// Fresh SQLite and PostgreSQL stores; the temp dir and schema live as long as this.
struct Backends {
    _dir: tempfile::TempDir,
    _schema: common::pg::Schema,
    stores: Vec<(&'static str, Arc<dyn EventStore>, Arc<dyn ReadModelStore>)>,
}

async fn backends() -> Backends {
    let dir = tempfile::tempdir().unwrap();
    let schema = common::pg::fresh_schema().await;
    let sqlite = |file: &str| format!("sqlite://{}", dir.path().join(file).display());
    let stores = vec![
        (
            "sqlite",
            refract::open_events(&sqlite("events.db")).await.unwrap(),
            refract::open_models(&sqlite("models.db")).await.unwrap(),
        ),
        (
            "postgres",
            refract::open_events(&schema.url).await.unwrap(),
            refract::open_models(&schema.url).await.unwrap(),
        ),
    ];
    Backends { _dir: dir, _schema: schema, stores }
}

fn append(stream: &str, event_type: &str) -> AppendRequest {
    AppendRequest {
        stream_id: stream.into(),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(event_type, "{}")],
    }
}

/// `POST /streams/%00/events` answered 200 on SQLite and 500 on
/// PostgreSQL. Empty, overlong and control-character names are now refused
/// with the same typed error by both, and nothing of the append is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_ids_and_event_types_are_refused_alike_by_every_backend() {
    let backends = backends().await;
    let long = "n".repeat(MAX_NAME_LEN + 1);
    let (stream, first) = (NameField::StreamId, NameField::EventType(0));
    let cases = [
        ("\0", "T", InvalidName::ControlCharacter { field: stream, code: 0, at: 0 }),
        ("account\01", "T", InvalidName::ControlCharacter { field: stream, code: 0, at: 7 }),
        ("account-1\n", "T", InvalidName::ControlCharacter { field: stream, code: 10, at: 9 }),
        ("", "T", InvalidName::Empty { field: stream }),
        (long.as_str(), "T", InvalidName::TooLong { field: stream, len: MAX_NAME_LEN + 1 }),
        ("s", "", InvalidName::Empty { field: first }),
        ("s", "Opened\0", InvalidName::ControlCharacter { field: first, code: 0, at: 6 }),
        ("s", "Opened\u{1b}[31m", InvalidName::ControlCharacter { field: first, code: 0x1b, at: 6 }),
        ("s", long.as_str(), InvalidName::TooLong { field: first, len: MAX_NAME_LEN + 1 }),
    ];
    for (backend, events, _) in &backends.stores {
        events.append(&[append("s", "T")]).await.unwrap();
        for (stream_id, event_type, want) in &cases {
            // After a good request of the same append: all or nothing.
            let err = events.append(&[append("s", "T"), append(stream_id, event_type)]).await.unwrap_err();
            match &err {
                SourceError::InvalidName(got) => assert_eq!(got, want, "{backend}: {stream_id:?} {event_type:?}"),
                other => panic!("{backend}: {stream_id:?} {event_type:?}: {other}"),
            }
            assert_eq!(err.to_string(), format!("invalid append: {want}; nothing was appended"));
        }
        assert_eq!(events.head().await.unwrap(), 1, "{backend}: nothing of a refused append was written");
        let at_limit = "n".repeat(MAX_NAME_LEN);
        events.append(&[append(&at_limit, &at_limit), append("zürich ✓", "Ünïcode")]).await.unwrap();
        assert_eq!(events.head().await.unwrap(), 3, "{backend}");
    }
    assert_eq!(
        SourceError::from(cases[0].2.clone()).to_string(),
        "invalid append: stream id contains control character U+0000 at byte 0; nothing was appended"
    );
}

/// `?filter=` repeated 999 times answered 500 with SQLite's "Expression
/// tree is too large", and NUL in a filter value 500 on PostgreSQL. Both
/// are now the query's own errors on both backends (the API answers a
/// `QueryError` with 400), and a query at the limits still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_nul_queries_are_refused_alike_by_every_backend() {
    let backends = backends().await;
    for (backend, events, models) in &backends.stores {
        append_all(events.as_ref(), &bank_events(5, 20, 1)).await;
        let mut host = refract::Host::new(events.clone(), models.clone(), SyncConfig::default()).unwrap();
        host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
        host.wait_until_caught_up().await.unwrap();
        host.shutdown().await;
        let count = |filters: Vec<Filter>| async move {
            models.count_documents("account-summary", "accounts", &Query { filters, ..Query::default() }).await
        };
        let query = |filters: Vec<Filter>| async move {
            models.query_documents("account-summary", "accounts", &Query { filters, ..Query::default() }).await
        };
        let filter = |field: &str, op: Op, value: Value| Filter { field: field.into(), op, value };

        let nul = QueryError::NulCharacter { what: "the value of filter `id`".into() };
        assert_eq!(
            query_error(backend, query(vec![filter("id", Op::Eq, json!("account-1\0"))]).await),
            nul,
            "{backend}"
        );
        assert_eq!(query_error(backend, count(vec![filter("id", Op::In, json!(["a", "\0"]))]).await), nul, "{backend}");

        let many = vec![filter("id", Op::Ne, json!("nobody")); 999];
        assert_eq!(query_error(backend, query(many.clone()).await), QueryError::TooManyFilters(999), "{backend}");
        assert_eq!(query_error(backend, count(many).await), QueryError::TooManyFilters(999), "{backend}");
        let values: Vec<Value> = (0..=MAX_IN_VALUES).map(|i| json!(format!("account-{i}"))).collect();
        assert_eq!(
            query_error(backend, count(vec![filter("id", Op::In, Value::Array(values.clone()))]).await),
            QueryError::TooManyValues { field: "id".into(), count: MAX_IN_VALUES + 1 },
            "{backend}"
        );

        // At the limits the backends answer: every filter lists all five
        // accounts among 1,000 ids.
        let in_list = filter("id", Op::In, Value::Array(values[..MAX_IN_VALUES].to_vec()));
        assert_eq!(count(vec![in_list.clone(); MAX_FILTERS]).await.unwrap(), 5, "{backend}");
        assert_eq!(query(vec![in_list; MAX_FILTERS]).await.unwrap().documents.len(), 5, "{backend}");
    }
}

/// The query error a store answered with; anything else fails the test.
fn query_error<T>(backend: &str, result: Result<T, StoreError>) -> QueryError {
    match result {
        Err(StoreError::Query(e)) => e,
        Err(e) => panic!("{backend}: not a query error: {e}"),
        Ok(_) => panic!("{backend}: answered"),
    }
}

// ---------------------------------------------------------------------------
// 8. Subscriptions the event stores can read by

/// A subscription at the manifest's limits reads on every backend, and
/// returns what the test computes; far beyond them, SQLite refused every
/// read, which left the projection "store unavailable" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_at_the_manifest_limits_are_readable_by_every_backend() {
    let backends = backends().await;
    let events = bank_events(20, 400, 9);
    let mut event_types: Vec<String> = (0..MAX_EVENT_TYPES - 1).map(|i| format!("Other{i}")).collect();
    event_types.push("MoneyDeposited".into());
    let mut stream_prefixes: Vec<String> = (0..MAX_STREAM_PREFIXES - 2).map(|i| format!("other-{i}-")).collect();
    stream_prefixes.extend(["account-1".into(), "account-3".into()]);
    let want = events
        .iter()
        .filter(|e| e.event_type == "MoneyDeposited")
        .filter(|e| e.stream.starts_with("account-1") || e.stream.starts_with("account-3"))
        .count();
    assert!(want > 10, "the subscription selects something: {want}");
    let subscription = Subscription { event_types, stream_prefixes };
    let manifest = Manifest {
        name: "p".into(),
        version: "1".into(),
        subscription: subscription.clone(),
        collections: vec![refract::CollectionSpec { name: "c".into(), ..Default::default() }],
    };
    assert_eq!(manifest.validate(), Ok(()));
    for (backend, store, _) in &backends.stores {
        append_all(store.as_ref(), &events).await;
        let read = store.read(0, 400, &subscription, 1_000).await.unwrap();
        assert_eq!(read.len(), want, "{backend}");
        assert!(read.iter().all(|e| subscription.matches(&e.event_type, &e.stream_id)), "{backend}");
    }
    let (_, sqlite, _) = &backends.stores[0];
    let unbounded =
        Subscription { event_types: vec![], stream_prefixes: (0..5_000).map(|i| format!("account-{i}")).collect() };
    assert!(sqlite.read(0, 400, &unbounded, 1_000).await.is_err(), "why the limit exists");
}
