//! The role each source database plays: describe a table, read a page of
//! rows in keyset order, list its keys. One implementation per backend
//! (`postgres.rs`, `mysql.rs`, `sqlite.rs`); they differ only in SQL and in
//! how values are decoded. Which columns may be used how is decided once,
//! in `schema.rs`, and the keyset condition is built once, in `sql.rs`.

use async_trait::async_trait;

use super::config::{Dialect, SourceConfig};
use super::error::SyncError;
use super::schema::Plan;
use super::value::{Position, SourceRow, Val};

/// What a column holds, as far as sync cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Signed integers.
    Int,
    /// Unsigned 64-bit integers (MySQL `BIGINT UNSIGNED`).
    UInt,
    /// Floating point.
    Float,
    /// Exact decimals.
    Decimal,
    /// Booleans.
    Bool,
    /// Text, and values compared as text (PostgreSQL `uuid`).
    Text,
    /// Date and time (with or without time zone).
    Timestamp,
    /// A date.
    Date,
    /// A time of day.
    Time,
    /// JSON.
    Json,
    /// Bytes.
    Binary,
    /// Anything else: passed on as its text form.
    Other,
}

/// A column of a source table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type as the database names it.
    pub type_name: String,
    /// What it holds.
    pub kind: Kind,
}

/// A source database table, as sync reads it.
#[async_trait]
pub trait Table: Send + Sync {
    /// The table's columns in order, or `None` when there is no such table.
    async fn columns(&self) -> Result<Option<Vec<Column>>, SyncError>;

    /// Up to `limit` rows after `after` (from the start when `None`) in
    /// keyset order: by tracking value, then key. Rows whose tracking value
    /// is NULL are not read.
    async fn page(&self, plan: &Plan, after: Option<&Position>, limit: usize) -> Result<Vec<SourceRow>, SyncError>;

    /// How many rows lie after `after` in keyset order (every row with a
    /// tracking value when `None`): the rows changed since that position.
    async fn pending(&self, plan: &Plan, after: Option<&Position>) -> Result<u64, SyncError>;

    /// Every key in the table.
    async fn keys(&self, plan: &Plan) -> Result<Vec<Vec<Val>>, SyncError>;
}

/// Connects to the source database of `config`.
pub async fn connect(config: &SourceConfig) -> Result<Box<dyn Table>, SyncError> {
    Ok(match config.dialect {
        Dialect::Postgres => Box::new(super::postgres::PgTable::connect(config).await?),
        Dialect::MySql => Box::new(super::mysql::MySqlTable::connect(config).await?),
        Dialect::Sqlite => Box::new(super::sqlite::SqliteTable::connect(config).await?),
    })
}
