//! Noticing appends that another process makes to the same SQLite file.
//!
//! **Why a watch on the WAL file.** In WAL mode every commit appends its
//! pages to `events.db-wal` with `write(2)`, which inotify (through the
//! `notify` crate) reports within microseconds, and nothing but a commit
//! writes there: readers only read it, a checkpoint writes the main file. A
//! write to the WAL is therefore a cheap, exact hint that the head may have
//! moved, and the follower then asks for the head (one primary-key lookup).
//! The alternative, a `PRAGMA data_version` check every few milliseconds,
//! costs a query per interval forever and still waits up to an interval;
//! the watch costs nothing while nobody writes.
//!
//! **Why it looks again shortly after.** A commit writes the WAL *before* it
//! publishes the new frames in the shared-memory index, so a head query that
//! runs between the two still sees the old head, and no later write would
//! come to correct it. When the head has not moved, the follower looks again
//! after 1, 4 and 16 ms. The runners' poll stays as the last fallback (no
//! inotify on this platform or file system, an event lost on overflow).

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, watch};

use crate::projection::watch::is_write;
use crate::source::wake::{Follower, advance};

/// Pauses before each look at the head after a write to the WAL: at once,
/// then again while the head has not moved (see the module docs).
const LOOKS: [Duration; 4] =
    [Duration::ZERO, Duration::from_millis(1), Duration::from_millis(4), Duration::from_millis(16)];

/// Starts following writes to the WAL of the database at `path`, advancing
/// `head`; `None` when that is impossible (no tokio runtime, no watch).
/// Dropping the returned follower stops the watch and its task.
pub(super) fn follow(path: &Path, readers: SqlitePool, head: watch::Sender<u64>) -> Option<Follower> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    // The folder is watched, not the file: SQLite deletes the WAL when its
    // last connection closes and creates it again on the next write.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut wal = path.file_name()?.to_owned();
    wal.push("-wal");
    let (tx, writes) = mpsc::channel::<()>(1);
    let watched = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if is_write(&event.kind) && event.paths.iter().any(|p| p.file_name() == Some(wal.as_os_str())) {
            // Full: a look is already due, and it covers this write too.
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
    match watched {
        Ok(watcher) => {
            runtime.spawn(look(readers, head, writes));
            Some(Box::new(watcher))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch the event store; appends by other processes are seen at the next poll");
            None
        }
    }
}

/// Looks at the head after each write to the WAL, until the watch is dropped.
async fn look(readers: SqlitePool, head: watch::Sender<u64>, mut writes: mpsc::Receiver<()>) {
    let mut seen = super::head_of(&readers).await.unwrap_or(0);
    while writes.recv().await.is_some() {
        for pause in LOOKS {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            match super::head_of(&readers).await {
                Ok(now) if now > seen => {
                    seen = now;
                    advance(&head, now);
                    break;
                }
                Ok(_) => {}
                // Closed or failing: the runners' poll and backoff take over.
                Err(_) => break,
            }
        }
    }
}
