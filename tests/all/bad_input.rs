//! Bad input gets a clear error, the host keeps running, nothing stored is lost.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use refract::{EventSource, PluginError, ProjectionState, Registry, SyncConfig};

fn refract(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refract")).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The smallest valid core module: a module, but not a component.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

#[test]
fn non_json_payload_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let ok = refract(dir.path(), &["append", "account-1", "AccountOpened", r#"{"owner":"ada"}"#]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "1");

    let bad = refract(dir.path(), &["append", "account-1", "MoneyDeposited", "{amount: 5"]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(err.contains("payload of `MoneyDeposited` is not valid JSON"), "{err}");
    assert!(err.contains("nothing was appended"), "{err}");
    let bad = refract(dir.path(), &["append", "account-1", "X", "{}", "--metadata", "nope"]);
    assert!(stderr(&bad).contains("metadata of `X` is not valid JSON"), "{}", stderr(&bad));

    // A bad line in an import refuses the whole file, naming the line.
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"stream\":\"account-2\",\"type\":\"AccountOpened\",\"payload\":{\"owner\":\"bob\"}}\n{\"stream\":\"account-2\",\"type\":\n",
    )
    .unwrap();
    let bad = refract(dir.path(), &["import", file.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("line 2: not a valid event line"), "{}", stderr(&bad));

    let next = refract(dir.path(), &["append", "account-1", "MoneyDeposited", r#"{"amount":5}"#]);
    assert_eq!(
        String::from_utf8_lossy(&next.stdout).trim(),
        "2",
        "the first event is still there, the bad ones are not"
    );
}

#[test]
fn plugins_that_are_not_projections_are_rejected_and_the_host_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary", "wrong_world"]);
    std::fs::write(plugins.join("core.wasm"), CORE_MODULE).unwrap();
    std::fs::write(plugins.join("garbage.wasm"), b"this is not wasm at all").unwrap();
    std::fs::write(plugins.join("truncated.wasm"), &std::fs::read(plugin("account_summary")).unwrap()[..4096]).unwrap();
    let events = bank_events(20, 200, 3);
    write_jsonl(&dir.path().join("bank.jsonl"), &events);
    assert!(refract(&data, &["import", dir.path().join("bank.jsonl").to_str().unwrap()]).status.success());

    let run = refract(&data, &["run", "--exit-when-caught-up", "--plugins", plugins.to_str().unwrap()]);
    let log = stderr(&run);
    // The good plugin still caught up; the run says, by its exit status, that four were rejected.
    assert_eq!(run.status.code(), Some(1), "{log}");
    assert!(log.contains("error: not every projection caught up: 4 plugins rejected"), "{log}");
    assert!(log.contains("core.wasm: a core WebAssembly module, not a component"), "{log}");
    assert!(log.contains("garbage.wasm: not a WebAssembly file"), "{log}");
    assert!(log.contains("truncated.wasm: invalid component"), "{log}");
    assert!(
        log.contains("wrong_world.wasm: does not implement the refract:projection `projector` world: missing export `refract:projection/projection@0.2.0` or `refract:projection/projection@0.1.0`"),
        "{log}"
    );

    let status = refract(&data, &["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    let line = out.lines().find(|l| l.starts_with("account-summary")).unwrap_or_else(|| panic!("{out}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[2..7], ["1", "active", "200", "200", "0"], "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_errors_are_typed() {
    let host_dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(host_dir.path()).await;
    let host = stores.host(SyncConfig::default());
    let rt = host.runtime();
    let err = rt.load_bytes("core.wasm".as_ref(), CORE_MODULE).unwrap_err();
    assert!(matches!(err, PluginError::CoreModule { .. }), "{err}");
    let err = rt.load_bytes("x.wasm".as_ref(), b"nope").unwrap_err();
    assert!(matches!(err, PluginError::NotWasm { .. }), "{err}");
    let err = rt.load(&plugin("wrong_world")).unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("it exports: "), "{err}");
    let err = rt.load("/nonexistent/p.wasm".as_ref()).unwrap_err();
    assert!(matches!(err, PluginError::Io { .. }), "{err}");
}

#[test]
fn get_names_what_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let data = dir.path().join("data");
    assert!(refract(&data, &["append", "account-7", "AccountOpened", r#"{"owner":"ada"}"#]).status.success());
    assert!(refract(&data, &["run", "--exit-when-caught-up", "--plugins", plugins.to_str().unwrap()]).status.success());

    let ok = refract(&data, &["get", "account-summary", "accounts", "account-7"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let doc: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(doc["owner"], "ada");

    let e = refract(&data, &["get", "nope", "accounts", "account-7"]);
    assert!(!e.status.success());
    assert!(stderr(&e).contains("unknown projection `nope`"), "{}", stderr(&e));
    let e = refract(&data, &["get", "account-summary", "nope", "account-7"]);
    assert!(
        stderr(&e).contains("projection `account-summary` has no collection `nope` (it has: accounts)"),
        "{}",
        stderr(&e)
    );
    let e = refract(&data, &["get", "account-summary", "accounts", "account-8"]);
    assert!(stderr(&e).contains("no document `account-8` in account-summary/accounts"), "{}", stderr(&e));
    let e = refract(&data, &["query", "account-summary", "accounts", "--where", "balance"]);
    assert!(stderr(&e).contains("bad filter `balance`"), "{}", stderr(&e));
    let e = refract(&data, &["query", "account-summary", "accounts", "--cursor", "zz"]);
    assert!(stderr(&e).contains("bad cursor"), "{}", stderr(&e));
}

/// An event the projection cannot handle faults that projection at the
/// event before; the other projection reaches the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_projection_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let mut events = bank_events(10, 100, 5);
    events.push(BankEvent {
        stream: "account-3".into(),
        event_type: "MoneyDeposited",
        payload: serde_json::json!({"amount": "lots"}),
    });
    events.extend(bank_events(10, 100, 6).into_iter().skip(10));
    append_all(stores.events.as_ref(), &events).await;
    let poison = 101;

    let mut host = stores.host(SyncConfig { batch_size: 7, ..SyncConfig::default() });
    for p in ["account_summary", "order_summary"] {
        host.start(host.runtime().load(&plugin(p)).unwrap()).await.unwrap();
    }
    host.wait_until_caught_up().await.unwrap();
    let faulted = host.progress("account-summary").unwrap();
    assert_eq!(faulted.state, ProjectionState::Faulted);
    assert_eq!(faulted.checkpoint, poison - 1, "stops at the event before the poison one");
    let healthy = host.progress("order-summary").unwrap();
    assert_eq!((healthy.state, healthy.checkpoint), (ProjectionState::Running, stores.events.head().await.unwrap()));
    host.shutdown().await;

    let record = stores.models.projection("account-summary").await.unwrap();
    assert_eq!(record.state, ProjectionState::Faulted);
    let error = record.last_error.unwrap();
    assert!(error.contains(&format!("projection error at position {poison}")), "{error}");
    // What was projected before the fault is intact.
    let docs = all_documents(stores.models.as_ref(), "account-summary", "accounts").await;
    let expected = expected_accounts(&events[..poison as usize - 1]);
    for (id, want) in expected {
        assert_eq!(docs[&id]["balance"].as_i64(), Some(want.balance), "{id}");
    }
}
