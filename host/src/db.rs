//! Connection setup that the event stores and the read-model stores share.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool};

/// A transaction on a pooled connection, begun and ended by plain SQL.
///
/// Dropped without [`commit`](Self::commit) (an error on the way), or when
/// the commit itself fails, the connection is closed instead of going back
/// to the pool: closing rolls back, and a connection that a failed write
/// left in an unknown state (SQLite after "database or disk is full") is
/// never handed out again. The next transaction opens a fresh one.
pub(crate) struct DbTx<DB: Database> {
    conn: PoolConnection<DB>,
    open: bool,
}

impl<DB: Database> DbTx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Acquires a connection and runs `begin` (`BEGIN IMMEDIATE`, ...).
    pub async fn begin(pool: &Pool<DB>, begin: &'static str) -> Result<Self, sqlx::Error> {
        let mut tx = Self { conn: pool.acquire().await?, open: true };
        sqlx::raw_sql(begin).execute(&mut *tx.conn).await?;
        Ok(tx)
    }

    /// The connection, inside the transaction.
    pub fn conn(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }

    /// Rolls back a transaction that is fine but must not commit (a version
    /// conflict); the connection goes back to the pool. If the rollback
    /// fails, the connection is closed instead.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("ROLLBACK").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }

    /// Commits; on failure the connection is closed (see the type's docs).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl<DB: Database> Drop for DbTx<DB> {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// What kind of failure a database reported, as far as refract acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// The database could not be reached, was busy, or dropped the
    /// connection: retrying may succeed.
    Unavailable,
    /// The disk or database is full: retrying succeeds once space is freed.
    Full,
    /// The database refused a value it cannot hold (PostgreSQL text and
    /// jsonb cannot hold U+0000, for example): retrying never succeeds.
    Refused,
    /// The database file is damaged: retrying never succeeds.
    Corrupt,
    /// Anything else.
    Other,
}

/// A failure of the database behind a store, without the driver's types.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DatabaseError {
    kind: DbErrorKind,
    message: String,
    /// The backend's own code (SQLSTATE, SQLite result code), for the
    /// backend that raised it.
    code: Option<String>,
}

impl DatabaseError {
    /// A failure of `kind`, described by `message` (test doubles use this).
    pub fn new(kind: DbErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), code: None }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// The backend's own error code, if it gave one.
    pub(crate) fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

/// The one place that tells what a driver error means.
impl From<sqlx::Error> for DatabaseError {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        let kind = match &e {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
                    postgres_kind(&code)
                } else {
                    // SQLite: the primary result code is the low byte of the extended one.
                    sqlite_kind(code.parse::<i32>().map_or(0, |c| c & 0xff))
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbErrorKind::Unavailable,
            _ => DbErrorKind::Other,
        };
        Self { kind, message: e.to_string(), code }
    }
}

/// An error of a statement stepped through SQLite's C API, read as sqlx's
/// SQLite errors are.
impl From<sqlite::SqliteError> for DatabaseError {
    fn from(e: sqlite::SqliteError) -> Self {
        Self { kind: sqlite_kind(e.code & 0xff), message: e.message, code: Some(e.code.to_string()) }
    }
}

/// PostgreSQL SQLSTATE classes.
fn postgres_kind(code: &str) -> DbErrorKind {
    match code {
        "53100" => DbErrorKind::Full,
        "XX001" | "XX002" => DbErrorKind::Corrupt,
        // 22: data exception (untranslatable character, invalid text);
        // 54: program limit exceeded (an index row too big).
        c if c.starts_with("22") || c.starts_with("54") => DbErrorKind::Refused,
        // 08: connection; 53: resources; 57: operator intervention
        // (a terminated backend); 40: a serialization failure or deadlock.
        c if ["08", "53", "57", "40"].iter().any(|class| c.starts_with(class)) => DbErrorKind::Unavailable,
        _ => DbErrorKind::Other,
    }
}

/// SQLite primary result codes.
fn sqlite_kind(code: i32) -> DbErrorKind {
    match code {
        13 => DbErrorKind::Full,                     // SQLITE_FULL
        11 | 26 => DbErrorKind::Corrupt,             // SQLITE_CORRUPT, SQLITE_NOTADB
        18 => DbErrorKind::Refused,                  // SQLITE_TOOBIG
        5 | 6 | 10 | 14 => DbErrorKind::Unavailable, // BUSY, LOCKED, IOERR, CANTOPEN
        _ => DbErrorKind::Other,
    }
}
