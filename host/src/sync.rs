//! Table sync: rows of external tables (PostgreSQL, MySQL/MariaDB, SQLite)
//! that changed since the last pass become events, exactly once.
//!
//! Each `[sources.NAME]` of `refract.toml` (`config.rs`) gets a [`Syncer`]
//! (`syncer.rs`). A pass reads the table in keyset order, `(tracking value,
//! key) > (last value, last key)` (`sql.rs`), so rows sharing a tracking
//! value at a page boundary are neither lost nor repeated; it starts a
//! lookback window back (`window.rs`), so transactions that commit late with
//! lower values are still seen; rows already emitted with the same tracking
//! value are skipped. Every changed row becomes an event on the stream
//! `NAME-KEY` (`stream.rs`): `RowUpserted` with the row as JSON
//! (`value.rs`), or `RowDeleted` when the soft-delete column is set or a key
//! scan finds the row gone. The events and the sync state are committed in
//! one transaction of the event store ([`SyncLog`](crate::SyncLog)), so a
//! crash never loses or doubles a change.
//!
//! How far behind a source is, its rows pending, is counted on demand by
//! the source database (`lag.rs`).
//!
//! Only SQL differs between backends (`postgres.rs`, `mysql.rs`,
//! `sqlite.rs`, behind the [`table::Table`] role); which columns may be used
//! how is decided once (`schema.rs`).

mod config;
mod error;
mod lag;
mod mysql;
mod postgres;
mod rows;
mod schema;
mod sql;
mod sqlite;
mod stream;
mod syncer;
mod table;
mod value;
mod window;

pub use config::{Dialect, SourceConfig, SourceSettings, Tracking};
pub use error::SyncError;
pub use stream::{encode_key, stream_id};
pub use syncer::{ROW_DELETED, ROW_UPSERTED, SourceStatus, Syncer, Syncers, source_status};
pub use value::{Val, rfc3339_micros};
