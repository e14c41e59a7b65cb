//! Issue 18, shared modules: modules live in the store by content hash, so
//! `refract deploy FILE` from any machine registers a projection once for
//! every node, nodes with no plugins folder run it, and `refract rebuild`
//! and `refract drop` act on the whole cluster. On one node, removing a
//! `.wasm` withdraws its projection until it is deployed again, across
//! restarts.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::TTL_MS;
use crate::common;
use common::cli::{Background, output, refract, succeed};
use common::*;
use refract::Role;

const BOUND: Duration = Duration::from_secs(120);

/// A `refract run` node on the schema at `url` whose plugins folder is empty, serving HTTP.
fn empty_node(dir: &Path, url: &str, id: &str) -> (Child, std::net::SocketAddr) {
    let plugins = dir.join(format!("plugins-{id}"));
    std::fs::create_dir_all(&plugins).unwrap();
    crate::cluster::serving_node(&dir.join(id), url, &plugins, id)
}

/// `refract --events URL --store URL` from a machine with no data dir of its own.
fn ops(dir: &Path, url: &str) -> Command {
    let mut cmd = refract(&dir.join("ops"));
    cmd.args(["--events", url, "--store", url]);
    cmd
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_module_runs_on_nodes_without_plugins_and_rebuild_and_drop_reach_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let schema = pg::fresh_schema().await;
    let url = schema.url.clone();
    let store = refract::open_events(&url).await.unwrap();
    let events = bank_events(40, 20_000, 41);
    append_all(store.as_ref(), &events).await;
    let head = events.len() as u64;
    let models = refract::open_models(&url).await.unwrap();
    let (n1, a1) = empty_node(dir.path(), &url, "n1");
    let (n2, a2) = empty_node(dir.path(), &url, "n2");
    let _nodes = Nodes(vec![n1, n2]);

    // A file that is not a component is refused by name, and nothing is registered.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let bad = output(ops(dir.path(), &url).arg("deploy").arg(&junk));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("junk.wasm"), "{err}");
    assert!(models.projections().await.unwrap().is_empty());

    // Deployed from a third machine: the nodes, whose folders are empty, run it.
    let v1 = std::fs::read(plugin("account_summary")).unwrap();
    let out = succeed(ops(dir.path(), &url).arg("deploy").arg(plugin("account_summary")));
    assert!(out.contains("account-summary: deployed as generation 1, a new projection"), "{out}");
    assert!(models.module(&refract::module_hash(&v1)).await.unwrap().as_deref() == Some(&v1[..]));
    until("generation 1 at the head", async || {
        models.projection("account-summary").await.is_ok_and(|r| r.checkpoint == head)
    })
    .await;
    let expected = expected_accounts(&events);
    assert_accounts(&all_documents(models.as_ref(), "account-summary", "accounts").await, &expected);
    let owner = models.leases().await.unwrap().into_iter().find(|l| !l.expired).map(|l| l.owner);
    assert!(matches!(owner.as_deref(), Some("n1" | "n2")), "{owner:?}");
    for addr in [a1, a2] {
        let mut client = common::http::Client::connect(addr).await;
        let doc = client.get("/projections/account-summary/accounts/account-7").await;
        assert_eq!(doc.status, 200, "{}", doc.text);
        assert_eq!(doc.json()["document"]["balance"].as_i64(), Some(expected["account-7"].balance));
    }

    // A new module, deployed and waited for: built once, every node swaps.
    let out = succeed(ops(dir.path(), &url).args(["deploy", "--wait"]).arg(plugin("account_summary_v2")));
    assert!(out.contains("deployed as generation 2; it builds from position 0 while generation 1 serves"), "{out}");
    assert!(out.contains("generation 2 is active"), "{out}");
    let live = models.projections().await.unwrap();
    assert_eq!(live.iter().map(|r| (r.key.generation, r.role)).collect::<Vec<_>>(), [(2, Role::Active)]);
    for addr in [a1, a2] {
        let mut client = common::http::Client::connect(addr).await;
        let doc = client.get("/projections/account-summary/accounts/account-7").await.json()["document"].clone();
        assert!(doc.get("tier").is_some(), "node {addr} still serves generation 1: {doc}");
    }

    // A rebuild asked from anywhere is built by a node (this command has no module cache).
    let rebuilt = output(ops(dir.path(), &url).args(["rebuild", "account-summary"]));
    let (out, err) = (String::from_utf8_lossy(&rebuilt.stdout), String::from_utf8_lossy(&rebuilt.stderr));
    assert!(rebuilt.status.success(), "{err}");
    assert!(err.contains("2 node(s) share this store (n1, n2)"), "{err}");
    assert!(out.contains("account-summary: generation 3 is active"), "{out}");
    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_accounts(&docs, &expected);

    // Dropped: every node stops it, and its modules leave the store.
    let v2 = std::fs::read(plugin("account_summary_v2")).unwrap();
    succeed(ops(dir.path(), &url).args(["drop", "account-summary"]));
    until("no node holds a lease on account-summary", async || {
        models.leases().await.unwrap().iter().all(|l| l.expired || l.key.projection != "account-summary")
    })
    .await;
    // Stopped, not just unleased for a moment: no node takes a lease again.
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    let leases = models.leases().await.unwrap();
    assert!(leases.iter().all(|l| l.expired || l.key.projection != "account-summary"), "{leases:?}");
    assert!(models.projections().await.unwrap().is_empty());
    assert!(models.tables("account-summary").await.unwrap().is_empty());
    for bytes in [&v1, &v2] {
        assert_eq!(models.module(&refract::module_hash(bytes)).await.unwrap(), None);
    }
}

fn checkpoint(data: &Path) -> Value {
    let v: Value = serde_json::from_str(&succeed(refract(data).args(["status", "--json"]))).unwrap();
    v.as_array().unwrap().iter().find(|p| p["name"] == "account-summary").unwrap()["checkpoint"].clone()
}

/// Waits for a checkpoint, then checks that it stays there for a while:
/// only way to see a projection that must not run.
fn stays_at(data: &Path, at: u64) {
    let deadline = Instant::now() + BOUND;
    while checkpoint(data) != at {
        assert!(Instant::now() < deadline, "checkpoint never reached {at}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(checkpoint(data), at, "the withdrawn projection ran");
}

#[test]
fn a_removed_plugin_is_withdrawn_on_restart_too_until_deployed_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let events = bank_events(20, 1_500, 43);
    let (first, rest) = events.split_at(1_000);
    write_jsonl(&dir.path().join("first.jsonl"), first);
    write_jsonl(&dir.path().join("rest.jsonl"), rest);
    succeed(refract(&data).arg("import").arg(dir.path().join("first.jsonl")));
    let run = |data: &Path| {
        let mut cmd = refract(data);
        cmd.args(["run", "--no-http", "--plugins"]).arg(&plugins);
        Background::spawn(&mut cmd)
    };

    let mut host = run(&data);
    host.wait_for_log("host running", BOUND);
    stays_at(&data, 1_000);
    let file = plugins.join("account_summary.wasm");
    let kept = dir.path().join("kept.wasm");
    std::fs::copy(&file, &kept).unwrap();
    std::fs::remove_file(&file).unwrap();
    host.wait_for_log("plugin removed; projection withdrawn", BOUND);
    succeed(refract(&data).arg("import").arg(dir.path().join("rest.jsonl")));
    stays_at(&data, 1_000);

    // Still withdrawn after a restart, though the store has its module.
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait(BOUND).code(), Some(0), "{}", host.log());
    let mut host = run(&data);
    host.wait_for_log("host running", BOUND);
    stays_at(&data, 1_000);

    // Deployed again (the same module): it resumes from its checkpoint.
    let out = succeed(refract(&data).arg("deploy").arg(&kept));
    assert!(out.contains("account-summary: this module already serves as generation 1"), "{out}");
    let deadline = Instant::now() + BOUND;
    while checkpoint(&data) != 1_500 {
        assert!(Instant::now() < deadline, "not resumed after the deploy:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait(BOUND).code(), Some(0), "{}", host.log());
    let text = succeed(refract(&data).args(["query", "account-summary", "accounts", "--limit", "1000", "--lines"]));
    let docs = text
        .lines()
        .map(|l| {
            let (id, doc) = l.split_once('\t').unwrap();
            (id.to_owned(), serde_json::from_str(doc).unwrap())
        })
        .collect();
    assert_accounts(&docs, &expected_accounts(&events));
}
