//! Crash safety: SIGKILL the host again and again while it projects 50,000
//! events; the final read model must equal a run that was never interrupted,
//! document by document (no event lost, none applied twice).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use refract::ReadModelStore;

const EVENTS: usize = 50_000;

fn host_command(data: &Path, plugins: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["run", "--exit-when-caught-up", "--batch-size", "50", "--plugins"])
        .arg(plugins)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

async fn checkpoint(data: &Path, projection: &str) -> u64 {
    let stores = Stores::open(data).await;
    let cp = match stores.models.projection(projection).await {
        Ok(r) => r.checkpoint,
        Err(refract::StoreError::UnknownProjection(_)) => 0,
        Err(e) => panic!("{e}"),
    };
    stores.models.close().await;
    stores.events.close().await;
    cp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let killed = dir.path().join("killed");
    let clean = dir.path().join("clean");
    let plugins = plugins_dir(dir.path(), &["account_summary", "order_summary"]);

    let events = bank_events(1_000, EVENTS, 42);
    let stores = Stores::open(&killed).await;
    append_all(stores.events.as_ref(), &events).await;
    stores.events.close().await;
    stores.models.close().await;
    std::fs::create_dir_all(&clean).unwrap();
    std::fs::copy(killed.join("events.db"), clean.join("events.db")).unwrap();

    // Kill after a random delay; the delay grows slowly so that runs get
    // past plugin compilation and into projection, whatever the machine's speed.
    let mut rng = Rng::new(99);
    let mut kills_mid_stream = 0;
    let mut last_checkpoint = 0;
    let mut finished = false;
    for round in 0..200u64 {
        let mut child = host_command(&killed, &plugins).spawn().unwrap();
        let delay = Duration::from_millis(150 + round * 20 + rng.below(300));
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
        let cp = checkpoint(&killed, "account-summary").await;
        assert!(cp >= last_checkpoint, "checkpoint went back from {last_checkpoint} to {cp}");
        if cp > last_checkpoint && cp < EVENTS as u64 {
            kills_mid_stream += 1;
        }
        last_checkpoint = cp;
    }
    assert!(finished, "the host never finished");
    assert!(kills_mid_stream >= 5, "only {kills_mid_stream} kills landed mid-projection");

    let status = host_command(&clean, &plugins).status().unwrap();
    assert!(status.success());

    let killed_stores = Stores::open(&killed).await;
    let clean_stores = Stores::open(&clean).await;
    for (projection, collections) in
        [("account-summary", &["accounts"][..]), ("order-summary", &["orders", "customers"][..])]
    {
        let a = killed_stores.models.projection(projection).await.unwrap();
        let b = clean_stores.models.projection(projection).await.unwrap();
        assert_eq!((a.checkpoint, b.checkpoint), (EVENTS as u64, EVENTS as u64), "{projection}");
        for c in collections {
            let got = all_documents(killed_stores.models.as_ref(), projection, c).await;
            let want = all_documents(clean_stores.models.as_ref(), projection, c).await;
            assert_eq!(got, want, "{projection}/{c} differs from the uninterrupted run");
        }
    }
    let docs = all_documents(killed_stores.models.as_ref(), "account-summary", "accounts").await;
    for (id, want) in expected_accounts(&events) {
        assert_eq!(docs[&id]["balance"].as_i64(), Some(want.balance), "{id}");
        assert_eq!(docs[&id]["transactions"].as_u64(), Some(want.transactions), "{id}");
    }
    eprintln!("killed {kills_mid_stream} times mid-projection");
}
