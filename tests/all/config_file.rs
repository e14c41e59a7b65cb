//! One config file for every flag: `[host]` in `refract.toml`, with
//! precedence flag > env > file > default, as `refract config` reports it
//! and as `refract run` applies it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::cli::{output, succeed};
use crate::common::http::{Client, listening_addr};

/// `refract` run in `dir`, with no REFRACT_* variable from the test's own environment.
fn refract_in(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
    cmd.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REFRACT_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `refract [ARGS] config --json [FLAGS]`: the file, and key → (value, origin).
fn effective_with(cmd: &mut Command, flags: &[&str]) -> (Value, BTreeMap<String, (Value, String)>) {
    let json: Value = serde_json::from_str(&succeed(cmd.arg("config").arg("--json").args(flags))).unwrap();
    let settings = json["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = s["key"].as_str().unwrap().to_owned();
            (key, (s["value"].clone(), s["origin"].as_str().unwrap().to_owned()))
        })
        .collect();
    (json["file"].clone(), settings)
}

fn effective(cmd: &mut Command) -> (Value, BTreeMap<String, (Value, String)>) {
    effective_with(cmd, &[])
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("refract.toml"),
        "[host]\nbatch_size = 500\npoll_ms = 20\ncommit_events = 7\nplugins = \"projections\"\n\
         cors_origins = [\"https://a.example\", \"https://b.example\"]\n",
    )
    .unwrap();
    let (file, s) = effective(refract_in(dir.path()).env("REFRACT_POLL_MS", "30").env("REFRACT_COMMIT_EVENTS", "8"));
    assert_eq!(file, "refract.toml");
    let at = |key: &str| s.get(key).unwrap_or_else(|| panic!("no `{key}` in {s:?}")).clone();
    // Only in the file.
    assert_eq!(at("batch_size"), ("500".into(), "file refract.toml".into()));
    assert_eq!(at("plugins"), ("projections".into(), "file refract.toml".into()));
    assert_eq!(at("cors_origins"), ("https://a.example,https://b.example".into(), "file refract.toml".into()));
    // The environment beats the file.
    assert_eq!(at("poll_ms"), ("30".into(), "env REFRACT_POLL_MS".into()));
    // Nowhere: the built-in default.
    assert_eq!(at("commit_interval_ms"), ("250".into(), "default".into()));
    assert_eq!(at("data_dir"), ("data".into(), "default".into()));
    assert_eq!(at("interval_ms"), (Value::Null, "default".into()));

    // A flag beats the environment and the file.
    let (_, s) = effective_with(refract_in(dir.path()).env("REFRACT_COMMIT_EVENTS", "8"), &["--commit-events=9"]);
    assert_eq!(s["commit_events"], ("9".into(), "flag --commit-events".into()));
    let (_, s) = effective(refract_in(dir.path()).env("REFRACT_COMMIT_EVENTS", "8"));
    assert_eq!(s["commit_events"], ("8".into(), "env REFRACT_COMMIT_EVENTS".into()));
}

#[test]
fn a_named_file_is_read_and_its_paths_are_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/host.toml"), "[host]\ndata_dir = \"state\"\nlease_ttl_ms = 3000\n").unwrap();
    let (file, s) = effective(refract_in(dir.path()).args(["--config", "etc/host.toml"]));
    assert_eq!(file, "etc/host.toml");
    assert_eq!(s["data_dir"], ("etc/state".into(), "file etc/host.toml".into()));
    assert_eq!(s["lease_ttl_ms"], ("3000".into(), "file etc/host.toml".into()));
    // The same through the variable.
    let (file, _) = effective(refract_in(dir.path()).env("REFRACT_CONFIG", "etc/host.toml"));
    assert_eq!(file, "etc/host.toml");
    // No file at all.
    let empty = tempfile::tempdir().unwrap();
    let (file, s) = effective(&mut refract_in(empty.path()));
    assert_eq!(file, Value::Null);
    assert_eq!(s["batch_size"], ("1000".into(), "default".into()));
}

#[test]
fn mistakes_in_the_file_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[host]\nbatch_sise = 5\n",
            "refract.toml: unknown key `batch_sise` in [host]; the keys are: data_dir, events, store, plugins, batch_size",
        ),
        ("[host]\npoll_ms = \"soon\"\n", "refract.toml: [host] poll_ms: invalid value 'soon' for '--poll-ms"),
        ("[host]\nhttp = \"localhost\"\n", "refract.toml: [host] http: invalid value 'localhost' for '--http"),
        ("[host]\nno_http = \"yes\"\n", "refract.toml: [host] no_http must be true or false"),
        ("[host\n", "refract.toml: TOML parse error at line 1"),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.path().join("refract.toml"), text).unwrap();
        // Every command reads the file, not only `run`: a mistake is found at once.
        for args in [&["config"][..], &["status"], &["run", "--exit-when-caught-up"]] {
            let out = output(refract_in(dir.path()).args(args));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} with {text:?}: {stderr}");
            assert!(stderr.starts_with(&format!("error: {expected}")), "{args:?} with {text:?}:\n{stderr}");
        }
    }
    // Nothing was created by the refused runs.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn run_takes_its_settings_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A plugins folder under a name that is not the default.
    let plugins = crate::common::plugins_dir(dir.path(), &["account_summary"]);
    std::fs::rename(&plugins, dir.path().join("projections")).unwrap();
    // The file sets the plugins folder, the data dir and no HTTP; the flag
    // --http then beats the file's no_http.
    std::fs::write(
        dir.path().join("refract.toml"),
        "[host]\nplugins = \"projections\"\ndata_dir = \"d\"\nno_http = true\nbatch_size = 1\n\n[defaults]\nretries = 0\n",
    )
    .unwrap();
    succeed(refract_in(dir.path()).args(["append", "account-1", "AccountOpened", r#"{"owner":"ada"}"#]));
    assert!(dir.path().join("d/events.db").exists(), "data_dir from the file");
    let mut host = refract_in(dir.path())
        .args(["run", "--http", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut host);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let doc = runtime.block_on(async {
        let mut client = Client::connect(addr).await;
        client.get("/projections/account-summary/accounts/account-1?min_position=1&timeout_ms=30000").await.json()
    });
    host.kill().unwrap();
    host.wait().unwrap();
    assert_eq!(doc["document"]["owner"], "ada", "{doc}");
}

#[test]
fn the_readme_reference_lists_every_setting() {
    let readme = std::fs::read_to_string(crate::common::root().join("README.md")).unwrap();
    let section = readme.split("## Configuration reference").nth(1).expect("the README has a Configuration reference");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.starts_with("| `") && !l.starts_with("| `[host]`"))
        .map(|l| l.split('|').map(|c| c.trim().trim_matches('`').to_owned()).collect())
        .collect();
    let empty = tempfile::tempdir().unwrap();
    let (_, settings) = effective(&mut refract_in(empty.path()));
    let documented: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    let actual: Vec<&str> = settings.keys().map(String::as_str).collect();
    let mut sorted = documented.clone();
    sorted.sort();
    assert_eq!(sorted, actual, "README keys vs `refract config`");
    let help = succeed(refract_in(empty.path()).args(["run", "--help"]));
    for row in &rows {
        let (flag, env) = (&row[2], &row[3]);
        assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "{flag} in --help");
        assert!(help.contains(&format!("[env: {env}=")), "{env} of {flag} in --help");
    }
}
