//! Where read models live: the `ReadModelStore` trait and its backends.

pub(crate) mod aggregate;
pub(crate) mod change_log;
pub(crate) mod document_cache;
mod lease;
mod lifecycle;
pub(crate) mod limits;
mod modules;
mod names;
mod postgres;
pub(crate) mod query;
pub(crate) mod search;
mod snapshot;
mod sqlite;
mod verifications;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use change_log::{ChangeEntry, ChangeKind, ChangeLog, ChangePage, ConsumerPosition, Retention};
pub use lease::{Lease, LeaseGrant, LeaseRecord, Leases};
pub use modules::Modules;
pub use postgres::PostgresReadModelStore;
pub use snapshot::{ModelSnapshot, StoredDocument};
pub use sqlite::SqliteReadModelStore;
pub use verifications::{Verifications, VerifyOutcome, VerifyResult, VerifyRuns};

use crate::db::DatabaseError;
use crate::model::changes::ChangeSet;
use crate::model::manifest::{CollectionSpec, Manifest};
use crate::store::aggregate::{AggregateQuery, AggregateResult};
use crate::store::query::{Page, Query, QueryError};

/// Errors from the read-model store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No projection of that name was ever registered.
    #[error("unknown projection `{0}`")]
    UnknownProjection(String),
    /// The projection has no collection of that name.
    #[error("projection `{projection}` has no collection `{collection}` (it has: {known})")]
    UnknownCollection {
        /// Projection asked for.
        projection: String,
        /// Collection asked for.
        collection: String,
        /// Collections it does have, comma-separated.
        known: String,
    },
    /// The query is invalid for this collection.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Another writer moved the checkpoint (two hosts running one projection);
    /// the batch was not applied.
    #[error(
        "checkpoint of `{projection}` is no longer at {expected}: another host may be running it; batch not applied"
    )]
    CheckpointMoved {
        /// Projection whose checkpoint moved.
        projection: String,
        /// Checkpoint the writer started from.
        expected: u64,
    },
    /// Another node holds the generation's lease: this node's write was not
    /// applied, and its runner must stop and wait for the lease.
    #[error("generation {generation} of `{projection}` is leased to node `{owner}` (epoch {epoch}); not applied")]
    LeaseLost {
        /// Projection name.
        projection: String,
        /// Generation whose lease moved.
        generation: u32,
        /// The node that holds the lease now.
        owner: String,
        /// Its epoch.
        epoch: u64,
    },
    /// The generation was retired or dropped; its runner should stop.
    #[error("generation {generation} of `{projection}` is no longer active or building")]
    Retired {
        /// Projection name.
        projection: String,
        /// Generation that was retired.
        generation: u32,
    },
    /// Stored registry data could not be read back.
    #[error("corrupt registry entry for `{projection}`: {reason}")]
    Corrupt {
        /// Projection whose entry is bad.
        projection: String,
        /// What is wrong.
        reason: String,
    },
    /// A table name would be longer than the backend allows (PostgreSQL
    /// would silently truncate it, and two generations could share a table).
    #[error("table name `{name}` is longer than {max} bytes: use a shorter projection or collection name")]
    NameTooLong {
        /// The table name that does not fit.
        name: String,
        /// The backend's limit in bytes.
        max: usize,
    },
    /// A read ran past the store's read time limit and was stopped.
    #[error(
        "the query was stopped after the read time limit of {limit_ms} ms: narrow it with filters (the limit is set by REFRACT_QUERY_TIMEOUT_MS)"
    )]
    TimeLimit {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// An admin operation (pause, resume, reset) that the projection's
    /// present state does not allow; nothing was changed.
    #[error("projection `{projection}`: {reason}")]
    AdminRefused {
        /// Projection asked for.
        projection: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// Entries after the requested sequence were removed by retention.
    #[error(
        "changes of `{projection}` generation {generation} after sequence {after} were pruned; the oldest kept is {first}: read the whole model again"
    )]
    ChangesPruned {
        /// Projection name.
        projection: String,
        /// Its active generation.
        generation: u32,
        /// The sequence asked to read after.
        after: u64,
        /// The oldest sequence still in the log.
        first: u64,
    },
    /// A consumer name is not 1 to 128 bytes of `[A-Za-z0-9_.-]`.
    #[error("invalid consumer name `{0}`: use 1 to 128 letters, digits, `_`, `.` or `-`")]
    InvalidConsumer(String),
    /// An acknowledgement named a generation that is not the active one.
    #[error(
        "generation {generation} of `{projection}` is not the active one (generation {active} is): read the model again, then acknowledge in generation {active}"
    )]
    NotActiveGeneration {
        /// Projection name.
        projection: String,
        /// Generation named.
        generation: u32,
        /// The active generation.
        active: u32,
    },
    /// An acknowledgement of a sequence the log has not reached.
    #[error("sequence {sequence} is beyond the head of `{projection}`'s change log ({head})")]
    BeyondLogHead {
        /// Projection name.
        projection: String,
        /// Sequence acknowledged.
        sequence: u64,
        /// The newest sequence in the log.
        head: u64,
    },
    /// The underlying database failed.
    #[error("read-model store error: {0}")]
    Database(#[from] DatabaseError),
}

/// Lifecycle state of a projection, as recorded in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionState {
    /// A host is (or was, if it was killed) projecting events.
    Running,
    /// Stopped on an error; see `last_error`. Other projections keep running.
    Faulted,
    /// A host shut down cleanly.
    Stopped,
}

impl ProjectionState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Faulted => "faulted",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Faulted, Self::Stopped].into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which read model a call addresses: a projection and one of its generations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey {
    /// Projection name.
    pub projection: String,
    /// Generation number; each distinct module gets a new one.
    pub generation: u32,
}

/// The part a generation plays for its projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves queries and follows live events. At most one per projection.
    Active,
    /// Being built from position 0 in its own tables; swapped in when it
    /// reaches the head.
    Building,
    /// Failed to load or to build; the active generation kept serving.
    Failed,
    /// Replaced by a newer generation; its tables are gone.
    Retired,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Building => "building",
            Self::Failed => "failed",
            Self::Retired => "retired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Building, Self::Failed, Self::Retired].into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One generation of a projection as recorded in the store's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionRecord {
    /// Projection name and generation.
    pub key: ModelKey,
    /// Active, building, failed or retired.
    pub role: Role,
    /// The manifest the module declared (a placeholder with no collections
    /// when the module failed to load).
    pub manifest: Manifest,
    /// SHA-256 of the module, hex.
    pub module_hash: String,
    /// File name the module was loaded from.
    pub source: String,
    /// Position of the last event whose effect is stored.
    pub checkpoint: u64,
    /// Runner state.
    pub state: ProjectionState,
    /// Error that faulted or failed this generation, if any.
    pub last_error: Option<String>,
    /// When the generation was created, ms since the Unix epoch.
    pub created_at: u64,
    /// When it became active, ms since the Unix epoch.
    pub activated_at: Option<u64>,
    /// Last registry update, ms since the Unix epoch.
    pub updated_at: u64,
}

impl ProjectionRecord {
    /// The declared collection `name`, or an error naming the known ones.
    pub fn collection(&self, name: &str) -> Result<&CollectionSpec, StoreError> {
        self.manifest.collection(name).ok_or_else(|| StoreError::UnknownCollection {
            projection: self.key.projection.clone(),
            collection: name.to_owned(),
            known: self.manifest.collections.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// What registering a module decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The generation that runs this module: the active one when the module
    /// is the active module (or the projection is new), else a building one.
    pub target: ProjectionRecord,
    /// The active generation, when it is not `target`: it keeps serving
    /// and following events until `target` is swapped in.
    pub active: Option<ProjectionRecord>,
    /// Building generations of other modules that this one superseded;
    /// their tables were dropped.
    pub superseded: Vec<ModelKey>,
}

/// An event a projection could not handle and skipped (`skip` policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Global position of the event.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Its type.
    pub event_type: String,
    /// Why it failed, as the fault names it (e.g. `trap: ...`).
    pub error: String,
    /// SHA-256 of the module that failed on it, hex.
    pub module_hash: String,
    /// When it was recorded, ms since the Unix epoch.
    pub recorded_at: u64,
    /// Marked by `refract retry`: the next run replays it.
    pub replay: bool,
}

/// What `refract retry` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryRequest {
    /// The projection was faulted and now resumes from its checkpoint on the next run.
    pub cleared_fault: bool,
    /// Dead letters marked for replay on the next run.
    pub replays: u64,
}

/// The generation registry: which generations of which projections exist,
/// their roles, checkpoints, states and dead letters, and every lifecycle
/// decision (register, rebuild, swap, fail, drop, retry).
///
/// Both backends get this from one implementation (`store/lifecycle.rs`)
/// over their SQL, so the decisions cannot drift apart.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers a loaded module (`source` is its file name). A new
    /// projection gets generation 1, active at once; the active module again
    /// keeps its generation, checkpoint and a `faulted` state (until
    /// [`request_retry`](Self::request_retry)); a building module again resumes
    /// its generation; any other module gets a new building generation from
    /// position 0, superseding other building ones. A new generation starts
    /// with empty tables, whatever was left under their names.
    async fn register(&self, manifest: &Manifest, module_hash: &str, source: &str) -> Result<Registration, StoreError>;

    /// Records a module of projection `name` that failed to load, as a failed generation.
    async fn record_load_failure(
        &self,
        name: &str,
        module_hash: &str,
        source: &str,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Starts a new building generation of the active module, for an explicit rebuild.
    async fn request_rebuild(&self, name: &str) -> Result<ProjectionRecord, StoreError>;

    /// Swaps a building generation in: it becomes active, the previously
    /// active one is retired and its tables dropped, in one transaction.
    /// Returns the retired generation.
    async fn activate(&self, key: &ModelKey) -> Result<Option<ModelKey>, StoreError>;

    /// Marks a building generation failed and drops its tables; the active one is untouched.
    async fn fail_generation(&self, key: &ModelKey, error: &str) -> Result<(), StoreError>;

    /// Forgets a projection: drops every generation's tables and registry rows.
    async fn drop_projection(&self, name: &str) -> Result<(), StoreError>;

    /// Every generation that is not retired, by projection then generation.
    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError>;

    /// The active generation of a projection, or `UnknownProjection`.
    async fn projection(&self, name: &str) -> Result<ProjectionRecord, StoreError>;

    /// One generation's record.
    async fn generation(&self, key: &ModelKey) -> Result<ProjectionRecord, StoreError>;

    /// Records a state change and its error.
    async fn set_state(
        &self,
        key: &ModelKey,
        state: ProjectionState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The dead letters of a projection's active generation, by position.
    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, StoreError>;

    /// `refract retry`: a faulted projection becomes `stopped` with no error,
    /// so the next run resumes from its checkpoint, and every dead letter of
    /// the active generation is marked for replay.
    async fn request_retry(&self, name: &str) -> Result<RetryRequest, StoreError>;

    /// Names of the tables that hold a projection's documents (all generations), for checks and tools.
    async fn tables(&self, projection: &str) -> Result<Vec<String>, StoreError>;

    /// Pauses (`true`) or resumes a projection: a paused projection's
    /// generations are not run by any host until it is resumed, across
    /// restarts. Returns whether this changed anything.
    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool, StoreError>;

    /// Whether the projection is paused.
    async fn is_paused(&self, name: &str) -> Result<bool, StoreError>;

    /// Moves the active generation's checkpoint to `to`, so the events after
    /// it are projected again (or, forward, skipped) when the projection
    /// resumes; clears a fault. The documents stay as they are, except at
    /// `to = 0`, which empties the tables: the read model of no events.
    /// Dead letters after `to` are forgotten (their events come again).
    /// Refused unless the projection is paused, no node holds a live lease
    /// on it, and no rebuild is in progress. Returns the old checkpoint.
    async fn reset_checkpoint(&self, name: &str, to: u64) -> Result<u64, StoreError>;

    /// The identity of the event source the generation's checkpoint counts
    /// positions in (see [`crate::EventSource::identity`]): the one recorded
    /// earlier, else `identity`, recorded now. A caller whose identity
    /// differs from the answer reads a different source than the checkpoint's.
    async fn claim_source_identity(&self, key: &ModelKey, identity: &str) -> Result<String, StoreError>;
}

/// What a runner writes with: a batch's changes with its checkpoint, a
/// skipped event with its checkpoint, a replayed dead letter, and the
/// plugin's `get` of its own generation.
#[async_trait]
pub trait ModelWriter: Send + Sync + 'static {
    /// Applies `changes` and moves the checkpoint from `from` to `to`, atomically.
    /// Fails, applying nothing, with `Retired` if the generation is no longer
    /// active or building, or `CheckpointMoved` if the checkpoint is not at `from`.
    async fn commit(&self, key: &ModelKey, changes: &ChangeSet, from: u64, to: u64) -> Result<(), StoreError>;

    /// Records a dead letter and moves the checkpoint from `from` to `to`
    /// (past the event), atomically; `CheckpointMoved` as for `commit`.
    async fn skip_event(&self, key: &ModelKey, letter: &DeadLetter, from: u64, to: u64) -> Result<(), StoreError>;

    /// Ends the replay of one dead letter marked for replay, claiming it in
    /// the same transaction, so that of two hosts replaying it only one
    /// applies it. `Ok(changes)`: the changes are applied and the letter
    /// removed, atomically (the checkpoint does not move). `Err(error)`: the
    /// letter stays, with the new error, unmarked. Returns `false`, applying
    /// nothing, when the letter was no longer marked (another host claimed it).
    async fn finish_replay(
        &self,
        key: &ModelKey,
        position: u64,
        outcome: Result<&ChangeSet, &str>,
    ) -> Result<bool, StoreError>;

    /// One document of a given generation (the plugin `get` import).
    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError>;
}

/// What the CLI and the API read with: documents of a projection's active
/// generation, resolved and read in one snapshot, so a swap is seen at one
/// instant and never half.
#[async_trait]
pub trait ModelReader: Send + Sync + 'static {
    /// A document of a projection's active generation, by name.
    async fn get_document(&self, projection: &str, collection: &str, id: &str) -> Result<Option<String>, StoreError>;

    /// A validated page of documents of a projection's active generation.
    async fn query_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<Page, StoreError>;

    /// How many documents of a projection's active generation `query`
    /// matches (its filters and search; its order, limit and cursor do not
    /// change a count), validated as `query_documents` validates it.
    async fn count_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<u64, StoreError>;

    /// Validated aggregates, grouped, over a projection's active generation.
    async fn aggregate_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &AggregateQuery,
    ) -> Result<AggregateResult, StoreError>;

    /// Bounds every later `query`, `count` and `aggregate`: a statement
    /// running longer is stopped with [`StoreError::TimeLimit`].
    fn set_read_timeout(&self, limit: std::time::Duration);
}

/// Storage for read models and projection checkpoints: the three roles
/// together, as a backend provides them.
///
/// A backend keeps, per projection generation and collection, JSON documents
/// keyed by id, with an index for each field the manifest declares, and a
/// registry of generations with their checkpoints. `commit` must write a
/// batch's changes and the new checkpoint in one transaction: that is what
/// makes projection exactly-once across crashes.
pub trait ReadModelStore:
    Registry + ModelWriter + ModelReader + Leases + ChangeLog + ModelSnapshot + Verifications + Modules
{
}

impl<T: Registry + ModelWriter + ModelReader + Leases + ChangeLog + ModelSnapshot + Verifications + Modules>
    ReadModelStore for T
{
}

impl From<crate::db::sqlite::SqliteError> for StoreError {
    fn from(e: crate::db::sqlite::SqliteError) -> Self {
        Self::Database(e.into())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.into())
    }
}
