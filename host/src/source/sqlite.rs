//! The embedded event store: one SQLite file, no server.

mod schema;
mod stream_index;
mod sync;
mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};

use super::group_commit::{GroupCommit, GroupWriter, Outcome};
use super::wake::Wake;
use super::{Appended, EventSource, EventStore, SourceError, check_version, validate_append};
use crate::clock::now_ms;
use crate::db::DbTx;
use crate::db::sqlite::{SqliteDb, SqliteError, Statement, begin_immediate_now, execute, in_transaction};
use crate::model::event::{AppendRequest, Event, NewEvent, Subscription};

/// Events in a SQLite file, with a gapless global position.
///
/// Positions are assigned inside the single write transaction as
/// `max(position) + 1`, so they have no gaps and a reader can never see a
/// later position commit before an earlier one.
///
/// Runners are woken at once by appends through this store, and within a
/// few milliseconds by appends of other processes, which the store notices
/// through a watch on its WAL file (see `wal.rs`).
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::SourceError> {
/// use refract::{AppendRequest, EventStore, ExpectedVersion, NewEvent, SqliteEventStore};
/// let store = SqliteEventStore::open("data/events.db".as_ref()).await?;
/// store.append(&[AppendRequest {
///     stream_id: "account-1".into(),
///     expected: ExpectedVersion::Exact(0),
///     events: vec![NewEvent::new("AccountOpened", r#"{"owner":"ada"}"#)],
/// }]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    db: SqliteDb,
    path: PathBuf,
    wake: Arc<Wake>,
    appends: GroupCommit<Writer>,
}

/// What writes appends: the store's write connection.
#[derive(Debug)]
struct Writer {
    db: SqliteDb,
    wake: Arc<Wake>,
}

impl SqliteEventStore {
    /// Opens or creates the event store file.
    pub async fn open(path: &Path) -> Result<Self, SourceError> {
        let db = SqliteDb::open(path, crate::db::sqlite::EVENTS_WRITER_CACHE_KIB).await?;
        schema::prepare(&db.writer).await?;
        let wake = Arc::new(Wake::new());
        let appends = GroupCommit::new(Writer { db: db.clone(), wake: wake.clone() });
        Ok(Self { db, path: path.to_owned(), wake, appends })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.wake.stop();
        self.db.close().await;
    }
}

#[async_trait]
impl EventSource for SqliteEventStore {
    async fn head(&self) -> Result<u64, SourceError> {
        Ok(head_of(&self.db.readers).await?)
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.wake.subscribe(|head| wal::follow(&self.path, self.db.readers.clone(), head)))
    }

    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError> {
        let mut sql = String::from(
            "SELECT position, stream_id, stream_version, event_type, payload, metadata, timestamp \
             FROM events WHERE position > ? AND position <= ?",
        );
        if !subscription.event_types.is_empty() {
            let marks = vec!["?"; subscription.event_types.len()].join(",");
            sql.push_str(&format!(" AND event_type IN ({marks})"));
        }
        if !subscription.stream_prefixes.is_empty() {
            // substr, not LIKE: LIKE is case-insensitive and treats `_` and `%` specially.
            let tests = vec!["substr(stream_id, 1, ?) = ?"; subscription.stream_prefixes.len()].join(" OR ");
            sql.push_str(&format!(" AND ({tests})"));
        }
        sql.push_str(" ORDER BY position LIMIT ?");
        let mut conn = self.db.readers.acquire().await?;
        // Rows are stepped here, on this thread, through SQLite's C API:
        // sqlx would hand each row over from its worker thread on its own,
        // which cost more than reading and decoding the events (BENCHMARKS.md).
        let mut handle = conn.lock_handle().await?;
        let mut stmt = Statement::prepare(&mut handle, &sql)?;
        let mut param = 0;
        let mut next = || {
            param += 1;
            param
        };
        stmt.bind_i64(next(), to_i64(after))?;
        stmt.bind_i64(next(), to_i64(up_to))?;
        for t in &subscription.event_types {
            stmt.bind_text(next(), t)?;
        }
        for p in &subscription.stream_prefixes {
            stmt.bind_i64(next(), p.chars().count() as i64)?;
            stmt.bind_text(next(), p)?;
        }
        stmt.bind_i64(next(), i64::try_from(limit).unwrap_or(i64::MAX))?;
        let expected = usize::try_from(up_to.saturating_sub(after)).unwrap_or(usize::MAX).min(limit);
        let mut events = Vec::with_capacity(expected.min(MAX_PREALLOCATED));
        while stmt.step()? {
            events.push(Event {
                position: unsigned(&stmt, 0)?,
                stream_id: stmt.column_str(1)?.to_owned(),
                stream_version: unsigned(&stmt, 2)?,
                event_type: stmt.column_str(3)?.to_owned(),
                payload: stmt.column_str(4)?.to_owned(),
                metadata: stmt.column_str(5)?.to_owned(),
                timestamp: unsigned(&stmt, 6)?,
            });
        }
        Ok(events)
    }
}

/// Position of the newest event, 0 when there is none.
async fn head_of(readers: &SqlitePool) -> Result<u64, sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events").fetch_one(readers).await?;
    Ok(head as u64)
}

/// Events a read reserves room for up front; a larger batch grows as it goes.
const MAX_PREALLOCATED: usize = 16_384;

/// A position bound as SQLite's signed integer (positions beyond it do not exist).
fn to_i64(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// A column the schema keeps non-negative (positions, versions, timestamps).
fn unsigned(stmt: &Statement<'_>, column: std::ffi::c_int) -> Result<u64, SourceError> {
    let n = stmt.column_i64(column);
    u64::try_from(n).map_err(|_| SourceError::Corrupt(format!("negative value {n} in column {column}")))
}

/// The current version of every stream the requests append to. Streams
/// without events are at version 0.
fn stream_versions<'a>(
    handle: &mut LockedSqliteHandle<'_>,
    requests: impl Iterator<Item = &'a AppendRequest>,
) -> Result<HashMap<&'a str, i64>, SqliteError> {
    let mut stmt = Statement::prepare(handle, "SELECT version FROM streams WHERE stream_id = ?")?;
    let mut versions = HashMap::new();
    for r in requests {
        if let std::collections::hash_map::Entry::Vacant(entry) = versions.entry(r.stream_id.as_str()) {
            stmt.bind_text(1, &r.stream_id)?;
            entry.insert(if stmt.step()? { stmt.column_i64(0) } else { 0 });
            stmt.reset()?;
        }
    }
    Ok(versions)
}

/// Appends validated requests inside the caller's write transaction
/// (`BEGIN IMMEDIATE`), so other writes can commit together with them
/// (table sync state, `sync.rs`). Returns the results and the new head.
async fn append_in(
    conn: &mut SqliteConnection,
    requests: &[AppendRequest],
) -> Result<(Vec<Appended>, u64), SourceError> {
    let (mut outcomes, head) = append_calls(conn, &[requests]).await?;
    Ok((outcomes.pop().expect("one outcome per call")?, head))
}

/// An event row to insert: position, stream, version, event.
type Row<'a> = (i64, &'a str, i64, &'a NewEvent);

/// Appends several calls' validated requests inside the caller's write
/// transaction, each call all or nothing on its own: one whose expected
/// versions do not hold writes nothing (its outcome is the conflict) and
/// the next is checked as if it had not been made. Returns each call's
/// outcome and the new head.
///
/// The statements are stepped here, on this thread, through SQLite's C API,
/// as `read` does: through sqlx every statement was a round trip to the
/// connection's worker thread, and those hand-offs, not SQLite, bounded
/// appends. Nothing here waits on a lock: the caller's `BEGIN IMMEDIATE`
/// already holds the write lock, so the thread is busy only with SQLite's work.
async fn append_calls(
    conn: &mut SqliteConnection,
    calls: &[&[AppendRequest]],
) -> Result<(Vec<Outcome>, u64), SourceError> {
    append_on(&mut conn.lock_handle().await?, calls)
}

/// [`append_calls`] on a connection already lent out.
fn append_on(
    handle: &mut LockedSqliteHandle<'_>,
    calls: &[&[AppendRequest]],
) -> Result<(Vec<Outcome>, u64), SourceError> {
    let mut position = {
        let mut head = Statement::prepare(handle, "SELECT COALESCE(MAX(position), 0) FROM events")?;
        head.step()?;
        head.column_i64(0)
    };
    let timestamp = now_ms();
    let mut versions = stream_versions(handle, calls.iter().flat_map(|&c| c.iter()))?;
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(calls.iter().flat_map(|&c| c.iter()).map(|r| r.events.len()).sum());
    let outcomes = calls.iter().map(|&call| plan(call, &mut versions, &mut position, &mut rows)).collect();
    let mut insert = Statement::prepare(
        handle,
        "INSERT INTO events (position, stream_id, stream_version, event_type, payload, metadata, timestamp) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?;
    for (position, stream_id, version, e) in &rows {
        insert.bind_i64(1, *position)?;
        insert.bind_text(2, stream_id)?;
        insert.bind_i64(3, *version)?;
        insert.bind_text(4, &e.event_type)?;
        insert.bind_text(5, &e.payload)?;
        insert.bind_text(6, &e.metadata)?;
        insert.bind_i64(7, timestamp)?;
        insert.step()?;
        insert.reset()?;
    }
    drop(insert);
    // Each stream's new version once, however many of its events the calls wrote.
    let mut written: HashMap<&str, i64> = HashMap::new();
    for (_, stream_id, version, _) in &rows {
        written.insert(stream_id, *version);
    }
    let mut stream = Statement::prepare(
        handle,
        "INSERT INTO streams (stream_id, version) VALUES (?, ?) \
         ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
    )?;
    for (stream_id, version) in written {
        stream.bind_text(1, stream_id)?;
        stream.bind_i64(2, version)?;
        stream.step()?;
        stream.reset()?;
    }
    drop(stream);
    stream_index::catch_up(handle, position)?;
    Ok((outcomes, position as u64))
}

/// Checks one call's requests against the stream versions so far and, if
/// every one holds, gives its events positions and versions; if one does
/// not, leaves everything as it was and returns the conflict.
fn plan<'a>(
    call: &'a [AppendRequest],
    versions: &mut HashMap<&'a str, i64>,
    position: &mut i64,
    rows: &mut Vec<Row<'a>>,
) -> Outcome {
    let (start, rows_before) = (*position, rows.len());
    let mut after: HashMap<&str, i64> = HashMap::new();
    let mut results = Vec::with_capacity(call.len());
    for r in call {
        let current = after.get(r.stream_id.as_str()).or_else(|| versions.get(r.stream_id.as_str())).copied();
        if let Err(e) = check_version(&r.stream_id, r.expected, current.unwrap_or(0) as u64) {
            *position = start;
            rows.truncate(rows_before);
            return Err(e);
        }
        let first_position = *position + 1;
        let mut version = current.unwrap_or(0);
        for e in &r.events {
            *position += 1;
            version += 1;
            rows.push((*position, r.stream_id.as_str(), version, e));
        }
        after.insert(&r.stream_id, version);
        results.push(Appended {
            first_position: first_position as u64,
            last_position: *position as u64,
            stream_version: version as u64,
        });
    }
    versions.extend(after);
    Ok(results)
}

#[async_trait]
impl GroupWriter for Writer {
    async fn write(&self, calls: &[&[AppendRequest]]) -> Result<Vec<Outcome>, SourceError> {
        // The whole group in one hand-off of the connection when no other
        // process holds the write lock, which is almost always.
        let mut conn = self.db.writer.acquire().await?;
        let done = {
            let mut handle = conn.lock_handle().await?;
            if begin_immediate_now(&mut handle)? {
                let appended = append_on(&mut handle, calls);
                let commit = matches!(&appended, Ok((outcomes, _)) if anything_to_commit(outcomes));
                let ended = execute(&mut handle, if commit { "COMMIT" } else { "ROLLBACK" });
                if ended.is_err() {
                    let _ = execute(&mut handle, "ROLLBACK");
                }
                Some((appended, ended.map(|()| commit), in_transaction(&mut handle)))
            } else {
                None
            }
        };
        if let Some((appended, ended, stuck)) = done {
            if stuck {
                // Neither COMMIT nor ROLLBACK ended it: the connection is
                // closed rather than lent out mid-transaction.
                conn.close_on_drop();
            }
            let (outcomes, head) = appended?;
            if ended? {
                self.wake.advance(head);
            }
            return Ok(outcomes);
        }
        drop(conn);
        let mut tx = DbTx::begin(&self.db.writer, "BEGIN IMMEDIATE").await?;
        let (outcomes, head) = append_calls(tx.conn(), calls).await?;
        if anything_to_commit(&outcomes) {
            tx.commit().await?;
            self.wake.advance(head);
        } else {
            tx.rollback().await?;
        }
        Ok(outcomes)
    }
}

/// A group whose every call was refused (version conflicts) wrote nothing:
/// it is rolled back, and nobody is woken.
fn anything_to_commit(outcomes: &[Outcome]) -> bool {
    outcomes.iter().any(Result::is_ok)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        validate_append(requests)?;
        self.appends.append(requests).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError> {
        let v: i64 = sqlx::query_scalar("SELECT COALESCE((SELECT version FROM streams WHERE stream_id = ?), 0)")
            .bind(stream_id)
            .fetch_one(&self.db.readers)
            .await?;
        Ok(v as u64)
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let rows: Vec<(i64, String, i64, String, String, String, i64)> = sqlx::query_as(stream_index::READ_STREAM)
            .bind(stream_id)
            .bind(after.min(i64::MAX as u64) as i64)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&self.db.readers)
            .await?;
        Ok(rows.into_iter().map(super::event_row).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::{ExpectedVersion, NewEvent};

    async fn store_with(payloads: &[&str]) -> (tempfile::TempDir, SqliteEventStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(&dir.path().join("events.db")).await.unwrap();
        let events = payloads.iter().map(|p| NewEvent::new("Noted", *p)).collect();
        store
            .append(&[AppendRequest { stream_id: "s-1".into(), expected: ExpectedVersion::Any, events }])
            .await
            .unwrap();
        (dir, store)
    }

    fn request(stream: &str, expected: ExpectedVersion, events: usize) -> AppendRequest {
        AppendRequest {
            stream_id: stream.into(),
            expected,
            events: (0..events).map(|i| NewEvent::new("Noted", format!(r#"{{"i":{i}}}"#))).collect(),
        }
    }

    #[tokio::test]
    async fn calls_written_together_are_each_all_or_nothing_and_see_the_ones_before() {
        let (_dir, store) = store_with(&["{}"]).await; // s-1 at version 1, head 1
        let exact = ExpectedVersion::Exact;
        let first = [request("s-2", exact(0), 2)];
        // Its second request conflicts: neither is written.
        let torn = [request("s-3", exact(0), 1), request("s-1", exact(0), 1)];
        // Checked after `first` and as if `torn` had not been made.
        let after = [request("s-2", exact(2), 1), request("s-3", exact(0), 1)];
        let stale = [request("s-2", exact(0), 1)];
        let writer = Writer { db: store.db.clone(), wake: store.wake.clone() };
        let outcomes = writer.write(&[&first, &torn, &after, &stale]).await.unwrap();
        let ok = |o: &Outcome| {
            o.as_ref()
                .unwrap()
                .iter()
                .map(|a| (a.first_position, a.last_position, a.stream_version))
                .collect::<Vec<_>>()
        };
        assert_eq!(ok(&outcomes[0]), [(2, 3, 2)]);
        assert!(
            matches!(&outcomes[1], Err(SourceError::Conflict { stream_id, expected: 0, actual: 1 }) if stream_id == "s-1")
        );
        assert_eq!(ok(&outcomes[2]), [(4, 4, 3), (5, 5, 1)]);
        assert!(
            matches!(&outcomes[3], Err(SourceError::Conflict { stream_id, expected: 0, actual: 3 }) if stream_id == "s-2")
        );
        let all = store.read(0, 100, &Subscription::default(), 100).await.unwrap();
        let rows: Vec<_> = all.iter().map(|e| (e.position, e.stream_id.as_str(), e.stream_version)).collect();
        assert_eq!(rows, [(1, "s-1", 1), (2, "s-2", 1), (3, "s-2", 2), (4, "s-2", 3), (5, "s-3", 1)]);
        // Only conflicts: nothing is written and the store goes on.
        let outcomes = writer.write(&[&stale]).await.unwrap();
        assert!(matches!(&outcomes[0], Err(SourceError::Conflict { .. })));
        assert_eq!(store.head().await.unwrap(), 5);
    }

    #[tokio::test]
    async fn stream_reads_join_the_index_and_the_log_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(&dir.path().join("events.db")).await.unwrap();
        let per_append: i64 = 40_000;
        // Each stream's (position, version), computed here as the events are made.
        let mut expected: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        let mut position = 0;
        for _ in 0..3 {
            let requests: Vec<_> =
                (0..per_append).map(|i| request(&format!("s-{}", i % 7), ExpectedVersion::Any, 1)).collect();
            for r in &requests {
                position += 1;
                let stream = expected.entry(r.stream_id.clone()).or_default();
                stream.push((position, stream.len() as u64 + 1));
            }
            store.append(&requests).await.unwrap();
        }
        // The second append took the log past one step: the index covers
        // the first two appends, the third is read from the log.
        let indexed_to: i64 =
            sqlx::query_scalar("SELECT indexed_to FROM stream_index_state").fetch_one(&store.db.readers).await.unwrap();
        assert!(per_append < stream_index::STEP && 2 * per_append >= stream_index::STEP);
        assert_eq!(indexed_to, 2 * per_append);
        for (stream, events) in &expected {
            let read = store.read_stream(stream, 0, 100_000).await.unwrap();
            let got: Vec<_> = read.iter().map(|e| (e.position, e.stream_version)).collect();
            assert_eq!(&got, events, "{stream}");
            assert_eq!(store.stream_version(stream).await.unwrap(), events.len() as u64);
            // A page that starts in the index and ends in the log.
            let after = events.iter().filter(|(p, _)| *p <= indexed_to as u64).count() as u64 - 2;
            let page = store.read_stream(stream, after, 4).await.unwrap();
            let got: Vec<_> = page.iter().map(|e| (e.position, e.stream_version)).collect();
            assert_eq!(got, events[after as usize..after as usize + 4], "{stream}");
        }
    }

    #[tokio::test]
    async fn an_append_waits_for_another_connections_write_lock_then_lands() {
        let (dir, store) = store_with(&["{}"]).await;
        // Another process's writer, as `refract import` beside a host.
        let other = SqliteDb::open(&dir.path().join("events.db"), 1024).await.unwrap();
        let mut locked = DbTx::begin(&other.writer, "BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("SELECT 1").execute(locked.conn()).await.unwrap();
        let appending = {
            let store = store.clone();
            tokio::spawn(async move { store.append(&[request("s-2", ExpectedVersion::Exact(0), 2)]).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!appending.is_finished(), "the append did not wait for the lock");
        locked.rollback().await.unwrap();
        let appended = appending.await.unwrap().unwrap();
        assert_eq!((appended[0].first_position, appended[0].last_position, appended[0].stream_version), (2, 3, 2));
        // The fast path again, now that the lock is free, and the head after both.
        let again = store.append(&[request("s-2", ExpectedVersion::Exact(2), 1)]).await.unwrap();
        assert_eq!(again[0].first_position, 4);
        assert_eq!(store.head().await.unwrap(), 4);
        assert_eq!(store.stream_version("s-2").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn reads_text_back_byte_for_byte() {
        let payloads = [r#"{"q":"\"quoted\" \\ back\nslash"}"#, r#"{"u":"zürich ✓ 𝄞"}"#, "{}"];
        let (_dir, store) = store_with(&payloads).await;
        let events = store.read(0, 3, &Subscription::default(), 10).await.unwrap();
        let read: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
        assert_eq!(read, payloads);
        assert_eq!(events.iter().map(|e| (e.position, e.stream_version)).collect::<Vec<_>>(), [(1, 1), (2, 2), (3, 3)]);
        assert!(events.iter().all(|e| e.stream_id == "s-1" && e.event_type == "Noted" && e.metadata == "{}"));
    }

    #[tokio::test]
    async fn rows_another_writer_corrupted_are_an_error_not_a_panic() {
        let (_dir, store) = store_with(&["{}", "{}", "{}"]).await;
        // Written behind the host's back, as another program could.
        sqlx::query("UPDATE events SET payload = CAST(x'7bff7d' AS TEXT) WHERE position = 2")
            .execute(&store.db.writer)
            .await
            .unwrap();
        let err = store.read(0, 3, &Subscription::default(), 10).await.unwrap_err();
        assert!(matches!(&err, SourceError::Sqlite { message, .. } if message.contains("UTF-8")), "{err}");
        sqlx::query("UPDATE events SET payload = '{}', timestamp = -5 WHERE position = 2")
            .execute(&store.db.writer)
            .await
            .unwrap();
        let err = store.read(0, 3, &Subscription::default(), 10).await.unwrap_err();
        assert!(matches!(&err, SourceError::Corrupt(m) if m.contains("-5")), "{err}");
        // Reads that stop before the bad row still work, and the readers'
        // connections are usable after the errors.
        assert_eq!(store.read(0, 1, &Subscription::default(), 10).await.unwrap().len(), 1);
        assert_eq!(store.head().await.unwrap(), 3);
    }
}
