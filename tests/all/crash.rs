//! Crash safety: SIGKILL the host again and again while it projects 50,000
//! events; the final read model must equal a run that was never interrupted,
//! document by document (no event lost, none applied twice). Run once with
//! the embedded SQLite stores and once with both stores in PostgreSQL.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;

const EVENTS: usize = 50_000;

/// Where one host run keeps its stores: the data dir (pid lock, module
/// cache) and the URLs of the event and read-model stores.
struct Target {
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
}

fn host_command(target: &Target, plugins: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
    cmd.arg("--data-dir")
        .arg(&target.data)
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
async fn sigkill_loop(dir: &Path, killed: &Target, clean: &Target) {
    let plugins = plugins_dir(dir, &["account_summary", "order_summary"]);
    let events = bank_events(1_000, EVENTS, 42);
    seed(killed, clean, &events).await;

    // Kill after a random delay; the delay grows slowly so that runs get
    // past plugin compilation and into projection, whatever the machine's speed.
    let mut rng = Rng::new(99);
    let mut kills_mid_stream = 0;
    let mut last_checkpoint = 0;
    let mut finished = false;
    for round in 0..200u64 {
        let mut child = host_command(killed, &plugins).spawn().unwrap();
        let delay = Duration::from_millis(60 + round * 8 + rng.below(150));
        let started = Instant::now();
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "host failed on its own: {status}");
                break true;
            }
            if started.elapsed() >= delay {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
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
