//! The Rust, Python and JavaScript builds of account-summary, side by side in
//! one host over the same 10,000 bank events, write identical read models.
//! The Python and JS components are built by `scripts/build-polyglot`
//! (`scripts/test` runs it) into `target/polyglot/`.

use crate::common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use refract::{EventStore, ModuleCache, SyncConfig, Tiering};

pub(crate) fn polyglot(file: &str) -> PathBuf {
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
    // A module cache, so a second load skips compilation; both loads are
    // timed. Tiering off: the first load compiles optimized code, which the
    // second finds cached (tiering.rs covers baseline code first).
    let cache = ModuleCache::new(dir.path().join("cache"));
    let mut host = stores
        .host(SyncConfig { batch_size: 250, ..SyncConfig::default() })
        .with_module_cache(cache)
        .with_tiering(Tiering::Off);
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

/// The numbers in BENCHMARKS.md: per language and tiering, from a cold
/// module cache, how long the load takes, until the first batch is
/// committed, and until 10,000 events are projected (what a new module in
/// `refract dev` waits for, after its build), then the cached load.
/// `cargo test --release -p refract --test all -- --ignored --nocapture polyglot::`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn load_and_throughput_per_language() {
    let dir = tempfile::tempdir().unwrap();
    let events = bank_events(500, 10_000, 7);
    let builds = [
        ("rust", "account-summary", plugin("account_summary")),
        ("python", "account-summary-py", polyglot("account-summary-py.wasm")),
        ("js", "account-summary-js", polyglot("account-summary-js.wasm")),
    ];
    for (lang, name, path) in &builds {
        for tiering in [Tiering::Off, Tiering::Always] {
            let run = dir.path().join(format!("{lang}-{tiering}"));
            let stores = Stores::open(&run).await;
            append_all(stores.events.as_ref(), &events).await;
            let cache = ModuleCache::new(run.join("cache"));
            let mut host = stores
                .host(SyncConfig { batch_size: 1_000, ..SyncConfig::default() })
                .with_module_cache(cache.clone())
                .with_tiering(tiering);
            let started = Instant::now();
            let plugin = host.runtime().load(path).unwrap();
            let load = started.elapsed();
            host.start(plugin).await.unwrap();
            let mut first_commit = None;
            let mut first_tier = None;
            while let Some(p) = host.progress(name).filter(|p| p.checkpoint < 10_000) {
                if p.checkpoint > 0 && first_commit.is_none() {
                    first_commit = Some(started.elapsed());
                    first_tier = p.code;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let caught_up = started.elapsed();
            let last_tier = host.progress(name).unwrap().code;
            host.shutdown().await;
            let first_commit = first_commit.unwrap_or(caught_up);
            let again = std::time::Instant::now();
            // The cache holds optimized code once the background compile is done.
            let cached = loop {
                let runtime = refract::PluginRuntime::new().unwrap().with_cache(cache.clone());
                let again = Instant::now();
                let plugin = runtime.load(path).unwrap();
                if plugin.cached() || again.elapsed().as_secs() > 120 {
                    break again.elapsed();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            eprintln!(
                "{lang:6} {:>5.1} MB  tiering {tiering:6}  load {:>6.2} s  first commit {:>6.2} s ({first_tier:?})  10,000 events {:>6.2} s (last batch {last_tier:?})  cached load {:>5.1} ms (after {:.1} s)",
                std::fs::metadata(path).unwrap().len() as f64 / 1e6,
                load.as_secs_f64(),
                first_commit.as_secs_f64(),
                caught_up.as_secs_f64(),
                cached.as_secs_f64() * 1e3,
                again.elapsed().as_secs_f64(),
            );
        }
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
        assert!(error.starts_with("projection error at position 1: "), "{name}: {error}");
        assert!(!error.contains("/plugins/"), "{name}: a build path leaked: {error}");
    }
    host.shutdown().await;
}
