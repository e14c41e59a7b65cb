//! Hot reload: replacing a plugin builds a new generation in shadow tables
//! while the old one serves, then swaps atomically; broken replacements leave
//! the old generation serving; compiled modules are cached across restarts.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use refract::{
    AppendRequest, EventSource, EventStore, ExpectedVersion, Host, NewEvent, PluginWatcher, ReadModelStore, Registry,
    Role, Subscription, SyncConfig,
};
use serde_json::Value;

const NAME: &str = "account-summary";

/// Starts a following host on `plugins` in the background; returns a stop handle.
async fn follow(stores: &Stores, plugins: &Path) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut host = stores
        .host(SyncConfig { batch_size: 500, ..SyncConfig::default() })
        .with_module_cache(stores.data.module_cache());
    let watcher = PluginWatcher::new(plugins).unwrap();
    assert!(host.load_plugins(plugins).await.unwrap().is_empty());
    host.wait_until_caught_up().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        host.follow(watcher, async {
            let _ = stopped.await;
        })
        .await;
        host.shutdown().await;
    });
    (stop, task)
}

/// Which module produced a page: v2 documents carry a `tier`. A page must
/// come wholly from one generation.
fn generation_of(docs: &[Value]) -> u32 {
    let v2 = docs.iter().filter(|d| d.get("tier").is_some()).count();
    assert!(v2 == 0 || v2 == docs.len(), "a page mixes generations: {v2} of {} from v2", docs.len());
    if v2 == 0 { 1 } else { 2 }
}

async fn page(models: &dyn ReadModelStore) -> Vec<Value> {
    let q = refract::Query { limit: refract::MAX_LIMIT, ..Default::default() };
    let page = models.query_documents(NAME, "accounts", &q).await.unwrap();
    page.documents.iter().map(|d| serde_json::from_str(&d.body).unwrap()).collect()
}

/// Writes `bytes` over `path` in two steps, as a slow build would.
async fn write_in_two_steps(path: &Path, bytes: &[u8]) {
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    std::fs::write(path, bytes).unwrap();
}

async fn wait_for<F: Fn(&[refract::ProjectionRecord]) -> bool>(models: &dyn ReadModelStore, what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = models.projections().await.unwrap();
        if f(&records) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {records:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_rebuilds_blue_green() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(&dir.path().join("data")).await;
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    append_all(stores.events.as_ref(), &bank_events(500, 20_000, 21)).await;
    let (stop, host) = follow(&stores, &plugins).await;
    let models = stores.models_dyn();
    assert_eq!(models.projection(NAME).await.unwrap().checkpoint, 20_000);
    assert_eq!(generation_of(&page(models.as_ref()).await), 1);

    // Keep appending while the new generation builds.
    let appending = Arc::new(AtomicBool::new(true));
    let appender = {
        let (events, appending) = (stores.events.clone(), appending.clone());
        tokio::spawn(async move {
            let mut rng = Rng::new(5);
            while appending.load(Ordering::Relaxed) {
                let requests: Vec<AppendRequest> = (0..20)
                    .map(|_| AppendRequest {
                        stream_id: format!("account-{}", rng.below(500)),
                        expected: ExpectedVersion::Any,
                        events: vec![NewEvent::new("MoneyDeposited", format!("{{\"amount\":{}}}", 1 + rng.below(50)))],
                    })
                    .collect();
                events.append(&requests).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    write_in_two_steps(&plugins.join("account_summary.wasm"), &std::fs::read(plugin("account_summary_v2")).unwrap())
        .await;

    // Until the swap every query answers from generation 1; after it, from 2 only.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut gen1_while_building, mut seen) = (0, 1);
    loop {
        let building = models.projections().await.unwrap().iter().any(|r| r.role == Role::Building);
        let answered = generation_of(&page(models.as_ref()).await);
        assert!(answered >= seen, "a query went back to generation {answered} after {seen}");
        seen = answered;
        if building && answered == 1 {
            gen1_while_building += 1;
        }
        if answered == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "generation 2 was never swapped in");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(gen1_while_building > 0, "never saw generation 1 serve while generation 2 was building");
    appending.store(false, Ordering::Relaxed);
    appender.await.unwrap();

    let head = stores.events.head().await.unwrap();
    assert!(head > 20_000);
    wait_for(models.as_ref(), "generation 2 at the head", |r| {
        r.len() == 1 && r[0].key.generation == 2 && r[0].role == Role::Active && r[0].checkpoint == head
    })
    .await;
    let active = models.projection(NAME).await.unwrap();
    assert_eq!((active.key.generation, active.manifest.version.as_str()), (2, "2.0.0"));
    assert!(active.activated_at.is_some());
    // One reload for a file written in two steps: no failed generation for the half-written file.
    assert_eq!(
        models.tables(NAME).await.unwrap(),
        vec!["rm:account-summary:g2:accounts".to_string()],
        "old tables are gone"
    );
    stop.send(()).unwrap();
    host.await.unwrap();

    // A from-scratch run of the new module over the same events gives the same documents.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Stores::open(fresh_dir.path()).await;
    let all = stores.events.read(0, head, &Subscription::default(), usize::MAX).await.unwrap();
    let requests: Vec<AppendRequest> = all
        .iter()
        .map(|e| AppendRequest {
            stream_id: e.stream_id.clone(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new(e.event_type.clone(), e.payload.clone())],
        })
        .collect();
    fresh.events.append(&requests).await.unwrap();
    let mut scratch = fresh.host(SyncConfig::default());
    scratch.start(scratch.runtime().load(&plugin("account_summary_v2")).unwrap()).await.unwrap();
    scratch.wait_until_caught_up().await.unwrap();
    scratch.shutdown().await;
    assert_eq!(
        all_documents(models.as_ref(), NAME, "accounts").await,
        all_documents(fresh.models.as_ref(), NAME, "accounts").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_leaves_the_old_generation_serving() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(&dir.path().join("data")).await;
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let events = bank_events(50, 2_000, 8);
    append_all(stores.events.as_ref(), &events).await;
    let (stop, host) = follow(&stores, &plugins).await;
    let models = stores.models_dyn();
    let before = all_documents(models.as_ref(), NAME, "accounts").await;
    let file = plugins.join("account_summary.wasm");

    // Not a component at all.
    std::fs::write(&file, b"garbage, not wasm").unwrap();
    wait_for(models.as_ref(), "the failed load", |r| {
        r.iter().any(|g| {
            g.role == Role::Failed && g.last_error.as_deref().is_some_and(|e| e.contains("not a WebAssembly file"))
        })
    })
    .await;
    assert_eq!(models.projection(NAME).await.unwrap().key.generation, 1);
    assert_eq!(all_documents(models.as_ref(), NAME, "accounts").await, before);

    // A component that traps on its first event.
    std::fs::write(&file, std::fs::read(plugin("account_summary_trap")).unwrap()).unwrap();
    wait_for(models.as_ref(), "the failed rebuild", |r| {
        r.iter().any(|g| {
            g.role == Role::Failed
                && g.manifest.version == "3.0.0-broken"
                && g.last_error.as_deref().is_some_and(|e| e.contains("trap"))
        })
    })
    .await;
    let active = models.projection(NAME).await.unwrap();
    assert_eq!((active.key.generation, active.role), (1, Role::Active));
    assert_eq!(all_documents(models.as_ref(), NAME, "accounts").await, before);
    assert_eq!(models.tables(NAME).await.unwrap(), vec!["rm:account-summary:g1:accounts".to_string()]);

    // `refract status` shows the failure next to the serving generation.
    let status = refract::status(stores.events.as_ref(), models.as_ref()).await.unwrap();
    assert!(status.iter().any(|s| s.role == Role::Active && s.generation == 1 && s.lag == 0), "{status:#?}");
    assert!(status.iter().any(|s| s.role == Role::Failed && s.last_error.as_deref().unwrap_or("").contains("trap")));

    // Fixing the file triggers a fresh attempt, which swaps in.
    std::fs::write(&file, std::fs::read(plugin("account_summary_v2")).unwrap()).unwrap();
    wait_for(models.as_ref(), "the fixed generation", |r| {
        r.len() == 1 && r[0].role == Role::Active && r[0].manifest.version == "2.0.0" && r[0].checkpoint == 2_000
    })
    .await;
    stop.send(()).unwrap();
    host.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_modules_are_cached_and_generations_resume_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(&dir.path().join("data")).await;
    let cache = stores.data.module_cache();
    let v1 = plugin("account_summary");
    let cold = stores.host(SyncConfig::default()).with_module_cache(cache.clone());
    assert!(!cold.runtime().load(&v1).unwrap().cached(), "first load compiles");
    let warm = stores.host(SyncConfig::default()).with_module_cache(cache.clone());
    assert!(warm.runtime().load(&v1).unwrap().cached(), "second load comes from the cache");

    // A corrupt cache entry is recompiled, not trusted.
    for entry in std::fs::read_dir(dir.path().join("data/cache/compiled")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"corrupt").unwrap();
    }
    assert!(!warm.runtime().load(&v1).unwrap().cached());

    // Replace the file while no host runs: on restart, generation 1 keeps
    // following events (its module comes from the cache) while 2 builds.
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    append_all(stores.events.as_ref(), &bank_events(20, 500, 1)).await;
    let mut host = stores.host(SyncConfig::default()).with_module_cache(cache.clone());
    host.load_plugins(&plugins).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;
    std::fs::copy(plugin("account_summary_v2"), plugins.join("account_summary.wasm")).unwrap();
    let mut host = stores.host(SyncConfig { batch_size: 10, ..SyncConfig::default() }).with_module_cache(cache);
    host.load_plugins(&plugins).await.unwrap();
    let gens = host.generations(NAME);
    assert_eq!(gens.len(), 2, "{gens:?}");
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;
    let active = stores.models.projection(NAME).await.unwrap();
    assert_eq!((active.key.generation, active.checkpoint), (2, 500));
}

/// `Host` must move into a task to follow a folder.
#[allow(dead_code)]
fn host_is_send(h: Host) -> impl Send {
    h
}

/// `refract rebuild` on a stopped data dir builds a new generation from the
/// cached module and swaps it in; `refract drop` forgets the projection.
#[test]
fn cli_rebuild_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let refract = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    write_jsonl(&dir.path().join("bank.jsonl"), &bank_events(30, 3_000, 4));
    assert!(refract(&["import", dir.path().join("bank.jsonl").to_str().unwrap()]).status.success());
    assert!(refract(&["run", "--exit-when-caught-up", "--plugins", plugins.to_str().unwrap()]).status.success());
    let before = refract(&["query", NAME, "accounts", "--lines", "--limit", "10000"]).stdout;

    let out = refract(&["rebuild", NAME]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("account-summary: generation 2 is active"));
    let status = String::from_utf8_lossy(&refract(&["status"]).stdout).into_owned();
    let row: Vec<&str> = status.lines().find(|l| l.starts_with(NAME)).unwrap().split_whitespace().collect();
    assert_eq!(row[2..7], ["2", "active", "3000", "3000", "0"], "{status}");
    assert_eq!(
        refract(&["query", NAME, "accounts", "--lines", "--limit", "10000"]).stdout,
        before,
        "same module, same model"
    );

    let err = refract(&["rebuild", "nope"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("unknown projection `nope`"));

    assert!(refract(&["drop", NAME]).status.success());
    let gone = refract(&["get", NAME, "accounts", "account-1"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("unknown projection `account-summary`"));
    let status = String::from_utf8_lossy(&refract(&["status"]).stdout).into_owned();
    assert!(!status.contains(NAME), "{status}");
}

/// Not a test: `cargo test --release -p refract --test all -- --ignored --nocapture reload::reload_benchmark`.
/// Measures plugin load time with a cold and a warm module cache, and the
/// time from replacing a plugin file to the new generation serving at the
/// head of 100,000 events. Figures go to BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, not a test; see BENCHMARKS.md"]
async fn reload_benchmark() {
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let bytes = std::fs::read(plugin("account_summary")).unwrap();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let cache = refract::ModuleCache::new(dir.path());
        let runtime = refract::PluginRuntime::new().unwrap().with_cache(cache);
        let t = Instant::now();
        assert!(!runtime.load_bytes("p.wasm".as_ref(), &bytes).unwrap().cached());
        cold.push(t.elapsed());
        let t = Instant::now();
        assert!(runtime.load_bytes("p.wasm".as_ref(), &bytes).unwrap().cached());
        warm.push(t.elapsed());
    }
    let (cold, warm) = (median(cold), median(warm));
    println!(
        "load account_summary.wasm ({} KiB): cold {cold:?}, warm {warm:?}, ratio {:.1}x",
        bytes.len() / 1024,
        cold.as_secs_f64() / warm.as_secs_f64()
    );

    let mut swaps = Vec::new();
    for run in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(&dir.path().join("data")).await;
        let plugins = plugins_dir(dir.path(), &["account_summary"]);
        append_all(stores.events.as_ref(), &bank_events(1_000, 100_000, run)).await;
        let (stop, host) = follow(&stores, &plugins).await;
        let models = stores.models_dyn();
        let v2 = std::fs::read(plugin("account_summary_v2")).unwrap();
        let t = Instant::now();
        std::fs::write(plugins.join("account_summary.wasm"), &v2).unwrap();
        wait_for(models.as_ref(), "generation 2", |r| {
            r.len() == 1 && r[0].key.generation == 2 && r[0].checkpoint == 100_000
        })
        .await;
        swaps.push(t.elapsed());
        stop.send(()).unwrap();
        host.await.unwrap();
    }
    let all = swaps.clone();
    println!(
        "file replaced -> generation 2 serving at the head of 100,000 events: median {:?} (runs {all:?}; includes the {:?} debounce)",
        median(swaps),
        refract::DEBOUNCE
    );
}

/// On a single node, a new generation takes its lease at once: with a
/// 60 s lease lifetime the share is recounted only every 20 s, so the
/// swap within 10 s can only come from the recount the new generation
/// asks for (it waited up to a third of the lifetime for it before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_generation_does_not_wait_for_the_next_share_count() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(20, 500, 3);
    append_all(stores.events.as_ref(), &events).await;
    let lease = refract::LeaseSettings { node: "solo".into(), ttl: Duration::from_secs(60) };
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let mut host = stores.host(SyncConfig::default()).with_lease(lease);
    assert!(host.load_plugins(&plugins).await.unwrap().is_empty());
    host.wait_until_caught_up().await.unwrap();
    let file = plugins.join("account_summary.wasm");
    std::fs::copy(plugin("account_summary_v2"), &file).unwrap();
    let started = Instant::now();
    host.load_file(&file).await.unwrap();
    loop {
        let p = host.progress(NAME).unwrap();
        if p.generation == 2 && p.role == Role::Active && p.checkpoint == events.len() as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "generation 2 still waits: {:?}", host.generations(NAME));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    host.shutdown().await;
}
