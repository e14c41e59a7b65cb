//! Several `refract run` processes on one PostgreSQL store share the
//! projections fairly through leases: a node that joins gets its share by
//! graceful hand-over, a node that leaves with Ctrl-C releases its leases,
//! and when a node is SIGKILLed the others take its projections over within
//! the lease lifetime plus 2 s. Events are
//! appended throughout; every account ends up exactly as the test computes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::*;
use refract::ReadModelStore;

/// Six projections: the examples and four harmless fixtures.
const PLUGINS: [&str; 6] = ["account_summary", "order_summary", "poison", "flood", "bench_decode", "capabilities"];
pub(crate) const TTL_MS: u64 = 3_000;

fn node(data: &Path, url: &str, plugins: &Path, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(data)
        .args(["--events", url, "--store", url])
        .args(["run", "--no-http", "--node-id", id, "--lease-ttl-ms", &TTL_MS.to_string(), "--plugins"])
        .arg(plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A node as [`node`] starts it, serving HTTP on a port the OS picks.
pub(crate) fn serving_node(data: &Path, url: &str, plugins: &Path, id: &str) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_refract"))
        .arg("--data-dir")
        .arg(data)
        .args(["--events", url, "--store", url])
        .args(["run", "--node-id", id, "--lease-ttl-ms", &TTL_MS.to_string(), "--http", "127.0.0.1:0"])
        .arg("--plugins")
        .arg(plugins)
        .env("RUST_LOG", "refract=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::http::listening_addr(&mut child);
    (child, addr)
}

/// Units held by each node under an unexpired lease.
async fn holdings(models: &dyn ReadModelStore) -> BTreeMap<String, usize> {
    let mut by_node = BTreeMap::new();
    for l in models.leases().await.unwrap().into_iter().filter(|l| !l.expired) {
        *by_node.entry(l.owner).or_insert(0) += 1;
    }
    by_node
}

/// Waits until the six units are held by exactly `nodes`, each with at
/// least one and at most ⌈6/N⌉ + 1, for three looks in a row.
async fn settled(models: &dyn ReadModelStore, nodes: &[&str], within: Duration) -> Duration {
    let started = Instant::now();
    let most = 6usize.div_ceil(nodes.len()) + 1;
    let mut streak = 0;
    loop {
        let held = holdings(models).await;
        let fair = held.values().sum::<usize>() == 6
            && held.keys().map(String::as_str).eq(nodes.iter().copied())
            && held.values().all(|&n| (1..=most).contains(&n));
        streak = if fair { streak + 1 } else { 0 };
        if streak == 3 {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not settled on {nodes:?} within {within:?}: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_projections_fairly_hand_over_on_join_and_leave_and_take_over_from_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    let schema = pg::fresh_schema().await;
    let plugins = plugins_dir(dir.path(), &PLUGINS);
    let events_store = refract::open_events(&schema.url).await.unwrap();
    let events = bank_events(200, 12_000, 17);
    append_all(events_store.as_ref(), &events[..4_000]).await;
    let models = refract::open_models(&schema.url).await.unwrap();
    let mut nodes: BTreeMap<&str, Child> = BTreeMap::new();
    for id in ["n1", "n2"] {
        nodes.insert(id, node(&dir.path().join(id), &schema.url, &plugins, id));
    }
    let took = settled(models.as_ref(), &["n1", "n2"], Duration::from_secs(90)).await;
    eprintln!("2 nodes settled in {took:?}: {:?}", holdings(models.as_ref()).await);
    append_all(events_store.as_ref(), &events[4_000..8_000]).await;

    // A third node joins: the others hand over at a batch boundary.
    nodes.insert("n3", node(&dir.path().join("n3"), &schema.url, &plugins, "n3"));
    let took = settled(models.as_ref(), &["n1", "n2", "n3"], Duration::from_secs(60)).await;
    eprintln!("3 nodes settled after the join in {took:?}: {:?}", holdings(models.as_ref()).await);

    // n1 leaves with Ctrl-C: it releases its leases, so the others take its
    // units at once instead of after they expire.
    let mut leaving = nodes.remove("n1").unwrap();
    // SAFETY: kill(2) on our own child, which keeps its pid until we wait on it.
    assert_eq!(unsafe { libc::kill(leaving.id() as libc::pid_t, libc::SIGINT) }, 0);
    let left = Instant::now();
    assert_eq!(leaving.wait().unwrap().code(), Some(0), "n1 did not stop cleanly on Ctrl-C");
    let kept: Vec<_> = models.leases().await.unwrap().into_iter().filter(|l| l.owner == "n1" && !l.expired).collect();
    assert!(kept.is_empty(), "n1 left without releasing {kept:?}");
    append_all(events_store.as_ref(), &events[8_000..10_000]).await;
    let took = settled(models.as_ref(), &["n2", "n3"], Duration::from_secs(60)).await;
    let over = left.elapsed() - Duration::from_millis(200); // the three settled looks
    eprintln!("n1 left; n2 and n3 took over in {over:?}: {:?}", holdings(models.as_ref()).await);
    assert!(
        over <= Duration::from_millis(TTL_MS + 2_000),
        "take-over after a leave took {over:?} ({took:?} to settle)"
    );

    // The busiest node is killed: its units move within the lease lifetime + 2 s.
    let held = holdings(models.as_ref()).await;
    let victim = held.iter().max_by_key(|(_, n)| **n).map(|(id, _)| id.clone()).unwrap();
    let mut child = nodes.remove(victim.as_str()).unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let rest: Vec<&str> = nodes.keys().copied().collect();
    let took = settled(models.as_ref(), &rest, Duration::from_secs(60)).await;
    let over = killed.elapsed() - Duration::from_millis(200); // the three settled looks
    eprintln!("{victim} killed; {rest:?} took over in {over:?}: {:?}", holdings(models.as_ref()).await);
    assert!(over <= Duration::from_millis(TTL_MS + 2_000), "take-over took {over:?} ({took:?} to settle)");
    append_all(events_store.as_ref(), &events[10_000..]).await;

    // Every projection reaches the head, and every account is exact.
    let head = events_store.head().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let records = models.projections().await.unwrap();
        if records.len() == 6 && records.iter().all(|r| r.checkpoint == head) {
            break;
        }
        assert!(Instant::now() < deadline, "not all at {head}: {records:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (_, mut child) in nodes {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_accounts(&docs, &expected_accounts(&events));
    assert_eq!(ledger(models.as_ref()).await, expected_ledger(&events));
}

/// An owner paused (SIGSTOP) past its lease while events keep coming: the
/// other node takes over; resumed (SIGCONT), the old owner's next write is
/// refused by the fence and it stands by. No event is applied twice: every
/// account's balance and transaction count are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_out_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let schema = pg::fresh_schema().await;
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let events_store = refract::open_events(&schema.url).await.unwrap();
    let events = bank_events(100, 9_000, 23);
    append_all(events_store.as_ref(), &events[..3_000]).await;
    let models = refract::open_models(&schema.url).await.unwrap();
    let log = |id: &str| dir.path().join(format!("{id}.log"));
    let spawn = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_refract"))
            .arg("--data-dir")
            .arg(dir.path().join(id))
            .args(["--events", &schema.url, "--store", &schema.url])
            .args(["run", "--no-http", "--node-id", id, "--lease-ttl-ms", "1000", "--plugins"])
            .arg(&plugins)
            .env("RUST_LOG", "refract=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log(id)).unwrap())
            .spawn()
            .unwrap()
    };
    let mut a = spawn("a");
    let owner = |models: std::sync::Arc<dyn ReadModelStore>| async move {
        models.leases().await.unwrap().into_iter().find(|l| !l.expired).map(|l| l.owner)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while owner(models.clone()).await.as_deref() != Some("a") {
        assert!(Instant::now() < deadline, "node a never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = spawn("b");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(owner(models.clone()).await.as_deref(), Some("a"), "b stands by while a renews");

    let pid = a.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    append_all(events_store.as_ref(), &events[3_000..6_000]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while owner(models.clone()).await.as_deref() != Some("b") {
        assert!(Instant::now() < deadline, "b never took over from the paused a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    append_all(events_store.as_ref(), &events[6_000..]).await;

    let head = events_store.head().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while models.projection("account-summary").await.unwrap().checkpoint < head {
        assert!(Instant::now() < deadline, "b did not reach the head");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a resumed with work in hand; its next write meets the fence.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(log("a")).unwrap().contains("lost the lease") {
        assert!(Instant::now() < deadline, "a never noticed: {}", std::fs::read_to_string(log("a")).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(owner(models.clone()).await.as_deref(), Some("b"));
    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_accounts(&docs, &expected_accounts(&events));
}

/// Median of some durations.
fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// Not a test: the cluster figures in BENCHMARKS.md. With 3 s leases:
/// throughput of the six projections over 60,000 events on 1, 2 and 3
/// nodes; time from the SIGKILL of `account-summary`'s owner to the first
/// commit by its successor; time to settle after a third node joins.
/// `cargo test --release -p refract --test all -- cluster::benchmark --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; see BENCHMARKS.md"]
async fn benchmark() {
    let events = bank_events(500, 60_000, 29);
    for n in 1..=3usize {
        let dir = tempfile::tempdir().unwrap();
        let schema = pg::fresh_schema().await;
        let plugins = plugins_dir(dir.path(), &PLUGINS);
        let store = refract::open_events(&schema.url).await.unwrap();
        append_all(store.as_ref(), &events).await;
        let models = refract::open_models(&schema.url).await.unwrap();
        let started = Instant::now();
        let mut children: Vec<Child> =
            (1..=n).map(|i| node(&dir.path().join(format!("n{i}")), &schema.url, &plugins, &format!("n{i}"))).collect();
        loop {
            let records = models.projections().await.unwrap();
            if records.len() == 6 && records.iter().all(|r| r.checkpoint == events.len() as u64) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        println!(
            "{n} node(s): 6 projections x {} events in {took:.2?} ({:.0} events/s projected, start-up included)",
            events.len(),
            6.0 * events.len() as f64 / took.as_secs_f64()
        );
        for c in &mut children {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    let (mut takeovers, mut joins) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let schema = pg::fresh_schema().await;
        let plugins = plugins_dir(dir.path(), &PLUGINS);
        let store = refract::open_events(&schema.url).await.unwrap();
        append_all(store.as_ref(), &events[..1_000]).await;
        let models = refract::open_models(&schema.url).await.unwrap();
        let mut nodes: BTreeMap<&str, Child> = BTreeMap::new();
        for id in ["n1", "n2"] {
            nodes.insert(id, node(&dir.path().join(id), &schema.url, &plugins, id));
        }
        settled(models.as_ref(), &["n1", "n2"], Duration::from_secs(90)).await;
        let joined = Instant::now();
        nodes.insert("n3", node(&dir.path().join("n3"), &schema.url, &plugins, "n3"));
        settled(models.as_ref(), &["n1", "n2", "n3"], Duration::from_secs(60)).await;
        joins.push(joined.elapsed() - Duration::from_millis(200));

        let owner = models.leases().await.unwrap().into_iter().find(|l| l.key.projection == "account-summary");
        let owner = owner.unwrap().owner;
        let before = models.projection("account-summary").await.unwrap().checkpoint;
        let mut child = nodes.remove(owner.as_str()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = Instant::now();
        append_all(store.as_ref(), &events[1_000..1_100]).await;
        while models.projection("account-summary").await.unwrap().checkpoint == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        takeovers.push(killed.elapsed());
        println!(
            "round {round}: join settled in {:.2?}, take-over commit after {:.2?}",
            joins[round], takeovers[round]
        );
        for (_, mut c) in nodes {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
    println!(
        "median: join settled in {:.2?}; owner's death to successor's first commit {:.2?}",
        median(joins),
        median(takeovers)
    );
}

/// A plugin replaced in every node's folder while three nodes serve: the
/// new generation is built once (by the node holding its lease), and every
/// node's queries answer from the old generation until the swap and from
/// the new one after it, never a page that mixes the two, never back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_is_built_once_and_swaps_every_node_whole() {
    let dir = tempfile::tempdir().unwrap();
    let schema = pg::fresh_schema().await;
    let store = refract::open_events(&schema.url).await.unwrap();
    let events = bank_events(50, 30_000, 31);
    append_all(store.as_ref(), &events).await;
    let models = refract::open_models(&schema.url).await.unwrap();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let plugins = dir.path().join(format!("plugins-{id}"));
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(plugin("account_summary"), plugins.join("account_summary.wasm")).unwrap();
        let (child, addr) = serving_node(&dir.path().join(id), &schema.url, &plugins, id);
        nodes.push((plugins, addr, child));
    }
    let head = events.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while models.projection("account-summary").await.map(|r| r.checkpoint).unwrap_or(0) < head {
        assert!(Instant::now() < deadline, "generation 1 never reached the head");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut clients = Vec::new();
    for (_, addr, _) in &nodes {
        clients.push(common::http::Client::connect(*addr).await);
    }

    // Written beside, then renamed: each watcher sees one whole new file.
    for (plugins, _, _) in &nodes {
        let staged = plugins.join("account_summary.wasm.new");
        std::fs::write(&staged, std::fs::read(plugin("account_summary_v2")).unwrap()).unwrap();
        std::fs::rename(&staged, plugins.join("account_summary.wasm")).unwrap();
    }
    // Which generation each node answered from, look after look.
    let mut seen: Vec<Vec<bool>> = vec![Vec::new(); nodes.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (i, client) in clients.iter_mut().enumerate() {
            let page = client.get("/projections/account-summary/accounts?limit=50").await;
            assert_eq!(page.status, 200, "{}", page.text);
            let (docs, tiers) = (page.text.matches("\"owner\"").count(), page.text.matches("\"tier\"").count());
            assert!(docs > 0 && (tiers == 0 || tiers == docs), "a page mixed generations: {}", page.text);
            let new = tiers == docs;
            assert!(!(seen[i].last() == Some(&true) && !new), "node {i} went back to the old generation");
            seen[i].push(new);
        }
        if seen.iter().all(|s| s.last() == Some(&true)) {
            break;
        }
        assert!(Instant::now() < deadline, "not every node swapped: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every node's metrics name the node that holds the new generation.
    let owner = models.leases().await.unwrap().into_iter().find(|l| l.key.generation == 2).unwrap().owner;
    for client in &mut clients {
        let metrics = client.get("/metrics").await.text;
        let series = format!(
            "refract_projection_lease{{projection=\"account-summary\",generation=\"2\",role=\"active\",node=\"{owner}\"}} 1"
        );
        assert!(metrics.contains(&series), "no `{series}` in\n{metrics}");
    }
    for (_, _, mut child) in nodes {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(seen.iter().all(|s| !s[0]), "the swap happened before the first look: {seen:?}");
    // Built once: generation 2 serves, and no other generation was started for the module.
    let live = models.projections().await.unwrap();
    assert_eq!(live.iter().map(|r| (r.key.generation, r.role)).collect::<Vec<_>>(), [(2, refract::Role::Active)]);
    assert_eq!(live[0].checkpoint, head);
    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    for (id, want) in expected_accounts(&events) {
        assert_eq!(docs[&id]["balance"].as_i64(), Some(want.balance), "{id}");
        assert_eq!(docs[&id]["transactions"].as_u64(), Some(want.transactions), "{id}");
    }
}
