//! The dev loop's waits, for BENCHMARKS.md: in a folder made by `refract
//! new` per language, with the repository's account-summary source in the
//! project and 10,000 bank events imported, how long `refract dev` takes
//! until the read model is at the head (first build, first load), and how
//! long from saving an edit until the new generation serves at the head
//! (build, load, rebuild from position 0, swap): for a save as soon as the
//! first generation serves, and for a later one, once the optimized code is
//! ready.
//!
//! `cargo test --release -p refract --test all -- --ignored --nocapture dev_loop_bench`

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, bank_events, write_jsonl};
use crate::scaffold::{Dev, refract};

const EVENTS: usize = 10_000;
const DEADLINE: Duration = Duration::from_secs(600);

/// The generation of `projection` serving at `head`, if one is.
fn serving(dir: &Path, projection: &str, head: u64) -> Option<u64> {
    let out = refract(dir).args(["status", "--json"]).output().ok()?;
    let rows: Value = serde_json::from_slice(&out.stdout).ok()?;
    rows.as_array()?
        .iter()
        .find(|r| r["name"] == projection && r["role"] == "active" && r["checkpoint"] == head)
        .and_then(|r| r["generation"].as_u64())
}

/// Waits until generation `generation` of `projection` is swapped in: it
/// reached the head. Read from the log, so that the wait itself does not
/// start a process every few milliseconds beside what it measures.
fn wait_swapped(dev: &mut Dev, projection: &str, generation: u64) -> Duration {
    let started = Instant::now();
    let line = format!("projection={projection} generation={generation} ");
    loop {
        if dev.log().lines().any(|l| l.contains("new generation swapped in") && l.contains(&line)) {
            return started.elapsed();
        }
        dev.check();
        assert!(started.elapsed() < DEADLINE, "{projection} generation {generation} never swapped in:\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Saves `path` with its manifest version `from` replaced by `to`.
fn bump(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{} names its version once", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Waits until generation `at_least` (or later) of `projection` serves at the head.
fn wait_serving(dev: &mut Dev, dir: &Path, projection: &str, at_least: u64) -> Duration {
    let started = Instant::now();
    loop {
        if serving(dir, projection, EVENTS as u64).is_some_and(|g| g >= at_least) {
            return started.elapsed();
        }
        dev.check();
        assert!(started.elapsed() < DEADLINE, "{projection} generation {at_least} never served:\n{}", dev.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "benchmark; run by hand"]
fn dev_loop_first_load_and_edit_to_visible_per_language() {
    let root = common::root();
    // (language, projection, the repository's source, the project's file)
    let builds = [
        ("rust", "account-summary", "plugins/account-summary/src/lib.rs", "src/lib.rs"),
        ("python", "account-summary-py", "plugins/python/account-summary/app.py", "app.py"),
        ("js", "account-summary-js", "plugins/js/account-summary/app.js", "app.js"),
    ];
    for (lang, projection, source, file) in builds {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let created = refract(dir).args(["new", "account-summary", "--lang", lang]).output().unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let project = match lang {
            "rust" => dir.join("plugins/account-summary"),
            _ => dir.join("plugins").join(lang).join("account-summary"),
        };
        std::fs::copy(root.join(source), project.join(file)).unwrap();
        match lang {
            "rust" => {
                let manifest = project.join("Cargo.toml");
                let text = std::fs::read_to_string(&manifest).unwrap();
                let text = text.replace("[dependencies]\n", "[dependencies]\nserde_json = \"1\"\n");
                std::fs::write(&manifest, text).unwrap();
            }
            "js" => {
                std::os::unix::fs::symlink(root.join("plugins/js/node_modules"), dir.join("plugins/js/node_modules"))
                    .unwrap()
            }
            _ => {}
        }
        write_jsonl(&dir.join("events.jsonl"), &bank_events(500, EVENTS, 7));
        let imported = refract(dir).args(["import", "events.jsonl"]).output().unwrap();
        assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));

        let mut dev = Dev::start(dir);
        let first = wait_serving(&mut dev, dir, projection, 1);

        // The edit: a new version in the manifest (a comment would leave a
        // Rust module unchanged, and an unchanged module is not reloaded),
        // saved as soon as the first generation serves: a Python or JS
        // interpreter then still runs baseline code.
        let path = project.join(file);
        bump(&path, "\"1.0.0\"", "\"1.0.1\"");
        let edit = wait_swapped(&mut dev, projection, 2);
        // The usual save comes later, once the optimized code is ready
        // (a Rust module is optimized before it runs).
        let waiting = Instant::now();
        if lang != "rust" {
            while !dev.log().contains("optimized code ready") {
                dev.check();
                assert!(waiting.elapsed() < DEADLINE, "no optimized code:\n{}", dev.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        bump(&path, "\"1.0.1\"", "\"1.0.2\"");
        let later = wait_swapped(&mut dev, projection, 3);
        let log = dev.log();
        for line in log.lines().filter(|l| {
            ["building plugin", "plugin built", "plugin loaded", "swapped in", "optimized code ready"]
                .iter()
                .any(|k| l.contains(k))
        }) {
            eprintln!("    {}", line.chars().take(160).collect::<String>());
        }
        let built = log.lines().filter(|l| l.contains("plugin built")).last().unwrap_or("").to_owned();
        eprintln!(
            "{lang:6} first visible {:>6.2} s  edit -> visible {:>6.2} s  later edit -> visible {:>6.2} s  last build: {}",
            first.as_secs_f64(),
            edit.as_secs_f64(),
            later.as_secs_f64(),
            built.split_once("plugin built").map_or("", |(_, rest)| rest.trim())
        );
    }
}
