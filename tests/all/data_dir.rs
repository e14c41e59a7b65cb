//! Issue 22: a mistyped `--data-dir` must not silently become a new, empty
//! store. Commands that only read (or manage what a host made) say there is
//! no data dir there and create nothing; `import`, `append` and `run` create one.

use crate::common;
use common::cli::{output, refract, succeed};
use common::*;

#[test]
fn read_commands_refuse_a_missing_data_dir_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("dta");
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["get", "account-summary", "accounts", "account-1"],
        &["query", "account-summary", "accounts"],
        &["dead-letters", "account-summary"],
        &["retry", "account-summary"],
        &["rebuild", "account-summary"],
        &["drop", "account-summary"],
    ];
    for args in commands {
        let out = output(refract(&typo).args(*args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no data dir at {}", typo.display())) && stderr.contains("--data-dir"),
            "{args:?} must name the missing data dir: {stderr}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

#[test]
fn a_store_path_given_by_url_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    succeed(refract(&data).args(["append", "account-1", "AccountOpened", r#"{"owner":"ada"}"#]));
    let typo = dir.path().join("modles.db");
    let out = output(refract(&data).arg("--store").arg(format!("sqlite://{}", typo.display())).arg("status"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no SQLite store at {}", typo.display())) && stderr.contains("--store"),
        "{stderr}"
    );
    assert!(!typo.exists(), "status created {}", typo.display());
}

#[test]
fn a_data_dir_with_events_only_is_read_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // `append` makes a data dir with events and no read models yet: not a typo.
    succeed(refract(&data).args(["append", "account-1", "AccountOpened", r#"{"owner":"ada"}"#]));
    let status = succeed(refract(&data).args(["status", "--json"]));
    assert_eq!(status.trim(), "[]");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    succeed(refract(&data).args(["run", "--exit-when-caught-up", "--plugins"]).arg(&plugins));
    let doc = succeed(refract(&data).args(["get", "account-summary", "accounts", "account-1"]));
    assert!(doc.contains("ada"), "{doc}");
}

#[test]
fn import_creates_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new").join("data");
    let events = bank_events(3, 10, 1);
    write_jsonl(&dir.path().join("bank.jsonl"), &events);
    let out = succeed(refract(&data).arg("import").arg(dir.path().join("bank.jsonl")));
    assert!(out.contains(&format!("head is now {}", events.len())), "{out}");
    assert!(data.join("events.db").exists());
}
