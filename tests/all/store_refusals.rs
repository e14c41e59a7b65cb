//! A store refusal is a poison event: PostgreSQL's jsonb cannot hold
//! U+0000, so an account opened with a NUL in its owner's name makes every
//! commit of its document fail (SQLSTATE 22P05) however often it is
//! retried. The runner pins the refusal to that one event and applies the
//! projection's failure policy, as for a failing plugin call: `skip` puts
//! it in the dead-letter table and projects the rest exactly once, `halt`
//! stops exactly before it.

use crate::common;

use common::*;
use refract::{Host, ProjectionState, SyncConfig};
use serde_json::json;

/// 2,000 bank events with, at index `at`, an account opened for an owner
/// whose name holds U+0000 (the owner reaches the `accounts` document).
fn with_nul_owner(at: usize) -> Vec<BankEvent> {
    let mut events = bank_events(100, 2_000, 77);
    events.insert(
        at,
        BankEvent {
            stream: "account-nul".into(),
            event_type: "AccountOpened",
            payload: json!({ "owner": "bad\u{0}owner", "initial_deposit": 100 }),
        },
    );
    events
}

fn assert_accounts(docs: &std::collections::BTreeMap<String, serde_json::Value>, events: &[BankEvent]) {
    let expected = expected_accounts(events);
    assert_eq!(docs.len(), expected.len(), "accounts: {:?}", docs.keys().collect::<Vec<_>>());
    for (id, want) in &expected {
        let got = &docs[id];
        assert_eq!(got["owner"].as_str(), Some(want.owner.as_str()), "owner of {id}");
        assert_eq!(got["balance"].as_i64(), Some(want.balance), "balance of {id}");
        assert_eq!(got["transactions"].as_u64(), Some(want.transactions), "transactions of {id}");
        let status = if want.closed { "closed" } else { "open" };
        assert_eq!(got["status"].as_str(), Some(status), "status of {id}");
    }
}

/// Small batches committed in groups: the refused commit covers many
/// batches and events besides the poison one.
fn sync() -> SyncConfig {
    SyncConfig { batch_size: 100, ..SyncConfig::default() }
}

async fn run(
    policy: &str,
    events: &[BankEvent],
) -> (refract::Progress, std::sync::Arc<dyn refract::ReadModelStore>, pg::Schema) {
    let schema = pg::fresh_schema().await;
    let store = refract::open_events(&schema.url).await.unwrap();
    let models = refract::open_models(&schema.url).await.unwrap();
    append_all(store.as_ref(), events).await;
    let config =
        refract::Config::parse(&format!("[defaults]\nretries = 1\nbackoff_ms = 5\non_failure = \"{policy}\"")).unwrap();
    let mut host = Host::with_config(store.clone(), models.clone(), sync(), config).unwrap();
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(60), host.wait_until_caught_up())
        .await
        .expect("the projection settles instead of retrying the refused commit forever")
        .unwrap();
    let progress = host.progress("account-summary").unwrap();
    host.shutdown().await;
    (progress, models, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_dead_letters_an_event_the_store_refuses_and_projects_the_rest_once() {
    let events = with_nul_owner(1_000);
    let (progress, models, _schema) = run("skip", &events).await;
    assert_eq!((progress.state, progress.checkpoint), (ProjectionState::Running, events.len() as u64), "{progress:?}");

    let letters = models.dead_letters("account-summary").await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].position, letters[0].stream_id.as_str()), (1_001, "account-nul"));
    assert!(letters[0].error.starts_with("store refused: "), "{}", letters[0].error);

    let mut clean = events.clone();
    clean.remove(1_000);
    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_accounts(&docs, &clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_stops_exactly_before_an_event_the_store_refuses() {
    let events = with_nul_owner(1_000);
    let (progress, models, _schema) = run("halt", &events).await;
    assert_eq!((progress.state, progress.checkpoint), (ProjectionState::Faulted, 1_000), "{progress:?}");
    let error = progress.last_error.unwrap_or_default();
    assert!(error.starts_with("store refused: "), "{error}");
    let record = models.projection("account-summary").await.unwrap();
    assert_eq!(record.state, ProjectionState::Faulted);
    assert!(models.dead_letters("account-summary").await.unwrap().is_empty());

    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_accounts(&docs, &events[..1_000]);
}
