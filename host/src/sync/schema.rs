//! Which columns a source may use how, decided once for every backend: the
//! table must exist; the key, tracking and soft-delete columns must exist;
//! keys must be integers or text, a timestamp tracking column a timestamp
//! (any value on SQLite, which has no column types), and a sequence or
//! version column an integer.

use super::config::{Dialect, SourceConfig, Tracking};
use super::error::SyncError;
use super::table::{Column, Kind};

/// A source checked against its table: the columns it reads.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The source's configuration.
    pub source: SourceConfig,
    /// The tracking column.
    pub tracking: Column,
    /// The key columns, in key order.
    pub key: Vec<Column>,
    /// The soft-delete column.
    pub deleted: Option<Column>,
    /// Every column of the table, in table order: the payload.
    pub columns: Vec<Column>,
}

impl Plan {
    /// Checks `source` against the table's columns (`None`: no such table).
    pub fn check(source: &SourceConfig, columns: Option<Vec<Column>>) -> Result<Self, SyncError> {
        let bad = |key: &str, reason: String| SyncError::Config { name: source.name.clone(), key: key.into(), reason };
        let columns =
            columns.ok_or_else(|| bad("table", format!("no table `{}` in the source database", source.table)))?;
        let find = |key: &str, name: &str| {
            columns
                .iter()
                .find(|c| c.name == name)
                .cloned()
                .ok_or_else(|| bad(key, format!("no column `{name}` in table `{}`", source.table)))
        };
        let sqlite = source.dialect == Dialect::Sqlite;
        let mut key = Vec::new();
        for name in &source.key {
            let c = find("key", name)?;
            if !matches!(c.kind, Kind::Int | Kind::UInt | Kind::Text) {
                return Err(bad(
                    "key",
                    format!("column `{name}` has type {}: a key must be an integer or text", c.type_name),
                ));
            }
            key.push(c);
        }
        let tracking = find("column", &source.column)?;
        let fits = match source.tracking {
            Tracking::Timestamp if sqlite => {
                matches!(
                    tracking.kind,
                    Kind::Timestamp | Kind::Date | Kind::Text | Kind::Int | Kind::Float | Kind::Decimal
                )
            }
            Tracking::Timestamp => tracking.kind == Kind::Timestamp,
            Tracking::Sequence | Tracking::Version => matches!(tracking.kind, Kind::Int | Kind::UInt),
        };
        if !fits {
            let want = match source.tracking {
                Tracking::Timestamp => "a timestamp",
                Tracking::Sequence | Tracking::Version => "an integer",
            };
            return Err(bad(
                "column",
                format!(
                    "column `{}` has type {}: {} tracking needs {want} column",
                    tracking.name,
                    tracking.type_name,
                    serde_json::to_value(source.tracking)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
            ));
        }
        let deleted = source.deleted.as_deref().map(|d| find("deleted", d)).transpose()?;
        Ok(Self { source: source.clone(), tracking, key, deleted, columns })
    }

    /// The shown form of a tracking value.
    pub fn show_tracking(&self, v: &super::value::Val) -> serde_json::Value {
        use super::value::Val;
        match v {
            Val::Int(micros) if self.tracking.kind == Kind::Timestamp && !self.is_sqlite() => {
                serde_json::Value::String(super::value::rfc3339_micros(*micros))
            }
            Val::Int(i) => (*i).into(),
            Val::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
            Val::Text(t) => t.clone().into(),
        }
    }

    fn is_sqlite(&self) -> bool {
        self.source.dialect == Dialect::Sqlite
    }

    #[cfg(test)]
    pub(crate) fn for_test(table: &str, tracking: Column, key: Vec<Column>, columns: Vec<Column>) -> Self {
        let source = SourceConfig {
            name: "t".into(),
            url: "sqlite://x".into(),
            dialect: Dialect::Sqlite,
            table: table.into(),
            key: key.iter().map(|c| c.name.clone()).collect(),
            tracking: Tracking::Sequence,
            column: tracking.name.clone(),
            deleted: None,
            batch_size: 10,
            interval: std::time::Duration::ZERO,
            lookback: std::time::Duration::ZERO,
            detect_hard_deletes: false,
            delete_scan_interval: std::time::Duration::ZERO,
        };
        Self { source, tracking, key, deleted: None, columns }
    }
}
