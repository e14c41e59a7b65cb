//! SQLite source tables: the SQL and the decoding, nothing else. SQLite
//! values carry their own type whatever the column declares, so rows are
//! decoded by what each value holds.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Row, TypeInfo, ValueRef};

use super::config::SourceConfig;
use super::error::SyncError;
use super::rows::{Cells, bind_after, decode};
use super::schema::Plan;
use super::sql::{self, Dialect};
use super::table::{Column, Kind, Table};
use super::value::{Cell, Position, SourceRow, Val};

/// How long a read waits for a connection (see `postgres.rs`).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A table in a SQLite file.
pub struct SqliteTable {
    pool: SqlitePool,
    name: String,
    table: String,
}

impl SqliteTable {
    /// A pool on the file; a missing file is an error when first read, not created.
    pub async fn connect(config: &SourceConfig) -> Result<Self, SyncError> {
        let options =
            SqliteConnectOptions::from_str(&config.url).map_err(|e| SyncError::db(&config.name, e))?.read_only(true);
        let pool =
            SqlitePoolOptions::new().max_connections(2).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
        Ok(Self { pool, name: config.name.clone(), table: config.table.clone() })
    }

    fn err(&self, e: sqlx::Error) -> SyncError {
        SyncError::db(&self.name, e)
    }
}

struct Lite;

impl Dialect for Lite {
    /// Backticks, not double quotes: SQLite reads a double-quoted name that
    /// matches no column as a string literal, so a column renamed while the
    /// source runs would compare and copy the text `"updated_at"` on every
    /// row (and re-emit them all) instead of failing. A backticked name is
    /// only ever an identifier.
    fn ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('`', "``"))
    }

    fn position_expr(&self, c: &Column) -> String {
        self.ident(&c.name)
    }

    fn payload_expr(&self, c: &Column) -> String {
        self.ident(&c.name)
    }

    fn param(&self, _: usize, _: &Column) -> String {
        "?".into()
    }
}

/// SQLite's type affinity rules (section 3.1 of its datatype docs), with
/// dates and times told apart for the timestamp tracking check.
fn kind(declared: &str) -> Kind {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        Kind::Int
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        Kind::Text
    } else if t.contains("BLOB") {
        Kind::Binary
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        Kind::Float
    } else if t.contains("DATE") || t.contains("TIME") {
        Kind::Timestamp
    } else if t.is_empty() {
        Kind::Other
    } else {
        Kind::Decimal
    }
}

fn cell(row: &SqliteRow, i: usize) -> Result<Cell, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    Ok(match raw.type_info().name() {
        "INTEGER" => Cell::Int(row.try_get(i)?),
        "REAL" => Cell::Float(row.try_get(i)?),
        "BLOB" => Cell::Bytes(row.try_get(i)?),
        _ => Cell::Text(row.try_get(i)?),
    })
}

impl Cells for SqliteRow {
    fn position(&self, i: usize, c: &Column) -> Result<Val, sqlx::Error> {
        Ok(match cell(self, i)? {
            Cell::Int(v) => Val::Int(v),
            Cell::Float(f) => Val::Float(f),
            Cell::Text(t) => Val::Text(t),
            other => {
                return Err(sqlx::Error::Decode(
                    format!("column `{}` holds {other:?}, which cannot be a key or tracking value", c.name).into(),
                ));
            }
        })
    }

    fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
        Ok(self.try_get::<i64, _>(i)? != 0)
    }

    /// SQLite's columns hold any type: a cell is what its value holds.
    fn cell(&self, i: usize, _: &Column) -> Result<Cell, sqlx::Error> {
        cell(self, i)
    }
}

#[async_trait]
impl Table for SqliteTable {
    async fn columns(&self) -> Result<Option<Vec<Column>>, SyncError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
            .bind(&self.table)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.into_iter().map(|(name, t)| Column { name, kind: kind(&t), type_name: t }).collect()))
    }

    async fn page(&self, plan: &Plan, after: Option<&Position>, limit: usize) -> Result<Vec<SourceRow>, SyncError> {
        let (sql, binds) = sql::page(&Lite, plan, after.is_some(), limit);
        let rows = bind_after(sqlx::query(AssertSqlSafe(sql)), &binds, after)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| decode(plan, r).map_err(|e| self.err(e))).collect()
    }

    async fn pending(&self, plan: &Plan, after: Option<&Position>) -> Result<u64, SyncError> {
        let (sql, binds) = sql::pending(&Lite, plan, after.is_some());
        let n: i64 = bind_after(sqlx::query(AssertSqlSafe(sql)), &binds, after)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err(e))?;
        Ok(n.max(0) as u64)
    }

    async fn keys(&self, plan: &Plan) -> Result<Vec<Vec<Val>>, SyncError> {
        let rows =
            sqlx::query(AssertSqlSafe(sql::keys(&Lite, plan))).fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| plan.key.iter().enumerate().map(|(i, c)| r.position(i, c)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}
