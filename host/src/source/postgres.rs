//! Events in PostgreSQL, with a gapless global position.

mod listen;
mod sync;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgExecutor, PgPool};
use sqlx::{AssertSqlSafe, Row};

use super::wake::Wake;
use super::{Appended, EventSource, EventStore, SourceError, check_version, validate_append};
use crate::clock::now_ms;
use crate::db::DbTx;
use crate::model::event::{AppendRequest, Event, Subscription};

const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS refract_events (
        position       BIGINT PRIMARY KEY,
        stream_id      TEXT   NOT NULL,
        stream_version BIGINT NOT NULL,
        event_type     TEXT   NOT NULL,
        payload        TEXT   NOT NULL,
        metadata       TEXT   NOT NULL,
        timestamp      BIGINT NOT NULL,
        UNIQUE (stream_id, stream_version)
    )"];

/// The lock that serializes appends, one per schema so that stores in
/// different schemas of one database do not wait on each other.
const APPEND_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('refract.append:' || current_schema()))";

/// Events in a PostgreSQL table, with a gapless global position that readers
/// can never skip past.
///
/// **Why positions never have gaps, and never commit out of order.** A
/// sequence (`BIGSERIAL`) hands out numbers when a transaction *starts*
/// inserting, but transactions *commit* in any order: a reader could see 11
/// committed while 10 is still in flight, move its checkpoint to 11, and
/// never see 10. Here every append first takes a transaction-level advisory
/// lock (`pg_advisory_xact_lock`), then reads `max(position)` and writes
/// `max + 1 ...`. The lock is held until commit and PostgreSQL releases it
/// only after the commit is visible, so the next appender's `max` (read in a
/// new statement snapshot, after it got the lock) includes every earlier
/// append. Positions are therefore assigned and made visible strictly in
/// order: whatever a reader sees is a gapless prefix of the log. The unique
/// `(stream_id, stream_version)` constraint is a backstop for the version
/// check.
///
/// **Trade-off.** Appends are serialized: throughput is bounded by one
/// append transaction at a time (a few thousand commits per second on a
/// small server; batch several events per append for more). Reads are never
/// blocked.
///
/// **Wake-ups.** Each append notifies its commit (`pg_notify`), and each
/// store that has runners listens (see `listen.rs`), so runners on any node
/// see an append within milliseconds instead of at their next poll.
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::SourceError> {
/// use refract::{AppendRequest, EventStore, ExpectedVersion, NewEvent, PostgresEventStore};
/// let store = PostgresEventStore::connect("postgres://postgres@127.0.0.1/refract").await?;
/// store.append(&[AppendRequest {
///     stream_id: "account-1".into(),
///     expected: ExpectedVersion::Exact(0),
///     events: vec![NewEvent::new("AccountOpened", r#"{"owner":"ada"}"#)],
/// }]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
    wake: Arc<Wake>,
}

impl PostgresEventStore {
    /// Connects to `url` (`postgres://...`) and creates the events table if needed.
    pub async fn connect(url: &str) -> Result<Self, SourceError> {
        let pool = crate::db::postgres::connect(url).await?;
        crate::db::postgres::create_schema(&pool, SCHEMA).await?;
        Ok(Self { pool, wake: Arc::new(Wake::new()) })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.wake.stop();
        self.pool.close().await;
    }
}

#[async_trait]
impl EventSource for PostgresEventStore {
    async fn head(&self) -> Result<u64, SourceError> {
        Ok(head_of(&self.pool).await?)
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let options = (*self.pool.connect_options()).clone();
        Some(self.wake.subscribe(|head| listen::follow(options, head)))
    }

    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError> {
        let sql = read_sql(subscription);
        let mut events = Vec::new();
        let mut from = after;
        // Positions are gapless, so a window of `limit` positions holds a whole
        // batch when every event is subscribed; sparser subscriptions widen it.
        let mut window = (limit as u64).clamp(1, MAX_READ_WINDOW);
        while from < up_to && events.len() < limit {
            let to = up_to.min(from.saturating_add(window));
            let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(from.min(i64::MAX as u64) as i64)
                .bind(to.min(i64::MAX as u64) as i64)
                .bind(&subscription.event_types)
                .bind(&subscription.stream_prefixes)
                .bind((limit - events.len()).min(i64::MAX as usize) as i64)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                events.push(Event {
                    position: r.try_get::<i64, _>(0)? as u64,
                    stream_id: r.try_get(1)?,
                    stream_version: r.try_get::<i64, _>(2)? as u64,
                    event_type: r.try_get(3)?,
                    payload: r.try_get(4)?,
                    metadata: r.try_get(5)?,
                    timestamp: r.try_get::<i64, _>(6)? as u64,
                });
            }
            from = to;
            window = window.saturating_mul(2).min(MAX_READ_WINDOW);
        }
        Ok(events)
    }
}

/// Position of the newest event, 0 when there is none.
async fn head_of<'e>(executor: impl PgExecutor<'e>) -> Result<u64, sqlx::Error> {
    let head: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(position), 0)::BIGINT FROM refract_events").fetch_one(executor).await?;
    Ok(head as u64)
}

/// The most positions one read statement covers.
///
/// **Why reads go window by window.** A reader asks for the first `limit`
/// subscribed events after its checkpoint, up to the head. Without
/// statistics (a freshly filled table, or autovacuum behind or off) the
/// planner underestimates how many rows the subscription filters keep, and
/// for `position > $1 AND position <= $2 ... ORDER BY position LIMIT $5` it
/// may pick a bitmap scan of the *whole* range plus a sort instead of walking
/// the primary key: measured 306 ms for a batch of 1,000 with 500,000 events
/// to go, so catching up on a long log cost time quadratic in its length.
/// Bounding each statement to a window of positions caps its work whatever
/// plan is chosen, so a batch costs the same at the start and the end of a
/// rebuild.
const MAX_READ_WINDOW: u64 = 65_536;

/// The read statement for one subscription: `$1 < position <= $2`, then the
/// subscription's filters (`$3` event types, `$4` stream prefixes), at most
/// `$5` rows in position order.
fn read_sql(subscription: &Subscription) -> String {
    let mut sql = String::from(
        "SELECT position, stream_id, stream_version, event_type, payload, metadata, timestamp \
         FROM refract_events WHERE position > $1 AND position <= $2",
    );
    if !subscription.event_types.is_empty() {
        sql.push_str(" AND event_type = ANY($3)");
    }
    if !subscription.stream_prefixes.is_empty() {
        // left(), not LIKE: LIKE treats `_` and `%` specially.
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM UNNEST($4::text[]) AS p(prefix) \
             WHERE left(stream_id, char_length(p.prefix)) = p.prefix)",
        );
    }
    sql.push_str(" ORDER BY position LIMIT $5");
    sql
}

/// The current version of every stream the requests append to, in one
/// statement: one round trip per append, not one per stream (an import or a
/// bulk append touches thousands of streams). Streams without events are
/// absent from the map (version 0). Each lookup is a backward scan of the
/// `(stream_id, stream_version)` index.
async fn stream_versions<'a>(
    conn: &mut PgConnection,
    requests: &'a [AppendRequest],
) -> Result<HashMap<&'a str, i64>, sqlx::Error> {
    let mut streams: Vec<&str> = requests.iter().map(|r| r.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.id, v.version FROM UNNEST($1::text[]) AS s(id) \
         CROSS JOIN LATERAL (SELECT MAX(stream_version) AS version FROM refract_events e WHERE e.stream_id = s.id) v \
         WHERE v.version IS NOT NULL",
    )
    .bind(&streams)
    .fetch_all(&mut *conn)
    .await?;
    let mut versions = HashMap::with_capacity(streams.len());
    for (id, version) in rows {
        // Borrow the request's own string, so the map lives as long as `requests`.
        if let Ok(i) = streams.binary_search(&id.as_str()) {
            versions.insert(streams[i], version);
        }
    }
    Ok(versions)
}

/// Appends validated requests inside the caller's transaction, taking the
/// append lock first (see [`PostgresEventStore`]), so other writes can
/// commit together with them (table sync state, `sync.rs`). Returns the
/// results and the new head.
async fn append_in(conn: &mut PgConnection, requests: &[AppendRequest]) -> Result<(Vec<Appended>, u64), SourceError> {
    // See the type's docs: this lock is what keeps positions gapless and in commit order.
    sqlx::query(APPEND_LOCK).execute(&mut *conn).await?;
    let mut position: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0)::BIGINT FROM refract_events")
        .fetch_one(&mut *conn)
        .await?;
    let timestamp = now_ms();
    let mut results = Vec::with_capacity(requests.len());
    // Rows for one INSERT over all requests: one round trip per append, not per event.
    let (mut positions, mut streams, mut versions, mut types, mut payloads, mut metadata) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut versions_now = stream_versions(conn, requests).await?;
    for r in requests {
        let current = versions_now.get(r.stream_id.as_str()).copied().unwrap_or(0);
        check_version(&r.stream_id, r.expected, current as u64)?;
        let first_position = position + 1;
        let mut version = current;
        for e in &r.events {
            position += 1;
            version += 1;
            positions.push(position);
            streams.push(r.stream_id.as_str());
            versions.push(version);
            types.push(e.event_type.as_str());
            payloads.push(e.payload.as_str());
            metadata.push(e.metadata.as_str());
        }
        versions_now.insert(&r.stream_id, version);
        results.push(Appended {
            first_position: first_position as u64,
            last_position: position as u64,
            stream_version: version as u64,
        });
    }
    // The notification rides in the same statement (no extra round trip
    // while the append lock is held) and is delivered only if the append
    // commits; its payload is what `listen.rs` parses.
    sqlx::query(
        "WITH appended AS ( \
             INSERT INTO refract_events \
                 (position, stream_id, stream_version, event_type, payload, metadata, timestamp) \
             SELECT p, s, v, t, pl, m, $7 \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) \
                 AS u(p, s, v, t, pl, m)) \
         SELECT pg_notify($8, $9::bigint::text || ' ' || COALESCE(current_schema()::text, ''))",
    )
    .bind(&positions)
    .bind(&streams)
    .bind(&versions)
    .bind(&types)
    .bind(&payloads)
    .bind(&metadata)
    .bind(timestamp)
    .bind(listen::CHANNEL)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok((results, position as u64))
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        validate_append(requests)?;
        let mut tx = DbTx::begin(&self.pool, "BEGIN").await?;
        match append_in(tx.conn(), requests).await {
            Ok((results, head)) => {
                tx.commit().await?;
                self.wake.advance(head);
                Ok(results)
            }
            // A conflict leaves the connection fine: roll back and keep it.
            // Any other error drops `tx`, which closes the connection.
            Err(e @ SourceError::Conflict { .. }) => {
                tx.rollback().await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError> {
        let v: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_version), 0)::BIGINT FROM refract_events WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(v as u64)
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let rows: Vec<(i64, String, i64, String, String, String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {} FROM refract_events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3",
            super::EVENT_COLUMNS
        )))
        .bind(stream_id)
        .bind(after.min(i64::MAX as u64) as i64)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(super::event_row).collect())
    }
}
