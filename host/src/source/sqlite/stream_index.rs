//! The per-stream read index, built behind the log.
//!
//! Events are indexed by `(stream_id, stream_version)` in steps of at least
//! [`STEP`] events, each step sorted before it is written, so a step
//! rewrites each index page it touches once, where indexing every append
//! as it committed rewrote one page per event (`schema.rs`). Reads of a
//! stream take the indexed part from the index and scan the short tail of
//! the log past it; one statement does both, so it sees one snapshot.

use sqlx::sqlite::LockedSqliteHandle;

use crate::db::sqlite::{SqliteError, Statement};

/// Events the log may run ahead of the index before an append indexes
/// them. A step rewrites most of the index's pages, so a larger one costs
/// appends less per event, and a stream read scans more of the tail: up
/// to this many events, a few milliseconds (BENCHMARKS.md).
pub(super) const STEP: i64 = 65_536;

/// One stream's events after a version, in version order:
/// `?1` the stream, `?2` the version after which to start, `?3` the limit.
pub(super) const READ_STREAM: &str = "
SELECT position, stream_id, stream_version, event_type, payload, metadata, timestamp FROM (
    SELECT e.position, e.stream_id, e.stream_version, e.event_type, e.payload, e.metadata, e.timestamp
        FROM stream_index i JOIN events e ON e.position = i.position
        WHERE i.stream_id = ?1 AND i.stream_version > ?2
    UNION ALL
    SELECT position, stream_id, stream_version, event_type, payload, metadata, timestamp
        FROM events
        WHERE position > (SELECT indexed_to FROM stream_index_state WHERE id = 1)
          AND stream_id = ?1 AND stream_version > ?2
) ORDER BY stream_version LIMIT ?3";

/// Indexes the log up to `head` if it has run [`STEP`] events ahead of the
/// index, inside the caller's write transaction, so the index and its mark
/// commit with the append that moved the head.
pub(super) fn catch_up(handle: &mut LockedSqliteHandle<'_>, head: i64) -> Result<(), SqliteError> {
    let indexed_to = {
        let mut stmt = Statement::prepare(handle, "SELECT indexed_to FROM stream_index_state WHERE id = 1")?;
        if stmt.step()? { stmt.column_i64(0) } else { 0 }
    };
    if head - indexed_to < STEP {
        return Ok(());
    }
    // Sorted here and written one row per statement: a multi-row
    // `INSERT ... SELECT` copied every index page it touched into a
    // statement journal first, in case it had to undo itself halfway.
    let mut entries: Vec<(String, i64, i64)> = Vec::with_capacity(usize::try_from(head - indexed_to).unwrap_or(0));
    {
        let mut tail = Statement::prepare(
            handle,
            "SELECT stream_id, stream_version, position FROM events WHERE position > ? AND position <= ?",
        )?;
        tail.bind_i64(1, indexed_to)?;
        tail.bind_i64(2, head)?;
        while tail.step()? {
            entries.push((tail.column_str(0)?.to_owned(), tail.column_i64(1), tail.column_i64(2)));
        }
    }
    entries.sort_unstable();
    let mut index =
        Statement::prepare(handle, "INSERT INTO stream_index (stream_id, stream_version, position) VALUES (?, ?, ?)")?;
    for (stream_id, version, position) in &entries {
        index.bind_text(1, stream_id)?;
        index.bind_i64(2, *version)?;
        index.bind_i64(3, *position)?;
        index.step()?;
        index.reset()?;
    }
    drop(index);
    let mut mark = Statement::prepare(handle, "UPDATE stream_index_state SET indexed_to = ? WHERE id = 1")?;
    mark.bind_i64(1, head)?;
    while mark.step()? {}
    Ok(())
}
