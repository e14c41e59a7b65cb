//! What can go wrong with a table sync source.

use crate::source::SourceError;

/// Errors of table sync sources.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A source's configuration is wrong: the source, the `refract.toml`
    /// key at fault, and why. Also raised at start-up when the table or a
    /// column does not exist or has a type the tracking cannot use.
    #[error("source `{name}`: `{key}`: {reason}")]
    Config {
        /// The source's name.
        name: String,
        /// The key of its `[sources.NAME]` table at fault.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The source database failed (down, a column dropped, a type changed):
    /// the source retries with backoff.
    #[error("source `{name}`: {message}")]
    Database {
        /// The source's name.
        name: String,
        /// What the database said.
        message: String,
    },
    /// The event store failed while reading or writing sync state.
    #[error(transparent)]
    Store(#[from] SourceError),
    /// The event store keeps no sync state (it cannot commit events and
    /// state together), so sources cannot run on it.
    #[error("the event store {0} does not support table sync sources: use a sqlite:// or postgres:// event store")]
    Unsupported(String),
}

/// How a [`SyncError::Database`] message begins when the source database
/// could not be reached (down, refused, timed out, the connection dropped).
pub(crate) const UNREACHABLE: &str = "the source database is unreachable";

impl SyncError {
    /// A source database error, without the driver's types.
    pub(crate) fn db(source: &str, e: sqlx::Error) -> Self {
        let message = match &e {
            sqlx::Error::Database(db) => db.message().to_owned(),
            // Said plainly: the user's first question is whether the database is up at all.
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => format!("{UNREACHABLE}: {e}"),
            other => other.to_string(),
        };
        Self::Database { name: source.to_owned(), message }
    }
}
