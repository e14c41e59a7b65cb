//! The full-text search latency in BENCHMARKS.md: 1,000,000 documents on
//! SQLite and on PostgreSQL (`DATABASE_URL`), `#[ignore]`d because loading
//! them takes minutes. Run:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release -p refract --test all -- --ignored --nocapture search_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use refract::{ChangeSet, CollectionChanges, CollectionSpec, Manifest, Op, Query, ReadModelStore, Subscription};
use serde_json::json;

/// Documents per backend; `SEARCH_BENCH_DOCS` changes it for a quicker look.
fn docs() -> usize {
    std::env::var("SEARCH_BENCH_DOCS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000)
}
const RUNS: usize = 5;
const FIRST: [&str; 10] = ["Ada", "Alan", "Grace", "Lovisa", "Bob", "Emmy", "Kurt", "Edsger", "Barbara", "Donald"];
const STATUSES: [&str; 4] = ["open", "closed", "frozen", "pending"];
const LAST: [&str; 10] =
    ["Lovelace", "Turing", "Hopper", "Noether", "Gödel", "Dijkstra", "Liskov", "Knuth", "Ritchie", "Kay"];

async fn load(store: &dyn ReadModelStore) {
    let manifest = Manifest {
        name: "bench".into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![CollectionSpec::new("customers", ["balance", "status"]).with_search(["owner", "note"])],
    };
    let k = store.register(&manifest, "h", "bench.wasm").await.unwrap().target.key;
    for (n, chunk) in (0..docs()).collect::<Vec<_>>().chunks(20_000).enumerate() {
        let upserts = chunk
            .iter()
            .map(|&i| {
                // One owner word is rare (`w{i % 1000}`, 0.1% each), the
                // note has a word shared by a fifth of the documents.
                let doc = json!({
                    "owner": format!("{} {} w{}", FIRST[i % 10], LAST[(i / 10) % 10], i % 1000),
                    "note": format!("account {} opened in branch b{} tier{}", i, i % 97, i % 5),
                    "balance": ((i * 7919) % 100_003) as i64 - 50_000,
                    "status": STATUSES[i % 4],
                });
                (format!("acc-{i:07}"), doc.to_string())
            })
            .collect();
        let mut set = ChangeSet::default();
        set.collections.insert("customers".into(), CollectionChanges { upserts, deletes: vec![] });
        store.commit(&k, &set, n as u64, n as u64 + 1).await.unwrap();
    }
}

async fn median(store: &dyn ReadModelStore, q: &Query) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let page = store.query_documents("bench", "customers", q).await.unwrap();
        times.push(t.elapsed());
        found = page.documents.len();
    }
    times.sort();
    (times[RUNS / 2], found)
}

async fn bench(backend: &str, store: Arc<dyn ReadModelStore>) {
    store.set_read_timeout(Duration::from_secs(600));
    let t = Instant::now();
    load(store.as_ref()).await;
    println!("{backend}: loaded {} documents in {:.1} s", docs(), t.elapsed().as_secs_f64());
    let cases = [
        ("rare word `w123` (1,000 matches), rank order, limit 100", Query::new().search("w123")),
        ("two words `ada lovelace` (10,000 matches), rank order, limit 100", Query::new().search("ada lovelace")),
        ("prefix `lov` (190,000 matches), rank order, limit 100", Query::new().search("lov")),
        ("common word `tier3` (200,000 matches), rank order, limit 100", Query::new().search("tier3")),
        (
            "`tier3` + filter status=open, order -balance, limit 100",
            Query::new().search("tier3").filter("status", Op::Eq, "open").order_by_desc("balance"),
        ),
        ("`w123` + filter balance>=0, rank order, limit 100", Query::new().search("w123").filter("balance", Op::Ge, 0)),
    ];
    for (name, q) in cases {
        let (d, found) = median(store.as_ref(), &q.limit(100)).await;
        println!("{backend}: {name}: {found} returned, median of {RUNS} = {:.1} ms", d.as_secs_f64() * 1000.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "loads 1M documents per backend; run by hand for BENCHMARKS.md"]
async fn search_bench_1m_documents() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("models.db").display());
    bench("sqlite", refract::open_models(&url).await.unwrap()).await;
    if std::env::var("DATABASE_URL").is_ok() {
        let schema = crate::common::pg::fresh_schema().await;
        bench("postgres", refract::open_models(&schema.url).await.unwrap()).await;
    }
}
