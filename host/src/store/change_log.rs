//! The durable change log: per projection generation, every committed
//! change as `created`, `updated` or `deleted`, written in the commit's own
//! transaction; its retention; and named consumers' acknowledgements.
//!
//! Every decision about the log is made here, once for every backend: what
//! kind a change is (the document existed before the commit or not), which
//! changes are logged (a delete of a document that was not there is not a
//! change), how sequences are numbered (one more than the last, gap-free,
//! per generation), and what retention deletes (never the newest entry, so
//! the log always knows its head, and a read from a pruned sequence is
//! always detected). The backends only run the SQL verbs of [`Tx`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::lifecycle::{Backend, Tx};
use super::{ModelKey, Role, StoreError};
use crate::clock::now_ms;
use crate::model::changes::{ChangeSet, CollectionChanges};

/// Longest consumer name, in bytes.
pub const MAX_CONSUMER_LEN: usize = 128;

/// How a commit changed a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The document did not exist before the commit.
    Created,
    /// The document existed and was replaced.
    Updated,
    /// The document existed and was removed.
    Deleted,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Created, Self::Updated, Self::Deleted].into_iter().find(|k| k.as_str() == s)
    }
}

/// One entry of a generation's change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// Position in the generation's log: 1, 2, 3, ... without gaps.
    pub sequence: u64,
    /// The checkpoint the commit moved to (for a replayed dead letter, its position).
    pub checkpoint: u64,
    /// Collection of the document.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// Created, updated or deleted.
    pub kind: ChangeKind,
    /// The document as written (JSON object text); `None` for a delete.
    pub document: Option<String>,
    /// When it was committed, ms since the Unix epoch.
    pub recorded_at: u64,
}

/// A page of the active generation's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePage {
    /// The active generation the page was read from.
    pub generation: u32,
    /// Entries after the requested sequence, in order.
    pub entries: Vec<ChangeEntry>,
    /// The newest sequence in the log (0: nothing logged yet).
    pub head: u64,
}

/// How much of a generation's log is kept. `None` keeps everything along
/// that axis; the newest entry is always kept. By default the newest
/// [`DEFAULT_MAX_ENTRIES`] entries, of any age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many entries.
    pub max_entries: Option<u64>,
    /// Drop entries older than this.
    pub max_age: Option<Duration>,
}

/// Entries a log keeps unless `refract.toml` says otherwise: a bound, so
/// the log of a long-running projection does not grow without end.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

impl Default for Retention {
    fn default() -> Self {
        Self { max_entries: Some(DEFAULT_MAX_ENTRIES), max_age: None }
    }
}

/// Where a named consumer is: everything up to `sequence` of `generation`
/// is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerPosition {
    /// The generation whose log the sequence is in.
    pub generation: u32,
    /// Last acknowledged sequence (0: none).
    pub sequence: u64,
}

/// Reading a projection's change log and acknowledging it: what the change
/// feed and named consumers use.
#[async_trait]
pub trait ChangeLog: Send + Sync + 'static {
    /// Up to `limit` entries of the active generation's log after `after`.
    /// [`StoreError::ChangesPruned`] if entries after `after` were already
    /// removed by retention: a reader never silently gets fewer changes.
    /// A page whose `head` is below `after` means `after` is not a
    /// position in this log (it came from an older generation).
    async fn read_changes(&self, projection: &str, after: u64, limit: u32) -> Result<ChangePage, StoreError>;

    /// What `consumer` of `projection` acknowledged, if it ever did.
    async fn consumer(&self, projection: &str, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError>;

    /// Records that `consumer` has processed everything up to `position`,
    /// which must be in the active generation's log. An acknowledgement
    /// never moves a consumer back within a generation. Returns the
    /// position stored.
    async fn acknowledge(
        &self,
        projection: &str,
        consumer: &str,
        position: ConsumerPosition,
    ) -> Result<ConsumerPosition, StoreError>;

    /// Sets how much of `projection`'s logs later commits keep.
    fn set_retention(&self, projection: &str, retention: Retention);

    /// Stops (or resumes) logging `projection`'s commits in this process:
    /// only for `refract-bench`, which measures what the log costs. A feed
    /// over a log that was not written would miss changes.
    #[doc(hidden)]
    fn set_logging(&self, projection: &str, on: bool);
}

/// A backend's change-log settings: retention per projection, and how
/// many commits ran (age retention runs every [`AGE_PRUNE_EVERY`] commits).
#[derive(Debug, Default)]
pub struct LogSettings {
    retention: Mutex<HashMap<String, Retention>>,
    commits: AtomicU64,
    unlogged: Mutex<HashSet<String>>,
}

/// Count retention is an index range delete and runs on every commit; age
/// retention has to find its cut first, so it runs on every 64th.
const AGE_PRUNE_EVERY: u64 = 64;

impl LogSettings {
    fn retention(&self, projection: &str) -> Retention {
        self.retention.lock().expect("retention lock").get(projection).copied().unwrap_or_default()
    }
}

/// What a change does to a document, before it is known whether the
/// document existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Put,
    Delete,
}

/// What a change logs, given whether the document existed before the
/// commit: a put of an existing document is an update, any other put a
/// create; a delete is logged only if the document existed (removing what
/// is not there changes nothing). The one place this is decided: the
/// backends only test existence, in SQL, and write what this says.
fn kind_of(change: Change, existed: bool) -> Option<ChangeKind> {
    match (change, existed) {
        (Change::Put, true) => Some(ChangeKind::Updated),
        (Change::Put, false) => Some(ChangeKind::Created),
        (Change::Delete, true) => Some(ChangeKind::Deleted),
        (Change::Delete, false) => None,
    }
}

/// Rows of one collection for the log, all of one [`Change`], with the
/// kind each gets by whether its document exists when the rows are logged
/// (before the commit applies them). A backend appends, in the order of
/// `rows`, one entry per row whose kind is not `None`, numbered from
/// `after + 1` without gaps, and says how many it appended.
#[derive(Debug, Clone)]
pub struct LogRows<'a> {
    /// Collection of the documents.
    pub collection: &'a str,
    /// `(id, document)`; the document is `None` for a delete.
    pub rows: Vec<(&'a str, Option<&'a str>)>,
    /// Kind of a row whose document exists (`None`: not logged).
    pub if_present: Option<ChangeKind>,
    /// Kind of a row whose document does not exist (`None`: not logged).
    pub if_absent: Option<ChangeKind>,
    /// The log's newest sequence before these rows.
    pub after: u64,
    /// The checkpoint the commit moves to.
    pub checkpoint: u64,
    /// When the commit was made, ms since the Unix epoch.
    pub recorded_at: u64,
}

/// The log rows of one collection's net changes: deletes first, then puts,
/// as the commit applies them.
fn log_rows<'a>(
    collection: &'a str,
    changes: &'a CollectionChanges,
    checkpoint: u64,
    recorded_at: u64,
) -> [LogRows<'a>; 2] {
    let rows = |change, rows| LogRows {
        collection,
        rows,
        if_present: kind_of(change, true),
        if_absent: kind_of(change, false),
        after: 0,
        checkpoint,
        recorded_at,
    };
    [
        rows(Change::Delete, changes.deletes.iter().map(|id| (id.as_str(), None)).collect()),
        rows(Change::Put, changes.upserts.iter().map(|(id, doc)| (id.as_str(), Some(doc.as_str()))).collect()),
    ]
}

/// The sequence through which retention deletes, given the log's head and
/// the first sequence young enough to keep (if age retention ran): never
/// the head itself.
fn prune_through(head: u64, retention: &Retention, first_young: Option<u64>) -> u64 {
    let by_count = retention.max_entries.map_or(0, |keep| head.saturating_sub(keep.max(1)));
    let by_age = first_young.map_or(0, |first| first.saturating_sub(1));
    by_count.max(by_age).min(head.saturating_sub(1))
}

/// Logs a commit's changes in its transaction (before they are applied, so
/// the kinds can be read from the tables), then applies retention.
pub(crate) async fn log_commit<B: Backend>(
    backend: &B,
    tx: &mut B::Tx,
    key: &ModelKey,
    checkpoint: u64,
    changes: &ChangeSet,
) -> Result<(), StoreError> {
    if backend.log_settings().unlogged.lock().expect("logging lock").contains(&key.projection) {
        return Ok(());
    }
    let now = now_ms().max(0) as u64;
    let mut head = tx.log_head(key).await?;
    for (collection, c) in &changes.collections {
        for mut rows in log_rows(collection, c, checkpoint, now) {
            if rows.rows.is_empty() {
                continue;
            }
            rows.after = head;
            head += tx.append_log(key, &rows).await?;
        }
    }
    let settings = backend.log_settings();
    let retention = settings.retention(&key.projection);
    let commit = settings.commits.fetch_add(1, Ordering::Relaxed);
    let first_young = match retention.max_age {
        Some(age) if commit.is_multiple_of(AGE_PRUNE_EVERY) => {
            let cutoff = now.saturating_sub(age.as_millis() as u64);
            Some(tx.first_logged_since(key, cutoff).await?.unwrap_or(head))
        }
        _ => None,
    };
    let through = prune_through(head, &retention, first_young);
    if through > 0 {
        tx.prune_log(key, through).await?;
    }
    Ok(())
}

/// Checks a consumer name: 1 to [`MAX_CONSUMER_LEN`] bytes of `[A-Za-z0-9_.-]`.
pub fn check_consumer(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONSUMER_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(StoreError::InvalidConsumer(name.to_owned())) }
}

/// Reads racing swaps are tried again at most this many times in all.
const SWAP_RETRIES: usize = 3;

/// Up to `limit` entries of `key`'s log after `after`, with its head.
async fn read_page<T: Tx>(
    tx: &mut T,
    projection: &str,
    key: &ModelKey,
    after: u64,
    limit: u32,
) -> Result<ChangePage, StoreError> {
    let head = tx.log_head(key).await?;
    if after < head {
        let first = tx.log_first(key).await?.unwrap_or(head);
        if first > after + 1 {
            return Err(StoreError::ChangesPruned {
                projection: projection.to_owned(),
                generation: key.generation,
                after,
                first,
            });
        }
    }
    let entries = if after < head { tx.read_log(key, after, limit).await? } else { Vec::new() };
    Ok(ChangePage { generation: key.generation, entries, head })
}

async fn active_in<T: Tx>(tx: &mut T, name: &str) -> Result<ModelKey, StoreError> {
    tx.live_generations(Some(name))
        .await?
        .into_iter()
        .find(|g| g.role == Role::Active)
        .map(|g| g.key)
        .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))
}

#[async_trait]
impl<B: Backend> ChangeLog for B {
    async fn read_changes(&self, projection: &str, after: u64, limit: u32) -> Result<ChangePage, StoreError> {
        let mut raced = 0;
        loop {
            let mut tx = self.read_tx().await?;
            let key = active_in(&mut tx, projection).await?;
            let read = read_page(&mut tx, projection, &key, after, limit).await;
            let read = match read {
                Ok(page) => tx.commit().await.map(|()| page),
                Err(e) => Err(e),
            };
            // A swap that committed after the generation was resolved has
            // dropped its log (PostgreSQL's catalog is not part of a
            // snapshot): the new active generation is read instead.
            if let Err(StoreError::Database(_)) = &read {
                raced += 1;
                if raced < SWAP_RETRIES && active_in(&mut self.read_tx().await?, projection).await? != key {
                    continue;
                }
            }
            return read;
        }
    }

    async fn consumer(&self, projection: &str, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError> {
        check_consumer(consumer)?;
        let mut tx = self.read_tx().await?;
        active_in(&mut tx, projection).await?;
        let position = tx.consumer(projection, consumer).await?;
        tx.commit().await?;
        Ok(position)
    }

    async fn acknowledge(
        &self,
        projection: &str,
        consumer: &str,
        position: ConsumerPosition,
    ) -> Result<ConsumerPosition, StoreError> {
        check_consumer(consumer)?;
        let mut tx = self.write_tx().await?;
        let key = active_in(&mut tx, projection).await?;
        if position.generation != key.generation {
            return Err(StoreError::NotActiveGeneration {
                projection: projection.to_owned(),
                generation: position.generation,
                active: key.generation,
            });
        }
        let head = tx.log_head(&key).await?;
        if position.sequence > head {
            return Err(StoreError::BeyondLogHead {
                projection: projection.to_owned(),
                sequence: position.sequence,
                head,
            });
        }
        let stored = match tx.consumer(projection, consumer).await? {
            Some(old) if old.generation == position.generation && old.sequence > position.sequence => old,
            _ => {
                tx.set_consumer(projection, consumer, position).await?;
                position
            }
        };
        tx.commit().await?;
        Ok(stored)
    }

    fn set_retention(&self, projection: &str, retention: Retention) {
        self.log_settings().retention.lock().expect("retention lock").insert(projection.to_owned(), retention);
    }

    fn set_logging(&self, projection: &str, on: bool) {
        let mut unlogged = self.log_settings().unlogged.lock().expect("logging lock");
        if on {
            unlogged.remove(projection);
        } else {
            unlogged.insert(projection.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_what_existed_before_the_commit() {
        assert_eq!(kind_of(Change::Put, false), Some(ChangeKind::Created));
        assert_eq!(kind_of(Change::Put, true), Some(ChangeKind::Updated));
        assert_eq!(kind_of(Change::Delete, true), Some(ChangeKind::Deleted));
        assert_eq!(kind_of(Change::Delete, false), None, "a delete of a document that was not there is not logged");
    }

    #[test]
    fn deletes_are_logged_before_puts_with_their_documents() {
        let changes = CollectionChanges {
            upserts: vec![("new".into(), "{}".into()), ("old".into(), "{\"v\":2}".into())],
            deletes: vec!["gone".into(), "never".into()],
        };
        let [deletes, puts] = log_rows("c", &changes, 7, 99);
        assert_eq!(deletes.rows, [("gone", None), ("never", None)]);
        assert_eq!((deletes.if_present, deletes.if_absent), (Some(ChangeKind::Deleted), None));
        assert_eq!(puts.rows, [("new", Some("{}")), ("old", Some("{\"v\":2}"))]);
        assert_eq!((puts.if_present, puts.if_absent), (Some(ChangeKind::Updated), Some(ChangeKind::Created)));
        assert_eq!((puts.collection, puts.checkpoint, puts.recorded_at), ("c", 7, 99));
    }

    #[test]
    fn retention_never_removes_the_head() {
        let count = Retention { max_entries: Some(10), max_age: None };
        assert_eq!(prune_through(25, &count, None), 15);
        assert_eq!(prune_through(5, &count, None), 0);
        let zero = Retention { max_entries: Some(0), max_age: None };
        assert_eq!(prune_through(25, &zero, None), 24);
        let age = Retention { max_entries: None, max_age: Some(Duration::from_secs(1)) };
        assert_eq!(prune_through(25, &age, Some(20)), 19);
        assert_eq!(prune_through(25, &age, Some(26)), 24, "all expired: the head stays");
        assert_eq!(prune_through(25, &Retention { max_entries: None, max_age: None }, None), 0);
        let both = Retention { max_entries: Some(10), max_age: Some(Duration::from_secs(1)) };
        assert_eq!(prune_through(25, &both, Some(3)), 15);
        assert_eq!(prune_through(25, &both, Some(20)), 19);
    }

    #[test]
    fn consumer_names_are_checked() {
        for ok in ["a", "billing-service.v2", "X_1"] {
            assert!(check_consumer(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(MAX_CONSUMER_LEN + 1)] {
            assert!(matches!(check_consumer(bad), Err(StoreError::InvalidConsumer(_))), "{bad}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [ChangeKind::Created, ChangeKind::Updated, ChangeKind::Deleted] {
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        }
    }
}
