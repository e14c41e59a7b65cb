//! The README's dev loop on a fresh scaffold, per language, with the built
//! `refract` binary in an empty folder (not this checkout): `refract new
//! demo-<lang> --lang <lang>`, then `refract dev`, then `refract import` of the
//! scaffold's `events.jsonl` from another process, until `refract query` shows
//! exactly the two counters the events make. Nothing is edited in between.
//!
//! The tools come from the installs `scripts/build-polyglot` makes (scripts/test
//! runs it first), as a user outside this checkout would point at them:
//!
//! - Python: this checkout's `.tools/venv/bin` first on `PATH`, where `refract
//!   dev` finds `componentize-py`.
//! - JS: `plugins/js/node_modules` symlinked to this checkout's. Node resolves
//!   ES module imports only through `node_modules` folders above the
//!   importing file (`NODE_PATH` is ignored for them), so this stands in for
//!   the `npm install` a user runs.
//! - Rust: `CARGO_TARGET_DIR` is `target/scaffold-e2e` in this checkout, kept
//!   between runs, so only the first run compiles wit-bindgen and serde for the
//!   scaffold (a minute or two on 2 cores). Not the workspace's own `target/`:
//!   the scaffold is a workspace of its own, with its own lock and profile, so
//!   it would share nothing with it and would wait on the lock of the `cargo
//!   test` that runs this.

use crate::common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A first Python or JS build takes 15-30 s and its first load compiles the
/// 12-18 MB component for 10-30 s; on the shared 2 cores, with the other
/// languages building at once, several times that.
const DEADLINE: Duration = Duration::from_secs(480);

/// The `refract` binary under test.
pub(crate) fn refract(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refract"));
    command.current_dir(dir);
    // The README's commands rely on the defaults (./data, ./plugins).
    for var in ["REFRACT_DATA_DIR", "REFRACT_PLUGINS_DIR", "REFRACT_HTTP", "REFRACT_EVENTS", "REFRACT_STORE"] {
        command.env_remove(var);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let venv = common::root().join(".tools/venv/bin");
    let path = std::env::join_paths(std::iter::once(venv).chain(std::env::split_paths(&path))).unwrap();
    command.env("PATH", path).env("CARGO_TARGET_DIR", common::root().join("target/scaffold-e2e"));
    command
}

/// Runs a short `refract` command; its stdout, or the failure with stderr.
fn run(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = refract(dir).args(args).stdin(Stdio::null()).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) }
}

/// `refract dev`, killed when dropped (also when the test fails), with its
/// log collected for the failure message.
pub(crate) struct Dev(common::cli::Background);

impl Dev {
    pub(crate) fn start(dir: &Path) -> Dev {
        // The README's `refract dev`; no HTTP, so parallel tests (and other
        // hosts on this machine) do not fight over port 7878.
        Dev(common::cli::Background::spawn(
            refract(dir)
                .args(["dev", "--no-http"])
                // Its own process group, so that the builds it started die with it.
                .process_group(0)
                .stdin(Stdio::null()),
        ))
    }

    pub(crate) fn log(&self) -> String {
        self.0.log()
    }

    /// Panics with the log if the host exited or a build failed: no point
    /// waiting out the deadline then.
    pub(crate) fn check(&mut self) {
        if let Some(status) = self.0.child.try_wait().unwrap() {
            panic!("refract dev exited ({status}):\n{}", self.log());
        }
        let log = self.log();
        if let Some(line) = log.lines().find(|l| l.contains("ERROR")) {
            panic!("refract dev reported an error: {line}\nfull log:\n{log}");
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // The whole group: a cargo or componentize-py still building must not outlive the test.
        let group = format!("-{}", self.0.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

/// The read model as `refract query --lines` prints it: id to document.
fn documents(dir: &Path, projection: &str) -> Option<Vec<(String, Value)>> {
    let out = run(dir, &["query", projection, "counters", "--lines"]).ok()?;
    out.lines()
        .map(|line| {
            let (id, doc) = line.split_once('\t')?;
            Some((id.to_owned(), serde_json::from_str(doc).ok()?))
        })
        .collect()
}

/// counter-1: 2 + 3, counter-2: 10 (the scaffold's events.jsonl).
fn expected_counters() -> Vec<(String, Value)> {
    vec![("counter-1".to_owned(), json!({"value": 5})), ("counter-2".to_owned(), json!({"value": 10}))]
}

/// Waits until `projection` holds the scaffold's counters.
fn wait_for_counters(dev: &mut Dev, dir: &Path, projection: &str, started: Instant) {
    let expected = expected_counters();
    loop {
        let docs = documents(dir, projection);
        if docs.as_ref() == Some(&expected) {
            return;
        }
        dev.check();
        assert!(
            started.elapsed() < DEADLINE,
            "{projection} never held {expected:?}; last read {docs:?}\nrefract dev log:\n{}",
            dev.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the log holds `n` lines with all of `needles`.
fn wait_for_lines(dev: &mut Dev, needles: &[&str], n: usize, started: Instant) {
    let count = |log: &str| log.lines().filter(|l| needles.iter().all(|s| l.contains(s))).count();
    while count(&dev.log()) < n {
        dev.check();
        assert!(started.elapsed() < DEADLINE, "no {n} lines with {needles:?}:\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Links this checkout's JS build tools into the scaffold in `dir`, as the
/// `npm install` a user runs would install them.
fn link_js_tools(dir: &Path) {
    let tools = common::root().join("plugins/js/node_modules");
    assert!(tools.is_dir(), "{} is missing: run scripts/build-polyglot", tools.display());
    std::os::unix::fs::symlink(tools, dir.join("plugins/js/node_modules")).unwrap();
}

/// `refract dev` in `dir`, fed the scaffold's `events.jsonl` of `project`
/// once it is up, until `projection` holds the counters they make.
fn dev_on_scaffold_events(dir: &Path, project: &Path, projection: &str, started: Instant) -> Dev {
    let mut dev = Dev::start(dir);
    // "In another terminal", once the host is up: both create the stores.
    while !dev.log().contains("host running") {
        dev.check();
        assert!(started.elapsed() < DEADLINE, "refract dev did not start:\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    run(dir, &["import", project.join("events.jsonl").to_str().unwrap()]).unwrap();
    wait_for_counters(&mut dev, dir, projection, started);
    dev
}

fn new_then_dev(lang: &str) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let name = format!("demo-{lang}");
    let created = run(dir, &["new", &name, "--lang", lang]).unwrap_or_else(|e| panic!("refract new failed: {e}"));
    let project: PathBuf = match lang {
        "rust" => PathBuf::from("plugins").join(&name),
        _ => PathBuf::from("plugins").join(lang).join(&name),
    };
    assert!(created.contains(&format!("refract import {}", project.join("events.jsonl").display())), "{created}");
    if lang == "js" {
        link_js_tools(dir);
    }
    let _dev = dev_on_scaffold_events(dir, &project, &name, started);
    let get = run(dir, &["get", &name, "counters", "counter-1"]).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&get).unwrap(), json!({"value": 5}));
    eprintln!("{name}: scaffolded, built, loaded and projected in {:.1?}", started.elapsed());
}

#[test]
fn rust_scaffold_projects_its_events_under_refract_dev() {
    new_then_dev("rust");
}

#[test]
fn python_scaffold_projects_its_events_under_refract_dev() {
    new_then_dev("python");
}

#[test]
fn js_scaffold_projects_its_events_under_refract_dev() {
    new_then_dev("js");
}

/// `refract dev` keeps up with the project folder while it runs: a project
/// made by `refract new` meanwhile is built and loaded without a restart, a
/// fresh crate is built once (not again for the `Cargo.lock` its first build
/// writes), and a change to the shared `sdk/` rebuilds every Rust project.
#[test]
fn refract_dev_picks_up_new_projects_and_sdk_changes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run(dir, &["new", "first"]).unwrap();
    let mut dev = Dev::start(dir);
    wait_for_lines(&mut dev, &["plugin built", "first"], 1, started);
    wait_for_lines(&mut dev, &["host running"], 1, started);

    run(dir, &["new", "second"]).unwrap();
    wait_for_lines(&mut dev, &["new plugin project", "plugins/second"], 1, started);
    run(dir, &["import", "plugins/second/events.jsonl"]).unwrap();
    wait_for_counters(&mut dev, dir, "second", started);
    // Both the same name in another language and a name taken are refused.
    let refused = run(dir, &["new", "second", "--lang", "python"]).unwrap_err();
    assert!(refused.contains("`second` is already the name of a Rust project at plugins/second"), "{refused}");

    // By now `first` has been built long ago, with its lock written: once.
    let builds = |log: &str, project: &str| {
        log.lines().filter(|l| l.contains("building plugin") && l.contains(&format!("plugins/{project}"))).count()
    };
    assert_eq!(builds(&dev.log(), "first"), 1, "{}", dev.log());
    assert_eq!(builds(&dev.log(), "second"), 1, "{}", dev.log());

    let sdk = dir.join("sdk/src/lib.rs");
    let mut text = std::fs::read_to_string(&sdk).unwrap();
    text.push_str("\n// edited\n");
    std::fs::write(&sdk, text).unwrap();
    wait_for_lines(&mut dev, &["building plugin", "plugins/first"], 2, started);
    wait_for_lines(&mut dev, &["building plugin", "plugins/second"], 2, started);
}

/// A JS project whose tools were never installed (no `node_modules`
/// anywhere above it) says where to run `npm install`, instead of node's
/// raw `ERR_MODULE_NOT_FOUND`; the host keeps running. No network: the
/// check is made before npm or node is started.
#[test]
fn a_js_project_without_node_modules_says_to_run_npm_install() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run(dir, &["new", "no-tools", "--lang", "js"]).unwrap();
    assert!(!dir.join("plugins/js/node_modules").exists());
    let mut dev = Dev(common::cli::Background::spawn(
        refract(dir).args(["dev", "--no-http"]).process_group(0).stdin(Stdio::null()),
    ));
    let (project, tools) = (dir.join("plugins/js/no-tools"), dir.join("plugins/js"));
    let expected = format!(
        "the JS build tools are not installed for {}: run `npm install` in {}",
        project.display(),
        tools.display()
    );
    // Not `wait_for_lines`: its check fails on the very error expected here.
    while !(dev.log().contains(&expected) && dev.log().contains("host running")) {
        assert!(dev.0.child.try_wait().unwrap().is_none(), "refract dev exited:\n{}", dev.log());
        assert!(started.elapsed() < DEADLINE, "no `{expected}` in:\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!dev.log().contains("ERR_MODULE_NOT_FOUND"), "{}", dev.log());
}

/// The `counters` documents of `projection`, once they are `want`; panics
/// with the log past the deadline or if `refract dev` exits. Errors in the
/// log are expected here (a broken save), so they do not end the wait.
fn wait_for_documents(dev: &mut Dev, dir: &Path, projection: &str, want: &[(String, Value)], started: Instant) {
    loop {
        let docs = documents(dir, projection);
        if docs.as_deref() == Some(want) {
            return;
        }
        if let Some(status) = dev.0.child.try_wait().unwrap() {
            panic!("refract dev exited ({status}):\n{}", dev.log());
        }
        assert!(started.elapsed() < DEADLINE, "{projection} never held {want:?}; last read {docs:?}\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One language's edits for [`saves_run_in_the_interpreter_without_a_build`].
struct Saves {
    lang: &'static str,
    entry: &'static str,
    /// The scaffold's entry with counters scaled by a module of the project.
    scale: fn(&str) -> String,
    /// That module, with the factor given.
    module: (&'static str, fn(i64) -> String),
    /// The line of the scaffold to break (unclosed), and what breaks it.
    breaks: (&'static str, &'static str),
    /// How the log names the broken line (`{line}` is its number).
    reported: &'static str,
}

/// `refract dev` runs a Python or JS project in its interpreter: the first
/// build makes the interpreter once, and every later save only writes the
/// plugin (the interpreter with the project's files), which the host loads
/// as a new generation without a build. A save that breaks the project is
/// reported, naming the file and line, and the last good generation keeps
/// serving until the next good save.
fn saves_run_in_the_interpreter_without_a_build(saves: Saves) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let lang = saves.lang;
    let name = format!("saves-{lang}");
    run(dir, &["new", &name, "--lang", lang]).unwrap_or_else(|e| panic!("refract new failed: {e}"));
    if lang == "js" {
        link_js_tools(dir);
    }
    let project = dir.join("plugins").join(lang).join(&name);
    let app = project.join(saves.entry);
    let mut dev = dev_on_scaffold_events(dir, &project, &name, started);

    // A save: counters count ten times what they were given, through a
    // module of the project's own.
    let original = std::fs::read_to_string(&app).unwrap();
    let times = |n: i64| {
        vec![("counter-1".to_owned(), json!({"value": 5 * n})), ("counter-2".to_owned(), json!({"value": 10 * n}))]
    };
    let (module, factor) = saves.module;
    std::fs::write(project.join(module), factor(10)).unwrap();
    let edited = (saves.scale)(&original);
    assert_ne!(edited, original);
    std::fs::write(&app, &edited).unwrap();
    wait_for_documents(&mut dev, dir, &name, &times(10), started);
    let builds = |log: &str| log.lines().filter(|l| l.contains("interpreter (once")).count();
    assert_eq!(builds(&dev.log()), 1, "the interpreter is built once:\n{}", dev.log());
    // The plugin is the interpreter with the project's files appended.
    let suffix = if lang == "python" { "py" } else { "js" };
    let plugin = std::fs::read(dir.join(format!("plugins/{name}-{suffix}.wasm"))).unwrap();
    let interpreter = std::fs::read_dir(dir.join(".tools/interpreters")).unwrap().next().unwrap().unwrap().path();
    let interpreter = std::fs::read(interpreter).unwrap();
    assert!(plugin.starts_with(&interpreter), "the plugin starts with the interpreter");
    let tail = String::from_utf8_lossy(&plugin[interpreter.len()..]);
    assert!(tail.contains(refract::SOURCE_SECTION) && tail.contains("FACTOR = 10"), "{tail}");

    // A broken save is reported at its line; the last good model serves on.
    let (line, broken_line) = saves.breaks;
    let broken = edited.replace(line, broken_line);
    assert_ne!(broken, edited);
    std::fs::write(&app, &broken).unwrap();
    let at = broken.lines().position(|l| l == broken_line.trim_end_matches('\n')).unwrap() + 1;
    let reported = saves.reported.replace("{line}", &at.to_string());
    while !dev.log().contains(&reported) {
        assert!(dev.0.child.try_wait().unwrap().is_none(), "refract dev exited:\n{}", dev.log());
        assert!(started.elapsed() < DEADLINE, "no `{reported}` in:\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(documents(dir, &name).as_deref(), Some(&times(10)[..]), "the last good generation serves");

    // The next good save is served again: a module of the project changed.
    std::fs::write(project.join(module), factor(100)).unwrap();
    std::fs::write(&app, &edited).unwrap();
    wait_for_documents(&mut dev, dir, &name, &times(100), started);
    assert_eq!(builds(&dev.log()), 1, "{}", dev.log());
    eprintln!("{name}: three saves served in {:.1?}", started.elapsed());
}

#[test]
fn python_saves_under_refract_dev_run_in_the_interpreter_without_a_build() {
    saves_run_in_the_interpreter_without_a_build(Saves {
        lang: "python",
        entry: "app.py",
        scale: |app| {
            app.replace("import refract\n", "import refract\nimport scale\n")
                .replace("counter[\"value\"] += by", "counter[\"value\"] += by * scale.FACTOR")
        },
        module: ("scale.py", |n| format!("FACTOR = {n}\n")),
        breaks: ("        by = event.payload()[\"by\"]\n", "        by = event.payload()[\"by\"\n"),
        reported: "app.py\", line {line}",
    });
}

#[test]
fn js_saves_under_refract_dev_run_in_the_interpreter_without_a_build() {
    saves_run_in_the_interpreter_without_a_build(Saves {
        lang: "js",
        entry: "app.js",
        scale: |app| {
            app.replace(
                "from \"../sdk/refract.js\";\n",
                "from \"../sdk/refract.js\";\nimport { FACTOR } from \"./scale.js\";\n",
            )
            .replace("counter.value += by;", "counter.value += by * FACTOR;")
        },
        module: ("scale.js", |n| format!("export const FACTOR = {n};\n")),
        breaks: ("    const { by } = event.payload();\n", "    const { by } = event.payload(;\n"),
        reported: "SyntaxError: app.js:{line}:",
    });
}
