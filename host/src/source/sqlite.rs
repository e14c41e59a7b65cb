//! The embedded event store: one SQLite file, no server.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;

use super::{Appended, EventSource, EventStore, SourceError, check_version, validate_append};
use crate::clock::now_ms;
use crate::event::{AppendRequest, Event, Subscription};
use crate::sqlite::SqliteDb;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    timestamp      INTEGER NOT NULL,
    UNIQUE (stream_id, stream_version)
)";

/// Events in a SQLite file, with a gapless global position.
///
/// Positions are assigned inside the single write transaction as
/// `max(position) + 1`, so they have no gaps and a reader can never see a
/// later position commit before an earlier one.
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
}

impl SqliteEventStore {
    /// Opens or creates the event store file.
    pub async fn open(path: &Path) -> Result<Self, SourceError> {
        let db = SqliteDb::open(path).await?;
        sqlx::query(SCHEMA).execute(&db.writer).await?;
        Ok(Self { db })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[async_trait]
impl EventSource for SqliteEventStore {
    async fn head(&self) -> Result<u64, SourceError> {
        let head: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events").fetch_one(&self.db.readers).await?;
        Ok(head as u64)
    }

    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError> {
        // The batch comes back as one JSON array in one row: sqlx's SQLite
        // driver hands every row across threads on its own, which cost more
        // than reading and decoding the events themselves (BENCHMARKS.md).
        let mut sql = String::from(
            "SELECT json_group_array(json_array(position, stream_id, stream_version, event_type, payload, \
             metadata, timestamp)) FROM (SELECT * FROM events WHERE position > ? AND position <= ?",
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
        sql.push_str(" ORDER BY position LIMIT ?)");
        let mut query = sqlx::query_scalar(AssertSqlSafe(sql)).bind(after as i64).bind(up_to as i64);
        for t in &subscription.event_types {
            query = query.bind(t.as_str());
        }
        for p in &subscription.stream_prefixes {
            query = query.bind(p.chars().count() as i64).bind(p.as_str());
        }
        let batch: String = query.bind(limit as i64).fetch_one(&self.db.readers).await?;
        decode_batch(&batch)
    }
}

/// One event as `json_array` writes it in `read`.
type JsonRow = (u64, String, u64, String, String, String, u64);

/// Decodes the JSON array `read` selects, in position order.
fn decode_batch(batch: &str) -> Result<Vec<Event>, SourceError> {
    let rows: Vec<JsonRow> = serde_json::from_str(batch).map_err(|e| SourceError::Corrupt(e.to_string()))?;
    let mut events: Vec<Event> = rows
        .into_iter()
        .map(|(position, stream_id, stream_version, event_type, payload, metadata, timestamp)| Event {
            position,
            stream_id,
            stream_version,
            event_type,
            payload,
            metadata,
            timestamp,
        })
        .collect();
    // SQLite does not promise an aggregate sees the subquery's order.
    if !events.is_sorted_by_key(|e| e.position) {
        events.sort_unstable_by_key(|e| e.position);
    }
    Ok(events)
}

/// Rows (or stream ids) per statement of an append. Each statement costs a
/// trip to sqlx's SQLite worker thread, so an append of thousands of events
/// sends a few multi-row statements instead of one per event; 128 rows of 7
/// values stay under SQLite's oldest limit of 999 bound variables.
const ROWS_PER_STATEMENT: usize = 128;

/// The current version of every stream the requests append to, a chunk of
/// streams per statement. Streams without events are absent (version 0).
async fn stream_versions<'a>(
    conn: &mut SqliteConnection,
    requests: &'a [AppendRequest],
) -> Result<HashMap<&'a str, i64>, sqlx::Error> {
    let mut streams: Vec<&str> = requests.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut versions = HashMap::with_capacity(streams.len());
    for chunk in streams.chunks(ROWS_PER_STATEMENT) {
        let marks = vec!["?"; chunk.len()].join(", ");
        // The (stream_id, stream_version) index answers each group's MAX.
        let sql = format!(
            "SELECT stream_id, MAX(stream_version) FROM events WHERE stream_id IN ({marks}) GROUP BY stream_id"
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for (id, version) in query.fetch_all(&mut *conn).await? {
            // Borrow the request's own string, so the map lives as long as `requests`.
            if let Ok(i) = chunk.binary_search(&id.as_str()) {
                versions.insert(chunk[i], version);
            }
        }
    }
    Ok(versions)
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        validate_append(requests)?;
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut position: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events").fetch_one(&mut *tx).await?;
        let timestamp = now_ms();
        let mut versions_now = stream_versions(&mut tx, requests).await?;
        let mut results = Vec::with_capacity(requests.len());
        let mut rows = Vec::with_capacity(requests.iter().map(|r| r.events.len()).sum());
        for r in requests {
            let current = versions_now.get(r.stream_id.as_str()).copied().unwrap_or(0);
            // Dropping `tx` on error rolls back: nothing was written yet anyway.
            check_version(&r.stream_id, r.expected, current as u64)?;
            let first_position = position + 1;
            let mut version = current;
            for e in &r.events {
                position += 1;
                version += 1;
                rows.push((position, r.stream_id.as_str(), version, e));
            }
            versions_now.insert(&r.stream_id, version);
            results.push(Appended {
                first_position: first_position as u64,
                last_position: position as u64,
                stream_version: version as u64,
            });
        }
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let marks = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO events (position, stream_id, stream_version, event_type, payload, metadata, timestamp) \
                 VALUES {marks}"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (position, stream_id, version, e) in chunk {
                query = query
                    .bind(*position)
                    .bind(*stream_id)
                    .bind(*version)
                    .bind(e.event_type.as_str())
                    .bind(e.payload.as_str())
                    .bind(e.metadata.as_str())
                    .bind(timestamp);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError> {
        let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?")
            .bind(stream_id)
            .fetch_one(&self.db.readers)
            .await?;
        Ok(v as u64)
    }
}
