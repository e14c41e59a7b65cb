//! Micro-benchmarks of the host's per-batch CPU work outside the plugin:
//! reducing a plugin's changes to a `ChangeSet`, and parsing query filters.
//! Run with `cargo bench -p refract --bench micro`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use refract::{Change, ChangeSet, CollectionSpec, Filter, Manifest, Subscription};

fn manifest() -> Manifest {
    Manifest {
        name: "account-summary".into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![CollectionSpec { name: "accounts".into(), indexes: vec!["balance".into()], search: vec![] }],
    }
}

/// A batch as account-summary returns it: one upsert per event, over fewer
/// documents than events, so the reduction keeps the last per id.
fn changes(events: usize, accounts: usize) -> Vec<Change> {
    (0..events)
        .map(|i| Change::Upsert {
            collection: "accounts".into(),
            id: format!("account-{}", (i * 7919) % accounts),
            body: format!(
                r#"{{"owner":"owner-{}","balance":{},"transactions":{},"status":"open","opened_at":1763900000000,"last_activity":1763900000{:03}}}"#,
                i % 37,
                i * 13,
                i,
                i % 1000
            ),
        })
        .collect()
}

fn change_set(c: &mut Criterion) {
    let m = manifest();
    let mut group = c.benchmark_group("ChangeSet::from_changes");
    for events in [100usize, 1_000, 10_000] {
        let input = changes(events, 10_000.min(events));
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(format!("{events} upserts"), |b| {
            b.iter_batched(
                || input.clone(),
                |v| black_box(ChangeSet::from_changes(v, &m).unwrap()),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn filter_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("Filter::parse");
    for expr in ["balance>=100", "status=open", r#"owner=in:["ada","grace","linus"]"#] {
        group.bench_function(expr, |b| b.iter(|| black_box(Filter::parse(black_box(expr)).unwrap())));
    }
    group.finish();
}

criterion_group!(benches, change_set, filter_parse);
criterion_main!(benches);
