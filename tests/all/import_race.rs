//! Issue 22: `refract import` raced a host that was starting and failed
//! with `database is locked` (1 try in 15 following the README's flow).
//!
//! The lock was the switch of a new file to WAL mode, which SQLite refuses
//! at once, without waiting on the busy timeout, while another process
//! switches the same file. So each round starts a host on a fresh data dir
//! with imports started beside it; every import must succeed and the event
//! count must be exact.

use std::path::Path;

use crate::common;
use common::cli::{output, refract, succeed};
use common::*;

const ROUNDS: usize = 40;
const IMPORTERS: usize = 3;

#[test]
fn imports_never_fail_while_a_host_starts() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["account_summary"]);
    let batch = dir.path().join("batch.jsonl");
    let events = bank_events(2, 20, 5);
    write_jsonl(&batch, &events);
    for round in 0..ROUNDS {
        let data = dir.path().join(format!("data-{round}"));
        let host = {
            let mut cmd = refract(&data);
            cmd.args(["run", "--no-http", "--exit-when-caught-up", "--plugins"]).arg(&plugins).env("RUST_LOG", "warn");
            std::thread::spawn(move || output(&mut cmd))
        };
        let imports: Vec<_> = (0..IMPORTERS)
            .map(|_| {
                let mut cmd = refract(&data);
                cmd.arg("import").arg(&batch);
                std::thread::spawn(move || output(&mut cmd))
            })
            .collect();
        for (i, import) in imports.into_iter().enumerate() {
            let out = import.join().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}, import {i} failed beside a starting host: {stderr}");
        }
        let out = host.join().unwrap();
        assert!(out.status.success(), "round {round}: the host failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(head(&data), IMPORTERS * events.len(), "round {round}");
    }
}

/// The event count, as an empty import reports it.
fn head(data: &Path) -> usize {
    let out = succeed(refract(data).arg("import").arg("/dev/null"));
    out.trim().rsplit(' ').next().unwrap().parse().unwrap()
}
