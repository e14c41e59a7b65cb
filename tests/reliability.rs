//! Holes an adversarial pass found outside the store layer (issue 16):
//! the data-dir lock under a race, a panic on the plugin call thread,
//! hostile component bytes, names and queries no backend should take, and
//! subscriptions larger than the event stores can read by.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use refract::{DataDir, HostError};

// ---------------------------------------------------------------------------
// 1. The data-dir lock

/// Set in a child process of this test binary: the data dir it locks.
const LOCK_CHILD: &str = "REFRACT_RELIABILITY_LOCK_CHILD";

/// Not a test of its own: the body of a child process that waits for "go"
/// on stdin, tries to lock the data dir, prints the outcome and holds the
/// lock (if it got it) until its stdin is closed.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD) else { return };
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let lock = DataDir(dir.into()).lock();
    match &lock {
        Ok(_) => println!("LOCK won {}", std::process::id()),
        Err(HostError::Locked { pid, .. }) => println!("LOCK lost {pid}"),
        Err(e) => println!("LOCK error {e}"),
    }
    std::io::stdout().flush().unwrap();
    std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
    drop(lock);
}

/// A process trying to lock `dir` when told to.
struct Contender {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Contender {
    fn spawn(dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
            .env(LOCK_CHILD, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    /// `won PID` or `lost PID`.
    fn outcome(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "the child ended without trying");
            // The test harness may have begun the line with the test's name.
            if let Some(at) = line.find("LOCK ") {
                return line[at + "LOCK ".len()..].trim().to_owned();
            }
        }
    }

    /// Closes its stdin, so it lets go of the lock and exits.
    fn release(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// Two `refract run` started at the same instant both ran in 2 of 20
/// tries: the lock checked the pid file, then wrote it. Here 20 pairs of
/// processes are told to lock a data dir at the same moment: exactly one of
/// each pair wins, and the other names the winner. The loser exiting
/// leaves the winner's lock and pid alone, and so does a later attempt.
#[test]
fn of_two_hosts_started_at_once_exactly_one_gets_the_data_dir() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let mut pair = [Contender::spawn(dir.path()), Contender::spawn(dir.path())];
        for c in &mut pair {
            c.go();
        }
        let outcomes = pair.each_mut().map(|c| c.outcome());
        let [a, b] = pair;
        let (winner, loser) = match (outcomes[0].starts_with("won"), outcomes[1].starts_with("won")) {
            (true, false) => (a, b),
            (false, true) => (b, a),
            _ => panic!("round {round}: {outcomes:?}: exactly one must win"),
        };
        let pid = winner.child.id();
        assert!(outcomes.contains(&format!("won {pid}")), "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&format!("lost {pid}")), "round {round}: the loser names the winner: {outcomes:?}");
        loser.release();

        let pid_file = dir.path().join("refract.pid");
        let data = DataDir(dir.path().to_owned());
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string(), "round {round}");
        assert_eq!(data.running_host(), Some(pid), "round {round}");
        match data.lock() {
            Err(HostError::Locked { pid: named, .. }) => assert_eq!(named, pid, "round {round}"),
            other => panic!("round {round}: a third host got {other:?} while the winner runs"),
        }
        winner.release();
        assert_eq!(data.running_host(), None, "round {round}: the winner is gone");
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "", "round {round}: no stale pid");
        let lock = data.lock().expect("free again once the winner exited");
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), std::process::id().to_string());
        drop(lock);
        assert!(pid_file.exists(), "round {round}: the lock file is never removed");
    }
}

/// Inside one process too, a second lock of the same data dir is refused,
/// and dropping it leaves the holder's lock and pid where they were.
#[test]
fn a_refused_or_dropped_lock_does_not_touch_the_holders_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir(dir.path().to_owned());
    let pid_file = dir.path().join("refract.pid");
    let held = data.lock().unwrap();
    let me = std::process::id();
    match data.lock() {
        Err(e @ HostError::Locked { .. }) => {
            assert_eq!(e.to_string(), format!("another refract host (pid {me}) is running on {}", dir.path().display()))
        }
        other => panic!("a second lock: {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), me.to_string());
    drop(held);
    assert!(pid_file.exists());
    let again = data.lock().unwrap();
    assert!(matches!(data.lock(), Err(HostError::Locked { .. })), "the new holder is protected like the first");
    drop(again);
}
