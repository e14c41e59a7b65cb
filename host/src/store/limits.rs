//! The cost bound on reads by name (`query`, `count`, `aggregate`): a
//! statement that runs longer than the limit is stopped by the database,
//! so one request cannot pin a connection or the CPU behind it.
//!
//! SQLite has no statement timeout; a progress handler checks a deadline
//! every [`PROGRESS_OPS`] virtual-machine steps and interrupts past it.
//! PostgreSQL has one: `SET LOCAL statement_timeout` in the read
//! transaction, which ends with the transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, SqliteConnection};

use crate::store::StoreError;

/// The read time limit a store starts with.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable `open_models` reads the limit from, in milliseconds.
pub const READ_TIMEOUT_ENV: &str = "REFRACT_QUERY_TIMEOUT_MS";

/// SQLite virtual-machine steps between deadline checks: a few
/// microseconds of work, so the limit is kept to well under a millisecond.
const PROGRESS_OPS: i32 = 10_000;

/// PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// A store's read limit; changeable while the store serves.
#[derive(Debug)]
pub(crate) struct ReadLimits {
    timeout_ms: AtomicU64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self { timeout_ms: AtomicU64::new(DEFAULT_READ_TIMEOUT.as_millis() as u64) }
    }
}

impl ReadLimits {
    pub fn set(&self, timeout: Duration) {
        // At least 1 ms: 0 would mean "no limit" to PostgreSQL.
        self.timeout_ms.store((timeout.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }
}

/// A deadline armed on one SQLite connection for one read. Dropping it
/// disarms the handler: the connection goes back to the pool, and a handler
/// left behind (a read cancelled mid-way) must never interrupt the next
/// user of that connection. The next armed read replaces it.
pub(crate) struct Armed {
    live: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    limit: Duration,
}

impl Armed {
    /// Arms `limit` on `conn`, from now.
    pub async fn sqlite(conn: &mut SqliteConnection, limit: Duration) -> Result<Self, StoreError> {
        let deadline = Instant::now() + limit;
        let (live, fired) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
        let (l, f) = (live.clone(), fired.clone());
        conn.lock_handle().await?.set_progress_handler(PROGRESS_OPS, move || {
            if !l.load(Ordering::Relaxed) || Instant::now() < deadline {
                return true;
            }
            f.store(true, Ordering::Relaxed);
            false
        });
        Ok(Self { live, fired, limit })
    }

    /// Sets `limit` for the rest of the PostgreSQL read transaction on `conn`.
    pub async fn postgres(conn: &mut PgConnection, limit: Duration) -> Result<Self, StoreError> {
        let ms = limit.as_millis().max(1);
        // SET takes no bound parameters; `ms` is a number this code made.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET LOCAL statement_timeout = {ms}"))).execute(&mut *conn).await?;
        Ok(Self { live: Arc::new(AtomicBool::new(true)), fired: Arc::new(AtomicBool::new(false)), limit })
    }

    /// Turns the database's interruption of this read into the error that
    /// names the limit; any other result passes through.
    pub fn check<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Err(StoreError::Database(e)) if self.fired.load(Ordering::Relaxed) || e.code() == Some(QUERY_CANCELED) => {
                Err(StoreError::TimeLimit { limit_ms: self.limit.as_millis() as u64 })
            }
            other => other,
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.live.store(false, Ordering::Relaxed);
    }
}
