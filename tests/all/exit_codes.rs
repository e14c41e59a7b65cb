//! Issue 22, exit codes that gate CI: `refract run --exit-when-caught-up`
//! succeeds only when every plugin loaded and every projection caught up,
//! and otherwise says why in one line.

use std::path::Path;
use std::process::Output;

use crate::common;
use common::cli::{output, refract, succeed};
use common::*;

/// Imports a few bank events into a fresh data dir, then runs the plugins
/// folder to the head.
fn run_to_head(dir: &Path, plugins: &Path) -> Output {
    let data = dir.join("data");
    write_jsonl(&dir.join("bank.jsonl"), &bank_events(5, 40, 3));
    succeed(refract(&data).arg("import").arg(dir.join("bank.jsonl")));
    output(refract(&data).args(["run", "--exit-when-caught-up", "--plugins"]).arg(plugins).env("RUST_LOG", "warn"))
}

/// The `error:` line, which must be the only one.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one summary line:\n{stderr}");
    errors[0].to_owned()
}

#[test]
fn a_clean_run_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["account_summary", "order_summary"]);
    let out = run_to_head(dir.path(), &plugins);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_faulted_projection_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["account_summary_trap", "order_summary"]);
    let out = run_to_head(dir.path(), &plugins);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("1 projection faulted") && line.contains("account-summary:"), "{line}");
    assert!(!line.contains("order-summary"), "only the faulted one is named: {line}");
}

#[test]
fn a_rejected_plugin_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    std::fs::write(plugins.join("broken.wasm"), b"not a component").unwrap();
    let out = run_to_head(dir.path(), &plugins);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("1 plugin rejected") && line.contains("broken.wasm"), "{line}");
    assert!(!line.contains("faulted"), "{line}");
}

#[test]
fn an_empty_plugins_folder_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("README.txt"), "not a plugin").unwrap();
    let out = run_to_head(dir.path(), &plugins);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("no plugins in") && line.contains(&plugins.display().to_string()), "{line}");
}
