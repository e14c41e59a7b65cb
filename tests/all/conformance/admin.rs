//! Pause and reset in the registry, written once and run against each backend.

use std::sync::Arc;
use std::time::Duration;

use refract::{
    ChangeSet, CollectionChanges, DeadLetter, EventStore, LeaseGrant, ModelKey, ProjectionState, ReadModelStore,
    StoreError,
};
use serde_json::{Value, json};

use super::models::manifest;

fn letter(position: u64) -> DeadLetter {
    DeadLetter {
        position,
        stream_id: format!("s-{position}"),
        event_type: "Poison".into(),
        error: "trap: boom".into(),
        module_hash: "h".into(),
        recorded_at: 1_000 + position,
        replay: false,
    }
}

fn upsert(id: &str, doc: Value) -> ChangeSet {
    let mut set = ChangeSet::default();
    set.collections
        .insert("items".into(), CollectionChanges { upserts: vec![(id.to_owned(), doc.to_string())], deletes: vec![] });
    set
}

fn refused(result: Result<u64, StoreError>, needle: &str) {
    match result {
        Err(StoreError::AdminRefused { projection, reason }) => {
            assert_eq!(projection, "p");
            assert!(reason.contains(needle), "{reason}");
        }
        other => panic!("expected AdminRefused ({needle}), got {other:?}"),
    }
}

/// Paused is a flag of its own that state writes leave alone; a reset needs
/// it, no live lease and no generation being built; it moves the
/// checkpoint, keeps the documents (empties them at 0), forgets the dead
/// letters after it and clears a fault.
pub async fn pause_and_reset(store: Arc<dyn ReadModelStore>) {
    let k: ModelKey = store.register(&manifest("p"), "h1", "p.wasm").await.unwrap().target.key;
    store.commit(&k, &upsert("a", json!({"balance": 1})), 0, 2).await.unwrap();
    store.skip_event(&k, &letter(3), 2, 3).await.unwrap();
    store.commit(&k, &upsert("b", json!({"balance": 2})), 3, 5).await.unwrap();
    store.skip_event(&k, &letter(6), 5, 6).await.unwrap();
    store.commit(&k, &ChangeSet::default(), 6, 8).await.unwrap();

    assert!(!store.is_paused("p").await.unwrap());
    refused(store.reset_checkpoint("p", 4).await, "not paused");
    assert!(store.set_paused("p", true).await.unwrap());
    assert!(!store.set_paused("p", true).await.unwrap(), "already paused");
    // A host's state writes do not unpause it.
    store.set_state(&k, ProjectionState::Faulted, Some("trap: x")).await.unwrap();
    assert!(store.is_paused("p").await.unwrap());

    let lease = match store.acquire(&k, "node-a", Duration::from_secs(30)).await.unwrap() {
        LeaseGrant::Granted(lease) => lease,
        held => panic!("{held:?}"),
    };
    refused(store.reset_checkpoint("p", 4).await, "node `node-a` still runs it");
    store.release(&lease).await.unwrap();

    assert_eq!(store.reset_checkpoint("p", 4).await.unwrap(), 8, "returns the old checkpoint");
    let record = store.projection("p").await.unwrap();
    assert_eq!((record.checkpoint, record.last_error.clone()), (4, None));
    assert_ne!(record.state, ProjectionState::Faulted, "a reset clears the fault");
    assert!(store.get_document("p", "items", "b").await.unwrap().is_some(), "documents stay");
    let positions: Vec<u64> = store.dead_letters("p").await.unwrap().iter().map(|l| l.position).collect();
    assert_eq!(positions, [3], "letters after the new checkpoint are forgotten");

    assert_eq!(store.reset_checkpoint("p", 0).await.unwrap(), 4);
    assert_eq!(store.projection("p").await.unwrap().checkpoint, 0);
    assert_eq!(
        store.count_documents("p", "items", &refract::Query::new()).await.unwrap(),
        0,
        "0 empties the read model"
    );
    assert!(store.dead_letters("p").await.unwrap().is_empty());

    store.request_rebuild("p").await.unwrap();
    refused(store.reset_checkpoint("p", 0).await, "is being built");

    assert!(store.set_paused("p", false).await.unwrap());
    assert!(!store.is_paused("p").await.unwrap());
    for result in [store.set_paused("nope", true).await.map(u64::from), store.reset_checkpoint("nope", 0).await] {
        assert!(matches!(result, Err(StoreError::UnknownProjection(ref n)) if n == "nope"), "{result:?}");
    }
    // A dropped projection registered again starts unpaused.
    store.set_paused("p", true).await.unwrap();
    store.drop_projection("p").await.unwrap();
    store.register(&manifest("p"), "h1", "p.wasm").await.unwrap();
    assert!(!store.is_paused("p").await.unwrap());
}

/// A stream reads back by version, from its own index.
pub async fn read_stream(store: Arc<dyn EventStore>) {
    use refract::{AppendRequest, ExpectedVersion, NewEvent};
    let mut want = Vec::new();
    for i in 0..9u64 {
        let stream = ["s-a", "s-b", "s-ab"][(i % 3) as usize];
        let r = AppendRequest {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new("T", format!("{{\"i\":{i}}}"))],
        };
        let position = store.append(&[r]).await.unwrap()[0].last_position;
        if stream == "s-a" {
            want.push(position);
        }
    }
    let got: Vec<u64> = store.read_stream("s-a", 0, 100).await.unwrap().iter().map(|e| e.position).collect();
    assert_eq!(got, want, "exactly the stream, not streams it prefixes");
    let page = store.read_stream("s-a", 1, 1).await.unwrap();
    assert_eq!((page.len(), page[0].stream_version, page[0].position), (1, 2, want[1]));
    assert!(store.read_stream("s-none", 0, 10).await.unwrap().is_empty());
}
