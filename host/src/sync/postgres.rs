//! PostgreSQL source tables: the SQL and the decoding, nothing else.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};

use super::config::SourceConfig;
use super::error::SyncError;
use super::rows::{Cells, decode};
use super::schema::Plan;
use super::sql::{self, Dialect};
use super::table::{Column, Kind, Table};
use super::value::{Cell, Position, SourceRow, Val};

/// How long a read waits for a connection: a source that is down fails
/// its pass soon and retries with backoff.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A table in PostgreSQL.
pub struct PgTable {
    pool: PgPool,
    name: String,
    table: String,
}

impl PgTable {
    /// A pool on the source's URL; connections are made when first needed.
    pub async fn connect(config: &SourceConfig) -> Result<Self, SyncError> {
        let options = PgConnectOptions::from_str(&config.url).map_err(|e| SyncError::db(&config.name, e))?;
        let pool = PgPoolOptions::new().max_connections(2).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
        Ok(Self { pool, name: config.name.clone(), table: config.table.clone() })
    }

    fn err(&self, e: sqlx::Error) -> SyncError {
        SyncError::db(&self.name, e)
    }
}

struct Pg;

impl Dialect for Pg {
    fn ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    fn position_expr(&self, c: &Column) -> String {
        let i = self.ident(&c.name);
        match c.kind {
            Kind::Timestamp => format!("(EXTRACT(EPOCH FROM {i}) * 1000000)::bigint"),
            Kind::Int => format!("{i}::bigint"),
            _ => format!("{i}::text"),
        }
    }

    fn payload_expr(&self, c: &Column) -> String {
        let i = self.ident(&c.name);
        const RFC3339: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";
        match c.kind {
            Kind::Int => format!("{i}::bigint"),
            Kind::Float => format!("{i}::float8"),
            Kind::Bool | Kind::Binary => i,
            Kind::Timestamp if c.type_name.contains("with time zone") => {
                format!("to_char({i} AT TIME ZONE 'UTC', {RFC3339})")
            }
            Kind::Timestamp => format!("to_char({i}, {RFC3339})"),
            Kind::Date => format!("to_char({i}, 'YYYY-MM-DD')"),
            _ => format!("{i}::text"),
        }
    }

    fn param(&self, index: usize, c: &Column) -> String {
        let n = index + 1;
        match c.kind {
            Kind::Timestamp if c.type_name.contains("with time zone") => {
                format!("(TIMESTAMPTZ 'epoch' + ${n}::bigint * INTERVAL '1 microsecond')")
            }
            Kind::Timestamp => format!("(TIMESTAMP 'epoch' + ${n}::bigint * INTERVAL '1 microsecond')"),
            Kind::Int => format!("${n}::bigint"),
            // The column's own type, so uuid, citext and char(n) compare as their index does.
            _ => format!("${n}::text::{}", c.type_name),
        }
    }
}

fn kind(typname: &str) -> Kind {
    match typname {
        "int2" | "int4" | "int8" => Kind::Int,
        "float4" | "float8" => Kind::Float,
        "numeric" => Kind::Decimal,
        "bool" => Kind::Bool,
        "text" | "varchar" | "bpchar" | "name" | "citext" | "uuid" => Kind::Text,
        "timestamp" | "timestamptz" => Kind::Timestamp,
        "date" => Kind::Date,
        "time" | "timetz" => Kind::Time,
        "json" | "jsonb" => Kind::Json,
        "bytea" => Kind::Binary,
        _ => Kind::Other,
    }
}

impl Cells for PgRow {
    fn position(&self, i: usize, c: &Column) -> Result<Val, sqlx::Error> {
        Ok(match c.kind {
            Kind::Int | Kind::Timestamp => Val::Int(self.try_get(i)?),
            _ => Val::Text(self.try_get(i)?),
        })
    }

    fn flag(&self, i: usize) -> Result<bool, sqlx::Error> {
        Ok(self.try_get::<i32, _>(i)? != 0)
    }

    fn cell(&self, i: usize, c: &Column) -> Result<Cell, sqlx::Error> {
        fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Cell) -> Cell {
            v.map_or(Cell::Null, f)
        }
        Ok(match c.kind {
            Kind::Int => opt(self.try_get(i)?, Cell::Int),
            Kind::Float => opt(self.try_get(i)?, Cell::Float),
            Kind::Bool => opt(self.try_get(i)?, Cell::Bool),
            Kind::Binary => opt(self.try_get(i)?, Cell::Bytes),
            Kind::Json => opt(self.try_get(i)?, Cell::Json),
            _ => opt(self.try_get(i)?, Cell::Text),
        })
    }
}

#[async_trait]
impl Table for PgTable {
    async fn columns(&self) -> Result<Option<Vec<Column>>, SyncError> {
        let regclass: String = Pg.table(&self.table);
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&regclass)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        if !exists {
            return Ok(None);
        }
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(&regclass)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(Some(rows.into_iter().map(|(name, type_name, t)| Column { name, type_name, kind: kind(&t) }).collect()))
    }

    async fn page(&self, plan: &Plan, after: Option<&Position>, limit: usize) -> Result<Vec<SourceRow>, SyncError> {
        let (sql, _) = sql::page(&Pg, plan, after.is_some(), limit);
        let rows =
            bind_after(sqlx::query(AssertSqlSafe(sql)), after).fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter().map(|r| decode(plan, r).map_err(|e| self.err(e))).collect()
    }

    async fn pending(&self, plan: &Plan, after: Option<&Position>) -> Result<u64, SyncError> {
        let (sql, _) = sql::pending(&Pg, plan, after.is_some());
        let n: i64 = bind_after(sqlx::query(AssertSqlSafe(sql)), after)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err(e))?;
        Ok(n.max(0) as u64)
    }

    async fn keys(&self, plan: &Plan) -> Result<Vec<Vec<Val>>, SyncError> {
        let rows =
            sqlx::query(AssertSqlSafe(sql::keys(&Pg, plan))).fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| plan.key.iter().enumerate().map(|(i, c)| r.position(i, c)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds a position's values, each once and in order: `$n` parameters may
/// be used more than once in the SQL.
fn bind_after<'q>(mut q: PgQuery<'q>, after: Option<&Position>) -> PgQuery<'q> {
    if let Some(p) = after {
        for v in std::iter::once(&p.value).chain(&p.key) {
            q = match v {
                Val::Int(i) => q.bind(*i),
                Val::Float(f) => q.bind(f.to_string()),
                Val::Text(t) => q.bind(t.clone()),
            };
        }
    }
    q
}
