//! Crash safety: SIGKILL the host again and again while it projects 50,000
//! events; the final read model must equal a run that was never interrupted,
//! document by document (no event lost, none applied twice). Run once with
//! the embedded SQLite stores and once with both stores in PostgreSQL, and
//! with three hosts sharing one PostgreSQL store killed during catch-up,
//! and two during a dead-letter replay.
//!
//! Kills are timed by progress, not by the clock: each round waits until a
//! few hundred to a few thousand more events are committed (at most 10 s),
//! so kills land mid-run however fast or slow the machine is.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use refract::ReadModelStore;
use sqlx::Connection;

const EVENTS: usize = 50_000;

/// Where one host run keeps its stores: the data dir (pid lock, module
/// cache) and the URLs of the event and read-model stores.
pub(crate) struct Target {
    data: PathBuf,
    events: String,
    models: String,
    /// The PostgreSQL schema, when the stores are there; dropped with the target.
    schema: Option<pg::Schema>,
}

impl Target {
    fn sqlite(data: PathBuf) -> Self {
        let events = format!("sqlite://{}", data.join("events.db").display());
        let models = format!("sqlite://{}", data.join("models.db").display());
        Self { data, events, models, schema: None }
    }

    /// Events and read models in one fresh PostgreSQL schema.
    async fn postgres(data: PathBuf) -> Self {
        let schema = pg::fresh_schema().await;
        Self { data, events: schema.url.clone(), models: schema.url.clone(), schema: Some(schema) }
    }

    /// Events at `events` (a JetStream stream both runs read), read models in SQLite.
    pub(crate) fn jetstream_sqlite(data: PathBuf, events: &str) -> Self {
        let models = format!("sqlite://{}", data.join("models.db").display());
        Self { data, events: events.to_owned(), models, schema: None }
    }

    /// Events at `events` (a JetStream stream both runs read), read models in a fresh PostgreSQL schema.
    pub(crate) async fn jetstream_postgres(data: PathBuf, events: &str) -> Self {
        let schema = pg::fresh_schema().await;
        Self { data, events: events.to_owned(), models: schema.url.clone(), schema: Some(schema) }
    }
}

fn host_command(target: &Target, plugins: &Path) -> Command {
    host_on(target, &target.data, plugins)
}

/// A host on `target`'s stores with its own data dir (and so its own node id).
fn host_on(target: &Target, data: &Path, plugins: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--events", &target.events, "--store", &target.models])
        // Commits grouped over 10 batches, one in flight while the next are
        // projected: kills land between, during and after commits.
        .args(["run", "--exit-when-caught-up", "--batch-size", "50", "--commit-events", "500", "--plugins"])
        .arg(plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

async fn checkpoint(target: &Target, projection: &str) -> u64 {
    let models = refract::open_models(&target.models).await.unwrap();
    match models.projection(projection).await {
        Ok(r) => r.checkpoint,
        Err(refract::StoreError::UnknownProjection(_)) => 0,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let killed = Target::sqlite(dir.path().join("killed"));
    let clean = Target::sqlite(dir.path().join("clean"));
    sigkill_loop(dir.path(), &killed, &clean).await;
}

/// The same with events and read models in PostgreSQL (`--events`/`--store`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let killed = Target::postgres(dir.path().join("killed")).await;
    let clean = Target::postgres(dir.path().join("clean")).await;
    sigkill_loop(dir.path(), &killed, &clean).await;
}

/// Projects the events into `killed` under a SIGKILL loop and into `clean`
/// in one uninterrupted run, then compares the two document by document.
pub(crate) async fn sigkill_loop(dir: &Path, killed: &Target, clean: &Target) {
    let plugins = plugins_dir(dir, &["account_summary", "order_summary"]);
    let events = bank_events(1_000, EVENTS, 42);
    seed(killed, clean, &events).await;

    let mut rng = Rng::new(99);
    let models = refract::open_models(&killed.models).await.unwrap();
    let mut kills_mid_stream = 0;
    let mut last_checkpoint = 0;
    let mut finished = false;
    for _ in 0..400 {
        let mut child = host_command(killed, &plugins).spawn().unwrap();
        // Kill once the host has committed a few hundred to a few thousand
        // events more (or after 10 s): kills land mid-run however fast or
        // slow the machine is.
        let goal = last_checkpoint + 500 + rng.below(2_500);
        let exited = until(
            || match child.try_wait().unwrap() {
                Some(status) => {
                    assert!(status.success(), "host failed on its own: {status}");
                    true
                }
                None => false,
            },
            || committed(models.as_ref(), "account-summary"),
            goal,
        )
        .await;
        if exited {
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let cp = checkpoint(killed, "account-summary").await;
        assert!(cp >= last_checkpoint, "checkpoint went back from {last_checkpoint} to {cp}");
        if cp > last_checkpoint && cp < EVENTS as u64 {
            kills_mid_stream += 1;
        }
        last_checkpoint = cp;
    }
    eprintln!("{kills_mid_stream} kills landed mid-projection");
    assert!(finished, "the host never finished");
    assert!(kills_mid_stream >= 5, "only {kills_mid_stream} kills landed mid-projection");

    let status = host_command(clean, &plugins).status().unwrap();
    assert!(status.success());

    let killed_models = refract::open_models(&killed.models).await.unwrap();
    let clean_models = refract::open_models(&clean.models).await.unwrap();
    for (projection, collections) in
        [("account-summary", &["accounts"][..]), ("order-summary", &["orders", "customers"][..])]
    {
        let a = killed_models.projection(projection).await.unwrap();
        let b = clean_models.projection(projection).await.unwrap();
        assert_eq!((a.checkpoint, b.checkpoint), (EVENTS as u64, EVENTS as u64), "{projection}");
        for c in collections {
            let got = all_documents(killed_models.as_ref(), projection, c).await;
            let want = all_documents(clean_models.as_ref(), projection, c).await;
            assert_eq!(got, want, "{projection}/{c} differs from the uninterrupted run");
        }
    }
    let docs = all_documents(killed_models.as_ref(), "account-summary", "accounts").await;
    for (id, want) in expected_accounts(&events) {
        assert_eq!(docs[&id]["balance"].as_i64(), Some(want.balance), "{id}");
        assert_eq!(docs[&id]["transactions"].as_u64(), Some(want.transactions), "{id}");
    }
    eprintln!("killed {kills_mid_stream} times mid-projection");
}

/// Appends the events to `killed` and copies them, timestamps included, to
/// `clean`: the models record event timestamps, so both runs must read the same events.
async fn seed(killed: &Target, clean: &Target, events: &[BankEvent]) {
    if killed.events.starts_with("nats://") {
        assert_eq!(killed.events, clean.events, "both runs read one JetStream stream");
        crate::jetstream::append_each(&killed.events, events).await;
        return;
    }
    match (&killed.schema, &clean.schema) {
        (Some(pg::Schema { name: from, .. }), Some(pg::Schema { name: to, .. })) => {
            let store = refract::open_events(&killed.events).await.unwrap();
            append_all(store.as_ref(), events).await;
            drop(refract::open_events(&clean.events).await.unwrap());
            let mut conn = sqlx::PgConnection::connect(&pg::database_url()).await.unwrap();
            let copy = format!("INSERT INTO {to}.refract_events SELECT * FROM {from}.refract_events");
            sqlx::query(sqlx::AssertSqlSafe(copy)).execute(&mut conn).await.unwrap();
        }
        _ => {
            let store = refract::SqliteEventStore::open(&killed.data.join("events.db")).await.unwrap();
            append_all(&store, events).await;
            store.close().await;
            std::fs::create_dir_all(&clean.data).unwrap();
            std::fs::copy(killed.data.join("events.db"), clean.data.join("events.db")).unwrap();
        }
    }
}

/// The lease lifetime the multi-host runs use: short, so that a killed
/// owner's projections move to the other host within the test's rounds.
const HOSTS_TTL_MS: &str = "1000";

/// Three hosts, each with its own data dir (so its own node id), share one
/// PostgreSQL store. Round after round one of them is SIGKILLed, mostly
/// the lease owner, sometimes kept down past its lease. After each owner
/// kill another node holds the lease within the lease lifetime + 2 s. Each
/// event must be applied exactly once: the models equal an uninterrupted
/// run's, document by document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_sigkilled_during_catch_up_lose_and_double_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Target::postgres(dir.path().join("a")).await;
    let clean = Target::postgres(dir.path().join("clean")).await;
    let plugins = plugins_dir(dir.path(), &["account_summary", "order_summary"]);
    let events = bank_events(1_000, EVENTS, 43);
    seed(&shared, &clean, &events).await;

    let report = kill_hosts(dir.path(), &shared, &plugins, "account-summary", EVENTS as u64, 3).await;
    eprintln!("three hosts: {report:?}");
    assert!(
        report.owner_kills >= 10,
        "only {} lease owners were killed mid-projection: {report:?}",
        report.owner_kills
    );
    assert!(report.owners_seen >= 2, "the lease never moved to another host: {report:?}");
    let bound = Duration::from_millis(HOSTS_TTL_MS.parse::<u64>().unwrap() + 2_000);
    assert!(report.slowest_take_over <= bound, "a take-over took longer than {bound:?}: {report:?}");

    let status = host_command(&clean, &plugins).status().unwrap();
    assert!(status.success());
    let shared_models = refract::open_models(&shared.models).await.unwrap();
    let clean_models = refract::open_models(&clean.models).await.unwrap();
    for (projection, collections) in
        [("account-summary", &["accounts"][..]), ("order-summary", &["orders", "customers"][..])]
    {
        let a = shared_models.projection(projection).await.unwrap();
        assert_eq!(a.checkpoint, EVENTS as u64, "{projection}");
        for c in collections {
            let got = all_documents(shared_models.as_ref(), projection, c).await;
            let want = all_documents(clean_models.as_ref(), projection, c).await;
            assert_eq!(got, want, "{projection}/{c} differs from the uninterrupted run");
        }
    }
    let docs = all_documents(shared_models.as_ref(), "account-summary", "accounts").await;
    for (id, want) in expected_accounts(&events) {
        assert_eq!(docs[&id]["balance"].as_i64(), Some(want.balance), "{id}");
        assert_eq!(docs[&id]["transactions"].as_u64(), Some(want.transactions), "{id}");
    }
}

/// Dead letters replayed by the two-host replay test.
const LETTERS: usize = 1_000;

/// 1,000 events are dead-lettered under a 1 KiB document limit; the limit is
/// raised and `refract retry` marks them. Two hosts then replay them while
/// being SIGKILLed: each letter is applied exactly once, so every entry's
/// sum and count equal the events' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_sigkilled_during_dead_letter_replay_apply_each_letter_once() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Target::postgres(dir.path().join("a")).await;
    let plugins = plugins_dir(dir.path(), &["poison"]);
    // 50 accounts; 1,000 deposits carry a 2,000-byte note, too big for 1 KiB.
    let mut events = bank_events(50, 6_000, 44);
    let mut rng = Rng::new(7);
    let mut noted = 0;
    while noted < LETTERS {
        let i = rng.below(events.len() as u64) as usize;
        if events[i].event_type == "MoneyDeposited" && events[i].payload.get("note").is_none() {
            events[i].payload["note"] = serde_json::Value::String(format!("{i:04}").repeat(500));
            noted += 1;
        }
    }
    let store = refract::open_events(&shared.events).await.unwrap();
    append_all(store.as_ref(), &events).await;
    let total = store.head().await.unwrap();

    let write_config = |kib: u32| {
        let path = dir.path().join(format!("refract-{kib}.toml"));
        std::fs::write(&path, format!("[defaults]\nretries = 0\non_failure = \"skip\"\nmax_document_kib = {kib}\n"))
            .unwrap();
        path
    };
    let strict = write_config(1);
    let status = host_command(&shared, &plugins).arg("--config").arg(&strict).status().unwrap();
    assert!(status.success());
    let models = refract::open_models(&shared.models).await.unwrap();
    assert_eq!(models.dead_letters("ledger").await.unwrap().len(), LETTERS);
    assert_eq!(models.request_retry("ledger").await.unwrap().replays, LETTERS as u64);

    let relaxed = write_config(4);
    let report = replay_with_two_hosts(dir.path(), &shared, &plugins, &relaxed, models.as_ref()).await;
    eprintln!("two hosts replaying: {report:?}");
    assert!(report.kills_mid_stream >= 3, "only {} kills landed mid-replay", report.kills_mid_stream);

    assert_eq!(models.dead_letters("ledger").await.unwrap(), vec![], "every letter was replayed");
    assert_eq!(models.projection("ledger").await.unwrap().checkpoint, total);
    assert_eq!(ledger(models.as_ref()).await, expected_ledger(&events));
}

/// What a multi-host kill loop did.
#[derive(Debug, Default)]
struct KillReport {
    rounds: usize,
    kills_mid_stream: usize,
    /// Distinct nodes seen holding the lease while work was left.
    owners_seen: usize,
    /// Lease owners SIGKILLed while work was left.
    owner_kills: usize,
    /// The longest time from such a kill until another node held the lease.
    slowest_take_over: Duration,
}

/// The node ids of the hosts, the first N of them for an N-host run.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// The hosts of a multi-host run, each `None` while it is down.
struct Pair {
    data: Vec<PathBuf>,
    children: Vec<Option<std::process::Child>>,
}

impl Pair {
    fn new(dir: &Path, hosts: usize) -> Self {
        Self {
            data: NODES[..hosts].iter().map(|n| dir.join(n)).collect(),
            children: (0..hosts).map(|_| None).collect(),
        }
    }

    /// Starts host `i` if it is down, as node `NODES[i]`.
    fn start(&mut self, i: usize, spawn: &dyn Fn(&Path) -> Command) {
        if self.children[i].is_none() {
            self.children[i] = Some(spawn(&self.data[i]).args(["--node-id", NODES[i]]).spawn().unwrap());
        }
    }

    /// Hosts that exited on their own since the last look (they must have succeeded).
    fn reap(&mut self) -> usize {
        let mut done = 0;
        for slot in &mut self.children {
            if let Some(status) = slot.as_mut().and_then(|c| c.try_wait().unwrap()) {
                assert!(status.success(), "a host failed on its own: {status}");
                *slot = None;
                done += 1;
            }
        }
        done
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// Waits for the live hosts to finish by themselves.
    fn finish(&mut self) {
        for slot in &mut self.children {
            if let Some(mut c) = slot.take() {
                let status = c.wait().unwrap();
                assert!(status.success(), "a host failed on its own: {status}");
            }
        }
    }
}

/// A failed assertion must not leave the hosts running (they would retry
/// against a dropped schema for ever).
impl Drop for Pair {
    fn drop(&mut self) {
        for mut c in self.children.iter_mut().filter_map(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Which of the pair's data dirs belongs to the node holding the lease.
async fn lease_owner(models: &dyn ReadModelStore, projection: &str) -> Option<String> {
    let leases = models.leases().await.unwrap();
    leases.into_iter().filter(|l| l.key.projection == projection && !l.expired).map(|l| l.owner).next()
}

/// Runs `hosts` `refract run --exit-when-caught-up` hosts on `target` with
/// random SIGKILLs until one of them finishes by itself, then lets the
/// others finish. Two kills in three hit the lease owner; every third kill
/// keeps it down for longer than the lease. After each owner kill the loop
/// waits for another node to hold the lease, and reports the longest wait.
async fn kill_hosts(
    dir: &Path,
    target: &Target,
    plugins: &Path,
    projection: &str,
    head: u64,
    hosts: usize,
) -> KillReport {
    let spawn = |data: &Path| {
        let mut cmd = host_on(target, data, plugins);
        cmd.args(["--lease-ttl-ms", HOSTS_TTL_MS]);
        cmd
    };
    let models = refract::open_models(&target.models).await.unwrap();
    let mut pair = Pair::new(dir, hosts);
    let mut rng = Rng::new(5);
    let mut report = KillReport::default();
    let mut owners = std::collections::BTreeSet::new();
    let mut last = 0;
    let mut down: Option<(usize, Instant)> = None;
    for round in 0..400 {
        report.rounds = round + 1;
        for i in 0..hosts {
            let kept_down = down.is_some_and(|(d, until)| d == i && Instant::now() < until);
            if !kept_down {
                pair.start(i, &spawn);
            }
        }
        // Kill once the hosts have committed a few hundred to a few thousand
        // events more (or after 10 s): kills land mid-run however fast or
        // slow the machine is.
        let goal = last + 300 + rng.below(1_500);
        if until(|| pair.reap() > 0, || committed(models.as_ref(), projection), goal).await {
            break;
        }
        let owner = lease_owner(models.as_ref(), projection).await;
        let cp = checkpoint(target, projection).await;
        assert!(cp >= last, "checkpoint went back from {last} to {cp}");
        if let Some(owner) = &owner {
            if cp < head {
                owners.insert(owner.clone());
            }
        }
        // Every third round the owner goes down for longer than its lease.
        let victim = match owner.as_deref().and_then(node_index) {
            Some(i) if round % 3 == 2 => {
                down = Some((i, Instant::now() + Duration::from_millis(2_500)));
                i
            }
            Some(i) if round % 3 == 1 => i,
            _ => rng.below(hosts as u64) as usize,
        };
        pair.kill(victim);
        let killed = Instant::now();
        let cp = checkpoint(target, projection).await;
        let others_up = pair.children.iter().enumerate().any(|(i, c)| i != victim && c.is_some());
        if owner.as_deref().and_then(node_index) == Some(victim) && cp < head && others_up {
            report.owner_kills += 1;
            if let Some(took) = take_over(&mut pair, models.as_ref(), projection, NODES[victim], killed).await {
                report.slowest_take_over = report.slowest_take_over.max(took);
            }
        }
        let cp = checkpoint(target, projection).await;
        if cp > last && cp < head {
            report.kills_mid_stream += 1;
        }
        last = cp;
    }
    pair.finish();
    report.owners_seen = owners.len();
    assert_eq!(checkpoint(target, projection).await, head, "the hosts never finished: {report:?}");
    report
}

/// How long after `killed` a node other than `victim` held `projection`'s
/// lease; `None` if a host finished by itself meanwhile (nothing left to take over).
async fn take_over(
    pair: &mut Pair,
    models: &dyn ReadModelStore,
    projection: &str,
    victim: &str,
    killed: Instant,
) -> Option<Duration> {
    loop {
        if pair.reap() > 0 {
            return None;
        }
        if lease_owner(models, projection).await.is_some_and(|o| o != victim) {
            return Some(killed.elapsed());
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "no node took the lease over from {victim}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls every 10 ms until `ended()` says a host finished by itself
/// (returns true), `progress()` reaches `goal`, or 10 s pass (returns false).
async fn until<F: std::future::Future<Output = u64>>(
    mut ended: impl FnMut() -> bool,
    mut progress: impl FnMut() -> F,
    goal: u64,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ended() {
            return true;
        }
        if progress().await >= goal || Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The checkpoint `projection` has committed (0 before it is registered).
async fn committed(models: &dyn ReadModelStore, projection: &str) -> u64 {
    models.projection(projection).await.map_or(0, |r| r.checkpoint)
}

/// Which host of the pair runs as node `owner`.
fn node_index(owner: &str) -> Option<usize> {
    NODES.iter().position(|n| *n == owner)
}

/// The same loop for a replay, killing the host that holds the lease (the
/// one replaying) whenever it is known, after measured progress: it ends
/// when a host finished by itself. A kill counts as mid-replay when the owner had replayed some
/// letters and not all.
async fn replay_with_two_hosts(
    dir: &Path,
    target: &Target,
    plugins: &Path,
    config: &Path,
    models: &dyn ReadModelStore,
) -> KillReport {
    let spawn = |data: &Path| {
        let mut cmd = host_on(target, data, plugins);
        cmd.args(["--lease-ttl-ms", HOSTS_TTL_MS]).arg("--config").arg(config);
        cmd
    };
    let mut pair = Pair::new(dir, 2);
    let mut rng = Rng::new(6);
    let mut report = KillReport::default();
    let letters = || async { models.dead_letters("ledger").await.unwrap().len() as u64 };
    let all = letters().await;
    let mut left = all;
    for round in 0..400 {
        report.rounds = round + 1;
        pair.start(0, &spawn);
        pair.start(1, &spawn);
        // Kill once 20 to 150 more letters were replayed (or after 10 s).
        let goal = all - left + 20 + rng.below(130);
        if until(|| pair.reap() > 0, || async { all - letters().await }, goal).await {
            break;
        }
        let owner = lease_owner(models, "ledger").await.as_deref().and_then(node_index);
        pair.kill(owner.unwrap_or_else(|| rng.below(2) as usize));
        let now = letters().await;
        assert!(now <= left, "dead letters came back: {left} -> {now}");
        if owner.is_some() && now > 0 && now < all {
            report.kills_mid_stream += 1;
        }
        left = now;
    }
    pair.finish();
    report
}
