//! Issue 16, item 9: `refract status` must not say `running` for a host
//! that was killed. A real `refract run` is started, SIGKILLed once it has
//! projected, and `refract status` is asked before and after.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::*;
use serde_json::Value;

#[test]
fn status_tells_a_killed_host_from_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let refract = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_refract")).arg("--data-dir").arg(&data).args(args).output().unwrap();
        assert!(out.status.success(), "refract {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    write_jsonl(&dir.path().join("bank.jsonl"), &bank_events(30, 600, 9));
    refract(&["import", dir.path().join("bank.jsonl").to_str().unwrap()]);

    let mut host = Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(&data)
        .args(["run", "--no-http", "--plugins"])
        .arg(&plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let alive = wait_for_checkpoint(&mut host, 600, || refract(&["status", "--json"]));
    assert_eq!(alive["checkpoint"], 600, "the host did not project: {alive}");
    assert_eq!(alive["state"], "running", "{alive}");
    assert_eq!(alive["host"], "running", "{alive}");
    let table = refract(&["status"]);
    assert!(!table.contains("host not running"), "{table}");

    host.kill().unwrap(); // SIGKILL: the host records nothing.
    host.wait().unwrap();
    let gone = account_summary(&refract(&["status", "--json"]));
    // The registry still says running; the status must tell the host is gone.
    assert_eq!(gone["state"], "running", "{gone}");
    assert_eq!(gone["host"], "gone", "{gone}");
    let table = refract(&["status"]);
    let line = table.lines().find(|l| l.starts_with("account-summary")).unwrap_or_default();
    assert!(line.contains("stopped (host not running)"), "{table}");
}

/// The same on a PostgreSQL store, where no local lock can tell: the lease
/// does. `status` names the node that runs each projection and `nodes`
/// lists it live; once the host is SIGKILLed and its lease expires, the
/// projection shows `host: gone` and the node is no longer live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_nodes_tell_a_killed_host_by_its_lease_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let schema = common::pg::fresh_schema().await;
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let refract = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--events", &schema.url, "--store", &schema.url])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "refract {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    write_jsonl(&dir.path().join("bank.jsonl"), &bank_events(30, 600, 9));
    refract(&["import", dir.path().join("bank.jsonl").to_str().unwrap()]);
    let mut host = Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--events", &schema.url, "--store", &schema.url])
        .args(["run", "--no-http", "--node-id", "node-7", "--lease-ttl-ms", "1000", "--plugins"])
        .arg(&plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let alive = wait_for_checkpoint(&mut host, 600, || refract(&["status", "--json"]));
    assert_eq!((alive["checkpoint"].clone(), alive["owner"].clone()), (600.into(), "node-7".into()), "{alive}");
    assert_eq!(alive["host"], "running", "{alive}");
    let nodes: Value = serde_json::from_str(&refract(&["nodes", "--json"])).unwrap();
    assert_eq!(nodes[0]["node"], "node-7", "{nodes}");
    assert_eq!(nodes[0]["live"], true, "{nodes}");
    assert_eq!(nodes[0]["units"], serde_json::json!(["account-summary/g1"]), "{nodes}");
    assert!(refract(&["status"]).lines().any(|l| l.starts_with("account-summary") && l.contains("node-7")));

    host.kill().unwrap(); // SIGKILL: the lease is neither renewed nor released.
    host.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let gone = account_summary(&refract(&["status", "--json"]));
    assert_eq!((gone["state"].clone(), gone["host"].clone()), ("running".into(), "gone".into()), "{gone}");
    let nodes: Value = serde_json::from_str(&refract(&["nodes", "--json"])).unwrap();
    assert_eq!((nodes[0]["node"].clone(), nodes[0]["live"].clone()), ("node-7".into(), false.into()), "{nodes}");
}

/// `account-summary`'s row of `refract status --json`.
fn account_summary(json: &str) -> Value {
    let v: Value = serde_json::from_str(json).unwrap();
    v.as_array().unwrap().iter().find(|p| p["name"] == "account-summary").cloned().unwrap_or(Value::Null)
}

/// Polls `status` until `account-summary` reaches `checkpoint` (or two
/// minutes pass) while `host` keeps running; its last row.
fn wait_for_checkpoint(host: &mut std::process::Child, checkpoint: u64, status: impl Fn() -> String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = account_summary(&status());
        if s["checkpoint"] == checkpoint || Instant::now() > deadline {
            return s;
        }
        assert!(host.try_wait().unwrap().is_none(), "the host exited on its own");
        std::thread::sleep(Duration::from_millis(100));
    }
}
