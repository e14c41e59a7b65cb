//! End-to-end benchmarks of refract: projection throughput into SQLite
//! (the WASM plugin, the same projection compiled natively and run by the
//! same engine, and the raw SQLite ceiling), rebuild time, the WASM
//! boundary alone, peak RSS of one `refract run` with 1 and 10 distinct
//! projections, and append → visible latency. See BENCHMARKS.md for what
//! each figure means.
//!
//! ```sh
//! scripts/build-plugins
//! cargo run --release -p refract --bin refract-bench -- --events 1000000 --runs 3
//! ```

// glibc tuning, shared with the `refract` binary.
#[path = "../cli/allocator.rs"]
mod allocator;
#[path = "refract-bench/backends.rs"]
mod backends;
#[path = "refract-bench/latency.rs"]
mod latency;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use refract::{
    AppendRequest, Change, ChangeLog, ChangeSet, CollectionChanges, DataDir, Event, EventSource, EventStore,
    ExpectedVersion, Host, Manifest, ModelReader, ModelWriter, NativeFailure, NativeProjection, NewEvent, Plugin,
    PluginRuntime, ReadModelStore, Registry, SqliteEventStore, SqliteReadModelStore, SyncConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "End-to-end benchmarks of refract (see BENCHMARKS.md)")]
struct Args {
    /// Events projected per run at batch sizes of 100 and more.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per run at batch size 1 (one transaction per event is slow).
    #[arg(long, default_value_t = 20_000)]
    batch1_events: usize,
    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    batches: Vec<usize>,
    /// Commit groupings to measure each batch size with: most events per
    /// commit while catching up (the engine's default is 50000; 1 commits
    /// every batch on its own). Engine, native and raw runs use the same one.
    #[arg(long, value_delimiter = ',', default_value = "50000,1")]
    commits: Vec<usize>,
    /// Bank accounts the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Events per projection in the peak-RSS measurement.
    #[arg(long, default_value_t = 200_000)]
    rss_events: usize,
    /// Work directory (event stores are generated once and reused).
    #[arg(long, default_value = "target/refract-bench")]
    work_dir: PathBuf,
    /// Folder holding account_summary.wasm and bench_decode.wasm.
    #[arg(long, default_value = "target/wasm32-wasip2/plugin")]
    plugins: PathBuf,
    /// Appends per append → visible latency measurement with wake-ups.
    #[arg(long, default_value_t = 1_000)]
    latency_appends: usize,
    /// Appends per latency measurement with wake-ups hidden, the poll-only
    /// baseline (each waits for a poll; 0 skips it).
    #[arg(long, default_value_t = 100)]
    latency_baseline_appends: usize,
    /// PostgreSQL server for the latency part (a schema of its own is
    /// created and dropped); without it only SQLite is measured.
    #[arg(long, env = "DATABASE_URL")]
    postgres_url: Option<String>,
    /// NATS server for the event-store comparison (JetStream, a stream of its
    /// own created and deleted); without it only SQLite and PostgreSQL are compared.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Events each event store is filled with and projected in the comparison.
    #[arg(long, default_value_t = 1_000_000)]
    backend_events: usize,
    /// Timed single-event appends per event store in the comparison.
    #[arg(long, default_value_t = 20_000)]
    backend_appends: usize,
    /// Internal: append one event per line of stdin to this store URL and
    /// print each position (the other process of the latency part).
    #[arg(long, hide = true)]
    append_child: Option<String>,
    /// Skip parts: any of throughput, rebuild, boundary, rss, latency, changelog, backends; or native and
    /// raw, the two comparison columns of the throughput table (e.g. to profile
    /// the engine alone).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn main() -> Result<()> {
    allocator::tune_allocator();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(url) = &args.append_child {
        return rt.block_on(latency::child(url));
    }
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let account_summary = args.plugins.join("account_summary.wasm");
    let bench_decode = args.plugins.join("bench_decode.wasm");
    for p in [&account_summary, &bench_decode] {
        if !p.exists() {
            bail!("{} is missing: run scripts/build-plugins first", p.display());
        }
    }
    println!("machine: {}", machine());
    println!(
        "events: {} (batch 1: {}), runs: {}, accounts: {}",
        args.events, args.batch1_events, args.runs, args.accounts
    );
    let skip = |part: &str| args.skip.iter().any(|s| s == part);
    let manifest = manifest_of(&account_summary)?;

    if !skip("throughput") {
        println!("\n## Projection throughput into SQLite (events/s, median of {} runs)\n", args.runs);
        println!(
            "| batch | commit every | events | WASM (engine) | native (same engine) | raw SQLite ceiling | WASM/native | WASM/raw |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &batch in &args.batches {
            let n = if batch == 1 { args.batch1_events } else { args.events };
            let events = event_store(&args, n).await?;
            for &commit in &args.commits {
                let (mut wasm, mut native, mut raw, mut rebuilds) = (vec![], vec![], vec![], vec![]);
                for run in 0..args.runs {
                    // Interleaved, so the three see the same machine load.
                    let dir = args.work_dir.join(format!("run-b{batch}-c{commit}-{run}"));
                    let rebuild = batch == 1000 && commit == args.commits[0] && !skip("rebuild");
                    let wasm_plugin = Code::Wasm(&account_summary);
                    let (rate, rebuild_time) =
                        engine_run(&dir.join("wasm"), &events, wasm_plugin, batch, commit, rebuild).await?;
                    wasm.push(rate);
                    rebuilds.extend(rebuild_time);
                    if !skip("native") {
                        let native_plugin = Code::Native(&account_summary, &manifest);
                        native.push(
                            engine_run(&dir.join("native"), &events, native_plugin, batch, commit, false).await?.0,
                        );
                    }
                    if !skip("raw") {
                        raw.push(raw_run(&dir.join("raw"), &events, &manifest, batch, commit).await?);
                    }
                    if run == 0 && !skip("native") {
                        compare_models(&dir.join("wasm"), &dir.join("native"), args.accounts).await?;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
                let (w, nv, r) = (median(&mut wasm), median(&mut native), median(&mut raw));
                let every = if commit <= 1 { "batch".to_owned() } else { format!("{commit} events") };
                println!("| {batch} | {every} | {n} | {w:.0} | {nv:.0} | {r:.0} | {:.2} | {:.2} |", w / nv, w / r);
                eprintln!("  batch {batch} commit {commit}: wasm {wasm:.0?} native {native:.0?} raw {raw:.0?}");
                if !rebuilds.is_empty() {
                    let mut secs: Vec<f64> = rebuilds.iter().map(Duration::as_secs_f64).collect();
                    println!(
                        "\nrebuild of {n} events (batch 1000), median of {}: {:.2} s (runs: {secs:.2?})\n",
                        secs.len(),
                        median(&mut secs)
                    );
                }
            }
        }
    }

    if !skip("changelog") {
        changelog_part(&args, &account_summary).await?;
    }

    if !skip("boundary") {
        println!("\n## WASM boundary alone (bench-decode: decode, no get, no changes), median of {} runs\n", args.runs);
        println!("| batch | events/s |");
        println!("|---|---|");
        let events = event_store(&args, args.events.min(200_000)).await?;
        let head = events.head().await?;
        let all = events.read(0, head, &Default::default(), usize::MAX).await?;
        let runtime = PluginRuntime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let plugin = runtime.load(&bench_decode)?;
        for &batch in &args.batches {
            let batches: Vec<Vec<Event>> = all.chunks(batch).map(<[Event]>::to_vec).collect();
            let mut rates = vec![];
            for _ in 0..args.runs {
                let plugin = &plugin;
                let started = Instant::now();
                let changes = tokio::task::block_in_place(|| plugin.handle_detached(&batches))?;
                assert_eq!(changes, 0);
                rates.push(all.len() as f64 / started.elapsed().as_secs_f64());
            }
            println!("| {batch} | {:.0} |", median(&mut rates));
        }
    }

    if !skip("backends") {
        backends::run(&backends::Settings {
            work_dir: &args.work_dir,
            plugin: &account_summary,
            events: args.backend_events,
            appends: args.backend_appends,
            appenders: 8,
            accounts: args.accounts,
            runs: args.runs,
            postgres: args.postgres_url.as_deref(),
            nats: args.nats_url.as_deref(),
        })
        .await?;
    }

    if !skip("latency") {
        latency::run(&latency::Settings {
            work_dir: &args.work_dir,
            plugin: &account_summary,
            appends: args.latency_appends,
            baseline_appends: args.latency_baseline_appends,
            postgres: args.postgres_url.as_deref(),
        })
        .await?;
    }

    if !skip("rss") {
        rss_part(&args, &account_summary).await?;
    }
    Ok(())
}

/// Peak RSS of one `refract run` process (its maxrss, from `wait4`) with
/// 1 and 10 distinct projections, from a cold module cache to caught up:
/// what an operator's host needs, compiles included.
async fn rss_part(args: &Args, plugin: &Path) -> Result<()> {
    let refract = std::env::current_exe()?.with_file_name("refract");
    if !refract.exists() {
        bail!("{} is missing: cargo build --release -p refract --bins", refract.display());
    }
    let events_path = event_store_path(args, args.rss_events);
    event_store(args, args.rss_events).await?;
    println!(
        "\n## Peak RSS of one `refract run` process, {} events per projection, batch 1000, cold module cache\n",
        args.rss_events
    );
    println!("| distinct projections | peak RSS, runs | median | caught up in (median) |");
    println!("|---|---|---|---|");
    let bytes = std::fs::read(plugin)?;
    for n in [1usize, 10] {
        let (mut peaks, mut times) = (vec![], vec![]);
        for run in 0..args.runs {
            let dir = args.work_dir.join(format!("rss-{n}-{run}"));
            let _ = std::fs::remove_dir_all(&dir);
            let (data, plugins) = (dir.join("data"), dir.join("plugins"));
            std::fs::create_dir_all(&data)?;
            std::fs::create_dir_all(&plugins)?;
            std::fs::copy(&events_path, data.join("events.db"))?;
            let names: Vec<String> = (0..n).map(|i| format!("account-summ{i:03}")).collect();
            for name in &names {
                std::fs::write(plugins.join(format!("{name}.wasm")), renamed(&bytes, name)?)?;
            }
            let started = Instant::now();
            let child = std::process::Command::new(&refract)
                .arg("--data-dir")
                .arg(&data)
                .arg("run")
                .arg("--plugins")
                .arg(&plugins)
                .args(["--exit-when-caught-up", "--no-http"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            let peak = tokio::task::spawn_blocking(move || wait_for_peak_rss(child)).await??;
            times.push(started.elapsed().as_secs_f64());
            peaks.push(peak as f64 / 1024.0);
            let head = SqliteEventStore::open(&data.join("events.db")).await?.head().await?;
            let models = DataDir(data.clone()).open_models().await?;
            for name in &names {
                check_caught_up(&*models, name, head).await?;
            }
            models.close().await;
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!(
            "| {n} | {} | **{:.0} MiB** | {:.1} s |",
            peaks.iter().map(|p| format!("{p:.0}")).collect::<Vec<_>>().join(" / "),
            median(&mut peaks),
            median(&mut times)
        );
    }
    Ok(())
}

/// `bytes` of account-summary with the projection's name replaced by
/// `name` of the same length: a distinct module (its own hash, compiled
/// code and tables) with the same logic.
fn renamed(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    const NAME: &[u8] = b"account-summary";
    if name.len() != NAME.len() {
        bail!("{name} is not {} bytes long", NAME.len());
    }
    let at = bytes.windows(NAME.len()).position(|w| w == NAME).context("the plugin does not name account-summary")?;
    let mut out = bytes.to_vec();
    out[at..at + NAME.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// Waits for `child` to exit successfully and returns its peak RSS in KiB.
fn wait_for_peak_rss(child: std::process::Child) -> Result<u64> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value, and both pointers outlive the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps our own child; `child` is not waited on elsewhere.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        bail!("waiting for refract run: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("refract run failed (wait status {status})");
    }
    Ok(usage.ru_maxrss as u64)
}

fn sync(batch: usize, commit_events: usize) -> SyncConfig {
    SyncConfig {
        batch_size: batch,
        // A short poll so the end of a run is seen at once.
        poll: Duration::from_millis(1),
        commit_events,
        // Grouping by event count only, so the engine, native and raw runs
        // commit exactly the same transactions.
        commit_interval: Duration::from_secs(3600),
        ..SyncConfig::default()
    }
}

/// What the engine runs account-summary as.
#[derive(Clone, Copy)]
enum Code<'a> {
    /// The component at this path.
    Wasm(&'a Path),
    /// [`NativeAccountSummary`] in its place, with the component's manifest.
    Native(&'a Path, &'a Manifest),
}

/// The real engine: a host running account-summary from position 0 to the
/// head, as a component or natively (the same runner, read-ahead, document
/// cache and commits; only the call differs). Returns events/s and, when
/// asked, how long a rebuild (a new generation from position 0, swapped in
/// at the head) takes.
async fn engine_run(
    dir: &Path,
    events: &Arc<SqliteEventStore>,
    code: Code<'_>,
    batch: usize,
    commit_events: usize,
    rebuild: bool,
) -> Result<(f64, Option<Duration>)> {
    let _ = std::fs::remove_dir_all(dir);
    let data = DataDir(dir.to_owned());
    let models = data.open_models().await?;
    let mut host = Host::new(events.clone(), models.clone(), sync(batch, commit_events))?;
    let plugin = match code {
        Code::Wasm(path) => host.runtime().load(path)?,
        Code::Native(path, manifest) => Plugin::native(path, manifest.clone(), Arc::new(NativeAccountSummary))?,
    };
    let head = events.head().await?;
    let started = Instant::now();
    host.start(plugin).await?;
    host.wait_until_caught_up().await?;
    let rate = head as f64 / started.elapsed().as_secs_f64();
    check_caught_up(&*models, "account-summary", head).await?;
    let rebuild_time = if rebuild {
        let record = models.request_rebuild("account-summary").await?;
        let started = Instant::now();
        if !host.run_generation(&record).await {
            bail!("the rebuild generation did not start");
        }
        host.wait_until_caught_up().await?;
        let took = started.elapsed();
        let active = models.projection("account-summary").await?;
        if active.key != record.key || active.checkpoint != head {
            bail!("rebuild did not swap in: active is {:?} at {}", active.key, active.checkpoint);
        }
        Some(took)
    } else {
        None
    };
    host.shutdown().await;
    models.close().await;
    Ok((rate, rebuild_time))
}

/// The change log's cost: the same projection with the log off, on, and on
/// with one consumer paging it as fast as it can, interleaved run by run;
/// then `verify` beside a rebuild of the same model.
async fn changelog_part(args: &Args, plugin: &Path) -> Result<()> {
    let n = args.events;
    let events = event_store(args, n).await?;
    println!(
        "\n## Change log cost, {n} events, batch 1000, commit every 50000 events (median of {} runs)\n",
        args.runs
    );
    let (mut off, mut on, mut consumed) = (vec![], vec![], vec![]);
    let (mut verifies, mut rebuilds) = (vec![], vec![]);
    for run in 0..args.runs {
        let dir = args.work_dir.join(format!("changelog-{run}"));
        off.push(changelog_run(&dir, &events, plugin, false, false, None).await?.0);
        on.push(changelog_run(&dir, &events, plugin, true, false, None).await?.0);
        let (rate, timings) = changelog_run(&dir, &events, plugin, true, true, Some(())).await?;
        consumed.push(rate);
        let (verify, rebuild) = timings.expect("asked for");
        verifies.push(verify.as_secs_f64());
        rebuilds.push(rebuild.as_secs_f64());
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("  change log: off {off:.0?} on {on:.0?} on+consumer {consumed:.0?}");
    let (o, l, c) = (median(&mut off), median(&mut on), median(&mut consumed));
    println!("| change log | events/s | vs off |");
    println!("|---|---|---|");
    println!("| off | {o:.0} | 1.00 |");
    println!("| on, no consumer | {l:.0} | {:.2} |", l / o);
    println!("| on, one consumer paging it | {c:.0} | {:.2} |", c / o);
    println!(
        "\nverify of {n} events: {:.2} s; rebuild of the same model: {:.2} s (medians; runs: verify {verifies:.2?}, rebuild {rebuilds:.2?})\n",
        median(&mut verifies),
        median(&mut rebuilds)
    );
    Ok(())
}

/// One run of the engine with the change log `logged` or not; with
/// `consumer`, a reader pages the log while it projects and must have read
/// every entry by the end. With `timings`, then verifies the model and
/// rebuilds it, and returns how long each took.
async fn changelog_run(
    dir: &Path,
    events: &Arc<SqliteEventStore>,
    plugin_path: &Path,
    logged: bool,
    consumer: bool,
    timings: Option<()>,
) -> Result<(f64, Option<(Duration, Duration)>)> {
    let _ = std::fs::remove_dir_all(dir);
    let data = DataDir(dir.to_owned());
    let models = data.open_models().await?;
    models.set_logging("account-summary", logged);
    let mut host = Host::new(events.clone(), models.clone(), sync(1000, 50_000))?;
    let plugin = host.runtime().load(plugin_path)?;
    let head = events.head().await?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = consumer.then(|| {
        let (models, done) = (models.clone(), done.clone());
        // As the HTTP feed does: read until a page is short, then wait for
        // the next commit notice.
        let mut notices = host.subscribe();
        tokio::spawn(async move {
            const PAGE: u32 = 10_000;
            let (mut after, mut read) = (0u64, 0u64);
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                match models.read_changes("account-summary", after, PAGE).await {
                    Ok(page) => {
                        read += page.entries.len() as u64;
                        after = page.entries.last().map_or(after, |e| e.sequence);
                        if finished && after == page.head {
                            return Ok::<u64, refract::StoreError>(read);
                        }
                        if page.entries.len() < PAGE as usize {
                            // A notice, a lag (read again) or, after the
                            // last commit, the timeout: then `done` is set.
                            let _ = tokio::time::timeout(Duration::from_millis(50), notices.recv()).await;
                        }
                    }
                    // Not registered yet.
                    Err(refract::StoreError::UnknownProjection(_)) => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    });
    let started = Instant::now();
    host.start(plugin).await?;
    host.wait_until_caught_up().await?;
    let rate = head as f64 / started.elapsed().as_secs_f64();
    check_caught_up(&*models, "account-summary", head).await?;
    done.store(true, std::sync::atomic::Ordering::Release);
    if let Some(reader) = reader {
        let read = reader.await??;
        let logged = models.read_changes("account-summary", 0, 1).await?.head;
        if read != logged {
            bail!("the consumer read {read} of {logged} entries");
        }
    }
    let timings = match timings {
        Some(()) => {
            let started = Instant::now();
            let report = host.verify("account-summary", 10).await?;
            let verify = started.elapsed();
            if !report.clean() || report.checkpoint != head {
                bail!("verify found differences or stopped short: {report:?}");
            }
            let record = models.request_rebuild("account-summary").await?;
            let started = Instant::now();
            if !host.run_generation(&record).await {
                bail!("the rebuild generation did not start");
            }
            host.wait_until_caught_up().await?;
            Some((verify, started.elapsed()))
        }
        None => None,
    };
    host.shutdown().await;
    models.close().await;
    Ok((rate, timings))
}

async fn check_caught_up(models: &dyn ReadModelStore, name: &str, head: u64) -> Result<()> {
    let record = models.projection(name).await?;
    if record.checkpoint != head || record.last_error.is_some() {
        bail!("{name} stopped at {} of {head}: {:?}", record.checkpoint, record.last_error);
    }
    Ok(())
}

/// The store's ceiling: the commits the engine makes (every
/// `commit_events` events, as the runner groups them), of the same final
/// documents, computed off the clock by account-summary's native logic, so
/// only `commit` (one json_each upsert plus the checkpoint, one
/// transaction) is timed.
async fn raw_run(
    dir: &Path,
    events: &Arc<SqliteEventStore>,
    manifest: &Manifest,
    batch: usize,
    commit_events: usize,
) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let models = DataDir(dir.to_owned()).open_models().await?;
    let reg = models.register(manifest, "raw-baseline", "raw").await?;
    let key = reg.target.key.clone();
    let head = events.head().await?;
    let (mut checkpoint, mut read_to, mut staged_events) = (0, 0, 0);
    let mut timed = Duration::ZERO;
    let mut docs: HashMap<String, String> = HashMap::new();
    let mut staged: BTreeMap<String, String> = BTreeMap::new();
    while read_to < head {
        let batch_events = events.read(read_to, head, &manifest.subscription, batch).await?;
        let full = batch_events.len() >= batch;
        read_to = if full { batch_events.last().map_or(head, |e| e.position) } else { head };
        staged_events += batch_events.len();
        let changes = project(&batch_events, &mut |_, id| Ok(docs.get(id).cloned()))?;
        let set = ChangeSet::from_changes(changes, manifest)?;
        for (id, body) in set.collections.into_values().flat_map(|c| c.upserts) {
            docs.insert(id.clone(), body.clone());
            staged.insert(id, body);
        }
        if !full || read_to >= head || staged_events >= commit_events {
            let upserts = std::mem::take(&mut staged).into_iter().collect();
            let set = ChangeSet {
                collections: [("accounts".to_owned(), CollectionChanges { upserts, deletes: vec![] })].into(),
            };
            let t1 = Instant::now();
            models.commit(&key, &set, checkpoint, read_to).await?;
            timed += t1.elapsed();
            checkpoint = read_to;
            staged_events = 0;
        }
    }
    models.close().await;
    Ok(head as f64 / timed.as_secs_f64())
}

/// account-summary compiled into this binary, for the engine to run in
/// place of the component.
struct NativeAccountSummary;

impl NativeProjection for NativeAccountSummary {
    fn handle(
        &self,
        events: &[Event],
        get: &mut dyn FnMut(&str, &str) -> Result<Option<String>, String>,
    ) -> Result<Vec<Change>, NativeFailure> {
        project(events, &mut |collection, id| get(collection, id).map_err(anyhow::Error::msg)).map_err(|e| {
            NativeFailure { position: events.first().map_or(0, |e| e.position), message: format!("{e:#}") }
        })
    }
}

/// account-summary's logic, natively: decode, read-modify-write through a
/// batch overlay (as the SDK's `Context` does) over `get`, one upsert per
/// event.
fn project(events: &[Event], get: &mut dyn FnMut(&str, &str) -> Result<Option<String>>) -> Result<Vec<Change>> {
    let mut overlay: HashMap<String, String> = HashMap::new();
    let mut changes = Vec::with_capacity(events.len());
    for event in events {
        let change = match event.event_type.as_str() {
            "AccountOpened" => Op::Opened(serde_json::from_str(&event.payload)?),
            "MoneyDeposited" => Op::Deposited(serde_json::from_str::<Amount>(&event.payload)?.amount),
            "MoneyWithdrawn" => Op::Withdrawn(serde_json::from_str::<Amount>(&event.payload)?.amount),
            "AccountClosed" => Op::Closed,
            _ => continue,
        };
        let current = match overlay.get(&event.stream_id) {
            Some(body) => Some(body.clone()),
            None => get("accounts", &event.stream_id)?,
        };
        let mut account: Account = match current {
            Some(body) => serde_json::from_str(&body)?,
            None => Account::default(),
        };
        match change {
            Op::Opened(opened) => {
                account.owner = opened.owner;
                account.balance += opened.initial_deposit;
                account.opened_at = event.timestamp;
            }
            Op::Deposited(amount) => {
                account.balance += amount;
                account.transactions += 1;
            }
            Op::Withdrawn(amount) => {
                account.balance -= amount;
                account.transactions += 1;
            }
            Op::Closed => account.status = Status::Closed,
        }
        account.last_activity = event.timestamp;
        let body = serde_json::to_string(&account)?;
        overlay.insert(event.stream_id.clone(), body.clone());
        changes.push(Change::Upsert { collection: "accounts".into(), id: event.stream_id.clone(), body });
    }
    Ok(changes)
}

#[derive(Default, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
    transactions: u64,
    status: Status,
    opened_at: u64,
    last_activity: u64,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    #[default]
    Open,
    Closed,
}

#[derive(Deserialize)]
struct AccountOpened {
    owner: String,
    #[serde(default)]
    initial_deposit: i64,
}

#[derive(Deserialize)]
struct Amount {
    amount: i64,
}

enum Op {
    Opened(AccountOpened),
    Deposited(i64),
    Withdrawn(i64),
    Closed,
}

/// The plugin's own manifest, so the native runs write the same tables and indexes.
fn manifest_of(plugin_path: &Path) -> Result<Manifest> {
    let runtime = PluginRuntime::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let plugin: Plugin = runtime.load(plugin_path)?;
    Ok(plugin.manifest().clone())
}

/// The WASM and native runs must produce the same documents.
async fn compare_models(wasm: &Path, native: &Path, accounts: usize) -> Result<()> {
    let a = SqliteReadModelStore::open(&DataDir(wasm.to_owned()).models()).await?;
    let b = SqliteReadModelStore::open(&DataDir(native.to_owned()).models()).await?;
    let key_b = b.projection("account-summary").await?.key;
    for i in (0..accounts).step_by((accounts / 200).max(1)) {
        let id = format!("account-{i}");
        let x = a.get_document("account-summary", "accounts", &id).await?;
        let y = b.get(&key_b, "accounts", &id).await?;
        if x != y {
            bail!("WASM and native documents differ for {id}: {x:?} vs {y:?}");
        }
    }
    a.close().await;
    b.close().await;
    Ok(())
}

fn event_store_path(args: &Args, n: usize) -> PathBuf {
    args.work_dir.join(format!("events-{n}-{}.db", args.accounts))
}

/// An event store of `n` bank events, generated once and reused.
async fn event_store(args: &Args, n: usize) -> Result<Arc<SqliteEventStore>> {
    let path = event_store_path(args, n);
    let done = path.with_extension("done");
    if !done.exists() {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("db-wal"));
        eprintln!("generating {n} events into {} ...", path.display());
        let store = SqliteEventStore::open(&path).await?;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: u64| {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
        };
        let accounts = args.accounts.min(n);
        let mut requests = Vec::with_capacity(10_000);
        for i in 0..n {
            let (stream, event_type, payload) = if i < accounts {
                let p = format!(r#"{{"owner":"owner-{}","initial_deposit":{}"#, i % 37, (i % 5) * 100);
                (format!("account-{i}"), "AccountOpened", p)
            } else {
                let kind = if next(3) == 0 { "MoneyWithdrawn" } else { "MoneyDeposited" };
                (format!("account-{}", next(accounts as u64)), kind, format!(r#"{{"amount":{}"#, 1 + next(500)))
            };
            requests.push(AppendRequest {
                stream_id: stream,
                expected: ExpectedVersion::Any,
                events: vec![NewEvent::new(event_type, pad(payload))],
            });
            if requests.len() == 10_000 {
                store.append(&requests).await?;
                requests.clear();
            }
        }
        if !requests.is_empty() {
            store.append(&requests).await?;
        }
        store.close().await;
        std::fs::write(&done, "")?;
    }
    Ok(Arc::new(SqliteEventStore::open(&path).await.context("open the event store")?))
}

/// Closes a JSON object with a `note` that brings it to 200 bytes.
fn pad(mut open: String) -> String {
    let room = 200usize.saturating_sub(open.len() + r#","note":""}"#.len());
    open.push_str(r#","note":""#);
    open.extend(std::iter::repeat_n('x', room));
    open.push_str(r#""}"#);
    open
}

/// The median; NaN for a column that was skipped.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = status_file_kib("/proc/meminfo", "MemTotal:") / 1024 / 1024;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} cores, {mem} GiB RAM, load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

fn status_file_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
