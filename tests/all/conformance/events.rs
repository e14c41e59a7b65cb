//! What every `EventStore` must do, written once and run against each backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use refract::{AppendRequest, Appended, EventStore, ExpectedVersion, NewEvent, SourceError, Subscription};

/// How a store appends several events at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batches {
    /// All or nothing, in one call.
    Atomic,
    /// Refused as a whole ([`SourceError::NotAtomic`]), so each event is
    /// appended on its own (JetStream on server 2.9).
    OneEvent,
}

/// Appends `requests` as the store can: in one call, or, where several
/// events are refused, after checking that the refusal wrote nothing, one
/// event per call with the same version checks. One result per request.
async fn append(store: &Arc<dyn EventStore>, batches: Batches, requests: &[AppendRequest]) -> Vec<Appended> {
    let events: usize = requests.iter().map(|r| r.events.len()).sum();
    if batches == Batches::Atomic || events == 1 {
        return store.append(requests).await.unwrap();
    }
    // What the refusal leaves behind is checked by `several_events_are_refused_whole`;
    // here other writers may be appending meanwhile.
    let err = store.append(requests).await.unwrap_err();
    assert!(matches!(err, SourceError::NotAtomic { events: n } if n == events), "{err}");
    let mut results = Vec::new();
    for r in requests {
        let mut expected = r.expected;
        let mut merged: Option<Appended> = None;
        for e in &r.events {
            let one = AppendRequest { stream_id: r.stream_id.clone(), expected, events: vec![e.clone()] };
            let a = store.append(&[one]).await.unwrap()[0];
            if let ExpectedVersion::Exact(_) = expected {
                expected = ExpectedVersion::Exact(a.stream_version);
            }
            merged = Some(match merged {
                Some(m) => Appended { last_position: a.last_position, stream_version: a.stream_version, ..m },
                None => a,
            });
        }
        results.push(merged.expect("a request has events"));
    }
    results
}

fn request(stream: &str, expected: ExpectedVersion, types: &[&str]) -> AppendRequest {
    AppendRequest {
        stream_id: stream.into(),
        expected,
        events: types.iter().map(|t| NewEvent::new(*t, format!(r#"{{"t":"{t}"}}"#))).collect(),
    }
}

/// Appends with optimistic concurrency: versions, conflicts, positions.
pub async fn append_and_conflict(store: Arc<dyn EventStore>) {
    append_and_conflict_in(store, Batches::Atomic).await;
}

/// [`append_and_conflict`] for a store that appends as `batches` says.
pub async fn append_and_conflict_in(store: Arc<dyn EventStore>, batches: Batches) {
    assert_eq!(store.head().await.unwrap(), 0);
    let a = append(&store, batches, &[request("acc-1", ExpectedVersion::Exact(0), &["Opened", "Deposited"])]).await;
    assert_eq!((a[0].first_position, a[0].last_position, a[0].stream_version), (1, 2, 2));
    let err = store.append(&[request("acc-1", ExpectedVersion::Exact(0), &["Opened"])]).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Conflict { stream_id, expected: 0, actual: 2 } if stream_id == "acc-1"),
        "{err}"
    );
    let a = store.append(&[request("acc-1", ExpectedVersion::Exact(2), &["Withdrawn"])]).await.unwrap();
    assert_eq!((a[0].first_position, a[0].last_position, a[0].stream_version), (3, 3, 3));
    let a = store.append(&[request("acc-1", ExpectedVersion::Any, &["Deposited"])]).await.unwrap();
    assert_eq!(a[0].stream_version, 4);
    assert_eq!(store.stream_version("acc-1").await.unwrap(), 4);
    assert_eq!(store.stream_version("nobody").await.unwrap(), 0);
    assert_eq!(store.head().await.unwrap(), 4);
    let events = store.read(0, 4, &Subscription::default(), 100).await.unwrap();
    let got: Vec<_> = events.iter().map(|e| (e.position, e.stream_version, e.event_type.as_str())).collect();
    assert_eq!(got, [(1, 1, "Opened"), (2, 2, "Deposited"), (3, 3, "Withdrawn"), (4, 4, "Deposited")]);
    assert_eq!(events[0].payload, r#"{"t":"Opened"}"#);
    assert_eq!(events[0].metadata, "{}");
    assert!(events[0].timestamp > 0);
}

/// A multi-stream append is all or nothing.
pub async fn atomic_multi_stream_append(store: Arc<dyn EventStore>) {
    store.append(&[request("b", ExpectedVersion::Any, &["X", "X", "X"])]).await.unwrap();
    // The second request conflicts: the first must not be written either.
    let err = store
        .append(&[request("a", ExpectedVersion::Exact(0), &["X"]), request("b", ExpectedVersion::Exact(1), &["X"])])
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Conflict { expected: 1, actual: 3, .. }), "{err}");
    assert_eq!(store.stream_version("a").await.unwrap(), 0);
    assert_eq!(store.head().await.unwrap(), 3);
    // A malformed event refuses the whole append too.
    let mut bad = request("c", ExpectedVersion::Any, &["X"]);
    bad.events.push(NewEvent::new("Broken", "{not json"));
    let err = store.append(&[request("a", ExpectedVersion::Any, &["X"]), bad]).await.unwrap_err();
    assert!(matches!(err, SourceError::InvalidEvent { index: 1, .. }), "{err}");
    assert_eq!(store.head().await.unwrap(), 3);
    // Two requests on one stream in one append see each other's versions.
    let a = store
        .append(&[
            request("a", ExpectedVersion::Exact(0), &["X"]),
            request("c", ExpectedVersion::Exact(0), &["Y", "Y"]),
            request("a", ExpectedVersion::Exact(1), &["Z"]),
        ])
        .await
        .unwrap();
    let got: Vec<_> = a.iter().map(|r| (r.first_position, r.last_position, r.stream_version)).collect();
    assert_eq!(got, [(4, 4, 1), (5, 6, 2), (7, 7, 2)]);
    let events = store.read(3, 7, &Subscription::default(), 100).await.unwrap();
    let got: Vec<_> = events.iter().map(|e| (e.stream_id.as_str(), e.stream_version)).collect();
    assert_eq!(got, [("a", 1), ("c", 1), ("c", 2), ("a", 2)]);
}

/// Reads are bounded, limited and filtered by subscription.
pub async fn read_with_subscriptions(store: Arc<dyn EventStore>) {
    for (stream, t) in [
        ("acc_1", "Opened"),
        ("accX1", "Opened"),
        ("ord-1", "Placed"),
        ("acc_1", "Deposited"),
        ("ACC_2", "Opened"),
        ("acc_2", "Closed"),
    ] {
        store.append(&[request(stream, ExpectedVersion::Any, &[t])]).await.unwrap();
    }
    let positions = |events: Vec<refract::Event>| events.iter().map(|e| e.position).collect::<Vec<_>>();
    let all = Subscription::default();
    assert_eq!(positions(store.read(0, 6, &all, 100).await.unwrap()), [1, 2, 3, 4, 5, 6]);
    assert_eq!(positions(store.read(2, 5, &all, 100).await.unwrap()), [3, 4, 5]);
    assert_eq!(positions(store.read(0, 6, &all, 2).await.unwrap()), [1, 2]);
    assert_eq!(positions(store.read(6, 100, &all, 10).await.unwrap()), Vec::<u64>::new());
    // `_` is a literal in a prefix, and prefixes are case-sensitive.
    let sub = Subscription { event_types: vec![], stream_prefixes: vec!["acc_".into()] };
    assert_eq!(positions(store.read(0, 6, &sub, 100).await.unwrap()), [1, 4, 6]);
    let sub = Subscription { event_types: vec!["Opened".into(), "Placed".into()], stream_prefixes: vec![] };
    assert_eq!(positions(store.read(0, 6, &sub, 100).await.unwrap()), [1, 2, 3, 5]);
    let sub = Subscription { event_types: vec!["Opened".into()], stream_prefixes: vec!["acc_".into(), "ord-".into()] };
    assert_eq!(positions(store.read(0, 6, &sub, 100).await.unwrap()), [1]);
    // A filtered read's limit counts delivered events.
    let sub = Subscription { event_types: vec![], stream_prefixes: vec!["acc_".into()] };
    assert_eq!(positions(store.read(1, 6, &sub, 1).await.unwrap()), [4]);
}

/// A sparse subscription over a long range: a backend may read in windows
/// of positions, but must still deliver the first `limit` matches in order,
/// and nothing past `up_to`.
pub async fn sparse_reads_over_a_long_range(store: Arc<dyn EventStore>) {
    sparse_reads_over_a_long_range_in(store, Batches::Atomic).await;
}

/// [`sparse_reads_over_a_long_range`] for a store that appends as `batches` says.
pub async fn sparse_reads_over_a_long_range_in(store: Arc<dyn EventStore>, batches: Batches) {
    // 3,000 events in big appends; every 700th is a `Rare` one.
    let mut requests = Vec::new();
    for i in 1..=3_000u64 {
        let t = if i % 700 == 0 { "Rare" } else { "Common" };
        requests.push(request(&format!("s-{}", i % 13), ExpectedVersion::Any, &[t]));
    }
    match batches {
        Batches::Atomic => {
            for chunk in requests.chunks(1_000) {
                store.append(chunk).await.unwrap();
            }
        }
        Batches::OneEvent => {
            append(&store, batches, &requests[..2]).await;
            for r in &requests[2..] {
                store.append(std::slice::from_ref(r)).await.unwrap();
            }
        }
    }
    let positions = |events: Vec<refract::Event>| events.iter().map(|e| e.position).collect::<Vec<_>>();
    let rare = Subscription { event_types: vec!["Rare".into()], stream_prefixes: vec![] };
    assert_eq!(positions(store.read(0, 3_000, &rare, 1).await.unwrap()), [700]);
    assert_eq!(positions(store.read(700, 3_000, &rare, 2).await.unwrap()), [1_400, 2_100]);
    assert_eq!(positions(store.read(0, 3_000, &rare, 1_000).await.unwrap()), [700, 1_400, 2_100, 2_800]);
    assert_eq!(positions(store.read(0, 2_799, &rare, 1_000).await.unwrap()), [700, 1_400, 2_100]);
    assert_eq!(positions(store.read(2_800, 3_000, &rare, 1_000).await.unwrap()), Vec::<u64>::new());
    let all = Subscription::default();
    let page = positions(store.read(1_234, 3_000, &all, 1_000).await.unwrap());
    assert_eq!(page, (1_235..=2_234).collect::<Vec<_>>());
    assert_eq!(store.stream_version("s-0").await.unwrap(), 3_000 / 13);
}

/// Concurrent appenders and a reader that follows them: the reader sees every
/// position exactly once and in order, never skipping one that commits late.
pub async fn concurrent_appends_are_gapless(store: Arc<dyn EventStore>) {
    concurrent_appends_are_gapless_in(store, Batches::Atomic).await;
}

/// [`concurrent_appends_are_gapless`] for a store that appends as `batches` says.
pub async fn concurrent_appends_are_gapless_in(store: Arc<dyn EventStore>, batches: Batches) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 40;
    let total = (WRITERS * APPENDS * 2) as u64;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut checkpoint = 0;
            while checkpoint < total {
                let head = store.head().await.unwrap();
                for e in store.read(checkpoint, head, &Subscription::default(), 1000).await.unwrap() {
                    assert_eq!(e.position, checkpoint + 1, "the reader skipped a position");
                    checkpoint = e.position;
                    seen.push((e.stream_id, e.stream_version));
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    let stream = format!("s-{w}-{}", i % 3);
                    append(&store, batches, &[request(&stream, ExpectedVersion::Any, &["A", "B"])]).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    assert_eq!(seen.len() as u64, total);
    assert_eq!(store.head().await.unwrap(), total);
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a (stream, version) was delivered twice");
}

/// A store that cannot append several events atomically refuses every
/// append of more than one, whole, and still checks versions per event.
pub async fn several_events_are_refused_whole(store: Arc<dyn EventStore>) {
    store.append(&[request("b", ExpectedVersion::Any, &["X"])]).await.unwrap();
    for requests in [
        vec![request("a", ExpectedVersion::Exact(0), &["X", "Y"])],
        vec![request("a", ExpectedVersion::Exact(0), &["X"]), request("b", ExpectedVersion::Exact(1), &["X"])],
        vec![request("a", ExpectedVersion::Any, &["X"]), request("a", ExpectedVersion::Any, &["Y"])],
    ] {
        let err = store.append(&requests).await.unwrap_err();
        assert!(matches!(err, SourceError::NotAtomic { events: 2 }), "{err}");
        assert!(err.to_string().contains("cannot publish several messages atomically"), "{err}");
    }
    assert_eq!(store.stream_version("a").await.unwrap(), 0);
    assert_eq!(store.head().await.unwrap(), 1);
    // Malformed events are named before the refusal of their number.
    let mut bad = request("c", ExpectedVersion::Any, &["X"]);
    bad.events.push(NewEvent::new("Broken", "{not json"));
    let err = store.append(&[bad]).await.unwrap_err();
    assert!(matches!(err, SourceError::InvalidEvent { index: 1, .. }), "{err}");
    let err = store.append(&[request("b", ExpectedVersion::Exact(0), &["X"])]).await.unwrap_err();
    assert!(matches!(&err, SourceError::Conflict { expected: 0, actual: 1, .. }), "{err}");
    assert_eq!(store.head().await.unwrap(), 1);
}
