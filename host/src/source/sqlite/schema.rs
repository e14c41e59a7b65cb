//! The event store's tables, and the one-time move of a file written by an
//! earlier refract onto them.
//!
//! The log is kept in position order only. An index on
//! `(stream_id, stream_version)` inside the log made every append of events
//! to many streams rewrite one index page per event, and SQLite's WAL logs
//! whole pages, so appends wrote about 4 KiB per event twice (BENCHMARKS.md,
//! "SQLite appends: what limits them"). Instead, each stream's version is
//! one row of `streams`, which a commit touches once per stream, and the
//! per-stream read index is built behind the log in large sorted steps
//! (`stream_index.rs`).

use sqlx::SqlitePool;

use crate::db::DbTx;
use crate::source::SourceError;

/// The schema this build writes, kept in the file's `user_version`.
/// 0 is a new file or one from before the stream tables (schema 1, which
/// never set it).
const VERSION: i64 = 2;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    timestamp      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT    PRIMARY KEY,
    version   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_index (
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    position       INTEGER NOT NULL,
    PRIMARY KEY (stream_id, stream_version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_index_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_to INTEGER NOT NULL
);
INSERT OR IGNORE INTO stream_index_state (id, indexed_to) VALUES (1, 0);
";

/// Schema 1's log carried `UNIQUE (stream_id, stream_version)`. It is set
/// aside, [`TABLES`] are created beside it, its streams and index are
/// taken from that unique index, and the log is copied into the new table
/// without it (SQLite cannot drop a table constraint).
const FROM_SCHEMA_1: [&str; 3] = [
    "ALTER TABLE events RENAME TO events_schema_1",
    TABLES,
    "
INSERT INTO streams (stream_id, version)
    SELECT stream_id, MAX(stream_version) FROM events_schema_1 GROUP BY stream_id;
INSERT INTO stream_index (stream_id, stream_version, position)
    SELECT stream_id, stream_version, position FROM events_schema_1 ORDER BY stream_id, stream_version;
UPDATE stream_index_state SET indexed_to = (SELECT COALESCE(MAX(position), 0) FROM events_schema_1);
INSERT INTO events SELECT position, stream_id, stream_version, event_type, payload, metadata, timestamp
    FROM events_schema_1 ORDER BY position;
DROP TABLE events_schema_1;
",
];

/// Creates the tables, or moves a schema-1 file onto them, in one write
/// transaction: processes opening the same new or old file at once see
/// either nothing done or all of it.
pub(super) async fn prepare(writer: &SqlitePool) -> Result<(), SourceError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(writer).await?;
    if version == VERSION {
        return Ok(());
    }
    let mut tx = DbTx::begin(writer, "BEGIN IMMEDIATE").await?;
    // Asked again under the write lock: another process may have done it.
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(tx.conn()).await?;
    match version {
        VERSION => return Ok(tx.rollback().await?),
        0 => {
            let has_log: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'events')",
            )
            .fetch_one(tx.conn())
            .await?;
            let script: &[&'static str] = if has_log { &FROM_SCHEMA_1 } else { &[TABLES] };
            if has_log {
                tracing::info!("moving the event store onto schema {VERSION}: per-stream tables beside the log");
            }
            for &part in script {
                sqlx::raw_sql(part).execute(tx.conn()).await?;
            }
        }
        newer => {
            tx.rollback().await?;
            return Err(SourceError::Misconfigured(format!(
                "the event store was written by a newer refract (schema {newer}; this build reads schema {VERSION})"
            )));
        }
    }
    // PRAGMA takes no bound parameters; VERSION is a constant.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {VERSION}"))).execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::event::{AppendRequest, ExpectedVersion, NewEvent};
    use crate::source::{EventSource, EventStore, SourceError, SqliteEventStore};

    /// A file as schema 1 wrote it: the log with its unique stream index, no
    /// `user_version`.
    async fn schema_1_file(path: &std::path::Path, rows: &[(i64, &str, i64)]) {
        let db = crate::db::sqlite::SqliteDb::open(path, 1024).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, \
             stream_version INTEGER NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, \
             metadata TEXT NOT NULL, timestamp INTEGER NOT NULL, UNIQUE (stream_id, stream_version))",
        )
        .execute(&db.writer)
        .await
        .unwrap();
        for (position, stream, version) in rows {
            sqlx::query("INSERT INTO events VALUES (?, ?, ?, 'Noted', ?, '{}', 7)")
                .bind(position)
                .bind(stream)
                .bind(version)
                .bind(format!(r#"{{"p":{position}}}"#))
                .execute(&db.writer)
                .await
                .unwrap();
        }
        db.close().await;
    }

    #[tokio::test]
    async fn a_schema_1_file_keeps_its_events_versions_and_stream_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        schema_1_file(&path, &[(1, "a", 1), (2, "b", 1), (3, "a", 2), (4, "a", 3), (5, "b", 2)]).await;
        let store = SqliteEventStore::open(&path).await.unwrap();
        assert_eq!(store.head().await.unwrap(), 5);
        assert_eq!(store.stream_version("a").await.unwrap(), 3);
        assert_eq!(store.stream_version("b").await.unwrap(), 2);
        assert_eq!(store.stream_version("c").await.unwrap(), 0);
        let a: Vec<_> =
            store.read_stream("a", 1, 10).await.unwrap().iter().map(|e| (e.position, e.stream_version)).collect();
        assert_eq!(a, [(3, 2), (4, 3)]);
        assert_eq!(store.read_stream("b", 0, 10).await.unwrap()[1].payload, r#"{"p":5}"#);
        // Appends check against the moved versions and go on from the head.
        let append = |stream: &str, expected| AppendRequest {
            stream_id: stream.into(),
            expected: ExpectedVersion::Exact(expected),
            events: vec![NewEvent::new("Noted", "{}")],
        };
        let err = store.append(&[append("a", 2)]).await.unwrap_err();
        assert!(matches!(err, SourceError::Conflict { expected: 2, actual: 3, .. }), "{err}");
        let ok = store.append(&[append("a", 3)]).await.unwrap();
        assert_eq!((ok[0].first_position, ok[0].stream_version), (6, 4));
        let versions: Vec<_> = store.read_stream("a", 0, 10).await.unwrap().iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, [1, 2, 3, 4]);
        // The old table and its unique index are gone.
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE tbl_name LIKE 'events%' ORDER BY name")
                .fetch_all(&store.db.readers)
                .await
                .unwrap();
        assert_eq!(tables, ["events"]);
        store.close().await;
        // Opening it again changes nothing.
        let store = SqliteEventStore::open(&path).await.unwrap();
        assert_eq!(store.stream_version("a").await.unwrap(), 4);
        assert_eq!(store.head().await.unwrap(), 6);
    }

    #[tokio::test]
    async fn a_file_from_a_newer_refract_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        schema_1_file(&path, &[(1, "a", 1)]).await;
        let db = crate::db::sqlite::SqliteDb::open(&path, 1024).await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 3").execute(&db.writer).await.unwrap();
        db.close().await;
        let err = SqliteEventStore::open(&path).await.unwrap_err();
        assert!(matches!(&err, SourceError::Misconfigured(m) if m.contains("schema 3")), "{err}");
        let db = crate::db::sqlite::SqliteDb::open(&path, 1024).await.unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&db.readers).await.unwrap();
        assert_eq!(kept, 1);
    }
}
