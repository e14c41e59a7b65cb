//! Table sync state in the embedded event store, committed with the events.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::{SqliteEventStore, append_in};
use crate::clock::now_ms;
use crate::db::DbTx;
use crate::source::sync_log::{StoredSync, SyncCommit, SyncLog, stale_epoch};
use crate::source::{SourceError, validate_append};

/// Rows (or keys) per statement. Each statement costs a trip to sqlx's
/// SQLite worker thread, so thousands of rows go in a few multi-row
/// statements; 128 rows of 4 values stay under SQLite's oldest limit of 999
/// bound variables.
const ROWS_PER_STATEMENT: usize = 128;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sync_state (
    source     TEXT PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    rows       INTEGER NOT NULL,
    last_sync  INTEGER,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS sync_rows (
    source TEXT    NOT NULL,
    key    TEXT    NOT NULL,
    seen   TEXT    NOT NULL,
    live   INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
";

type StateRow = (String, i64, String, i64, Option<i64>, Option<String>);

fn stored(r: StateRow) -> (String, StoredSync) {
    (
        r.0,
        StoredSync {
            epoch: r.1,
            state: r.2,
            rows: r.3.max(0) as u64,
            last_sync_ms: r.4.map(|t| t.max(0) as u64),
            last_error: r.5,
        },
    )
}

impl SqliteEventStore {
    async fn sync_schema(&self) -> Result<(), SourceError> {
        sqlx::raw_sql(SCHEMA).execute(&self.db.writer).await?;
        Ok(())
    }
}

#[async_trait]
impl SyncLog for SqliteEventStore {
    async fn sync_load(&self, source: &str) -> Result<StoredSync, SourceError> {
        self.sync_schema().await?;
        sqlx::query("INSERT OR IGNORE INTO sync_state (source, epoch, state, rows) VALUES (?, 0, '', 0)")
            .bind(source)
            .execute(&self.db.writer)
            .await?;
        let row: StateRow =
            sqlx::query_as("SELECT source, epoch, state, rows, last_sync, last_error FROM sync_state WHERE source = ?")
                .bind(source)
                .fetch_one(&self.db.writer)
                .await?;
        Ok(stored(row).1)
    }

    async fn sync_list(&self) -> Result<Vec<(String, StoredSync)>, SourceError> {
        self.sync_schema().await?;
        let rows: Vec<StateRow> =
            sqlx::query_as("SELECT source, epoch, state, rows, last_sync, last_error FROM sync_state ORDER BY source")
                .fetch_all(&self.db.readers)
                .await?;
        Ok(rows.into_iter().map(stored).collect())
    }

    async fn sync_seen(&self, source: &str, keys: &[String]) -> Result<HashMap<String, String>, SourceError> {
        let mut seen = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(ROWS_PER_STATEMENT * 4) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT key, seen FROM sync_rows WHERE source = ? AND key IN ({marks})");
            let mut q = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql)).bind(source);
            for k in chunk {
                q = q.bind(k);
            }
            seen.extend(q.fetch_all(&self.db.readers).await?);
        }
        Ok(seen)
    }

    async fn sync_live_keys(&self, source: &str) -> Result<Vec<String>, SourceError> {
        Ok(sqlx::query_scalar("SELECT key FROM sync_rows WHERE source = ? AND live = 1")
            .bind(source)
            .fetch_all(&self.db.readers)
            .await?)
    }

    async fn sync_commit(&self, c: &SyncCommit<'_>) -> Result<(), SourceError> {
        validate_append(c.events)?;
        let mut tx = DbTx::begin(&self.db.writer, "BEGIN IMMEDIATE").await?;
        let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM sync_state WHERE source = ?")
            .bind(c.source)
            .fetch_optional(tx.conn())
            .await?;
        if epoch != Some(c.epoch) {
            tx.rollback().await?;
            return Err(stale_epoch(c.source, c.epoch, epoch.unwrap_or(-1)));
        }
        let head = if c.events.is_empty() { None } else { Some(append_in(tx.conn(), c.events).await?.1) };
        for chunk in c.rows.chunks(ROWS_PER_STATEMENT) {
            let marks = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO sync_rows (source, key, seen, live) VALUES {marks} \
                 ON CONFLICT (source, key) DO UPDATE SET seen = excluded.seen, live = excluded.live"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q.bind(c.source).bind(r.key.as_str()).bind(r.seen.as_str()).bind(r.live);
            }
            q.execute(tx.conn()).await?;
        }
        sqlx::query(
            "UPDATE sync_state SET state = ?, rows = rows + ?, \
             last_sync = CASE WHEN ? THEN ? ELSE last_sync END, last_error = NULL WHERE source = ?",
        )
        .bind(c.state)
        .bind(c.events.len() as i64)
        .bind(c.pass_done)
        .bind(now_ms())
        .bind(c.source)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        if let Some(head) = head {
            self.wake.advance(head);
        }
        Ok(())
    }

    async fn sync_error(&self, source: &str, error: Option<&str>) -> Result<(), SourceError> {
        // An upsert: a source that fails before its first pass (its database
        // down at start-up) has no state yet, and its error must still show.
        self.sync_schema().await?;
        sqlx::query(
            "INSERT INTO sync_state (source, epoch, state, rows, last_error) VALUES (?, 0, '', 0, ?) \
             ON CONFLICT (source) DO UPDATE SET last_error = excluded.last_error",
        )
        .bind(source)
        .bind(error)
        .execute(&self.db.writer)
        .await?;
        Ok(())
    }

    async fn sync_reset(&self, source: &str) -> Result<(), SourceError> {
        self.sync_schema().await?;
        let mut tx = DbTx::begin(&self.db.writer, "BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM sync_rows WHERE source = ?").bind(source).execute(tx.conn()).await?;
        sqlx::query(
            "INSERT INTO sync_state (source, epoch, state, rows) VALUES (?, 1, '', 0) \
             ON CONFLICT (source) DO UPDATE SET epoch = epoch + 1, state = '', rows = 0, last_sync = NULL, \
             last_error = NULL",
        )
        .bind(source)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
