//! Table sync state in PostgreSQL, committed with the events.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{PostgresEventStore, append_in};
use crate::clock::now_ms;
use crate::db::DbTx;
use crate::source::sync_log::{StoredSync, SyncCommit, SyncLog, stale_epoch};
use crate::source::{SourceError, validate_append};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS refract_sync_state (
        source     TEXT PRIMARY KEY,
        epoch      BIGINT NOT NULL,
        state      TEXT   NOT NULL,
        rows       BIGINT NOT NULL,
        last_sync  BIGINT,
        last_error TEXT
    )",
    "CREATE TABLE IF NOT EXISTS refract_sync_rows (
        source TEXT    NOT NULL,
        key    TEXT    NOT NULL,
        seen   TEXT    NOT NULL,
        live   BOOLEAN NOT NULL,
        PRIMARY KEY (source, key)
    )",
];

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

impl PostgresEventStore {
    async fn sync_schema(&self) -> Result<(), SourceError> {
        crate::db::postgres::create_schema(&self.pool, SCHEMA).await?;
        Ok(())
    }
}

#[async_trait]
impl SyncLog for PostgresEventStore {
    async fn sync_load(&self, source: &str) -> Result<StoredSync, SourceError> {
        self.sync_schema().await?;
        sqlx::query(
            "INSERT INTO refract_sync_state (source, epoch, state, rows) VALUES ($1, 0, '', 0) \
             ON CONFLICT (source) DO NOTHING",
        )
        .bind(source)
        .execute(&self.pool)
        .await?;
        let row: StateRow = sqlx::query_as(
            "SELECT source, epoch, state, rows, last_sync, last_error FROM refract_sync_state WHERE source = $1",
        )
        .bind(source)
        .fetch_one(&self.pool)
        .await?;
        Ok(stored(row).1)
    }

    async fn sync_list(&self) -> Result<Vec<(String, StoredSync)>, SourceError> {
        self.sync_schema().await?;
        let rows: Vec<StateRow> = sqlx::query_as(
            "SELECT source, epoch, state, rows, last_sync, last_error FROM refract_sync_state ORDER BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(stored).collect())
    }

    async fn sync_seen(&self, source: &str, keys: &[String]) -> Result<HashMap<String, String>, SourceError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, seen FROM refract_sync_rows WHERE source = $1 AND key = ANY($2)")
                .bind(source)
                .bind(keys)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn sync_live_keys(&self, source: &str) -> Result<Vec<String>, SourceError> {
        Ok(sqlx::query_scalar("SELECT key FROM refract_sync_rows WHERE source = $1 AND live")
            .bind(source)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn sync_commit(&self, c: &SyncCommit<'_>) -> Result<(), SourceError> {
        validate_append(c.events)?;
        let mut tx = DbTx::begin(&self.pool, "BEGIN").await?;
        // FOR UPDATE: a reset waits for this commit, or this commit sees the reset's epoch.
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM refract_sync_state WHERE source = $1 FOR UPDATE")
                .bind(c.source)
                .fetch_optional(tx.conn())
                .await?;
        if epoch != Some(c.epoch) {
            tx.rollback().await?;
            return Err(stale_epoch(c.source, c.epoch, epoch.unwrap_or(-1)));
        }
        let head = if c.events.is_empty() { None } else { Some(append_in(tx.conn(), c.events).await?.1) };
        if !c.rows.is_empty() {
            let keys: Vec<&str> = c.rows.iter().map(|r| r.key.as_str()).collect();
            let seen: Vec<&str> = c.rows.iter().map(|r| r.seen.as_str()).collect();
            let live: Vec<bool> = c.rows.iter().map(|r| r.live).collect();
            sqlx::query(
                "INSERT INTO refract_sync_rows (source, key, seen, live) \
                 SELECT $1, k, s, l FROM UNNEST($2::text[], $3::text[], $4::bool[]) AS u(k, s, l) \
                 ON CONFLICT (source, key) DO UPDATE SET seen = excluded.seen, live = excluded.live",
            )
            .bind(c.source)
            .bind(&keys)
            .bind(&seen)
            .bind(&live)
            .execute(tx.conn())
            .await?;
        }
        sqlx::query(
            "UPDATE refract_sync_state SET state = $1, rows = rows + $2, \
             last_sync = CASE WHEN $3 THEN $4 ELSE last_sync END, last_error = NULL WHERE source = $5",
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
            "INSERT INTO refract_sync_state (source, epoch, state, rows, last_error) VALUES ($1, 0, '', 0, $2) \
             ON CONFLICT (source) DO UPDATE SET last_error = excluded.last_error",
        )
        .bind(source)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn sync_reset(&self, source: &str) -> Result<(), SourceError> {
        self.sync_schema().await?;
        let mut tx = DbTx::begin(&self.pool, "BEGIN").await?;
        sqlx::query(
            "INSERT INTO refract_sync_state (source, epoch, state, rows) VALUES ($1, 1, '', 0) \
             ON CONFLICT (source) DO UPDATE SET epoch = refract_sync_state.epoch + 1, state = '', rows = 0, \
             last_sync = NULL, last_error = NULL",
        )
        .bind(source)
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM refract_sync_rows WHERE source = $1").bind(source).execute(tx.conn()).await?;
        tx.commit().await?;
        Ok(())
    }
}
