//! Choosing a backend by URL: `sqlite://path` or `postgres://...`.

use std::path::Path;
use std::sync::Arc;

use crate::source::{EventStore, JetStreamEventStore, PostgresEventStore, SourceError, SqliteEventStore, SyncLog};
use crate::store::{PostgresReadModelStore, ReadModelStore, SqliteReadModelStore, StoreError};

/// Errors from opening a store by URL.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The URL names no backend refract knows.
    #[error(
        "unsupported store URL `{0}`: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE (or, for events, nats://HOST:PORT/STREAM)"
    )]
    UnsupportedUrl(String),
    /// The event store could not be opened.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The read-model store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting from the environment is not valid.
    #[error("{name} must be a number of milliseconds, not `{value}`")]
    BadSetting {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
    },
}

/// Which backend a URL names.
enum Backend<'a> {
    Sqlite(&'a Path),
    Postgres(&'a str),
    JetStream(&'a str),
}

fn parse(url: &str) -> Result<Backend<'_>, BackendError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        // `sqlite://data/events.db` is relative, `sqlite:///var/x.db` absolute.
        if path.is_empty() {
            return Err(BackendError::UnsupportedUrl(url.to_owned()));
        }
        Ok(Backend::Sqlite(Path::new(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres(url))
    } else if url.starts_with("nats://") {
        Ok(Backend::JetStream(url))
    } else {
        Err(BackendError::UnsupportedUrl(url.to_owned()))
    }
}

/// Opens the event store a URL names: `sqlite://PATH` (created if missing),
/// `postgres://...` (the table is created if missing; choose a schema
/// with `?options[search_path]=NAME`) or `nats://HOST:PORT/STREAM` (a
/// JetStream stream, created if missing).
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::BackendError> {
/// let events = refract::open_events("postgres://postgres@127.0.0.1:5432/refract").await?;
/// println!("head: {}", events.head().await.map_err(refract::BackendError::from)?);
/// # Ok(()) }
/// ```
pub async fn open_events(url: &str) -> Result<Arc<dyn EventStore>, BackendError> {
    Ok(match parse(url)? {
        Backend::Sqlite(path) => Arc::new(SqliteEventStore::open(path).await?),
        Backend::Postgres(url) => Arc::new(PostgresEventStore::connect(url).await?),
        Backend::JetStream(url) => Arc::new(JetStreamEventStore::connect(url).await?),
    })
}

/// Opens the event store a URL names, as [`open_events`] does, with its
/// table-sync role when it has one (`None`: it cannot commit sync state with
/// its events, and table sync sources cannot run on it).
pub async fn open_events_with_sync(url: &str) -> Result<(Arc<dyn EventStore>, Option<Arc<dyn SyncLog>>), BackendError> {
    #[allow(unreachable_patterns)] // Event stores without the role answer `None`.
    Ok(match parse(url)? {
        Backend::Sqlite(path) => {
            let store = Arc::new(SqliteEventStore::open(path).await?);
            (store.clone(), Some(store))
        }
        Backend::Postgres(url) => {
            let store = Arc::new(PostgresEventStore::connect(url).await?);
            (store.clone(), Some(store))
        }
        _ => (open_events(url).await?, None),
    })
}

/// Opens the read-model store a URL names, as [`open_events`] does.
/// Its read time limit is [`crate::DEFAULT_READ_TIMEOUT`], or the
/// milliseconds in [`crate::READ_TIMEOUT_ENV`] when that is set.
pub async fn open_models(url: &str) -> Result<Arc<dyn ReadModelStore>, BackendError> {
    let store: Arc<dyn ReadModelStore> = match parse(url)? {
        Backend::Sqlite(path) => Arc::new(SqliteReadModelStore::open(path).await?),
        Backend::Postgres(url) => Arc::new(PostgresReadModelStore::connect(url).await?),
        Backend::JetStream(_) => return Err(BackendError::UnsupportedUrl(url.to_owned())),
    };
    if let Ok(value) = std::env::var(crate::READ_TIMEOUT_ENV) {
        let ms = value.trim().parse::<u64>().ok().filter(|ms| *ms > 0);
        let ms = ms.ok_or(BackendError::BadSetting { name: crate::READ_TIMEOUT_ENV, value })?;
        store.set_read_timeout(std::time::Duration::from_millis(ms));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_a_backend() {
        assert!(matches!(parse("sqlite://data/events.db"), Ok(Backend::Sqlite(p)) if p == Path::new("data/events.db")));
        assert!(matches!(parse("sqlite:///tmp/x.db"), Ok(Backend::Sqlite(p)) if p == Path::new("/tmp/x.db")));
        assert!(matches!(parse("postgres://u@h/db"), Ok(Backend::Postgres(_))));
        assert!(matches!(parse("postgresql://u@h/db"), Ok(Backend::Postgres(_))));
        assert!(matches!(parse("nats://h:4222/EVENTS"), Ok(Backend::JetStream(_))));
        for bad in ["mysql://x", "data/events.db", "sqlite://"] {
            assert!(matches!(parse(bad), Err(BackendError::UnsupportedUrl(_))), "{bad}");
        }
    }
}
