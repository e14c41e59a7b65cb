//! Gap safety in PostgreSQL: 8 writers append 20,000 bank events
//! concurrently while `account-summary` follows live. Appends commit in
//! whatever order the writers race, yet the projection must apply every
//! event exactly once: the final accounts equal values computed in the test.

use crate::common;

use std::time::Duration;

use common::*;
use refract::{Host, Subscription, SyncConfig};

const WRITERS: usize = 8;
const EVENTS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_make_a_live_projection_miss_an_event() {
    let schema = pg::fresh_schema().await;
    let url = schema.url.clone();
    let events = refract::open_events(&url).await.unwrap();
    let models = refract::open_models(&url).await.unwrap();
    // Small batches and a fast poll: the runner reads while appends are in flight.
    let sync = SyncConfig { batch_size: 100, poll: Duration::from_millis(2), ..SyncConfig::default() };
    let mut host = Host::new(events.clone(), models.clone(), sync).unwrap();
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();

    // Each writer owns the accounts `i % WRITERS == w`, so each stream's
    // events keep their order while the writers interleave freely.
    let all = bank_events(400, EVENTS, 2026);
    let expected = expected_accounts(&all);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mine: Vec<BankEvent> = all
                .iter()
                .filter(|e| e.stream.trim_start_matches("account-").parse::<usize>().unwrap() % WRITERS == w)
                .cloned()
                .collect();
            let events = events.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(w as u64 + 1);
                let mut rest = &mine[..];
                while !rest.is_empty() {
                    // 1 to 4 streams per atomic append.
                    let n = (1 + rng.below(4) as usize).min(rest.len());
                    events.append(&requests(&rest[..n])).await.unwrap();
                    rest = &rest[n..];
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(events.head().await.unwrap(), EVENTS as u64);
    host.wait_until_caught_up().await.unwrap();
    let progress = host.progress("account-summary").unwrap();
    host.shutdown().await;
    assert_eq!(progress.checkpoint, EVENTS as u64, "{progress:?}");

    // Positions are gapless: 1..=EVENTS, each once.
    let read = events.read(0, EVENTS as u64, &Subscription::default(), EVENTS).await.unwrap();
    assert!(read.iter().enumerate().all(|(i, e)| e.position == i as u64 + 1));

    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_eq!(docs.len(), expected.len());
    for (id, want) in &expected {
        let got = &docs[id];
        assert_eq!(got["balance"].as_i64(), Some(want.balance), "balance of {id}");
        assert_eq!(got["transactions"].as_u64(), Some(want.transactions), "transactions of {id}");
        let status = if want.closed { "closed" } else { "open" };
        assert_eq!(got["status"].as_str(), Some(status), "status of {id}");
    }
}
