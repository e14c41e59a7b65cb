//! What every `ReadModelStore` must do, written once and run against each backend.

use std::sync::Arc;
use std::time::Duration;

use refract::{
    ChangeSet, CollectionChanges, CollectionSpec, DeadLetter, Filter, Lease, LeaseGrant, Manifest, ModelKey, Order,
    ProjectionState, Query, ReadModelStore, Role, StoreError, Subscription,
};
use serde_json::{Value, json};

pub fn manifest(name: &str) -> Manifest {
    Manifest {
        name: name.into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![
            CollectionSpec {
                name: "items".into(),
                indexes: vec!["balance".into(), "owner".into(), "profile.city".into(), "active".into()],
                search: vec![],
            },
            CollectionSpec { name: "other".into(), ..Default::default() },
        ],
    }
}

fn key(projection: &str, generation: u32) -> ModelKey {
    ModelKey { projection: projection.into(), generation }
}

fn upserts(collection: &str, docs: &[(&str, Value)]) -> ChangeSet {
    let mut set = ChangeSet::default();
    set.collections.insert(
        collection.into(),
        CollectionChanges {
            upserts: docs.iter().map(|(id, d)| ((*id).to_owned(), d.to_string())).collect(),
            deletes: vec![],
        },
    );
    set
}

fn deletes(collection: &str, ids: &[&str]) -> ChangeSet {
    let mut set = ChangeSet::default();
    set.collections.insert(
        collection.into(),
        CollectionChanges { upserts: vec![], deletes: ids.iter().map(|s| (*s).to_owned()).collect() },
    );
    set
}

async fn doc(store: &dyn ReadModelStore, projection: &str, id: &str) -> Option<Value> {
    store.get_document(projection, "items", id).await.unwrap().map(|d| serde_json::from_str(&d).unwrap())
}

/// Register, resume, build, supersede, activate, fail, rebuild, drop.
pub async fn generation_lifecycle(store: Arc<dyn ReadModelStore>) {
    let m = manifest("p");
    // A new projection is active at once.
    let r = store.register(&m, "h1", "p.wasm").await.unwrap();
    assert_eq!((r.target.key.clone(), r.target.role, r.target.checkpoint), (key("p", 1), Role::Active, 0));
    assert_eq!(r.target.state, ProjectionState::Running);
    assert!(r.active.is_none() && r.superseded.is_empty());
    assert_eq!(store.tables("p").await.unwrap(), ["rm:p:g1:items", "rm:p:g1:other"]);
    store.commit(&key("p", 1), &upserts("items", &[("a", json!({"balance": 1}))]), 0, 5).await.unwrap();

    // The same module again resumes its generation and checkpoint.
    let r = store.register(&m, "h1", "p-copy.wasm").await.unwrap();
    assert_eq!((r.target.key.clone(), r.target.checkpoint, r.target.source.as_str()), (key("p", 1), 5, "p-copy.wasm"));
    assert!(r.active.is_none());

    // A new module builds a new generation beside the active one.
    let r = store.register(&m, "h2", "p.wasm").await.unwrap();
    assert_eq!((r.target.key.clone(), r.target.role, r.target.checkpoint), (key("p", 2), Role::Building, 0));
    assert_eq!(r.active.as_ref().map(|a| a.key.clone()), Some(key("p", 1)));
    // Another new module supersedes that building one and drops its tables.
    let r = store.register(&m, "h3", "p.wasm").await.unwrap();
    assert_eq!(r.target.key, key("p", 3));
    assert_eq!(r.superseded, [key("p", 2)]);
    assert_eq!(store.generation(&key("p", 2)).await.unwrap().role, Role::Retired);
    assert_eq!(store.tables("p").await.unwrap(), ["rm:p:g1:items", "rm:p:g1:other", "rm:p:g3:items", "rm:p:g3:other"]);
    // Same building module again: resumes generation 3.
    store.commit(&key("p", 3), &upserts("items", &[("b", json!({"balance": 2}))]), 0, 7).await.unwrap();
    let r = store.register(&m, "h3", "p.wasm").await.unwrap();
    assert_eq!((r.target.key.clone(), r.target.checkpoint), (key("p", 3), 7));
    // Reads by name still see the active generation.
    assert!(doc(store.as_ref(), "p", "a").await.is_some());
    assert!(doc(store.as_ref(), "p", "b").await.is_none());
    assert_eq!(store.get(&key("p", 3), "items", "b").await.unwrap().is_some(), true);

    // The swap: generation 3 serves, generation 1 is retired and its tables are gone.
    assert_eq!(store.activate(&key("p", 3)).await.unwrap(), Some(key("p", 1)));
    assert_eq!(store.activate(&key("p", 3)).await.unwrap(), None, "activating twice is a no-op");
    let active = store.projection("p").await.unwrap();
    assert_eq!((active.key.clone(), active.role, active.checkpoint), (key("p", 3), Role::Active, 7));
    assert!(active.activated_at.is_some());
    assert_eq!(store.tables("p").await.unwrap(), ["rm:p:g3:items", "rm:p:g3:other"]);
    assert!(doc(store.as_ref(), "p", "b").await.is_some());
    let err = store.commit(&key("p", 1), &ChangeSet::default(), 5, 6).await.unwrap_err();
    assert!(matches!(err, StoreError::Retired { generation: 1, .. }), "{err}");
    assert!(matches!(store.activate(&key("p", 1)).await.unwrap_err(), StoreError::Retired { .. }));

    // An explicit rebuild: a building generation of the active module, which can fail.
    let rebuild = store.request_rebuild("p").await.unwrap();
    assert_eq!((rebuild.key.clone(), rebuild.role, rebuild.module_hash.as_str()), (key("p", 4), Role::Building, "h3"));
    store.commit(&key("p", 4), &upserts("items", &[("r", json!({"balance": 1}))]), 0, 2).await.unwrap();
    // A host restarted mid-rebuild (killed, or after an offline `refract
    // rebuild`) registers the same module again: the rebuild resumes where
    // it was, beside the active generation; it is not retired.
    let resumed = store.register(&m, "h3", "p.wasm").await.unwrap();
    assert_eq!(
        (resumed.target.key.clone(), resumed.target.role, resumed.target.checkpoint),
        (key("p", 4), Role::Building, 2)
    );
    assert_eq!(resumed.active.map(|a| a.key), Some(key("p", 3)));
    assert!(resumed.superseded.is_empty());
    store.fail_generation(&key("p", 4), "it broke").await.unwrap();
    let failed = store.generation(&key("p", 4)).await.unwrap();
    assert_eq!(
        (failed.role, failed.state, failed.last_error.as_deref()),
        (Role::Failed, ProjectionState::Faulted, Some("it broke"))
    );
    assert_eq!(store.tables("p").await.unwrap(), ["rm:p:g3:items", "rm:p:g3:other"]);
    assert_eq!(store.projection("p").await.unwrap().key, key("p", 3));
    let err = store.commit(&key("p", 4), &ChangeSet::default(), 0, 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Retired { .. }), "{err}");

    // A module that fails to load is recorded once, as a failed generation.
    store.record_load_failure("p", "bad", "p.wasm", "not a component").await.unwrap();
    store.record_load_failure("p", "bad", "p.wasm", "not a component").await.unwrap();
    let gens: Vec<_> = store.projections().await.unwrap().into_iter().map(|g| (g.key.generation, g.role)).collect();
    assert_eq!(gens, [(3, Role::Active), (4, Role::Failed), (5, Role::Failed)]);
    let bad = store.generation(&key("p", 5)).await.unwrap();
    assert_eq!((bad.module_hash.as_str(), bad.last_error.as_deref()), ("bad", Some("not a component")));
    // A load failure of a projection never seen before.
    store.record_load_failure("q", "x", "q.wasm", "boom").await.unwrap();
    assert!(matches!(store.projection("q").await.unwrap_err(), StoreError::UnknownProjection(_)));

    // A faulted generation stays faulted when its module registers again, until retried.
    store.set_state(&key("p", 3), ProjectionState::Faulted, Some("poison")).await.unwrap();
    let r = store.register(&m, "h3", "p.wasm").await.unwrap();
    assert_eq!((r.target.state, r.target.last_error.as_deref()), (ProjectionState::Faulted, Some("poison")));
    let retry = store.request_retry("p").await.unwrap();
    assert!(retry.cleared_fault);
    let p = store.projection("p").await.unwrap();
    assert_eq!((p.state, p.last_error), (ProjectionState::Stopped, None));
    assert!(!store.request_retry("p").await.unwrap().cleared_fault);

    // Dropping forgets every generation and table.
    store.drop_projection("p").await.unwrap();
    assert!(matches!(store.projection("p").await.unwrap_err(), StoreError::UnknownProjection(_)));
    assert!(store.tables("p").await.unwrap().is_empty());
    assert!(matches!(store.drop_projection("p").await.unwrap_err(), StoreError::UnknownProjection(_)));
    let names: Vec<_> = store.projections().await.unwrap().into_iter().map(|g| g.key.projection).collect();
    assert_eq!(names, ["q"]);
    // A projection whose name is a prefix of another's does not list its tables.
    store.register(&manifest("p"), "h1", "p.wasm").await.unwrap();
    store.register(&manifest("p_g1"), "h1", "p.wasm").await.unwrap();
    assert_eq!(store.tables("p").await.unwrap(), ["rm:p:g1:items", "rm:p:g1:other"]);
}

/// Changes and the checkpoint move together or not at all.
pub async fn commit_is_atomic(store: Arc<dyn ReadModelStore>) {
    let k = store.register(&manifest("c"), "h", "c.wasm").await.unwrap().target.key;
    let batch = upserts("items", &[("a", json!({"balance": 1})), ("b", json!({"balance": 2}))]);
    store.commit(&k, &batch, 0, 10).await.unwrap();
    assert_eq!(doc(store.as_ref(), "c", "a").await, Some(json!({"balance": 1})));
    // A writer that started from a stale checkpoint applies nothing.
    let stale = upserts("items", &[("a", json!({"balance": 99})), ("z", json!({}))]);
    let err = store.commit(&k, &stale, 0, 20).await.unwrap_err();
    assert!(matches!(err, StoreError::CheckpointMoved { expected: 0, .. }), "{err}");
    assert_eq!(doc(store.as_ref(), "c", "a").await, Some(json!({"balance": 1})));
    assert_eq!(doc(store.as_ref(), "c", "z").await, None);
    assert_eq!(store.projection("c").await.unwrap().checkpoint, 10);
    // Upserts replace, deletes remove, in one commit across collections.
    let mut both = upserts("items", &[("a", json!({"balance": 5, "owner": "x"}))]);
    both.collections.extend(deletes("other", &["nothing"]).collections);
    store.commit(&k, &both, 10, 11).await.unwrap();
    store.commit(&k, &deletes("items", &["b", "missing"]), 11, 12).await.unwrap();
    assert_eq!(doc(store.as_ref(), "c", "a").await, Some(json!({"balance": 5, "owner": "x"})));
    assert_eq!(doc(store.as_ref(), "c", "b").await, None);
    // A large batch is one commit.
    let many: Vec<(String, Value)> = (0..5_000).map(|i| (format!("m{i:05}"), json!({"balance": i}))).collect();
    let refs: Vec<(&str, Value)> = many.iter().map(|(id, d)| (id.as_str(), d.clone())).collect();
    store.commit(&k, &upserts("items", &refs), 12, 13).await.unwrap();
    assert_eq!(store.count_documents("c", "items", &Query::new()).await.unwrap(), 5_001);
    assert_eq!(
        store.get(&k, "items", "m04999").await.unwrap().map(|d| serde_json::from_str::<Value>(&d).unwrap()),
        Some(json!({"balance": 4999}))
    );
    // Unknown names are errors that say what exists.
    assert!(matches!(store.get_document("nope", "items", "a").await.unwrap_err(), StoreError::UnknownProjection(_)));
    let err = store.get_document("c", "nope", "a").await.unwrap_err();
    assert!(matches!(&err, StoreError::UnknownCollection { known, .. } if known == "items, other"), "{err}");
}

fn ids(page: &refract::Page) -> Vec<&str> {
    page.documents.iter().map(|d| d.id.as_str()).collect()
}

async fn query_ids(store: &dyn ReadModelStore, filters: &[&str], order: Option<&str>) -> Vec<String> {
    let query = Query {
        filters: filters.iter().map(|f| Filter::parse(f).unwrap()).collect(),
        order: order.map(Order::parse),
        limit: 1000,
        cursor: None,
        search: None,
    };
    let page = store.query_documents("q", "items", &query).await.unwrap();
    assert!(page.next_cursor.is_none());
    ids(&page).into_iter().map(str::to_owned).collect()
}

/// Every page of a query, `limit` at a time, following cursors.
async fn paged_ids(store: &dyn ReadModelStore, filters: &[&str], order: &str, limit: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let query = Query {
            filters: filters.iter().map(|f| Filter::parse(f).unwrap()).collect(),
            order: Some(Order::parse(order)),
            limit,
            cursor,
            search: None,
        };
        let page = store.query_documents("q", "items", &query).await.unwrap();
        assert!(page.documents.len() <= limit as usize);
        out.extend(ids(&page).into_iter().map(str::to_owned));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Filters, order, ties, cursors, limits and counts.
pub async fn queries(store: Arc<dyn ReadModelStore>) {
    let k = store.register(&manifest("q"), "h", "q.wasm").await.unwrap().target.key;
    let docs = [
        ("a", json!({"balance": 10, "owner": "ada", "profile": {"city": "paris"}, "active": true})),
        ("b", json!({"balance": 9, "owner": "bob", "profile": {"city": "oslo"}, "active": false})),
        ("c", json!({"balance": 100, "owner": "cy", "active": true})),
        ("d", json!({"balance": 10, "owner": "ada", "profile": {"city": "lima"}})),
        ("e", json!({"owner": "eve", "balance": null})),
        ("f", json!({"balance": -2.5, "owner": "Zed", "profile": {"city": "paris"}})),
        ("g", json!({"balance": 10.0, "owner": "gil"})),
    ];
    store.commit(&k, &upserts("items", &docs), 0, 1).await.unwrap();
    let s = store.as_ref();
    let q = |filters: &'static [&'static str], order: Option<&'static str>| query_ids(s, filters, order);

    // Numbers compare as numbers (9 < 10 < 100; 10 = 10.0), strings as text.
    assert_eq!(q(&["balance=10"], None).await, ["a", "d", "g"]);
    assert_eq!(q(&["balance!=10"], None).await, ["b", "c", "f"]);
    assert_eq!(q(&["balance<10"], None).await, ["b", "f"]);
    assert_eq!(q(&["balance<=10"], None).await, ["a", "b", "d", "f", "g"]);
    assert_eq!(q(&["balance>10"], None).await, ["c"]);
    assert_eq!(q(&["balance>=9.5"], None).await, ["a", "c", "d", "g"]);
    assert_eq!(q(&["owner>bob"], None).await, ["c", "e", "g"]);
    assert_eq!(q(&["owner<ada"], None).await, ["f"], "uppercase sorts before lowercase, bytewise");
    assert_eq!(q(&["owner=in:[\"ada\",\"cy\",\"nobody\"]"], None).await, ["a", "c", "d"]);
    assert_eq!(q(&["balance=in:[9,100]"], None).await, ["b", "c"]);
    assert_eq!(q(&["owner=ada", "balance>=10"], None).await, ["a", "d"]);
    // null means absent or JSON null.
    assert_eq!(q(&["balance=null"], None).await, ["e"]);
    assert_eq!(q(&["profile.city=null"], None).await, ["c", "e", "g"]);
    assert_eq!(q(&["profile.city!=null"], None).await, ["a", "b", "d", "f"]);
    // Nested paths and booleans.
    assert_eq!(q(&["profile.city=paris"], None).await, ["a", "f"]);
    assert_eq!(q(&["active=true"], None).await, ["a", "c"]);
    assert_eq!(q(&["active=false"], None).await, ["b"]);
    // id is always queryable.
    assert_eq!(q(&["id>=e"], None).await, ["e", "f", "g"]);
    assert_eq!(q(&["id=in:[\"b\",\"z\"]"], None).await, ["b"]);

    // Order: nulls first ascending and last descending; ties broken by id in the same direction.
    let asc = ["e", "f", "b", "a", "d", "g", "c"];
    let desc = ["c", "g", "d", "a", "b", "f", "e"];
    assert_eq!(q(&[], Some("balance")).await, asc);
    assert_eq!(q(&[], Some("-balance")).await, desc);
    assert_eq!(q(&[], Some("-id")).await, ["g", "f", "e", "d", "c", "b", "a"]);
    assert_eq!(q(&[], Some("owner")).await, ["f", "a", "d", "b", "c", "e", "g"]);
    assert_eq!(q(&[], Some("profile.city")).await, ["c", "e", "g", "d", "b", "a", "f"]);

    // Cursor pages, whatever their size, add up to the unpaged order.
    for limit in [1, 2, 3, 7] {
        assert_eq!(paged_ids(s, &[], "balance", limit).await, asc, "limit {limit}");
        assert_eq!(paged_ids(s, &[], "-balance", limit).await, desc, "limit {limit}");
        assert_eq!(paged_ids(s, &[], "id", limit).await, ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(paged_ids(s, &[], "-profile.city", limit).await, ["f", "a", "b", "d", "g", "e", "c"]);
        assert_eq!(paged_ids(s, &["balance>=0"], "-balance", limit).await, ["c", "g", "d", "a", "b"]);
    }
    let page = s
        .query_documents("q", "items", &Query { order: Some(Order::parse("balance")), limit: 3, ..Query::default() })
        .await
        .unwrap();
    assert_eq!(ids(&page), ["e", "f", "b"]);
    assert!(page.next_cursor.is_some());
    let body: Value = serde_json::from_str(&page.documents[2].body).unwrap();
    assert_eq!(body, docs[1].1);

    // Counts take the same filters.
    assert_eq!(s.count_documents("q", "items", &Query::new()).await.unwrap(), 7);
    assert_eq!(
        s.count_documents("q", "items", &Query::new().with_filter(Filter::parse("balance>=10").unwrap()))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        s.count_documents("q", "items", &Query::new().with_filter(Filter::parse("owner=nobody").unwrap()))
            .await
            .unwrap(),
        0
    );

    // A string compared by order with a field holding numbers is warned
    // about (how many warnings each filter gets); only then.
    let warnings = |f: &'static str| async move {
        let query = Query::new().with_filter(Filter::parse(f).unwrap());
        refract::query_warnings(s, "q", "items", &query).await.unwrap().len()
    };
    for (filter, count) in [
        ("balance>=abc", 1),
        ("balance<\"10\"", 1),
        ("balance=abc", 0),
        ("balance>=5", 0),
        ("owner>=abc", 0),
        ("profile.city<x", 0),
        ("id>a", 0),
    ] {
        assert_eq!(warnings(filter).await, count, "{filter}");
    }

    // Only indexed fields; bad cursors and limits are refused.
    let bad = |query: Query| async move { s.query_documents("q", "items", &query).await.unwrap_err() };
    let err = bad(Query { filters: vec![Filter::parse("secret=1").unwrap()], ..Query::default() }).await;
    assert!(matches!(err, StoreError::Query(refract::QueryError::NotIndexed { .. })), "{err}");
    let err = bad(Query { cursor: Some("zz".into()), ..Query::default() }).await;
    assert!(matches!(err, StoreError::Query(refract::QueryError::BadCursor)), "{err}");
    let err = bad(Query { limit: 0, ..Query::default() }).await;
    assert!(matches!(err, StoreError::Query(refract::QueryError::BadLimit(0))), "{err}");

    // A cursor continues only the query that made it: the first page of
    // `-balance` is c, g, d, and its cursor after `d` is refused by the
    // reversed order and by other filters instead of giving a page of neither.
    let first = Query { order: Some(Order::parse("-balance")), limit: 3, ..Query::default() };
    let page = s.query_documents("q", "items", &first).await.unwrap();
    assert_eq!(ids(&page), ["c", "g", "d"]);
    let cursor = page.next_cursor.unwrap();
    let mismatch = |err: StoreError| match err {
        StoreError::Query(refract::QueryError::CursorMismatch { differs }) => differs,
        other => panic!("not a cursor mismatch: {other}"),
    };
    let reversed = Query { order: Some(Order::parse("balance")), cursor: Some(cursor.clone()), ..first.clone() };
    assert_eq!(mismatch(bad(reversed).await), "it was made for order `-balance`, not `balance`");
    let filtered =
        Query { filters: vec![Filter::parse("balance>=0").unwrap()], cursor: Some(cursor.clone()), ..first.clone() };
    assert_eq!(mismatch(bad(filtered).await), "it was made for other filters");
    // The same query, at another page size, goes on where the page ended.
    let rest = Query { limit: 10, cursor: Some(cursor), ..first };
    assert_eq!(ids(&s.query_documents("q", "items", &rest).await.unwrap()), &desc[3..]);
    let err = s
        .count_documents("q", "items", &Query::new().with_filter(Filter::parse("secret=1").unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Query(refract::QueryError::NotIndexed { .. })), "{err}");
}

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

/// Skipped events: recorded with the checkpoint, retried, replayed.
pub async fn dead_letters(store: Arc<dyn ReadModelStore>) {
    let k = store.register(&manifest("d"), "h", "d.wasm").await.unwrap().target.key;
    store.skip_event(&k, &letter(3), 0, 3).await.unwrap();
    store.skip_event(&k, &letter(5), 3, 5).await.unwrap();
    let err = store.skip_event(&k, &letter(9), 3, 9).await.unwrap_err();
    assert!(matches!(err, StoreError::CheckpointMoved { .. }), "{err}");
    assert_eq!(store.projection("d").await.unwrap().checkpoint, 5);
    assert_eq!(store.dead_letters("d").await.unwrap(), [letter(3), letter(5)]);

    let retry = store.request_retry("d").await.unwrap();
    assert_eq!((retry.cleared_fault, retry.replays), (false, 2));
    assert!(store.dead_letters("d").await.unwrap().iter().all(|l| l.replay));
    // A replay that fails again keeps the letter, unmarked, with the new error.
    assert!(store.finish_replay(&k, 3, Err("trap: still")).await.unwrap());
    // A replay that works applies its changes and removes the letter.
    let replayed = upserts("items", &[("x", json!({"balance": 1}))]);
    assert!(store.finish_replay(&k, 5, Ok(&replayed)).await.unwrap());
    // A second host replaying the same letter finds it claimed: nothing is
    // applied twice, and a late failure does not bring the letter back.
    let doubled = upserts("items", &[("x", json!({"balance": 2}))]);
    assert!(!store.finish_replay(&k, 5, Ok(&doubled)).await.unwrap(), "the letter was claimed once");
    assert!(!store.finish_replay(&k, 5, Err("trap: late")).await.unwrap());
    assert!(!store.finish_replay(&k, 3, Err("trap: unmarked")).await.unwrap(), "an unmarked letter is not replayed");
    let letters = store.dead_letters("d").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].position, letters[0].replay, letters[0].error.as_str()), (3, false, "trap: still"));
    assert_eq!(doc(store.as_ref(), "d", "x").await, Some(json!({"balance": 1})));
    assert_eq!(store.projection("d").await.unwrap().checkpoint, 5, "a replay does not move the checkpoint");

    // Dead letters belong to a generation: a swap leaves them behind.
    let building = store.register(&manifest("d"), "h2", "d.wasm").await.unwrap().target.key;
    store.skip_event(&building, &letter(1), 0, 1).await.unwrap();
    assert_eq!(store.dead_letters("d").await.unwrap().len(), 1);
    store.activate(&building).await.unwrap();
    assert_eq!(store.dead_letters("d").await.unwrap(), [letter(1)]);
    assert!(matches!(store.dead_letters("nope").await.unwrap_err(), StoreError::UnknownProjection(_)));
}

fn manifest_with(name: &str, collection: &str) -> Manifest {
    Manifest {
        name: name.into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![CollectionSpec::new(collection, ["n"])],
    }
}

/// Projection `a` with collection `b_g1__c` and projection `a_g1__b` with
/// collection `c` shared one table under the old naming: each overwrote
/// the other's documents, and dropping one broke the other.
pub async fn storage_names_cannot_collide(store: Arc<dyn ReadModelStore>) {
    let (one, two) = (manifest_with("a", "b_g1__c"), manifest_with("a_g1__b", "c"));
    store.register(&one, "h1", "a.wasm").await.unwrap();
    store.register(&two, "h2", "b.wasm").await.unwrap();
    store.commit(&key("a", 1), &upserts("b_g1__c", &[("x", json!({"n": 1}))]), 0, 1).await.unwrap();
    store.commit(&key("a_g1__b", 1), &upserts("c", &[("x", json!({"n": 2}))]), 0, 1).await.unwrap();
    let read = |p: &'static str, c: &'static str| {
        let store = store.clone();
        async move { store.get_document(p, c, "x").await.unwrap().map(|d| serde_json::from_str::<Value>(&d).unwrap()) }
    };
    assert_eq!(read("a", "b_g1__c").await, Some(json!({"n": 1})));
    assert_eq!(read("a_g1__b", "c").await, Some(json!({"n": 2})));
    let count = Query { filters: vec![], ..Query::default() };
    assert_eq!(store.query_documents("a", "b_g1__c", &count).await.unwrap().documents.len(), 1);
    store.drop_projection("a_g1__b").await.unwrap();
    assert_eq!(read("a", "b_g1__c").await, Some(json!({"n": 1})), "dropping one projection left the other intact");
    assert_eq!(store.tables("a").await.unwrap(), ["rm:a:g1:b_g1__c"]);
}

fn granted(grant: LeaseGrant) -> Lease {
    match grant {
        LeaseGrant::Granted(lease) => lease,
        held => panic!("expected the lease, got {held:?}"),
    }
}

fn lost_to(result: Result<impl std::fmt::Debug, StoreError>, node: &str, at_epoch: u64) {
    match result {
        Err(StoreError::LeaseLost { owner, epoch, .. }) => assert_eq!((owner.as_str(), epoch), (node, at_epoch)),
        other => panic!("expected LeaseLost to {node} at epoch {at_epoch}, got {other:?}"),
    }
}

/// Two handles on one store, as two nodes: leases are taken, refused,
/// renewed, taken over after expiry, taken back by a restarted node and
/// released; every write — commit, skip, replay, swap — by a node that does
/// not hold the current `(owner, epoch)` is refused and applies nothing.
pub async fn leases_fence_every_write(stores: [Arc<dyn ReadModelStore>; 2]) {
    let [a, b] = stores;
    let ttl = Duration::from_millis(400);
    a.register(&manifest("l"), "h1", "l.wasm").await.unwrap();
    let k = key("l", 1);
    // Nobody leases it yet: an embedder without leases writes freely.
    a.commit(&k, &upserts("items", &[("x", json!({"balance": 1}))]), 0, 1).await.unwrap();

    let la = granted(a.acquire(&k, "node-a", ttl).await.unwrap());
    assert_eq!((la.node.as_str(), la.epoch), ("node-a", 1));
    match b.acquire(&k, "node-b", ttl).await.unwrap() {
        LeaseGrant::Held { owner, .. } => assert_eq!(owner, "node-a"),
        granted => panic!("a held lease was granted again: {granted:?}"),
    }
    // The holder writes; the other node is fenced, whatever checkpoint it names.
    a.commit(&k, &upserts("items", &[("x", json!({"balance": 2}))]), 1, 2).await.unwrap();
    lost_to(b.commit(&k, &upserts("items", &[("y", json!({"balance": 9}))]), 2, 3).await, "node-a", 1);
    lost_to(b.skip_event(&k, &letter(3), 2, 3).await, "node-a", 1);
    assert_eq!(doc(a.as_ref(), "l", "y").await, None, "a fenced commit applied nothing");
    assert_eq!(a.projection("l").await.unwrap().checkpoint, 2);
    assert!(a.renew(&la, ttl).await.unwrap());

    // Expired, it goes to the other node with the next epoch; the old
    // holder can neither renew nor write.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let lb = granted(b.acquire(&k, "node-b", ttl).await.unwrap());
    assert_eq!(lb.epoch, 2);
    assert!(!a.renew(&la, ttl).await.unwrap());
    lost_to(a.commit(&k, &upserts("items", &[("x", json!({"balance": 99}))]), 2, 3).await, "node-b", 2);
    b.skip_event(&k, &letter(3), 2, 3).await.unwrap();
    assert_eq!(doc(a.as_ref(), "l", "x").await, Some(json!({"balance": 2})));

    // A dead-letter replay is fenced too.
    a.request_retry("l").await.unwrap();
    lost_to(a.finish_replay(&k, 3, Ok(&upserts("items", &[("x", json!({"balance": 7}))]))).await, "node-b", 2);
    assert!(b.finish_replay(&k, 3, Err("trap: still")).await.unwrap());

    // A node restarted under the same id takes its own lease back at once,
    // and the handle it had before is fenced out.
    let lb2 = granted(a.acquire(&k, "node-b", ttl).await.unwrap());
    assert_eq!(lb2.epoch, 3);
    lost_to(b.commit(&k, &ChangeSet::default(), 3, 4).await, "node-b", 3);
    // Released, it is free at once.
    a.release(&lb2).await.unwrap();
    let la2 = granted(b.acquire(&k, "node-a", ttl).await.unwrap());
    assert_eq!(la2.epoch, 4);
    let listed = a.leases().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.clone(), listed[0].owner.as_str(), listed[0].epoch), (k.clone(), "node-a", 4));
    assert!(!listed[0].expired);

    // A swap is fenced on the building generation's lease.
    let r = a.register(&manifest("l"), "h2", "l.wasm").await.unwrap();
    let k2 = r.target.key.clone();
    assert_eq!(r.target.role, Role::Building);
    let l2 = granted(b.acquire(&k2, "node-b", ttl).await.unwrap());
    lost_to(a.activate(&k2).await, "node-b", l2.epoch);
    assert_eq!(a.projection("l").await.unwrap().key, k, "the fenced swap changed nothing");
    assert_eq!(b.activate(&k2).await.unwrap(), Some(k.clone()));
    // The retired generation's lease is gone, and it gets no new one.
    assert!(a.leases().await.unwrap().iter().all(|l| l.key != k));
    assert!(matches!(a.acquire(&k, "node-a", ttl).await, Err(StoreError::Retired { .. })));
    a.drop_projection("l").await.unwrap();
    assert_eq!(a.leases().await.unwrap(), vec![]);
}

/// `(sequence, checkpoint, collection, id, kind, document)` of every entry of
/// `projection`'s log, checking that the page reaches the head.
async fn log_of(
    store: &dyn ReadModelStore,
    projection: &str,
) -> Vec<(u64, u64, String, String, String, Option<Value>)> {
    let page = store.read_changes(projection, 0, 10_000).await.unwrap();
    assert_eq!(page.entries.last().map_or(0, |e| e.sequence), page.head, "one page holds the whole log");
    page.entries
        .into_iter()
        .map(|e| {
            let document = e.document.map(|d| serde_json::from_str(&d).unwrap());
            (e.sequence, e.checkpoint, e.collection, e.id, kind_name(e.kind), document)
        })
        .collect()
}

/// The change log of batched commits: in each commit deletes then puts per
/// collection, a put of an existing document is `updated`, a delete of a
/// missing one is not logged, and sequences have no gaps, also when
/// unlogged deletes sit between logged ones.
pub async fn change_log_of_batched_commits(store: Arc<dyn ReadModelStore>) {
    let k = store.register(&manifest("l"), "h", "l.wasm").await.unwrap().target.key;
    store.commit(&k, &upserts("items", &[("a", json!({"n": 1})), ("b", json!({"n": 1}))]), 0, 1).await.unwrap();
    let mut both = upserts("items", &[("b", json!({"n": 2})), ("c", json!({"n": 1}))]);
    both.collections.get_mut("items").unwrap().deletes = vec!["missing".into(), "a".into()];
    both.collections.extend(upserts("other", &[("o", json!({"n": 1}))]).collections);
    both.collections.get_mut("other").unwrap().deletes = vec!["nothing".into()];
    store.commit(&k, &both, 1, 2).await.unwrap();
    // Only deletes of missing documents: nothing logged.
    store.commit(&k, &deletes("items", &["x", "y"]), 2, 3).await.unwrap();
    store.commit(&k, &deletes("items", &["x", "c", "y"]), 3, 4).await.unwrap();
    store.commit(&k, &upserts("items", &[("c", json!({"n": 3}))]), 4, 5).await.unwrap();
    let entry = |seq, checkpoint, collection: &str, id: &str, kind: &str, doc: Option<Value>| {
        (seq, checkpoint, collection.to_owned(), id.to_owned(), kind.to_owned(), doc)
    };
    assert_eq!(
        log_of(store.as_ref(), "l").await,
        [
            entry(1, 1, "items", "a", "created", Some(json!({"n": 1}))),
            entry(2, 1, "items", "b", "created", Some(json!({"n": 1}))),
            entry(3, 2, "items", "a", "deleted", None),
            entry(4, 2, "items", "b", "updated", Some(json!({"n": 2}))),
            entry(5, 2, "items", "c", "created", Some(json!({"n": 1}))),
            entry(6, 2, "other", "o", "created", Some(json!({"n": 1}))),
            entry(7, 4, "items", "c", "deleted", None),
            entry(8, 5, "items", "c", "created", Some(json!({"n": 3}))),
        ]
    );

    // A large batch: every other delete is of a missing document, every
    // other put of an existing one.
    let many: Vec<(String, Value)> = (0..2_000).map(|i| (format!("m{i:04}"), json!({"n": i}))).collect();
    let refs: Vec<(&str, Value)> = many.iter().map(|(id, d)| (id.as_str(), d.clone())).collect();
    store.commit(&k, &upserts("items", &refs[..1_000]), 5, 6).await.unwrap();
    let mut mixed = upserts("items", &refs[500..1_500]);
    mixed.collections.get_mut("items").unwrap().deletes =
        (0..500).map(|i| if i % 2 == 0 { format!("m{i:04}") } else { format!("gone{i}") }).collect();
    store.commit(&k, &mixed, 6, 7).await.unwrap();
    let log = log_of(store.as_ref(), "l").await;
    let sequences: Vec<u64> = log.iter().map(|e| e.0).collect();
    assert_eq!(sequences, (1..=(8 + 1_000 + 250 + 1_000)).collect::<Vec<u64>>(), "no gaps");
    let last: Vec<(&str, &str)> = log[1_008..].iter().map(|e| (e.3.as_str(), e.4.as_str())).collect();
    let deleted: Vec<String> = (0..500).step_by(2).map(|i| format!("m{i:04}")).collect();
    assert!(last[..250].iter().zip(&deleted).all(|(got, id)| *got == (id.as_str(), "deleted")), "{:?}", &last[..3]);
    let puts = &last[250..];
    assert!(puts[..500].iter().all(|(_, kind)| *kind == "updated"), "m0500..m0999 existed");
    assert!(puts[500..].iter().all(|(_, kind)| *kind == "created"), "m1000..m1499 did not");
    assert_eq!((puts[0].0, puts[999].0), ("m0500", "m1499"), "in the batch's order");
}

/// A change kind as the feed spells it.
fn kind_name(kind: refract::ChangeKind) -> String {
    serde_json::to_value(kind).unwrap().as_str().unwrap().to_owned()
}
