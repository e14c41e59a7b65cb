//! refract keeps CQRS read models in sync with an event stream by running
//! projections as sandboxed WebAssembly components.
//!
//! The pieces, in the order data flows through them:
//! - an [`EventStore`] ([`SqliteEventStore`] embedded, or
//!   [`PostgresEventStore`]) holds events with a
//!   gapless global position and per-stream optimistic concurrency;
//! - a [`Plugin`] is a projection component loaded and checked by the
//!   [`PluginRuntime`];
//! - the [`Host`] runs one runner per projection, which feeds event batches
//!   to the plugin and commits the resulting [`ChangeSet`] together with the
//!   checkpoint through a [`ReadModelStore`] ([`SqliteReadModelStore`] or
//!   [`PostgresReadModelStore`]; [`open_events`] and [`open_models`] pick one by URL);
//! - read models are read back with `get`, [`Query`] and `count`, in process
//!   or over HTTP through [`serve`] (see the `api` module docs).
#![deny(missing_docs)]

mod allocator;
mod api;
mod backend;
mod clock;
mod db;
mod model;
mod projection;
mod ready;
mod runtime;
mod source;
mod store;
mod sync;

pub use api::{
    Access, ApiError, ApiState, BODY_LIMIT, Cors, DEFAULT_TIMEOUT, HEADER_TIMEOUT, MAX_TIMEOUT, Metrics, Scope, Token,
    Tokens, TokensError, router, serve, token_hash,
};
pub use backend::{BackendError, open_events, open_events_with_sync, open_models};
pub use db::{DatabaseError, DbErrorKind};
pub use model::changes::{Change, ChangeError, ChangeSet, CollectionChanges};
pub use model::event::{
    AppendRequest, Event, ExpectedVersion, InvalidName, MAX_NAME_LEN, NameField, NewEvent, Subscription,
};
pub use model::manifest::{CollectionSpec, MAX_EVENT_TYPES, MAX_STREAM_PREFIXES, Manifest, ManifestError};
pub use projection::admin::{AdminError, Paused, Reset, STOP_TIMEOUT, pause, reset, resume};
pub use projection::compiles::{CompileGuard, CompileTime, Compiles, Compiling};
pub use projection::config::{Config, ConfigError, ProjectionConfig};
pub use projection::host::{DataDir, Host, HostError, HostLiveness, HostLock, ProjectionStatus, status};
pub use projection::lease::{DEFAULT_LEASE_TTL, LeaseSettings, default_node_id, hostname};
pub use projection::policy::{FailurePolicy, RetryPolicy, VerifyPolicy};
pub use projection::runner::{CommitNotice, Progress, StoreErrors, SyncConfig};
pub use projection::verify::{Difference, DifferenceKind, Verifier, VerifyError, VerifyReport};
pub use projection::watch::{DEBOUNCE, PluginChange, PluginWatcher, WatchError, debounce, is_write};
pub use ready::list as list_checkpoints;
pub use ready::{ProjectionCheckpoint, Readiness, active_checkpoints, readiness};
pub use runtime::capabilities::Capability;
pub use runtime::limits::{EPOCH_TICK, Limits};
pub use runtime::module_cache::ModuleCache;
#[doc(hidden)]
pub use runtime::native::{NativeFailure, NativeProjection};
pub use runtime::plugin::{Plugin, PluginError, PluginRuntime, module_hash};
pub use runtime::source_bundle::{MAX_FILES as MAX_SOURCE_FILES, SECTION as SOURCE_SECTION, SourceFiles, with_source};
pub use runtime::tiering::{AUTO_BASELINE_BYTES, CodeTier, Tiering};
pub use source::{
    Appended, EventSource, EventStore, ForeignMapping, ForeignStream, JetStreamEventStore, MappedField,
    PostgresEventStore, SourceError, SqliteEventStore,
};
pub use source::{SeenRow, StoredSync, SyncCommit, SyncLog};
pub use store::aggregate::{
    AggFn, Aggregate, AggregateQuery, AggregateResult, Group, MAX_AGGREGATES, MAX_GROUP_BY, MAX_GROUPS,
};
pub use store::change_log::{DEFAULT_MAX_ENTRIES, MAX_CONSUMER_LEN, check_consumer};
pub use store::limits::{DEFAULT_READ_TIMEOUT, READ_TIMEOUT_ENV};
pub use store::query::{
    DEFAULT_LIMIT, Document, Filter, MAX_FILTERS, MAX_IN_VALUES, MAX_LIMIT, Op, Order, Page, Query, QueryError,
    check_document_id, query_warnings,
};
pub use store::search::{MAX_DOCUMENT_WORDS, MAX_SEARCH_BYTES, MAX_SEARCH_WORDS, MAX_WORD_BYTES};
pub use store::{
    ChangeEntry, ChangeKind, ChangeLog, ChangePage, ConsumerPosition, DeadLetter, Lease, LeaseGrant, LeaseRecord,
    Leases, ModelKey, ModelReader, ModelSnapshot, ModelWriter, Modules, PostgresReadModelStore, ProjectionRecord,
    ProjectionState, ReadModelStore, Registration, Registry, Retention, RetryRequest, Role, SqliteReadModelStore,
    StoreError, StoredDocument, Verifications, VerifyOutcome, VerifyResult, VerifyRuns,
};
pub use sync::{
    Dialect, ROW_DELETED, ROW_UPSERTED, SourceConfig, SourceSettings, SourceStatus, SyncError, Syncer, Syncers,
    Tracking, Val, encode_key, rfc3339_micros, source_status, stream_id,
};
