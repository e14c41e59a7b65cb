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

/// `refract dev`'s interpreter for a language (`target/polyglot/interpreter-<suffix>.wasm`)
/// with `files` appended, as `refract dev` writes it, at `dir/<name>.wasm`.
fn interpreted(suffix: &str, dir: &std::path::Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let interpreter = std::fs::read(polyglot(&format!("interpreter-{suffix}.wasm"))).unwrap();
    let files: Vec<(String, String)> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, refract::with_source(&interpreter, &files)).unwrap();
    path
}

/// A language's interpreter, as `refract dev` runs a project on every save.
struct InterpreterCase {
    /// `py` or `js`: the interpreter's file and the account-summary port's.
    suffix: &'static str,
    /// The project's entry file.
    entry: &'static str,
    /// The account-summary port's source, with its name edited to come from
    /// a module of the project, and that module: (edited entry, module path, module).
    edit: fn(&str) -> (String, &'static str, &'static str),
    /// Sources that must be refused at load time: (case, entry file, what
    /// the load error repeats of what the interpreter logged).
    broken: [(&'static str, &'static str, &'static str); 3],
}

/// A project run by an interpreter, as `refract dev` runs a Python or JS
/// project on every save: it writes the same documents as the component
/// built from the same source; an edit is a new module (a new generation)
/// that reuses the interpreter's compiled code; a project of several files
/// imports its own modules; and a broken source, one that imports what the
/// interpreter lacks, or a bundle that is not one, is refused at load time.
async fn an_interpreter_runs_a_projects_source_like_its_built_component(case: InterpreterCase) {
    let suffix = case.suffix;
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(200, 3_000, 11);
    append_all(stores.events.as_ref(), &events).await;
    let expected = expected_accounts(&events);
    let lang = if suffix == "py" { "python" } else { "js" };
    let source = format!("plugins/{lang}/account-summary/{}", case.entry);
    let app = std::fs::read_to_string(root().join(source)).unwrap();
    let name = format!("account-summary-{suffix}");

    let cache = ModuleCache::new(dir.path().join("cache"));
    let mut host = stores.host(SyncConfig::default()).with_module_cache(cache).with_tiering(Tiering::Off);
    let first = host.runtime().load(&interpreted(suffix, dir.path(), "first", &[(case.entry, &app)])).unwrap();
    assert_eq!(first.manifest().name, name);
    assert_eq!(first.manifest().version, "1.0.0");
    assert_eq!(first.manifest().collections[0].search, ["owner"]);
    assert!(!first.cached(), "the interpreter's first load compiles it");

    // The edit `refract dev` would hand over: the same code, new source, so
    // a new module hash but the compiled interpreter from the cache.
    let (edited, module, module_text) = (case.edit)(&app);
    assert_ne!(edited, app, "the edit applies");
    let files = [(case.entry, edited.as_str()), (module, module_text)];
    let second = host.runtime().load(&interpreted(suffix, dir.path(), "second", &files)).unwrap();
    assert_eq!(second.manifest().name, "account-summary-edited");
    assert!(second.cached(), "an edit reuses the interpreter's compiled code");
    assert_ne!(second.hash(), first.hash(), "an edit is a new module, so a new generation");

    // Broken sources are refused when loaded, while describing.
    let runtime = host.runtime();
    for (what, text, logged) in case.broken {
        let e = runtime.load(&interpreted(suffix, dir.path(), what, &[(case.entry, text)])).unwrap_err();
        assert_eq!(e.kind(), "trap", "{what}: {e}");
        let e = e.to_string();
        assert!(e.contains("in describe") && e.contains(&format!("it logged: {logged}")), "{what}: {e}");
        assert!(!e.contains("/work/") && !e.contains("/tmp/"), "{what}: a host path leaked: {e}");
    }
    let e = runtime.load(&interpreted(suffix, dir.path(), "no-entry", &[("other.txt", "")])).unwrap_err();
    assert_eq!(e.kind(), "trap", "no entry file: {e}");
    // A section that is not a bundle is refused before anything runs.
    let mut bad = std::fs::read(polyglot(&format!("interpreter-{suffix}.wasm"))).unwrap();
    let section = refract::SOURCE_SECTION.as_bytes();
    let body = b"not json";
    bad.extend_from_slice(&[0, (1 + section.len() + body.len()) as u8, section.len() as u8]);
    bad.extend_from_slice(section);
    bad.extend_from_slice(body);
    let path = dir.path().join("bad.wasm");
    std::fs::write(&path, bad).unwrap();
    let e = runtime.load(&path).unwrap_err();
    assert_eq!(e.kind(), "invalid component", "{e}");
    assert!(e.to_string().contains("not a JSON array of [path, text] pairs"), "{e}");

    host.start(first).await.unwrap();
    host.start(second).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;
    let models = stores.models_dyn();
    for name in [name.as_str(), "account-summary-edited"] {
        let docs = all_documents(models.as_ref(), name, "accounts").await;
        assert_eq!(docs.len(), expected.len(), "{name}");
        for (id, want) in &expected {
            assert_eq!(docs[id]["balance"].as_i64(), Some(want.balance), "{name}: balance of {id}");
            assert_eq!(docs[id]["transactions"].as_u64(), Some(want.transactions), "{name}: transactions of {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_interpreter_runs_a_projects_source_like_its_built_component() {
    an_interpreter_runs_a_projects_source_like_its_built_component(InterpreterCase {
        suffix: "py",
        entry: "app.py",
        edit: |app| {
            let edited = app
                .replace("\"account-summary-py\",", "rules.name(),")
                .replace("import refract\n", "import refract\nimport rules\n");
            (edited, "rules.py", "def name():\n    return 'account-summary-edited'\n")
        },
        broken: [
            ("syntax", "import refract\ndef handle(:\n", "SyntaxError: invalid syntax (app.py, line 2)"),
            (
                "missing-module",
                "import refract\nimport sqlite3\n",
                "ModuleNotFoundError: No module named 'sqlite3' in refract dev's interpreter",
            ),
            ("no-projection", "import refract\n", "RuntimeError: app.py defines no `Projection`"),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_interpreter_runs_a_projects_source_like_its_built_component() {
    an_interpreter_runs_a_projects_source_like_its_built_component(InterpreterCase {
        suffix: "js",
        entry: "app.js",
        edit: |app| {
            let edited = app.replace("\"account-summary-js\",", "name(variant),").replace(
                "from \"../sdk/refract.js\";\n",
                "from \"../sdk/refract.js\";\nimport { name, variant } from \"./lib/rules.js\";\n",
            );
            // The second of two declarators is exported too.
            let rules = "export const base = \"account-summary\", variant = \"edited\";\n\
                         export function name(v) {\n  return `${base}-${v}`;\n}\n";
            (edited, "lib/rules.js", rules)
        },
        broken: [
            ("syntax", "export const projection = {\n", "SyntaxError: app.js:"),
            (
                "missing-module",
                "import _ from \"lodash\";\n",
                "Error: app.js: cannot import \"lodash\" in refract dev's interpreter",
            ),
            ("no-projection", "export const other = 1;\n", "Error: app.js exports no `projection`"),
        ],
    })
    .await;
}
