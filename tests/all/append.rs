//! The embedded event store: optimistic concurrency and gapless positions.

use std::process::Command;
use std::sync::Arc;

use refract::{
    AppendRequest, EventSource, EventStore, ExpectedVersion, NewEvent, SourceError, SqliteEventStore, Subscription,
};

fn request(stream: &str, expected: ExpectedVersion, n: usize) -> AppendRequest {
    AppendRequest {
        stream_id: stream.into(),
        expected,
        events: (0..n).map(|i| NewEvent::new("Happened", format!("{{\"i\":{i}}}"))).collect(),
    }
}

/// Two writers (separate connections, as two processes would have) append
/// with the same expected version at the same time: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_with_same_expected_version_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let a = Arc::new(SqliteEventStore::open(&path).await.unwrap());
    let b = Arc::new(SqliteEventStore::open(&path).await.unwrap());
    for round in 0..50 {
        let stream = format!("order-{round}");
        a.append(&[request(&stream, ExpectedVersion::Exact(0), 1)]).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |store: Arc<SqliteEventStore>, barrier: Arc<tokio::sync::Barrier>, stream: String| {
            tokio::spawn(async move {
                barrier.wait().await;
                store.append(&[request(&stream, ExpectedVersion::Exact(1), 2)]).await
            })
        };
        let ra = spawn(a.clone(), barrier.clone(), stream.clone());
        let rb = spawn(b.clone(), barrier, stream.clone());
        let results = [ra.await.unwrap(), rb.await.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loss = results.into_iter().find_map(Result::err).unwrap();
        match &loss {
            SourceError::Conflict { stream_id, expected: 1, actual: 3 } if *stream_id == stream => {}
            other => panic!("round {round}: expected a conflict, got {other:?}"),
        }
        assert!(loss.to_string().contains("nothing was appended"));
        assert_eq!(a.stream_version(&stream).await.unwrap(), 3, "the loser appended nothing");
    }
    // Positions are gapless: 50 rounds of 1 + 2 events.
    let head = a.head().await.unwrap();
    assert_eq!(head, 150);
    let all = a.read(0, head, &Subscription::default(), 1_000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=150).collect::<Vec<u64>>());
}

/// A multi-stream append is all or nothing: one conflict writes none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_append_writes_nothing_on_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(&dir.path().join("events.db")).await.unwrap();
    store.append(&[request("a", ExpectedVersion::Any, 2)]).await.unwrap();
    let err = store
        .append(&[request("b", ExpectedVersion::Exact(0), 1), request("a", ExpectedVersion::Exact(1), 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Conflict { expected: 1, actual: 2, .. }), "{err:?}");
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(store.stream_version("b").await.unwrap(), 0);
}

/// Two `refract append` processes race with the same expected version.
#[test]
fn cli_appends_race_and_the_loser_gets_a_clear_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let append = |payload: &str| {
        Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["append", "account-1", "MoneyDeposited", payload, "--expected-version", "no-stream"])
            .output()
            .unwrap()
    };
    // Create the files first so both racers start from the same schema.
    let first = Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["append", "setup", "Setup", "{}"])
        .output()
        .unwrap();
    assert!(first.status.success());
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| append(r#"{"amount":1}"#));
        let y = s.spawn(|| append(r#"{"amount":2}"#));
        (x.join().unwrap(), y.join().unwrap())
    });
    let outputs = [x, y];
    assert_eq!(outputs.iter().filter(|o| o.status.success()).count(), 1);
    let loser = outputs.iter().find(|o| !o.status.success()).unwrap();
    let stderr = String::from_utf8_lossy(&loser.stderr);
    assert!(stderr.contains("version conflict on stream `account-1`: expected version 0, but it is at 1"), "{stderr}");
}
