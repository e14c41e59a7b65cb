//! Issue 19: NATS JetStream as refract's event log (`--events
//! nats://HOST:PORT/STREAM`), and foreign streams other services publish
//! to, projected through the `[events]` mapping of `refract.toml`.
//!
//! Every test gets streams of its own on `NATS_URL` (deleted when it ends),
//! and the foreign streams are written with plain async-nats publishes, as
//! another service would, never through refract.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::http::{Client, start_api};
use common::*;
use refract::{
    AppendRequest, ExpectedVersion, ForeignStream, Host, NewEvent, ProjectionState, ReadModelStore, SourceError,
    SyncConfig,
};
use serde_json::{Value, json};

/// `NATS_URL`, or a panic: a test that needs JetStream fails, never skips.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| {
        panic!(
            "NATS_URL is not set: JetStream tests need it, e.g. NATS_URL=nats://127.0.0.1:4222 \
             (scripts/test starts a throwaway nats-server -js and sets it when it is unset)"
        )
    })
}

/// A stream name of its own for one test, deleted when this guard drops.
pub struct FreshStream {
    /// The stream's name.
    pub name: String,
    /// `nats://HOST:PORT/NAME`, for `--events`.
    pub url: String,
}

impl FreshStream {
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        let name = format!("RT_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let url = format!("{}/{name}", nats_url().trim_end_matches('/'));
        Self { name, url }
    }

    /// Subjects of this stream when a test creates it as a foreign one.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.name.to_lowercase())
    }
}

impl Drop for FreshStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which must not block on a future.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let _ = jetstream::new(client).delete_stream(&name).await;
                }
            })
        })
        .join();
    }
}

/// A plain JetStream client, as another service has.
pub async fn raw() -> jetstream::Context {
    jetstream::new(async_nats::connect(nats_url()).await.unwrap())
}

/// Creates `fresh` as a foreign stream capturing [`FreshStream::subjects`].
async fn create_foreign(js: &jetstream::Context, fresh: &FreshStream) -> jetstream::stream::Stream {
    js.create_stream(jetstream::stream::Config {
        name: fresh.name.clone(),
        subjects: vec![fresh.subjects()],
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Publishes a bank event as a foreign service would: `PREFIX.STREAM.TYPE`,
/// the payload as JSON, a header of its own. Returns the stream sequence.
async fn publish(js: &jetstream::Context, fresh: &FreshStream, e: &BankEvent) -> u64 {
    let subject = format!("{}.{}.{}", fresh.name.to_lowercase(), e.stream, e.event_type);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Producer", "bank-service");
    let ack = js.publish_with_headers(subject, headers, e.payload.to_string().into()).await.unwrap();
    ack.await.unwrap().sequence
}

/// The `[events]` table mapping `fresh` (tokens: prefix, stream id, type).
fn mapping_toml(fresh: &FreshStream) -> String {
    format!(
        "[events]\nurl = \"{}\"\nstream_id = {{ subject_token = 1 }}\nevent_type = {{ subject_token = 2 }}\n",
        fresh.url
    )
}

/// A host reading the foreign stream `fresh` into SQLite models in `dir`.
async fn foreign_host(dir: &std::path::Path, fresh: &FreshStream, extra: &str, sync: SyncConfig) -> Host {
    let config = refract::Config::parse(&format!("{}{extra}", mapping_toml(fresh))).unwrap();
    let source = Arc::new(ForeignStream::open(config.events().unwrap()).await.unwrap());
    let models = refract::SqliteReadModelStore::open(&dir.join("models.db")).await.unwrap();
    let mut host = Host::with_config(source, Arc::new(models), sync, config).unwrap();
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host
}

/// Waits until the projection's progress satisfies `done`, or panics after 60 s.
async fn wait_for(host: &Host, what: &str, done: impl Fn(&refract::Progress) -> bool) -> refract::Progress {
    wait_for_progress(host, "account-summary", what, Duration::from_secs(60), done).await
}

async fn accounts(host: &Host) -> BTreeMap<String, Value> {
    all_documents(host.models().as_ref(), "account-summary", "accounts").await
}

/// Small batches, so that reads page across the gaps many times.
fn small_batches() -> SyncConfig {
    SyncConfig { batch_size: 7, ..SyncConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_stream_with_deleted_messages_is_projected_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    let stream = create_foreign(&js, &fresh).await;
    let events = bank_events(20, 300, 7);
    let mut sequences = Vec::new();
    for e in &events {
        sequences.push(publish(&js, &fresh, e).await);
    }
    // Delete deposits and withdrawals in the middle, in runs and alone, so
    // reads meet gaps of one and of many sequences.
    let mut kept = Vec::new();
    let mut deleted = 0;
    for (i, (e, seq)) in events.iter().zip(&sequences).enumerate() {
        let middle = (60..240).contains(&i);
        let movement = matches!(e.event_type, "MoneyDeposited" | "MoneyWithdrawn");
        if middle && movement && (i % 9 == 0 || (100..130).contains(&i)) {
            assert!(stream.delete_message(*seq).await.unwrap());
            deleted += 1;
        } else {
            kept.push(e.clone());
        }
    }
    assert!(deleted > 30, "only {deleted} deleted");
    let head = *sequences.last().unwrap();

    let host = foreign_host(dir.path(), &fresh, "", small_batches()).await;
    wait_for(&host, "the head", |p| p.checkpoint == head).await;
    assert_accounts(&accounts(&host).await, &expected_accounts(&kept));

    // New messages are read as they come, still once each.
    let more = vec![
        BankEvent { stream: "account-3".into(), event_type: "MoneyDeposited", payload: json!({ "amount": 1000 }) },
        BankEvent { stream: "account-4".into(), event_type: "MoneyWithdrawn", payload: json!({ "amount": 7 }) },
    ];
    let mut last = 0;
    for e in &more {
        last = publish(&js, &fresh, e).await;
    }
    kept.extend(more);
    wait_for(&host, "the new messages", |p| p.checkpoint == last).await;
    assert_accounts(&accounts(&host).await, &expected_accounts(&kept));

    // Appends to a foreign stream are refused, as a client error.
    let addr = start_api(&host).await;
    let mut client = Client::connect(addr).await;
    let body =
        json!({ "expected_version": "any", "events": [{ "type": "MoneyDeposited", "payload": { "amount": 1 } }] });
    let reply = client.post("/streams/account-1/events", &body).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains(&format!("foreign JetStream stream `{}`, which refract only reads", fresh.name)), "{error}");
    host.shutdown().await;

    // A restart resumes from the stored checkpoint: nothing is applied twice.
    let host = foreign_host(dir.path(), &fresh, "", small_batches()).await;
    wait_for(&host, "the resumed head", |p| p.leased && p.checkpoint == last).await;
    assert_accounts(&accounts(&host).await, &expected_accounts(&kept));
    host.shutdown().await;
}

/// Publishes `events`, purges the stream and returns its new first sequence.
async fn publish_and_purge(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    fresh: &FreshStream,
    events: &[BankEvent],
) -> u64 {
    for e in events {
        publish(js, fresh, e).await;
    }
    stream.purge().await.unwrap();
    let first = js.get_stream(&fresh.name).await.unwrap().cached_info().state.first_sequence;
    assert!(first > 40, "the purge removed everything: first sequence {first}");
    first
}

/// The projection faults with the truncation error, at checkpoint 20: the
/// events after it were purged unread, and none was skipped.
async fn assert_truncated_after_20(host: &Host, fresh: &FreshStream, first: u64) {
    let p = wait_for(host, "the fault", |p| p.state == ProjectionState::Faulted).await;
    let error = p.last_error.unwrap();
    assert!(
        error.contains(&format!("source was truncated: the stream `{}` now starts at sequence {first}", fresh.name))
            && error.contains("events after 20 were not read yet"),
        "{error}"
    );
    assert_eq!(p.checkpoint, 20, "nothing after the checkpoint was skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_events_not_yet_projected_faults_the_projection_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    let stream = create_foreign(&js, &fresh).await;
    let events = bank_events(5, 40, 11);
    for e in &events[..20] {
        publish(&js, &fresh, e).await;
    }
    let host = foreign_host(dir.path(), &fresh, "", SyncConfig::default()).await;
    wait_for(&host, "the first 20", |p| p.checkpoint == 20).await;
    // The host stops, events 21 to 40 arrive and are purged before any host
    // read them. (A purge while a runner is reading is a race the runner may
    // win, reading and projecting the events first, which is no loss; this
    // order makes the loss certain.)
    host.shutdown().await;
    let first = publish_and_purge(&js, &stream, &fresh, &events[20..]).await;
    let host = foreign_host(dir.path(), &fresh, "", SyncConfig::default()).await;
    assert_truncated_after_20(&host, &fresh, first).await;
    let record = host.models().projection("account-summary").await.unwrap();
    assert_eq!((record.state, record.checkpoint), (ProjectionState::Faulted, 20));
    assert_accounts(&accounts(&host).await, &expected_accounts(&events[..20]));
    host.shutdown().await;
}

/// The same loss with the host running throughout: the projection is
/// paused (its runner stops, the host and its open source stay), events
/// arrive and are purged, and the resumed runner faults instead of going
/// on from the stream's new first sequence. Pausing is what makes the
/// order certain; a runner that reads first projects them, which is no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_under_a_running_host_faults_the_resumed_projection_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    let stream = create_foreign(&js, &fresh).await;
    let events = bank_events(5, 40, 14);
    for e in &events[..20] {
        publish(&js, &fresh, e).await;
    }
    let mut host = foreign_host(dir.path(), &fresh, "", small_batches()).await;
    wait_for(&host, "the first 20", |p| p.checkpoint == 20).await;

    host.models().set_paused("account-summary", true).await.unwrap();
    host.sync_registry().await.unwrap();
    let stopped = Instant::now();
    while host.models().leases().await.unwrap().iter().any(|l| l.key.projection == "account-summary" && !l.expired) {
        assert!(stopped.elapsed() < Duration::from_secs(30), "the paused runner did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = publish_and_purge(&js, &stream, &fresh, &events[20..]).await;

    host.models().set_paused("account-summary", false).await.unwrap();
    host.sync_registry().await.unwrap();
    assert_truncated_after_20(&host, &fresh, first).await;
    assert_accounts(&accounts(&host).await, &expected_accounts(&events[..20]));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_events_already_projected_is_no_fault() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    let stream = create_foreign(&js, &fresh).await;
    let events = bank_events(5, 30, 12);
    for e in &events[..10] {
        publish(&js, &fresh, e).await;
    }
    let host = foreign_host(dir.path(), &fresh, "", SyncConfig::default()).await;
    wait_for(&host, "the first 10", |p| p.checkpoint == 10).await;
    stream.purge().await.unwrap();
    let mut last = 0;
    for e in &events[10..] {
        last = publish(&js, &fresh, e).await;
    }
    let p = wait_for(&host, "the rest", |p| p.checkpoint == last || p.state == ProjectionState::Faulted).await;
    assert_eq!(p.checkpoint, last);
    assert_eq!((p.state, p.last_error), (ProjectionState::Running, None));
    assert_accounts(&accounts(&host).await, &expected_accounts(&events));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_is_detected_running_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    create_foreign(&js, &fresh).await;
    let events = bank_events(5, 20, 13);
    for e in &events[..10] {
        publish(&js, &fresh, e).await;
    }
    let host = foreign_host(dir.path(), &fresh, "", SyncConfig::default()).await;
    wait_for(&host, "the first 10", |p| p.checkpoint == 10).await;
    let old = js.get_stream(&fresh.name).await.unwrap().cached_info().created;

    // Deleted and created again: sequences start over at 1.
    js.delete_stream(&fresh.name).await.unwrap();
    create_foreign(&js, &fresh).await;
    for e in &events {
        publish(&js, &fresh, e).await;
    }
    let p = wait_for(&host, "the fault", |p| p.state == ProjectionState::Faulted).await;
    let error = p.last_error.unwrap();
    assert!(error.starts_with("source was re-created"), "{error}");
    assert!(error.contains(&format!("created {old}")), "names the old stream's creation time: {error}");
    assert_eq!(p.checkpoint, 10);
    host.shutdown().await;

    // A host started on the new stream finds the identity stored next to
    // the checkpoint differs. `refract retry` lifts the fault first, so
    // the check itself must refuse.
    host_models(dir.path()).await.request_retry("account-summary").await.unwrap();
    let host = foreign_host(dir.path(), &fresh, "", SyncConfig::default()).await;
    let p = wait_for(&host, "the fault after a restart", |p| p.state == ProjectionState::Faulted).await;
    let error = p.last_error.unwrap();
    assert!(error.starts_with("source was re-created"), "{error}");
    assert_eq!(p.checkpoint, 10, "the new stream's events were not applied on the old checkpoint");
    assert_accounts(&accounts(&host).await, &expected_accounts(&events[..10]));
    host.shutdown().await;
}

async fn host_models(dir: &std::path::Path) -> Arc<dyn ReadModelStore> {
    Arc::new(refract::SqliteReadModelStore::open(&dir.join("models.db")).await.unwrap())
}

/// A foreign stream of good bank events with one message that is not JSON
/// after the first two: the events, the bad one's sequence and the head.
async fn stream_with_a_non_json_message(js: &jetstream::Context, fresh: &FreshStream) -> (Vec<BankEvent>, u64, u64) {
    create_foreign(js, fresh).await;
    let events = bank_events(2, 5, 14);
    let (mut bad, mut head) = (0, 0);
    for (i, e) in events.iter().enumerate() {
        if i == 2 {
            let subject = format!("{}.account-0.MoneyDeposited", fresh.name.to_lowercase());
            bad = js.publish(subject, "amount=5".into()).await.unwrap().await.unwrap().sequence;
        }
        head = publish(js, fresh, e).await;
    }
    (events, bad, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_json_payload_is_a_poison_event_skipped_under_skip() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    let (events, bad, head) = stream_with_a_non_json_message(&js, &fresh).await;
    let host = foreign_host(dir.path(), &fresh, "[defaults]\non_failure = \"skip\"\n", SyncConfig::default()).await;
    let p = wait_for(&host, "the head", |p| p.checkpoint == head || p.state == ProjectionState::Faulted).await;
    assert_eq!(p.state, ProjectionState::Running, "{p:?}");
    let letters = host.models().dead_letters("account-summary").await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].position, letters[0].stream_id.as_str()), (bad, "account-0"));
    assert!(letters[0].error.contains("payload is not JSON"), "{}", letters[0].error);
    assert_accounts(&accounts(&host).await, &expected_accounts(&events));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_json_payload_is_a_poison_event_halting_under_halt() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let js = raw().await;
    let (events, bad, _) = stream_with_a_non_json_message(&js, &fresh).await;
    let host = foreign_host(dir.path(), &fresh, "", SyncConfig::default()).await;
    let p = wait_for(&host, "the fault", |p| p.state == ProjectionState::Faulted).await;
    assert_eq!(p.checkpoint, bad - 1, "halted just before the poison event");
    let error = p.last_error.unwrap();
    let expected =
        format!("event {bad} (stream `account-0`, type `MoneyDeposited`) cannot be read: payload is not JSON");
    assert!(error.contains(&expected), "{error}");
    assert_accounts(&accounts(&host).await, &expected_accounts(&events[..2]));
    host.shutdown().await;
}

fn deposit(stream: &str, expected: ExpectedVersion, amount: i64) -> AppendRequest {
    AppendRequest {
        stream_id: stream.into(),
        expected,
        events: vec![NewEvent::new("MoneyDeposited", json!({ "amount": amount }).to_string())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_wakes_a_subscriber_of_another_connection_at_once() {
    let fresh = FreshStream::new();
    let reader = refract::open_events(&fresh.url).await.unwrap();
    let writer = refract::open_events(&fresh.url).await.unwrap();
    let mut woken = reader.subscribe().expect("JetStream sends wake-ups");
    // The follower's consumer starts from the newest message on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for amount in 1..=3 {
        let at = writer.append(&[deposit("account-1", ExpectedVersion::Any, amount)]).await.unwrap()[0].last_position;
        let started = Instant::now();
        while *woken.borrow_and_update() < at {
            tokio::time::timeout(Duration::from_secs(5), woken.changed())
                .await
                .expect("no wake-up within 5 s")
                .unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(reader.head().await.unwrap(), at, "a woken reader sees the event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_sent_again_with_its_message_id_is_stored_once() {
    // What the store's retry of a publish whose ack was lost relies on: the
    // same Nats-Msg-Id, with the same expected last subject sequence, is
    // acknowledged as a duplicate with the first one's sequence.
    let fresh = FreshStream::new();
    let store = refract::open_events(&fresh.url).await.unwrap();
    store.append(&[deposit("acc", ExpectedVersion::Exact(0), 1)]).await.unwrap();
    let js = raw().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Refract-Stream-Version", "2");
    headers.insert("Refract-Event-Type", "\"MoneyDeposited\"");
    headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "1");
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "test-retry-1");
    let subject = format!("refract.{}.acc", fresh.name);
    let first = js.publish_with_headers(subject.clone(), headers.clone(), "{}".into()).await.unwrap().await.unwrap();
    let again = js.publish_with_headers(subject, headers, "{}".into()).await.unwrap().await.unwrap();
    assert_eq!((first.sequence, first.duplicate), (2, false));
    assert_eq!((again.sequence, again.duplicate), (2, true));
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(store.stream_version("acc").await.unwrap(), 2);
    let read = store.read(0, 10, &Default::default(), 10).await.unwrap();
    assert_eq!(read.iter().map(|e| (e.position, e.stream_version)).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refract_does_not_own_is_not_opened_as_its_store() {
    let fresh = FreshStream::new();
    let js = raw().await;
    create_foreign(&js, &fresh).await;
    let err = match refract::open_events(&fresh.url).await {
        Err(refract::BackendError::Source(e)) => e,
        other => panic!("opened: {:?}", other.map(|_| ())),
    };
    assert!(matches!(&err, SourceError::Misconfigured(m) if m.contains("is not a refract event store")), "{err}");
    // A foreign source names a stream that must exist.
    let missing = FreshStream::new();
    let config = refract::Config::parse(&mapping_toml(&missing)).unwrap();
    let err = ForeignStream::open(config.events().unwrap()).await.unwrap_err();
    assert!(matches!(&err, SourceError::Misconfigured(m) if m.contains("does not exist")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_from_two_processes_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    const ROUNDS: u64 = 15;
    let append = |data: &str, version: u64, amount: u64| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
        cmd.arg("--data-dir")
            .arg(dir.path().join(data))
            .args(["--events", &fresh.url, "append", "account-r", "MoneyDeposited"])
            .arg(json!({ "amount": amount }).to_string())
            .args(["--expected-version", &version.to_string()]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    };
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let a = append("a", round, 1);
        let b = append("b", round, 2);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let won: Vec<_> = [&a, &b].iter().filter(|o| o.status.success()).map(|o| o.stdout.clone()).collect();
        assert_eq!(won.len(), 1, "round {round}: {} appends won", won.len());
        let lost = if a.status.success() { &b } else { &a };
        let stderr = String::from_utf8_lossy(&lost.stderr);
        assert!(
            stderr.contains(&format!(
                "version conflict on stream `account-r`: expected version {round}, but it is at {}",
                round + 1
            )),
            "round {round}: {stderr}"
        );
        winners.push(if a.status.success() { 1 } else { 2 });
    }
    let store = refract::open_events(&fresh.url).await.unwrap();
    assert_eq!(store.stream_version("account-r").await.unwrap(), ROUNDS);
    let events = store.read(0, u64::MAX, &Default::default(), 1000).await.unwrap();
    let amounts: Vec<u64> =
        events.iter().map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["amount"].as_u64().unwrap()).collect();
    assert_eq!(amounts, winners, "exactly the winners' events, in order");
    assert_eq!(events.iter().map(|e| e.stream_version).collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>());
}

/// Appends `events` to the JetStream store at `url`, one event per append
/// (as it takes them), from 8 tasks at once; each account's events stay in
/// order, on the task that owns the account.
pub async fn append_each(url: &str, events: &[BankEvent]) {
    const TASKS: usize = 8;
    let store = refract::open_events(url).await.unwrap();
    let mut shares = vec![Vec::new(); TASKS];
    for r in requests(events) {
        let account: usize = r.stream_id.trim_start_matches("account-").parse().unwrap_or(0);
        shares[account % TASKS].push(r);
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let store = store.clone();
            tokio::spawn(async move {
                for r in share {
                    store.append(std::slice::from_ref(&r)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.head().await.unwrap(), events.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_with_events_in_jetstream_and_models_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let killed = crate::crash::Target::jetstream_sqlite(dir.path().join("killed"), &fresh.url);
    let clean = crate::crash::Target::jetstream_sqlite(dir.path().join("clean"), &fresh.url);
    crate::crash::sigkill_loop(dir.path(), &killed, &clean).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_with_events_in_jetstream_and_models_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshStream::new();
    let killed = crate::crash::Target::jetstream_postgres(dir.path().join("killed"), &fresh.url).await;
    let clean = crate::crash::Target::jetstream_postgres(dir.path().join("clean"), &fresh.url).await;
    crate::crash::sigkill_loop(dir.path(), &killed, &clean).await;
}
