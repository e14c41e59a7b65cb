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
mod bindings;
mod cache;
mod call_thread;
mod capabilities;
mod changes;
mod clock;
mod config;
mod dev;
mod document_cache;
mod engine;
mod event;
mod guest_output;
mod host;
mod limits;
mod manifest;
mod plugin;
mod policy;
mod postgres;
mod query;
mod runner;
mod scaffold;
mod source;
mod sqlite;
mod store;
mod watch;

pub use allocator::tune_allocator;
pub use api::{ApiError, ApiState, BODY_LIMIT, DEFAULT_TIMEOUT, MAX_TIMEOUT, Metrics, router, serve};
pub use backend::{BackendError, open_events, open_models};
pub use cache::ModuleCache;
pub use capabilities::Capability;
pub use changes::{Change, ChangeError, ChangeSet, CollectionChanges};
pub use config::{Config, ConfigError, ProjectionConfig};
pub use dev::{DevError, Lang, build_crate, build_project, plugin_crates, plugin_projects, spawn_rebuilder};
pub use event::{AppendRequest, Event, ExpectedVersion, InvalidName, MAX_NAME_LEN, NameField, NewEvent, Subscription};
pub use host::{DataDir, Host, HostError, HostLock, ProjectionStatus, status};
pub use limits::{EPOCH_TICK, Limits};
pub use manifest::{CollectionSpec, MAX_EVENT_TYPES, MAX_STREAM_PREFIXES, Manifest, ManifestError};
pub use plugin::{Plugin, PluginError, PluginRuntime, module_hash};
pub use policy::{FailurePolicy, RetryPolicy};
pub use query::{
    DEFAULT_LIMIT, Document, Filter, MAX_FILTERS, MAX_IN_VALUES, MAX_LIMIT, Op, Order, Page, Query, QueryError,
    check_document_id,
};
pub use runner::{CommitNotice, Progress, SyncConfig};
pub use scaffold::new_project;
pub use source::{Appended, EventSource, EventStore, PostgresEventStore, SourceError, SqliteEventStore};
pub use store::{
    DeadLetter, ModelKey, PostgresReadModelStore, ProjectionRecord, ProjectionState, ReadModelStore, Registration,
    RetryRequest, Role, SqliteReadModelStore, StoreError,
};
pub use watch::{DEBOUNCE, PluginChange, PluginWatcher, WatchError};
