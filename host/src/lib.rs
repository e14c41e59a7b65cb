//! refract keeps CQRS read models in sync with an event stream by running
//! projections as sandboxed WebAssembly components.
//!
//! The pieces, in the order data flows through them:
//! - an [`EventStore`] ([`SqliteEventStore`] embedded) holds events with a
//!   gapless global position and per-stream optimistic concurrency;
//! - a [`Plugin`] is a projection component loaded and checked by the
//!   [`PluginRuntime`];
//! - the [`Host`] runs one runner per projection, which feeds event batches
//!   to the plugin and commits the resulting [`ChangeSet`] together with the
//!   checkpoint through a [`ReadModelStore`] ([`SqliteReadModelStore`]);
//! - read models are read back with `get`, [`Query`] and `count`.
#![deny(missing_docs)]

mod bindings;
mod capabilities;
mod changes;
mod config;
mod engine;
mod event;
mod guest_output;
mod host;
mod limits;
mod manifest;
mod plugin;
mod policy;
mod query;
mod runner;
mod source;
mod sqlite;
mod store;

pub use capabilities::Capability;
pub use changes::{Change, ChangeError, ChangeSet, CollectionChanges};
pub use config::{Config, ConfigError, ProjectionConfig};
pub use event::{AppendRequest, Event, ExpectedVersion, NewEvent, Subscription};
pub use host::{DataDir, Host, HostError, ProjectionStatus, status};
pub use limits::{EPOCH_TICK, Limits};
pub use manifest::{CollectionSpec, Manifest, ManifestError};
pub use plugin::{Plugin, PluginError, PluginRuntime};
pub use policy::{FailurePolicy, RetryPolicy};
pub use query::{DEFAULT_LIMIT, Document, Filter, MAX_LIMIT, Op, Order, Page, Query, QueryError};
pub use runner::{CommitNotice, Progress, SyncConfig};
pub use source::{Appended, EventSource, EventStore, SourceError, SqliteEventStore};
pub use store::{
    DeadLetter, ModelKey, ProjectionRecord, ProjectionState, ReadModelStore, RetryRequest, SqliteReadModelStore,
    StoreError,
};
