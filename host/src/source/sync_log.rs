//! The role of an event store that table sync can write to: events and the
//! sync state of a source committed in one transaction, so a crash never
//! loses or doubles a row change (see `crate::sync`).

use std::collections::HashMap;

use async_trait::async_trait;

use super::SourceError;
use crate::model::event::AppendRequest;

/// The sync state of one source as the event store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSync {
    /// Bumped by a reset: a commit made for an older epoch is refused, so a
    /// syncer that missed a reset (or a second host) cannot undo it.
    pub epoch: i64,
    /// The syncer's own state (positions and marks), as JSON; empty when new.
    pub state: String,
    /// Row changes ingested since the last reset.
    pub rows: u64,
    /// When the last pass finished, in ms since the Unix epoch.
    pub last_sync_ms: Option<u64>,
    /// The error the source is retrying, if any.
    pub last_error: Option<String>,
}

/// One row's change as the sync state remembers it: the key (as in the
/// stream name) and what was emitted for it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRow {
    /// The row's encoded key.
    pub key: String,
    /// The tracking value and deletion mark last emitted for it.
    pub seen: String,
    /// Whether the row exists as far as the emitted events say.
    pub live: bool,
}

/// What one sync step commits at once.
#[derive(Debug)]
pub struct SyncCommit<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The epoch the step was computed for (see [`StoredSync::epoch`]).
    pub epoch: i64,
    /// The events: one append request per changed row.
    pub events: &'a [AppendRequest],
    /// What each changed row was emitted as.
    pub rows: &'a [SeenRow],
    /// The syncer's new state, as JSON.
    pub state: &'a str,
    /// Whether this commit ends a pass (sets the last sync time).
    pub pass_done: bool,
}

/// Sync state stored beside the events, written atomically with them.
#[async_trait]
pub trait SyncLog: Send + Sync + 'static {
    /// The state of `source`, created empty (epoch 0) if it has none.
    async fn sync_load(&self, source: &str) -> Result<StoredSync, SourceError>;

    /// Every source's state, by name.
    async fn sync_list(&self) -> Result<Vec<(String, StoredSync)>, SourceError>;

    /// What was last emitted for each of `keys` that has been emitted at all.
    async fn sync_seen(&self, source: &str, keys: &[String]) -> Result<HashMap<String, String>, SourceError>;

    /// Every key whose last emitted event says the row exists.
    async fn sync_live_keys(&self, source: &str) -> Result<Vec<String>, SourceError>;

    /// Appends the events and writes the rows and state, all or nothing.
    /// Fails with [`SourceError::Conflict`] on the stream `sources/NAME`
    /// when the epoch is not the stored one (a reset happened); nothing is
    /// written then.
    async fn sync_commit(&self, commit: &SyncCommit<'_>) -> Result<(), SourceError>;

    /// Records the error a source is retrying (`None`: it recovered).
    async fn sync_error(&self, source: &str, error: Option<&str>) -> Result<(), SourceError>;

    /// Forgets everything about `source` and bumps its epoch: the next pass
    /// re-syncs the table from the start.
    async fn sync_reset(&self, source: &str) -> Result<(), SourceError>;
}

/// The error for a commit whose epoch is stale.
pub(crate) fn stale_epoch(source: &str, expected: i64, actual: i64) -> SourceError {
    SourceError::Conflict { stream_id: format!("sources/{source}"), expected: expected as u64, actual: actual as u64 }
}
