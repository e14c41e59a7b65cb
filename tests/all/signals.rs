//! Issue 22, signals: SIGTERM stops `refract run` as cleanly as Ctrl-C, and
//! either signal stops a host that is still starting (compiling its
//! plugins) instead of being ignored until the start-up is over.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use common::cli::{Background, output, refract, succeed};
use common::*;

/// Generous: a host stops within a second or two; a loaded CI machine may be slow.
const STOP_BOUND: Duration = Duration::from_secs(60);

fn status_of(data: &Path, name: &str) -> Value {
    let v: Value = serde_json::from_str(&succeed(refract(data).args(["status", "--json"]))).unwrap();
    v.as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null)
}

/// Every document of account-summary/accounts, read with `refract query`.
fn accounts(data: &Path) -> BTreeMap<String, Value> {
    let text = succeed(refract(data).args(["query", "account-summary", "accounts", "--limit", "10000", "--lines"]));
    text.lines()
        .map(|l| {
            let (id, doc) = l.split_once('\t').unwrap();
            (id.to_owned(), serde_json::from_str(doc).unwrap())
        })
        .collect()
}

#[test]
fn sigterm_stops_a_running_host_cleanly_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let events = bank_events(30, 900, 22);
    let (first, rest) = events.split_at(600);
    write_jsonl(&dir.path().join("first.jsonl"), first);
    write_jsonl(&dir.path().join("rest.jsonl"), rest);
    succeed(refract(&data).arg("import").arg(dir.path().join("first.jsonl")));

    let mut host = Background::spawn(refract(&data).args(["run", "--no-http", "--plugins"]).arg(&plugins));
    host.wait_for_log("host running", STOP_BOUND);
    let deadline = std::time::Instant::now() + STOP_BOUND;
    while status_of(&data, "account-summary")["checkpoint"] != 600 {
        assert!(std::time::Instant::now() < deadline, "the host did not project:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    host.signal(libc::SIGTERM);
    let status = host.wait(STOP_BOUND);
    assert_eq!(status.code(), Some(0), "SIGTERM must end the host cleanly:\n{}", host.log());
    let log = host.log();
    assert!(log.contains("SIGTERM") && log.contains("shutting down"), "no shutdown log:\n{log}");
    assert!(log.contains("projection stopped"), "the runner was not stopped cleanly:\n{log}");
    let stopped = status_of(&data, "account-summary");
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["checkpoint"], 600, "{stopped}");

    // The restart starts from the committed checkpoint: it projects only the
    // new events, and the read model counts every event exactly once.
    succeed(refract(&data).arg("import").arg(dir.path().join("rest.jsonl")));
    let mut again = Background::spawn(
        refract(&data).args(["run", "--no-http", "--exit-when-caught-up", "--plugins"]).arg(&plugins),
    );
    let status = again.wait(STOP_BOUND);
    assert!(status.success(), "{}", again.log());
    assert!(again.log().contains("checkpoint=600"), "the restart did not resume at 600:\n{}", again.log());
    assert_eq!(status_of(&data, "account-summary")["checkpoint"], 900);
    assert_accounts(&accounts(&data), &expected_accounts(&events));
}

/// A plugins folder whose start-up takes many seconds: copies of one plugin,
/// each made distinct by a custom section so that each is compiled anew
/// (the module cache is keyed by content).
fn slow_plugins(dir: &Path, copies: usize) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let bytes = std::fs::read(plugin("account_summary")).unwrap();
    for i in 0..copies {
        let payload = format!("copy {i}");
        // A custom section: id 0, size, name (length-prefixed), payload. Sizes stay under 128, one LEB128 byte.
        let mut copy = bytes.clone();
        copy.extend_from_slice(&[0, (1 + 3 + payload.len()) as u8, 3]);
        copy.extend_from_slice(b"pad");
        copy.extend_from_slice(payload.as_bytes());
        std::fs::write(plugins.join(format!("copy-{i:03}.wasm")), copy).unwrap();
    }
    plugins
}

fn signal_during_start_up_stops_the_host(signal: i32, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = slow_plugins(dir.path(), 40);
    let mut host = Background::spawn(refract(&data).args(["run", "--no-http", "--plugins"]).arg(&plugins));
    // The log line comes after the handlers are installed and before the
    // first compile; a signal before it would meet the default action.
    host.wait_for_log("loading plugins", STOP_BOUND);
    host.signal(signal);
    let status = host.wait(STOP_BOUND);
    let log = host.log();
    assert_eq!(status.code(), Some(0), "{name} during start-up must stop the host cleanly:\n{log}");
    assert!(log.contains(name), "the signal was not seen:\n{log}");
    assert!(log.contains("stopped during start-up"), "start-up was not interrupted:\n{log}");
    assert!(!log.contains("host running"), "start-up ran to the end before stopping:\n{log}");
    // Nothing is left holding the data dir.
    let out = output(refract(&data).args(["status"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sigterm_during_start_up_stops_the_host() {
    signal_during_start_up_stops_the_host(libc::SIGTERM, "SIGTERM");
}

#[test]
fn ctrl_c_during_start_up_stops_the_host() {
    signal_during_start_up_stops_the_host(libc::SIGINT, "SIGINT");
}
