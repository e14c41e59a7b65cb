//! The grouped-aggregate latency in BENCHMARKS.md: 1,000,000 documents on
//! SQLite and on PostgreSQL (`DATABASE_URL`), `#[ignore]`d because loading
//! them takes minutes. Run:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release -p refract --test all -- --ignored --nocapture aggregate_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use refract::{
    Aggregate, AggregateQuery, ChangeSet, CollectionChanges, CollectionSpec, Filter, Manifest, ReadModelStore,
    Subscription,
};
use serde_json::json;

const DOCS: usize = 1_000_000;
const RUNS: usize = 5;

async fn load(store: &dyn ReadModelStore) {
    let manifest = Manifest {
        name: "bench".into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![CollectionSpec {
            name: "accounts".into(),
            indexes: vec!["balance".into(), "status".into(), "region".into()],
            search: vec![],
        }],
    };
    let k = store.register(&manifest, "h", "bench.wasm").await.unwrap().target.key;
    let statuses = ["open", "closed", "frozen", "pending"];
    let regions = ["eu", "us", "apac", "latam", "africa"];
    for (n, chunk) in (0..DOCS).collect::<Vec<_>>().chunks(20_000).enumerate() {
        let upserts = chunk
            .iter()
            .map(|&i| {
                let doc = json!({
                    "balance": ((i * 7919) % 100_003) as i64 - 50_000,
                    "status": statuses[i % 4],
                    "region": regions[i % 5],
                    "owner": format!("owner-{}", i % 1000),
                });
                (format!("acc-{i:07}"), doc.to_string())
            })
            .collect();
        let mut set = ChangeSet::default();
        set.collections.insert("accounts".into(), CollectionChanges { upserts, deletes: vec![] });
        store.commit(&k, &set, n as u64, n as u64 + 1).await.unwrap();
    }
}

async fn median(store: &dyn ReadModelStore, q: &AggregateQuery) -> Duration {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = store.aggregate_documents("bench", "accounts", q).await.unwrap();
        times.push(t.elapsed());
        assert!(!r.groups.is_empty());
    }
    times.sort();
    times[RUNS / 2]
}

async fn bench(backend: &str, store: Arc<dyn ReadModelStore>) {
    store.set_read_timeout(Duration::from_secs(600));
    let t = Instant::now();
    load(store.as_ref()).await;
    println!("{backend}: loaded {DOCS} documents in {:.1} s", t.elapsed().as_secs_f64());
    let aggs = ["count", "sum(balance)", "avg(balance)", "min(balance)", "max(balance)"];
    let all = aggs.iter().fold(AggregateQuery::new(), |q, a| q.agg(Aggregate::parse(a).unwrap()));
    let cases = [
        ("group_by=status, 5 aggregates, all 1M documents", all.clone().group_by("status")),
        ("group_by=status,region (20 groups), 5 aggregates", all.clone().group_by("status").group_by("region")),
        (
            "ungrouped, 5 aggregates, filter balance>=40000 (~10%)",
            all.clone().with_filter(Filter::parse("balance>=40000").unwrap()),
        ),
        (
            "group_by=region, count, filter status=open (25%)",
            AggregateQuery::new()
                .group_by("region")
                .agg(Aggregate::count())
                .with_filter(Filter::parse("status=open").unwrap()),
        ),
    ];
    for (name, q) in cases {
        let d = median(store.as_ref(), &q).await;
        println!("{backend}: {name}: median of {RUNS} = {:.0} ms", d.as_secs_f64() * 1000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "loads 1M documents per backend; run by hand for BENCHMARKS.md"]
async fn aggregate_bench_1m_documents() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("models.db").display());
    bench("sqlite", refract::open_models(&url).await.unwrap()).await;
    if std::env::var("DATABASE_URL").is_ok() {
        let schema = crate::common::pg::fresh_schema().await;
        bench("postgres", refract::open_models(&schema.url).await.unwrap()).await;
    }
}
