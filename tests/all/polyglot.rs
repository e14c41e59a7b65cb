//! The Rust, Python and JavaScript builds of account-summary, side by side in
//! one host over the same 10,000 bank events, write identical read models.
//! The Python and JS components are built by `scripts/build-polyglot`
//! (`scripts/test` runs it) into `target/polyglot/`.

use crate::common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use refract::{EventStore, ModuleCache, SyncConfig};

fn polyglot(file: &str) -> PathBuf {
    let path = root().join("target/polyglot").join(file);
    assert!(
        path.exists(),
        "{} is missing: build it with `scripts/build-polyglot` (scripts/test does it)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_python_and_js_projections_write_identical_documents() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(500, 10_000, 7);
    append_all(stores.events.as_ref(), &events).await;
    let expected = expected_accounts(&events);

    let builds = [
        ("account-summary", plugin("account_summary")),
        ("account-summary-py", polyglot("account-summary-py.wasm")),
        ("account-summary-js", polyglot("account-summary-js.wasm")),
    ];
    // A module cache, so a second load skips compilation; both loads are timed.
    let cache = ModuleCache::new(dir.path().join("cache"));
    let mut host = stores.host(SyncConfig { batch_size: 250, ..SyncConfig::default() }).with_module_cache(cache);
    for (name, path) in &builds {
        let started = Instant::now();
        let plugin = host.runtime().load(path).unwrap();
        let first = started.elapsed();
        assert_eq!(plugin.manifest().name, *name);
        assert_eq!(plugin.wit_version(), "0.2.0", "{name} targets the current world");
        // The Python and JS ports declare `owner` searchable through their
        // helpers' `.search`; the Rust original declares no search field.
        let search: &[&str] = if *name == "account-summary" { &[] } else { &["owner"] };
        assert_eq!(plugin.manifest().collections[0].search, search, "{name}");
        assert!(!plugin.cached());
        let started = Instant::now();
        let again = host.runtime().load(path).unwrap();
        let cached = started.elapsed();
        assert!(again.cached(), "second load of {name} should come from the module cache");
        let size = std::fs::metadata(path).unwrap().len();
        eprintln!("{name}: {size} bytes, first load {first:?}, cached load {cached:?}");
        host.start(plugin).await.unwrap();
    }
    let started = Instant::now();
    host.wait_until_caught_up().await.unwrap();
    eprintln!("all three caught up on 10,000 events in {:?}", started.elapsed());
    for (name, _) in &builds {
        let progress = host.progress(name).unwrap();
        assert_eq!(progress.checkpoint, 10_000, "{name}: {progress:?}");
    }
    host.shutdown().await;

    let models = stores.models_dyn();
    let rust = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_eq!(rust.len(), 500);
    for (id, want) in &expected {
        assert_eq!(rust[id]["balance"].as_i64(), Some(want.balance), "balance of {id}");
    }
    for (name, _) in &builds[1..] {
        let other = all_documents(models.as_ref(), name, "accounts").await;
        assert_eq!(other.len(), rust.len(), "{name}: document count");
        for (id, doc) in &rust {
            assert_eq!(other.get(id), Some(doc), "{name}: document {id}");
        }
    }
}

/// The numbers in BENCHMARKS.md: per language, first (compiling) and cached
/// load, and projection throughput over 10,000 events with the projection
/// running alone. `cargo test --release -p refract --test all -- --ignored --nocapture polyglot::`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn load_and_throughput_per_language() {
    let dir = tempfile::tempdir().unwrap();
    let events = bank_events(500, 10_000, 7);
    let cache = ModuleCache::new(dir.path().join("cache"));
    let builds = [
        ("rust", "account-summary", plugin("account_summary")),
        ("python", "account-summary-py", polyglot("account-summary-py.wasm")),
        ("js", "account-summary-js", polyglot("account-summary-js.wasm")),
    ];
    for (lang, name, path) in &builds {
        let stores = Stores::open(&dir.path().join(lang)).await;
        append_all(stores.events.as_ref(), &events).await;
        let mut host =
            stores.host(SyncConfig { batch_size: 1_000, ..SyncConfig::default() }).with_module_cache(cache.clone());
        let started = Instant::now();
        host.runtime().load(path).unwrap();
        let first = started.elapsed();
        let started = Instant::now();
        let plugin = host.runtime().load(path).unwrap();
        let cached = started.elapsed();
        let started = Instant::now();
        host.start(plugin).await.unwrap();
        host.wait_until_caught_up().await.unwrap();
        let took = started.elapsed();
        assert_eq!(host.progress(name).unwrap().checkpoint, 10_000);
        host.shutdown().await;
        eprintln!(
            "{lang:6} {:>6.1} MB  first load {:>7.2} s  cached load {:>6.1} ms  10,000 events in {:>6.3} s = {:>7.0} events/s",
            std::fs::metadata(path).unwrap().len() as f64 / 1e6,
            first.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            took.as_secs_f64(),
            10_000.0 / took.as_secs_f64()
        );
    }
}

/// The 1-based line of `file` (under plugins/) that contains `needle`.
fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(root().join("plugins").join(file)).unwrap();
    text.lines().position(|l| l.contains(needle)).expect("the line is in the source") + 1
}

/// An error in the user's Python or JavaScript code names its file and
/// line, so the fault in `status` points at the code to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_errors_name_the_file_and_line_of_the_users_code() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    // `null` is JSON, but not an object: both ports fail reading its owner.
    let opened = refract::AppendRequest {
        stream_id: "account-1".into(),
        expected: refract::ExpectedVersion::Any,
        events: vec![refract::NewEvent::new("AccountOpened", "null")],
    };
    stores.events.append(&[opened]).await.unwrap();
    let cases = [
        ("account-summary-py", polyglot("account-summary-py.wasm"), {
            let line = line_of("python/account-summary/app.py", "owner, initial = p[\"owner\"]");
            format!("TypeError: 'NoneType' object is not subscriptable (app.py:{line}, in handle)")
        }),
        ("account-summary-js", polyglot("account-summary-js.wasm"), {
            let line = line_of("js/account-summary/app.js", "account.owner = opened.owner");
            format!(" (app.js:{line})")
        }),
    ];
    let mut host = stores.host(SyncConfig::default());
    for (_, path, _) in &cases {
        let plugin = host.runtime().load(path).unwrap();
        host.start(plugin).await.unwrap();
    }
    host.wait_until_caught_up().await.unwrap();
    for (name, _, want) in &cases {
        let progress = host.progress(name).unwrap();
        assert_eq!(progress.state, refract::ProjectionState::Faulted, "{name}: {progress:?}");
        let error = progress.last_error.unwrap_or_default();
        assert!(error.contains(want.as_str()), "{name}: `{want}` not in `{error}`");
        assert!(!error.contains("/plugins/"), "{name}: a build path leaked: {error}");
    }
    host.shutdown().await;
}
