//! A module being compiled shows as `compiling`, not as nothing: in
//! `refract status` (at start-up too) and in `GET /projections` (a module
//! added while the host serves). The Python port of account-summary compiles
//! for seconds (a whole interpreter) with Cranelift, long enough to be seen:
//! these hosts run with `--tiering off`, since the baseline compile that
//! tiering starts with is meant to be over before anyone looks.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::cli::{refract, succeed};
use crate::common::http::Client;
use crate::common::running::{self, Killed};
use crate::common::{plugins_dir, root};

const FILE: &str = "account-summary-py.wasm";

fn python_component() -> PathBuf {
    let path = root().join("target/polyglot").join(FILE);
    assert!(
        path.exists(),
        "{} is missing: build it with `scripts/build-polyglot` (scripts/test does it)",
        path.display()
    );
    path
}

/// Whether `rows` (status JSON or `GET /projections`) list the Python file as compiling.
fn lists_compiling(rows: &Value) -> bool {
    rows.as_array().unwrap().iter().any(|r| r["state"] == "compiling" && r["source"] == FILE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refract_status_shows_a_module_compiling_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &[]);
    std::fs::copy(python_component(), plugins.join(FILE)).unwrap();
    let _host = Killed(
        refract(&data)
            .args(["run", "--no-http", "--tiering", "off", "--plugins"])
            .arg(&plugins)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let out = refract(&data).args(["status", "--json"]).output().unwrap();
        if out.status.success() {
            let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
            if lists_compiling(&rows) {
                break rows;
            }
        }
        assert!(Instant::now() < deadline, "status never showed {FILE} compiling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen.as_array().unwrap().iter().all(|r| r["name"] != "account-summary-py"), "{seen:#}");
    let table = succeed(refract(&data).arg("status"));
    // The table was read a moment later: compiling still, or already running.
    assert!(
        table.lines().any(|l| l.contains("compiling") && l.contains(FILE))
            || table.lines().any(|l| l.starts_with("account-summary-py")),
        "{table}"
    );

    // Once compiled, the projection is listed and the compiling row is gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows: Value = serde_json::from_str(&succeed(refract(&data).args(["status", "--json"]))).unwrap();
        let running =
            rows.as_array().unwrap().iter().any(|r| r["name"] == "account-summary-py" && r["role"] == "active");
        if running && !lists_compiling(&rows) {
            break;
        }
        assert!(Instant::now() < deadline, "the projection never started: {rows:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_a_module_added_while_serving_as_compiling() {
    let host = running::start(1_000, &["account_summary"], &["--tiering", "off"]).await;
    let mut http = Client::connect(host.addr).await;
    std::fs::copy(python_component(), host.plugins.join(FILE)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = http.get("/projections").await.json();
        if lists_compiling(&rows) {
            break rows;
        }
        assert!(Instant::now() < deadline, "GET /projections never listed {FILE} compiling: {rows:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let row = rows.as_array().unwrap().iter().find(|r| r["state"] == "compiling").unwrap();
    assert!(row["started_at"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{row:#}");
    // The projection already served is still listed beside it.
    assert!(rows.as_array().unwrap().iter().any(|r| r["name"] == "account-summary" && r["role"] == "active"));

    let head = host.events.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = http.get("/projections").await.json();
        let done = rows
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "account-summary-py" && r["checkpoint"] == head && r["role"] == "active");
        if done && !lists_compiling(&rows) {
            break;
        }
        assert!(Instant::now() < deadline, "the Python projection never caught up: {rows:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
