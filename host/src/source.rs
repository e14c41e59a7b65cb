//! Where events come from: the `EventSource` (read) and `EventStore` (append) traits.

mod group_commit;
mod jetstream;
mod postgres;
mod sqlite;
mod sync_log;
mod wake;

use async_trait::async_trait;

pub use jetstream::{ForeignMapping, ForeignStream, JetStreamEventStore, MappedField};
pub use postgres::PostgresEventStore;
pub use sqlite::SqliteEventStore;
pub use sync_log::{SeenRow, StoredSync, SyncCommit, SyncLog};

use crate::db::DatabaseError;
use crate::model::event::{AppendRequest, Event, ExpectedVersion, InvalidName, Subscription};

impl From<crate::db::sqlite::SqliteError> for SourceError {
    fn from(e: crate::db::sqlite::SqliteError) -> Self {
        Self::Sqlite { code: e.code, message: e.message }
    }
}

/// Errors from reading or appending events.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// Optimistic concurrency check failed; nothing was appended.
    #[error(
        "version conflict on stream `{stream_id}`: expected version {expected}, but it is at {actual}; nothing was appended"
    )]
    Conflict {
        /// Stream whose version differed.
        stream_id: String,
        /// Version the writer expected.
        expected: u64,
        /// Version the stream is at.
        actual: u64,
    },
    /// An event to append is malformed; nothing was appended.
    #[error("invalid event #{index} for stream `{stream_id}`: {reason}; nothing was appended")]
    InvalidEvent {
        /// Stream of the event.
        stream_id: String,
        /// Zero-based index of the event in the append.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A stream id or event type is empty, too long or holds a control
    /// character; nothing was appended. Checked before the database is
    /// touched, so every backend refuses the same names.
    #[error("invalid append: {0}; nothing was appended")]
    InvalidName(#[from] InvalidName),
    /// The underlying database failed.
    #[error("event store error: {0}")]
    Database(#[from] DatabaseError),
    /// SQLite failed while reading events through its C API (the embedded
    /// store's batch read; everything else goes through sqlx).
    #[error("event store error: SQLite error {code}: {message}")]
    Sqlite {
        /// SQLite's result code.
        code: i32,
        /// What went wrong.
        message: String,
    },
    /// The store returned events the host cannot read back.
    #[error("event store returned unreadable events: {0}")]
    Corrupt(String),
    /// The NATS server could not be reached or did not answer; retrying may help.
    #[error("event store error: NATS: {0}")]
    Nats(String),
    /// The JetStream stream is not what the URL or the config says it is
    /// (missing, or not capturing refract's subjects): retrying cannot help.
    #[error("event source misconfigured: {0}")]
    Misconfigured(String),
    /// Appends go to a stream other services publish to, which refract only reads.
    #[error(
        "the event source is the foreign JetStream stream `{stream}`, which refract only reads: publish to it with your own producers; nothing was appended"
    )]
    ReadOnly {
        /// The stream.
        stream: String,
    },
    /// The store cannot append several events atomically, and refuses
    /// rather than apply a part.
    #[error(
        "this append holds {events} events, but JetStream (server 2.9) cannot publish several messages atomically: append one event per call; nothing was appended"
    )]
    NotAtomic {
        /// Events in the refused append.
        events: usize,
    },
    /// Events after a reader's checkpoint were removed (a purge, limits, or
    /// deleted first messages): going on would skip them unseen.
    #[error(
        "source was truncated: the stream `{stream}` now starts at sequence {first}, but events after {checkpoint} were not read yet; rebuild the projection to start over"
    )]
    Truncated {
        /// The stream.
        stream: String,
        /// Position the reader had read up to.
        checkpoint: u64,
        /// First sequence still in the stream.
        first: u64,
    },
    /// The stream was deleted and created again: its positions start over,
    /// so a checkpoint into the old one means nothing in the new one.
    #[error(
        "source was re-created: the event source is now {now}, but the checkpoint belongs to {was}; rebuild the projection to start over"
    )]
    Recreated {
        /// Identity (see [`EventSource::identity`]) the checkpoint belongs to.
        was: String,
        /// Identity of the source now.
        now: String,
    },
    /// A message the source cannot turn into an event (its payload is not
    /// JSON, say): a poison event, put under the projection's failure policy.
    #[error("event {position} (stream `{stream_id}`, type `{event_type}`) cannot be read: {reason}")]
    BadEvent {
        /// Its position.
        position: u64,
        /// Its stream id, as far as it could be read.
        stream_id: String,
        /// Its event type, as far as it could be read.
        event_type: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SourceError {
    /// Whether retrying cannot help: the source is damaged, misconfigured,
    /// truncated or replaced, or refuses the request as such. A runner
    /// faults on these with their message instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Corrupt(_)
                | Self::Misconfigured(_)
                | Self::ReadOnly { .. }
                | Self::NotAtomic { .. }
                | Self::Truncated { .. }
                | Self::Recreated { .. }
                | Self::BadEvent { .. }
        )
    }
}

impl From<sqlx::Error> for SourceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Appended {
    /// Global position of the first appended event.
    pub first_position: u64,
    /// Global position of the last appended event: a consistency token.
    pub last_position: u64,
    /// Stream version after the append.
    pub stream_version: u64,
}

/// A readable, ordered stream of all events.
#[async_trait]
pub trait EventSource: Send + Sync + 'static {
    /// Position of the newest event, 0 when there is none.
    async fn head(&self) -> Result<u64, SourceError>;

    /// Up to `limit` subscribed events with `after < position <= up_to`, in order.
    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError>;

    /// Wake-ups for new events: a receiver whose value, the newest position
    /// the source knows to be appended, changes as soon as it learns of an
    /// append, so an idle runner reads at once instead of at its next poll.
    /// `None` (the default): the source cannot tell, and runners only poll.
    /// A notice may come late or be missed (a lost connection), so runners
    /// keep polling as the fallback; it may also come for events a runner
    /// already read, which costs it one head query.
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// What identifies this incarnation of the source, when it can be
    /// deleted and created again under the same name with positions starting
    /// over (a JetStream stream: its creation time). Runners store it next
    /// to their checkpoint and fault when it changes. `None` (the default):
    /// positions never start over.
    async fn identity(&self) -> Result<Option<String>, SourceError> {
        Ok(None)
    }
}

/// An event source that can also append, with optimistic concurrency.
#[async_trait]
pub trait EventStore: EventSource {
    /// Appends all requests atomically: every stream's expected version is
    /// checked and every event validated before anything is written.
    /// Returns one result per request.
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError>;

    /// Current version of a stream, 0 if it does not exist.
    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError>;

    /// Up to `limit` events of one stream with a version above `after`, by
    /// version: what `GET /streams/{id}` and `refract events STREAM` show.
    /// The default scans the log for the stream's events; the built-in
    /// stores answer from their (stream, version) index.
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let subscription = Subscription { event_types: Vec::new(), stream_prefixes: vec![stream_id.to_owned()] };
        let head = self.head().await?;
        let mut out = Vec::new();
        let mut from = 0;
        while from < head && out.len() < limit {
            let batch = self.read(from, head, &subscription, STREAM_SCAN_BATCH).await?;
            let Some(last) = batch.last() else { break };
            from = last.position;
            out.extend(batch.into_iter().filter(|e| e.stream_id == stream_id && e.stream_version > after));
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Events read per step by the default [`EventStore::read_stream`].
const STREAM_SCAN_BATCH: usize = 1000;

/// The columns of an event row, in [`Event`]'s order, for the stores' SQL.
pub(crate) const EVENT_COLUMNS: &str = "position, stream_id, stream_version, event_type, payload, metadata, timestamp";

/// An event from a row of [`EVENT_COLUMNS`].
pub(crate) fn event_row(
    (position, stream_id, stream_version, event_type, payload, metadata, timestamp): (
        i64,
        String,
        i64,
        String,
        String,
        String,
        i64,
    ),
) -> Event {
    Event {
        position: position as u64,
        stream_id,
        stream_version: stream_version as u64,
        event_type,
        payload,
        metadata,
        timestamp: timestamp as u64,
    }
}

/// Checks what can be checked without the database, so a bad event in an
/// append is reported before any version check or write.
pub(crate) fn validate_append(requests: &[AppendRequest]) -> Result<(), SourceError> {
    for r in requests {
        let invalid =
            |index: usize, reason: String| SourceError::InvalidEvent { stream_id: r.stream_id.clone(), index, reason };
        r.validate_names()?;
        if r.events.is_empty() {
            return Err(invalid(0, "an append needs at least one event".into()));
        }
        for (i, e) in r.events.iter().enumerate() {
            for (what, text) in [("payload", &e.payload), ("metadata", &e.metadata)] {
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .map_err(|err| invalid(i, format!("{what} of `{}` is not valid JSON ({err})", e.event_type)))?;
            }
        }
    }
    Ok(())
}

/// Checks an expected version against the stream's actual one.
pub(crate) fn check_version(stream_id: &str, expected: ExpectedVersion, actual: u64) -> Result<(), SourceError> {
    match expected {
        ExpectedVersion::Exact(v) if v != actual => {
            Err(SourceError::Conflict { stream_id: stream_id.to_owned(), expected: v, actual })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::NewEvent;

    #[test]
    fn bad_json_names_the_event() {
        let r = AppendRequest {
            stream_id: "s".into(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new("Ok", "{}"), NewEvent::new("Broken", "{not json")],
        };
        let err = validate_append(&[r]).unwrap_err().to_string();
        assert!(err.starts_with("invalid event #1 for stream `s`: payload of `Broken` is not valid JSON"), "{err}");
    }

    #[test]
    fn version_check() {
        assert!(check_version("s", ExpectedVersion::Any, 5).is_ok());
        assert!(check_version("s", ExpectedVersion::Exact(5), 5).is_ok());
        let err = check_version("s", ExpectedVersion::Exact(0), 5).unwrap_err();
        assert!(matches!(err, SourceError::Conflict { expected: 0, actual: 5, .. }));
    }
}
