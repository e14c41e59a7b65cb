//! The contract of the HTTP API and of the CLI, from the outside.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

fn refract(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refract")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let events = dir.path().join("events.jsonl");
    write_jsonl(&events, &bank_events(5, 20, 1));
    ok(refract(&data, &["import", events.to_str().unwrap()]));
    let plugins = plugins.to_str().unwrap();
    ok(refract(&data, &["run", "--plugins", plugins, "--exit-when-caught-up", "--no-http"]));
    for args in [
        &["dead-letters", "account-summary"][..],
        &["status"],
        &["query", "account-summary", "accounts", "--lines"],
        &["get", "account-summary", "accounts", "account-1"],
    ] {
        // `refract ... | head -0`: the reader is gone before the first line is written.
        let mut child = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "refract {args:?}: {stderr}");
        assert!(output.status.success(), "refract {args:?}: {:?} {stderr}", output.status);
    }
}

#[test]
fn importing_an_empty_file_reports_the_real_head() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let n = bank_events(5, 20, 1).len();
    write_jsonl(&events, &bank_events(5, 20, 1));
    let imported = ok(refract(dir.path(), &["import", events.to_str().unwrap()]));
    assert_eq!(imported.trim(), format!("imported {n} events; head is now {n}"));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let imported = ok(refract(dir.path(), &["import", empty.to_str().unwrap()]));
    assert_eq!(imported.trim(), format!("imported 0 events; head is now {n}"));
}
