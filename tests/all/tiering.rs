//! Tiered compilation: a large plugin projects on baseline (Winch) code at
//! once, switches to optimized (Cranelift) code between two batches when
//! its background compile is done, and the switch changes no document.

use crate::common;
use crate::polyglot::polyglot;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use refract::{AUTO_BASELINE_BYTES, CodeTier, Host, ModuleCache, PluginRuntime, SyncConfig, Tiering};

/// The Python account-summary (18 MB) starts on baseline code under the
/// default tiering, keeps projecting while Cranelift compiles, takes up the
/// optimized code between two batches, and ends with the read model the
/// test computes from the events, document for document the one a run on
/// optimized code alone writes. The optimized code is then in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_switches_to_optimized_code_mid_run_without_changing_a_document() {
    const NAME: &str = "account-summary-py";
    let path = polyglot("account-summary-py.wasm");
    assert!(std::fs::metadata(&path).unwrap().len() as usize >= AUTO_BASELINE_BYTES, "auto tiers this module");
    let dir = tempfile::tempdir().unwrap();
    let events = bank_events(300, 20_000, 17);
    let opening = &events[..2_000];

    let tiered = Stores::open(&dir.path().join("tiered")).await;
    append_all(tiered.events.as_ref(), opening).await;
    let cache = ModuleCache::new(dir.path().join("cache"));
    let mut host = tiered.host(SyncConfig { batch_size: 50, ..SyncConfig::default() }).with_module_cache(cache.clone());
    assert_eq!(host.runtime().tiering(), Tiering::Auto, "the default");
    let plugin = host.runtime().load(&path).unwrap();
    assert!(!plugin.cached());
    assert_eq!(plugin.code_tier(), CodeTier::Baseline);
    host.start(plugin).await.unwrap();
    let on_baseline =
        wait_for_progress(&host, NAME, "a first commit", Duration::from_secs(60), |p| p.checkpoint > 0).await;
    assert_eq!(on_baseline.code, Some(CodeTier::Baseline), "{on_baseline:?}");

    // Events keep arriving in small appends until a batch runs on optimized
    // code: the switch falls between two batches of a live run. At 200
    // events/s they last 90 s, longer than the slowest compile seen.
    let mut appended = opening.len();
    let switched = loop {
        let p = host.progress(NAME).unwrap();
        if p.code == Some(CodeTier::Optimized) {
            break p;
        }
        assert!(appended < events.len(), "every event was projected before the optimized code came: {p:?}");
        let next = (appended + 10).min(events.len());
        append_all(tiered.events.as_ref(), &events[appended..next]).await;
        appended = next;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(switched.checkpoint > on_baseline.checkpoint, "{switched:?}");
    append_all(tiered.events.as_ref(), &events[appended..]).await;
    let head = events.len() as u64;
    let done = wait_for_progress(&host, NAME, "the head", Duration::from_secs(120), |p| p.checkpoint == head).await;
    assert_eq!(done.code, Some(CodeTier::Optimized));
    host.shutdown().await;
    let docs = all_documents(tiered.models_dyn().as_ref(), NAME, "accounts").await;
    assert_accounts(&docs, &expected_accounts(&events));

    // The optimized code was cached: the next load compiles nothing.
    let runtime = PluginRuntime::new().unwrap().with_cache(cache.clone());
    let again = runtime.load(&path).unwrap();
    assert!(again.cached() && again.code_tier() == CodeTier::Optimized);

    // The same events (the same store: documents carry event times) on
    // optimized code alone write the same documents.
    let plain = Stores::open(&dir.path().join("plain")).await;
    let mut host =
        Host::new(tiered.events.clone(), plain.models.clone(), SyncConfig { batch_size: 50, ..SyncConfig::default() })
            .unwrap()
            .with_module_cache(cache)
            .with_tiering(Tiering::Off);
    host.start(host.runtime().load(&path).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    assert_eq!(host.progress(NAME).unwrap().code, Some(CodeTier::Optimized));
    host.shutdown().await;
    let other: BTreeMap<_, _> = all_documents(plain.models_dyn().as_ref(), NAME, "accounts").await;
    assert_eq!(other, docs, "tiered and untiered runs wrote different documents");
}

/// `baseline-only` never optimizes: the whole run is on baseline code and
/// nothing optimized is cached. `off` compiles optimized code first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_only_never_optimizes_and_off_optimizes_first() {
    let dir = tempfile::tempdir().unwrap();
    let events = bank_events(50, 1_000, 5);
    let stores = Stores::open(dir.path()).await;
    append_all(stores.events.as_ref(), &events).await;
    let cache = ModuleCache::new(dir.path().join("cache"));
    let mut host = stores
        .host(SyncConfig { batch_size: 10, ..SyncConfig::default() })
        .with_module_cache(cache.clone())
        .with_tiering(Tiering::BaselineOnly);
    let summary = host.runtime().load(&plugin("account_summary")).unwrap();
    assert_eq!(summary.code_tier(), CodeTier::Baseline);
    host.start(summary).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    // A background compile would have had ample time meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = host.progress("account-summary").unwrap();
    assert_eq!((p.checkpoint, p.code), (events.len() as u64, Some(CodeTier::Baseline)));
    host.shutdown().await;
    assert_accounts(
        &all_documents(stores.models_dyn().as_ref(), "account-summary", "accounts").await,
        &expected_accounts(&events),
    );
    let runtime = PluginRuntime::new().unwrap().with_cache(cache).with_tiering(Tiering::Off);
    let reloaded = runtime.load(&plugin("account_summary")).unwrap();
    assert!(!reloaded.cached(), "baseline-only cached optimized code");
    assert_eq!(reloaded.code_tier(), CodeTier::Optimized, "off optimizes first");
}

/// A bad `--tiering` value is refused by name before anything starts.
#[test]
fn an_unknown_tiering_is_refused_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli::output(cli::refract(&dir.path().join("data")).args(["run", "--tiering", "fast"]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown tiering `fast`: expected one of off, auto, always, baseline-only"), "{err}");
}
