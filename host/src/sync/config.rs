//! `[sources.NAME]` tables of `refract.toml`: which database table to follow
//! and how. What can be checked without the database is checked here; the
//! table and its columns are checked against the database when the syncer
//! starts (`schema.rs`).
//!
//! ```toml
//! [sources.orders]
//! url = "mysql://app@127.0.0.1:3306/shop"
//! table = "orders"
//! key = "id"                  # or ["region", "id"]
//! tracking = "timestamp"      # "timestamp" | "sequence" | "version"
//! column = "updated_at"
//! deleted = "deleted_at"      # optional soft-delete column
//! batch_size = 5000
//! interval_ms = 1000          # 0 = continuous
//! lookback_ms = 5000          # how late a transaction may commit and still be seen
//! detect_hard_deletes = true  # periodic key scan
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::error::SyncError;

/// How changed rows are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tracking {
    /// A timestamp column set on every insert and update (`updated_at`).
    Timestamp,
    /// An integer column set once on insert (an auto-increment id): new rows only.
    Sequence,
    /// An integer column set to a larger value on every insert and update.
    Version,
}

/// One key of a source: a column name, or several for a composite key.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Key {
    One(String),
    Many(Vec<String>),
}

/// A `[sources.NAME]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    url: String,
    table: String,
    key: Key,
    tracking: Tracking,
    column: String,
    #[serde(default)]
    deleted: Option<String>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    lookback_ms: Option<u64>,
    #[serde(default)]
    detect_hard_deletes: bool,
    #[serde(default)]
    delete_scan_interval_ms: Option<u64>,
}

/// Which kind of database a source URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`: MySQL and MariaDB.
    MySql,
    /// `sqlite://PATH`.
    Sqlite,
}

/// A checked source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// The source's name: the prefix of its streams (`NAME-KEY`).
    pub name: String,
    /// The database URL.
    pub url: String,
    /// Which database it is.
    pub dialect: Dialect,
    /// The table (optionally `schema.table`).
    pub table: String,
    /// The key columns, in order.
    pub key: Vec<String>,
    /// How changes are found.
    pub tracking: Tracking,
    /// The tracking column.
    pub column: String,
    /// The soft-delete column: a row where it is not NULL is deleted.
    pub deleted: Option<String>,
    /// Rows per read and per commit.
    pub batch_size: usize,
    /// Pause between passes (zero: continuous).
    pub interval: Duration,
    /// How long after taking its tracking value a transaction may commit
    /// and still be seen.
    pub lookback: Duration,
    /// Whether a periodic key scan turns vanished rows into `RowDeleted`.
    pub detect_hard_deletes: bool,
    /// How often that scan runs at most.
    pub delete_scan_interval: Duration,
}

/// Default rows per batch.
pub const DEFAULT_BATCH_SIZE: usize = 5000;
/// Default pause between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
/// Default late-commit window.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_millis(5000);
/// Default time between hard-delete scans.
pub const DEFAULT_DELETE_SCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Longest source name: the stream prefix must leave room for keys.
pub const MAX_SOURCE_NAME: usize = 64;

impl SourceSettings {
    /// Checks the settings of the source `name`.
    pub fn check(&self, name: &str) -> Result<SourceConfig, SyncError> {
        let bad = |key: &str, reason: String| SyncError::Config { name: name.to_owned(), key: key.to_owned(), reason };
        // Letters, digits and `_` only: no `-`, so the stream prefix `NAME-`
        // of one source is never a prefix of another's streams.
        if name.is_empty()
            || name.len() > MAX_SOURCE_NAME
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad(
                "name",
                format!("a source name is 1 to {MAX_SOURCE_NAME} lowercase ASCII letters, digits or `_`"),
            ));
        }
        let dialect = dialect(&self.url).ok_or_else(|| {
            bad("url", "use postgres://..., mysql://... (MySQL and MariaDB) or sqlite://PATH".to_owned())
        })?;
        if self.table.trim().is_empty() {
            return Err(bad("table", "the table name is empty".into()));
        }
        let key = match &self.key {
            Key::One(k) => vec![k.clone()],
            Key::Many(k) => k.clone(),
        };
        if key.is_empty() {
            return Err(bad("key", "name at least one key column".into()));
        }
        for (i, k) in key.iter().enumerate() {
            if k.is_empty() {
                return Err(bad("key", "a key column name is empty".into()));
            }
            if key[..i].contains(k) {
                return Err(bad("key", format!("column `{k}` is named twice")));
            }
        }
        for (what, col) in [("column", Some(&self.column)), ("deleted", self.deleted.as_ref())] {
            if col.is_some_and(|c| c.is_empty()) {
                return Err(bad(what, "the column name is empty".into()));
            }
        }
        if self.deleted.as_ref().is_some_and(|d| key.contains(d) || *d == self.column) {
            return Err(bad("deleted", "the soft-delete column cannot be a key or the tracking column".into()));
        }
        if self.batch_size == Some(0) {
            return Err(bad("batch_size", "must be at least 1".into()));
        }
        Ok(SourceConfig {
            name: name.to_owned(),
            url: self.url.clone(),
            dialect,
            table: self.table.clone(),
            key,
            tracking: self.tracking,
            column: self.column.clone(),
            deleted: self.deleted.clone(),
            batch_size: self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            interval: self.interval_ms.map_or(DEFAULT_INTERVAL, Duration::from_millis),
            lookback: self.lookback_ms.map_or(DEFAULT_LOOKBACK, Duration::from_millis),
            detect_hard_deletes: self.detect_hard_deletes,
            delete_scan_interval: self
                .delete_scan_interval_ms
                .map_or(DEFAULT_DELETE_SCAN_INTERVAL, Duration::from_millis),
        })
    }
}

fn dialect(url: &str) -> Option<Dialect> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Dialect::Postgres)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Some(Dialect::MySql)
    } else if url.strip_prefix("sqlite://").is_some_and(|p| !p.is_empty()) {
        Some(Dialect::Sqlite)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> SourceSettings {
        toml::from_str(&format!(
            "url = \"postgres://u@h/db\"\ntable = \"orders\"\nkey = \"id\"\ntracking = \"timestamp\"\ncolumn = \"updated_at\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn defaults_and_composite_keys() {
        let c = settings("").check("orders").unwrap();
        assert_eq!(c.key, ["id"]);
        assert_eq!((c.batch_size, c.interval, c.lookback), (DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL, DEFAULT_LOOKBACK));
        assert_eq!(c.dialect, Dialect::Postgres);
        let c = toml::from_str::<SourceSettings>(
            "url = \"mysql://r@h/d\"\ntable = \"t\"\nkey = [\"a\", \"b\"]\ntracking = \"version\"\ncolumn = \"v\"\ninterval_ms = 0",
        )
        .unwrap()
        .check("t")
        .unwrap();
        assert_eq!(
            (c.key, c.dialect, c.interval),
            (vec!["a".to_owned(), "b".to_owned()], Dialect::MySql, Duration::ZERO)
        );
    }

    #[test]
    fn mistakes_name_the_source_and_key() {
        let e = settings("").check("Orders-1").unwrap_err().to_string();
        assert!(e.starts_with("source `Orders-1`: `name`:"), "{e}");
        let e = toml::from_str::<SourceSettings>(
            "url = \"sqlite://x.db\"\ntable = \"t\"\nkey = []\ntracking = \"sequence\"\ncolumn = \"id\"",
        )
        .unwrap()
        .unwrap_err_or_check("o");
        assert_eq!(e, "source `o`: `key`: name at least one key column");
        let e = settings("batch_size = 0").unwrap_err_or_check("o");
        assert_eq!(e, "source `o`: `batch_size`: must be at least 1");
        let e = settings("deleted = \"id\"").unwrap_err_or_check("o");
        assert!(e.starts_with("source `o`: `deleted`:"), "{e}");
    }

    trait CheckErr {
        fn unwrap_err_or_check(self, name: &str) -> String;
    }
    impl CheckErr for SourceSettings {
        fn unwrap_err_or_check(self, name: &str) -> String {
            self.check(name).unwrap_err().to_string()
        }
    }
}
