//! Aggregates and the read time limit, on every backend: each answer over
//! 12,000 documents is compared with the same aggregate computed here, in
//! Rust, from the documents the test wrote.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use refract::{
    AggFn, Aggregate, AggregateQuery, ChangeSet, CollectionChanges, CollectionSpec, Filter, Manifest, Op, Query,
    QueryError, ReadModelStore, StoreError, Subscription,
};
use serde_json::{Value, json};

const DOCS: usize = 12_000;
const STATUSES: [&str; 4] = ["open", "closed", "frozen", "pending"];
const REGIONS: [&str; 3] = ["eu", "us", "apac"];

fn manifest() -> Manifest {
    Manifest {
        name: "agg".into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![CollectionSpec {
            name: "accounts".into(),
            indexes: vec![
                "balance".into(),
                "status".into(),
                "region".into(),
                "score".into(),
                "name".into(),
                "flag".into(),
            ],
            search: vec![],
        }],
    }
}

/// One test document, as plain Rust values.
#[derive(Clone)]
struct Doc {
    id: String,
    /// Large enough that the total passes 2^53: a sum through f64 would be off.
    balance: Option<i64>,
    status: Option<&'static str>,
    region: Option<&'static str>,
    /// Multiples of 0.25, so float sums are exact on every backend.
    score: f64,
    name: String,
    flag: bool,
    note: String,
}

fn docs() -> Vec<Doc> {
    (0..DOCS)
        .map(|i| Doc {
            id: format!("d{i:05}"),
            balance: (i % 97 != 0).then(|| (((i * 7919) % 20_001) as i64 - 9_000) * 1_000_000_007),
            status: (i % 50 != 0).then(|| STATUSES[i % 4]),
            region: (i % 11 != 0).then(|| REGIONS[i % 3]),
            score: (i % 40) as f64 * 0.25,
            name: format!("n{:05}", (i * 31) % DOCS),
            flag: i % 3 == 0,
            note: "not indexed".into(),
        })
        .collect()
}

fn json_of(d: &Doc) -> Value {
    let mut v = json!({ "score": d.score, "name": d.name, "flag": d.flag, "note": d.note });
    if let Some(b) = d.balance {
        v["balance"] = json!(b);
    }
    if let Some(s) = d.status {
        v["status"] = json!(s);
    }
    // A missing region and a JSON null region are both null.
    v["region"] = d.region.map_or(Value::Null, |r| json!(r));
    v
}

/// The aggregates every comparison asks for, and how this test computes each.
fn all_aggregates() -> Vec<Aggregate> {
    [
        "count",
        "count(balance)",
        "sum(balance)",
        "min(balance)",
        "max(balance)",
        "avg(balance)",
        "sum(score)",
        "avg(score)",
        "max(score)",
        "min(name)",
        "max(name)",
    ]
    .iter()
    .map(|a| Aggregate::parse(a).unwrap())
    .collect()
}

fn expected_values(group: &[&Doc]) -> Vec<Value> {
    let balances: Vec<i64> = group.iter().filter_map(|d| d.balance).collect();
    let sum: i64 = balances.iter().sum();
    let scores: Vec<f64> = group.iter().map(|d| d.score).collect();
    let score_sum: f64 = scores.iter().sum();
    let or_null = |v: Option<Value>| v.unwrap_or(Value::Null);
    vec![
        json!(group.len()),
        json!(balances.len()),
        if balances.is_empty() { Value::Null } else { json!(sum) },
        or_null(balances.iter().min().map(|v| json!(v))),
        or_null(balances.iter().max().map(|v| json!(v))),
        if balances.is_empty() { Value::Null } else { json!(sum as f64 / balances.len() as f64) },
        if scores.is_empty() { Value::Null } else { json!(score_sum) },
        if scores.is_empty() { Value::Null } else { json!(score_sum / scores.len() as f64) },
        or_null(scores.iter().cloned().reduce(f64::max).map(|v| json!(v))),
        or_null(group.iter().map(|d| &d.name).min().map(|v| json!(v))),
        or_null(group.iter().map(|d| &d.name).max().map(|v| json!(v))),
    ]
}

/// The expected groups, ordered by key with nulls first (as `Option` orders).
fn expected(
    docs: &[Doc],
    keep: impl Fn(&Doc) -> bool,
    key: impl Fn(&Doc) -> Vec<Option<Value>>,
) -> Vec<(Vec<Value>, Vec<Value>)> {
    // Sort key (nulls first) -> (the key as JSON, the group's documents).
    type Groups<'a> = BTreeMap<Vec<(u8, String)>, (Vec<Value>, Vec<&'a Doc>)>;
    let mut groups = Groups::new();
    for d in docs.iter().filter(|d| keep(d)) {
        let k = key(d);
        // Nulls first, then by value (strings here compare bytewise, booleans false first).
        let sort: Vec<(u8, String)> =
            k.iter().map(|v| v.as_ref().map_or((0, String::new()), |v| (1, v.to_string()))).collect();
        let entry = groups
            .entry(sort)
            .or_insert_with(|| (k.iter().map(|v| v.clone().unwrap_or(Value::Null)).collect(), vec![]));
        entry.1.push(d);
    }
    groups.into_values().map(|(k, g)| (k, expected_values(&g))).collect()
}

async fn got(store: &dyn ReadModelStore, q: &AggregateQuery) -> Vec<(Vec<Value>, Vec<Value>)> {
    let result = store.aggregate_documents("agg", "accounts", q).await.unwrap();
    assert_eq!(result.aggregates, q.aggregates);
    result.groups.into_iter().map(|g| (g.key, g.values)).collect()
}

async fn load(store: &dyn ReadModelStore, docs: &[Doc]) {
    let k = store.register(&manifest(), "h", "agg.wasm").await.unwrap().target.key;
    for (n, chunk) in docs.chunks(3_000).enumerate() {
        let mut set = ChangeSet::default();
        set.collections.insert(
            "accounts".into(),
            CollectionChanges {
                upserts: chunk.iter().map(|d| (d.id.clone(), json_of(d).to_string())).collect(),
                deletes: vec![],
            },
        );
        store.commit(&k, &set, n as u64, n as u64 + 1).await.unwrap();
    }
}

/// Every aggregate, ungrouped and grouped by one and two fields, with and
/// without filters, equals the value computed here.
pub async fn aggregates_match_independent_results(store: Arc<dyn ReadModelStore>) {
    let docs = docs();
    load(store.as_ref(), &docs).await;
    let s = store.as_ref();
    let base = || all_aggregates().into_iter().fold(AggregateQuery::new(), AggregateQuery::agg);
    let opt = |v: Option<&str>| v.map(|s| json!(s));

    // Ungrouped: exactly one group, with an empty key.
    let all = expected(&docs, |_| true, |_| vec![]);
    assert_eq!(got(s, &base()).await, all);
    let sum = all[0].1[2].as_i64().unwrap();
    assert!(sum.unsigned_abs() > 1 << 53, "the integer sum must pass 2^53 to prove it is exact: {sum}");

    // Grouped by a string field with nulls (missing status).
    let by_status = expected(&docs, |_| true, |d| vec![opt(d.status)]);
    assert_eq!(by_status.len(), 5);
    assert_eq!(got(s, &base().group_by("status")).await, by_status);

    // By two fields, one of them JSON null.
    let two = expected(&docs, |_| true, |d| vec![opt(d.status), opt(d.region)]);
    assert_eq!(got(s, &base().group_by("status").group_by("region")).await, two);

    // By a boolean: keys stay booleans on every backend.
    let by_flag = expected(&docs, |_| true, |d| vec![Some(json!(d.flag))]);
    assert_eq!(by_flag.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), [vec![json!(false)], vec![json!(true)]]);
    assert_eq!(got(s, &base().group_by("flag")).await, by_flag);

    // With filters, written with the builder and parsed alike.
    let filtered = base()
        .filter("balance", Op::Ge, 0)
        .with_filter(Filter::parse(r#"status=in:["open","frozen"]"#).unwrap())
        .group_by("region");
    let want = expected(
        &docs,
        |d| d.balance.is_some_and(|b| b >= 0) && matches!(d.status, Some("open" | "frozen")),
        |d| vec![opt(d.region)],
    );
    assert_eq!(got(s, &filtered).await, want);

    // Nothing matches: ungrouped is one group of zeros and nulls, grouped is none.
    let none = base().filter("name", Op::Eq, "nobody");
    assert_eq!(got(s, &none).await, vec![(vec![], expected_values(&[]))]);
    assert_eq!(got(s, &none.clone().group_by("status")).await, vec![]);

    // The typed query builder reads the same documents as the parser.
    let q = Query::new().filter("balance", Op::Ge, 0).order_by_desc("balance").limit(20);
    let page = s.query_documents("agg", "accounts", &q).await.unwrap();
    let mut want: Vec<(i64, &str)> =
        docs.iter().filter_map(|d| d.balance.filter(|b| *b >= 0).map(|b| (b, d.id.as_str()))).collect();
    want.sort_by(|a, b| b.cmp(a));
    let ids: Vec<&str> = page.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, want.iter().take(20).map(|w| w.1).collect::<Vec<_>>());
}

/// What has no meaning is refused, naming the problem.
pub async fn bad_aggregates_are_refused(store: Arc<dyn ReadModelStore>) {
    let docs = docs();
    load(store.as_ref(), &docs).await;
    let s = store.as_ref();
    let refused = |q: AggregateQuery| async move {
        match s.aggregate_documents("agg", "accounts", &q).await.unwrap_err() {
            StoreError::Query(e) => e,
            other => panic!("expected a query error, got {other}"),
        }
    };
    let err = refused(AggregateQuery::new().agg(Aggregate::new(AggFn::Sum, "note"))).await;
    assert!(matches!(&err, QueryError::AggregateNotIndexed { field, .. } if field == "note"), "{err}");
    let err = refused(AggregateQuery::new().group_by("note").agg(Aggregate::count())).await;
    assert!(matches!(&err, QueryError::AggregateNotIndexed { field, .. } if field == "note"), "{err}");
    let err = refused(AggregateQuery::new().agg(Aggregate::new(AggFn::Sum, "status"))).await;
    assert_eq!(err.to_string(), "`sum(status)` needs numbers, but `status` holds strings in the matching documents");
    let err = refused(AggregateQuery::new().agg(Aggregate::new(AggFn::Avg, "flag"))).await;
    assert!(matches!(&err, QueryError::NotNumeric { found, .. } if found == "booleans, arrays or objects"), "{err}");
    let err = refused(AggregateQuery::new().agg(Aggregate::new(AggFn::Min, "flag"))).await;
    assert!(matches!(&err, QueryError::NotComparable { .. }), "{err}");
    // More distinct balances than groups allowed.
    let err = refused(AggregateQuery::new().group_by("balance").agg(Aggregate::count())).await;
    assert_eq!(err, QueryError::TooManyGroups { limit: refract::MAX_GROUPS });
    let err = refused(AggregateQuery::new().filter("secret", Op::Eq, 1).agg(Aggregate::count())).await;
    assert!(matches!(err, QueryError::NotIndexed { .. }), "{err}");
    assert!(matches!(Aggregate::parse("median(balance)"), Err(QueryError::BadAggregate { .. })));
    assert!(matches!(Aggregate::parse("sum(balance"), Err(QueryError::BadAggregate { .. })));
    // An integer sum past the 64-bit range is refused, not wrapped or rounded.
    let mut set = ChangeSet::default();
    let huge = |id: &str| (id.to_owned(), json!({ "balance": i64::MAX - 1, "status": "huge" }).to_string());
    set.collections
        .insert("accounts".into(), CollectionChanges { upserts: vec![huge("h1"), huge("h2")], deletes: vec![] });
    let k = refract::ModelKey { projection: "agg".into(), generation: 1 };
    s.commit(&k, &set, 4, 5).await.unwrap();
    let sum = AggregateQuery::new().filter("status", Op::Eq, "huge").agg(Aggregate::new(AggFn::Sum, "balance"));
    assert_eq!(refused(sum).await, QueryError::SumOverflow { field: "balance".into() });
    let max = AggregateQuery::new().filter("status", Op::Eq, "huge").agg(Aggregate::new(AggFn::Max, "balance"));
    assert_eq!(s.aggregate_documents("agg", "accounts", &max).await.unwrap().groups[0].values, [json!(i64::MAX - 1)]);
    // A sum over strings is refused only where strings are: filtered to
    // numbers, the same field sums.
    let q = AggregateQuery::new().filter("status", Op::Eq, "open").agg(Aggregate::new(AggFn::Count, "status"));
    assert_eq!(
        s.aggregate_documents("agg", "accounts", &q).await.unwrap().groups[0].values,
        [json!(docs.iter().filter(|d| d.status == Some("open")).count())]
    );
}

/// A read past the time limit is stopped with an error naming the limit,
/// and the store serves normally once the limit allows it again.
pub async fn reads_stop_at_the_time_limit(store: Arc<dyn ReadModelStore>) {
    load(store.as_ref(), &docs()).await;
    let s = store.as_ref();
    let heavy = all_aggregates()
        .into_iter()
        .fold(AggregateQuery::new().group_by("status").group_by("region"), AggregateQuery::agg);
    s.set_read_timeout(Duration::from_millis(1));
    let err = s.aggregate_documents("agg", "accounts", &heavy).await.unwrap_err();
    assert!(matches!(err, StoreError::TimeLimit { limit_ms: 1 }), "{err}");
    assert!(err.to_string().contains("read time limit of 1 ms"), "{err}");
    let sorted = Query::new().filter("name", Op::Ne, "x").order_by_desc("score").limit(10_000);
    let err = s.query_documents("agg", "accounts", &sorted).await.unwrap_err();
    assert!(matches!(err, StoreError::TimeLimit { limit_ms: 1 }), "{err}");

    s.set_read_timeout(Duration::from_secs(30));
    // Several times: every pooled connection must have been left usable.
    for _ in 0..8 {
        let r = s.aggregate_documents("agg", "accounts", &heavy).await.unwrap();
        assert_eq!(r.groups.iter().map(|g| g.values[0].as_u64().unwrap()).sum::<u64>(), DOCS as u64);
        assert_eq!(s.count_documents("agg", "accounts", &Query::new()).await.unwrap(), DOCS as u64);
    }
}
