//! MySQL and MariaDB source tables: the SQL and the decoding, nothing else.
//!
//! Sessions run in UTC (sqlx sets `time_zone = '+00:00'`), so `TIMESTAMP`
//! columns read as UTC; `DATETIME` values are taken to be UTC.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Row};

use super::config::SourceConfig;
use super::error::SyncError;
use super::rows::{Cells, bind_after, decode};
use super::schema::Plan;
use super::sql::{self, Dialect};
use super::table::{Column, Kind, Table};
use super::value::{Cell, Position, SourceRow, Val};

/// How long a read waits for a connection (see `postgres.rs`).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Unix epoch as a MySQL `DATETIME(6)`.
const EPOCH: &str = "TIMESTAMP'1970-01-01 00:00:00'";

/// A table in MySQL or MariaDB.
pub struct MySqlTable {
    pool: MySqlPool,
    name: String,
    table: String,
}

impl MySqlTable {
    /// A pool on the source's URL; connections are made when first needed.
    pub async fn connect(config: &SourceConfig) -> Result<Self, SyncError> {
        let url = config.url.replacen("mariadb://", "mysql://", 1);
        let options = MySqlConnectOptions::from_str(&url).map_err(|e| SyncError::db(&config.name, e))?;
        let pool =
            MySqlPoolOptions::new().max_connections(2).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
        Ok(Self { pool, name: config.name.clone(), table: config.table.clone() })
    }

    fn err(&self, e: sqlx::Error) -> SyncError {
        SyncError::db(&self.name, e)
    }
}

struct My;

impl Dialect for My {
    fn ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('`', "``"))
    }

    fn position_expr(&self, c: &Column) -> String {
        let i = self.ident(&c.name);
        match c.kind {
            Kind::Timestamp => format!("TIMESTAMPDIFF(MICROSECOND, {EPOCH}, {i})"),
            Kind::Int | Kind::UInt => format!("CAST({i} AS SIGNED)"),
            _ => i,
        }
    }

    fn payload_expr(&self, c: &Column) -> String {
        let i = self.ident(&c.name);
        match c.kind {
            Kind::Int => format!("CAST({i} AS SIGNED)"),
            Kind::UInt => format!("CAST({i} AS UNSIGNED)"),
            Kind::Float => format!("({i} + 0e0)"),
            Kind::Binary => i,
            Kind::Timestamp => format!("DATE_FORMAT({i}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
            Kind::Date => format!("DATE_FORMAT({i}, '%Y-%m-%d')"),
            _ => format!("CAST({i} AS CHAR)"),
        }
    }

    fn param(&self, _: usize, c: &Column) -> String {
        match c.kind {
            Kind::Timestamp => format!("TIMESTAMPADD(MICROSECOND, ?, {EPOCH})"),
            _ => "?".into(),
        }
    }
}

fn kind(data_type: &str, column_type: &str) -> Kind {
    match data_type {
        "bigint" if column_type.contains("unsigned") => Kind::UInt,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bit" => Kind::Int,
        "float" | "double" | "real" => Kind::Float,
        "decimal" | "numeric" => Kind::Decimal,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => Kind::Text,
        "datetime" | "timestamp" => Kind::Timestamp,
        "date" => Kind::Date,
        "time" => Kind::Time,
        "json" => Kind::Json,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary,
        _ => Kind::Other,
    }
}

impl Cells for MySqlRow {
    fn position(&self, i: usize, c: &Column) -> Result<Val, sqlx::Error> {
        Ok(match c.kind {
            Kind::Int | Kind::UInt | Kind::Timestamp => Val::Int(self.try_get(i)?),
            _ => Val::Text(self.try_get(i)?),
        })
    }

    fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
        Ok(self.try_get::<i64, _>(i)? != 0)
    }

    fn cell(&self, i: usize, c: &Column) -> Result<Cell, sqlx::Error> {
        fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Cell) -> Cell {
            v.map_or(Cell::Null, f)
        }
        Ok(match c.kind {
            Kind::Int => opt(self.try_get(i)?, Cell::Int),
            Kind::UInt => opt(self.try_get(i)?, Cell::UInt),
            Kind::Float => opt(self.try_get(i)?, Cell::Float),
            Kind::Binary => opt(self.try_get(i)?, Cell::Bytes),
            Kind::Json => opt(self.try_get(i)?, Cell::Json),
            _ => opt(self.try_get(i)?, Cell::Text),
        })
    }
}

#[async_trait]
impl Table for MySqlTable {
    async fn columns(&self) -> Result<Option<Vec<Column>>, SyncError> {
        let (schema, table) = match self.table.split_once('.') {
            Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
            None => (None, self.table.clone()),
        };
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), CAST(LOWER(COLUMN_TYPE) AS CHAR) \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .map(|(name, data_type, column_type)| Column {
                    kind: kind(&data_type, &column_type),
                    name,
                    type_name: column_type,
                })
                .collect(),
        ))
    }

    async fn page(&self, plan: &Plan, after: Option<&Position>, limit: usize) -> Result<Vec<SourceRow>, SyncError> {
        let (sql, binds) = sql::page(&My, plan, after.is_some(), limit);
        let rows = bind_after(sqlx::query(AssertSqlSafe(sql)), &binds, after)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| decode(plan, r).map_err(|e| self.err(e))).collect()
    }

    async fn pending(&self, plan: &Plan, after: Option<&Position>) -> Result<u64, SyncError> {
        let (sql, binds) = sql::pending(&My, plan, after.is_some());
        let n: i64 = bind_after(sqlx::query(AssertSqlSafe(sql)), &binds, after)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err(e))?;
        Ok(n.max(0) as u64)
    }

    async fn keys(&self, plan: &Plan) -> Result<Vec<Vec<Val>>, SyncError> {
        let rows =
            sqlx::query(AssertSqlSafe(sql::keys(&My, plan))).fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| plan.key.iter().enumerate().map(|(i, c)| r.position(i, c)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}
