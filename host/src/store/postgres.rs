//! Read models in PostgreSQL: a table per collection, JSONB documents,
//! expression indexes on the declared fields.
//!
//! **How fields compare.** A declared field is read as
//! `NULLIF(doc #> '{a,b}', 'null')`: the JSONB value at the path, with JSON
//! `null` and a missing field both SQL `NULL`, as `json_extract` gives in
//! SQLite. Filters, order and cursors compare these JSONB values against
//! JSONB parameters, and each field has a B-tree index on exactly that
//! expression, so they are index scans. JSONB compares numbers numerically
//! (`9 < 10`, `100 = 100.0`) and strings as text under the database's
//! collation (byte order in a `C` or `C.UTF-8` database, like SQLite), which
//! is SQLite's behaviour for fields that hold one type. `NULL` sorts first
//! ascending and last descending, as in SQLite. Where they differ: a field
//! holding *mixed* types (numbers in some documents, strings in others)
//! orders strings before numbers here and after them in SQLite, and
//! booleans compare only with booleans (SQLite stores them as 0/1).
//! Documents come back as JSONB text: same JSON value, normalized spacing
//! and key order.
//!
//! **Search.** A searchable collection's table has a `words` column: a
//! `tsvector` built from `search::document_words` (not by PostgreSQL's
//! parser, whose tokens differ from FTS5's), with a GIN index, written by
//! the same statement as the document. Searches are `tsquery` values built
//! from the checked words, so both backends match the same documents.

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow, Postgres};
use sqlx::{Arguments, AssertSqlSafe, Row};

use super::change_log::{ChangeEntry, ChangeKind, ConsumerPosition, LogRows, LogSettings};
use super::lease::{Fences, LeaseRecord, lease_record};
use super::lifecycle::{self, Backend, NewGeneration, Tx};
use super::names::{legacy_table_name, log_table_name, table_name};
use super::{DeadLetter, ModelKey, ModelReader, ProjectionRecord, ProjectionState, Role, StoreError};
use crate::clock::now_ms;
use crate::db::DbTx;
use crate::db::sqlite::quote_ident;
use crate::model::changes::ChangeSet;
use crate::model::manifest::{CollectionSpec, Manifest};
use crate::store::aggregate::{AggregateQuery, AggregateResult, FieldStats, MAX_GROUPS, RawGroup, exact_number};
use crate::store::limits::{Armed, ReadLimits};
use crate::store::query::{
    Cursor, Document, Filter, Op, Order, Page, Query, Row as PageRow, Sort, check_document_id, page_of, where_clause,
};
use crate::store::search::{Search, document_words};

/// PostgreSQL's identifier limit in bytes; longer names are silently truncated.
const MAX_IDENTIFIER: usize = 63;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS refract_generations (
        projection   TEXT    NOT NULL,
        generation   BIGINT  NOT NULL,
        role         TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        version      TEXT    NOT NULL,
        module_hash  TEXT    NOT NULL,
        source       TEXT    NOT NULL,
        manifest     TEXT    NOT NULL,
        checkpoint   BIGINT  NOT NULL,
        last_error   TEXT,
        created_at   BIGINT  NOT NULL,
        activated_at BIGINT,
        updated_at   BIGINT  NOT NULL,
        PRIMARY KEY (projection, generation)
    )",
    // The registry itself enforces the one-active-generation rule.
    "CREATE UNIQUE INDEX IF NOT EXISTS refract_one_active ON refract_generations (projection) WHERE role = 'active'",
    // Events a projection skipped under the `skip` policy, per generation.
    "CREATE TABLE IF NOT EXISTS refract_dead_letters (
        projection  TEXT    NOT NULL,
        generation  BIGINT  NOT NULL,
        position    BIGINT  NOT NULL,
        stream_id   TEXT    NOT NULL,
        event_type  TEXT    NOT NULL,
        error       TEXT    NOT NULL,
        module_hash TEXT    NOT NULL,
        recorded_at BIGINT  NOT NULL,
        replay      BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (projection, generation, position)
    )",
    "CREATE TABLE IF NOT EXISTS refract_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    // Which node may write a generation (`lease.rs`); expiry in ms since the
    // Unix epoch by the database's clock, so nodes' clocks need not agree.
    "CREATE TABLE IF NOT EXISTS refract_leases (
        projection TEXT    NOT NULL,
        generation BIGINT  NOT NULL,
        owner      TEXT    NOT NULL,
        epoch      BIGINT  NOT NULL,
        expires_at BIGINT  NOT NULL,
        PRIMARY KEY (projection, generation)
    )",
    // Nodes sharing the store, each until its announcement expires (`lease.rs`).
    "CREATE TABLE IF NOT EXISTS refract_nodes (node TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",
    // Named consumers of the change logs (`change_log.rs`).
    "CREATE TABLE IF NOT EXISTS refract_change_consumers (
        projection TEXT    NOT NULL,
        consumer   TEXT    NOT NULL,
        generation BIGINT  NOT NULL,
        sequence   BIGINT  NOT NULL,
        updated_at BIGINT  NOT NULL,
        PRIMARY KEY (projection, consumer)
    )",
    // Module bytes by SHA-256 (`modules.rs`), so every node can load every generation.
    "CREATE TABLE IF NOT EXISTS refract_modules (hash TEXT PRIMARY KEY, bytes BYTEA NOT NULL, stored_at BIGINT NOT NULL)",
];

/// Serializes registry changes (register, activate, rebuild, ...) per
/// schema, as SQLite's single writer does: each reads the registry and
/// decides from it, so two must not interleave.
/// The database's clock in ms since the Unix epoch: lease expiries are
/// compared against one clock, whichever node asks.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const REGISTRY_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('refract.registry:' || current_schema()))";

/// Columns of a registry row, in the order `record_from_row` reads them.
const RECORD: &str = "SELECT projection, generation, role, state, module_hash, source, manifest, checkpoint, \
                      last_error, created_at, activated_at, updated_at FROM refract_generations";

/// SQLSTATE `undefined_table`: a name-based read raced a swap that dropped
/// the tables it had resolved; it is retried on a fresh snapshot.
const UNDEFINED_TABLE: &str = "42P01";

/// Read models and checkpoints in one PostgreSQL database (and schema), so a
/// batch's changes and its checkpoint commit in one transaction.
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::StoreError> {
/// use refract::{PostgresReadModelStore, Registry};
/// let store = PostgresReadModelStore::connect("postgres://postgres@127.0.0.1/refract").await?;
/// for p in store.projections().await? {
///     println!("{} at {}", p.key.projection, p.checkpoint);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresReadModelStore {
    pool: PgPool,
    fences: Fences,
    limits: std::sync::Arc<ReadLimits>,
    log: std::sync::Arc<LogSettings>,
}

impl PostgresReadModelStore {
    /// Connects to `url` (`postgres://...`) and creates the registry tables if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = crate::db::postgres::connect(url).await?;
        crate::db::postgres::create_schema(&pool, SCHEMA).await?;
        let store = Self { pool, fences: Fences::default(), limits: Default::default(), log: Default::default() };
        lifecycle::migrate_names(&store).await?;
        Ok(store)
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A read-only REPEATABLE READ transaction: resolving the active
    /// generation and reading its tables see one snapshot, so a swap is seen
    /// at one instant and never half.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?)
    }
}

/// `CREATE INDEX IF NOT EXISTS {definition}`, skipped when `index` exists.
/// Even when the index exists, the statement takes a SHARE lock on the table
/// first; a host resuming a generation under the registry lock would then
/// wait on another node's commit to that table while that commit waits on
/// the generation row the registering transaction has locked: a deadlock.
/// Every creator holds the registry lock, so the look-up cannot race one.
async fn create_index(conn: &mut PgConnection, index: &str, definition: String) -> Result<(), StoreError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(index).fetch_one(&mut *conn).await?;
    if !exists {
        sqlx::query(AssertSqlSafe(format!("CREATE INDEX IF NOT EXISTS {definition}"))).execute(&mut *conn).await?;
    }
    Ok(())
}

fn table(key: &ModelKey, collection: &str) -> String {
    quote_ident(&table_name(key, collection))
}

fn log_table(key: &ModelKey) -> String {
    quote_ident(&log_table_name(key))
}

fn entry_from_row(row: &sqlx::postgres::PgRow) -> Result<ChangeEntry, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(ChangeEntry {
        sequence: row.try_get::<i64, _>("seq")? as u64,
        checkpoint: row.try_get::<i64, _>("checkpoint")? as u64,
        collection: row.try_get("collection")?,
        id: row.try_get("id")?,
        kind: ChangeKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
            projection: String::new(),
            reason: format!("unknown change kind `{kind}`"),
        })?,
        document: row.try_get("doc")?,
        recorded_at: row.try_get::<i64, _>("at")? as u64,
    })
}

/// An index name that fits the identifier limit whatever the field path:
/// the table name and field are hashed.
fn index_name(table: &str, field: &str) -> String {
    let digest = Sha256::digest(format!("{table}\n{field}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    quote_ident(&format!("rmi_{hex}"))
}

/// A `tsvector` literal of a document's words: each word once, with its
/// positions (1-based). PostgreSQL keeps at most 256 positions per word
/// and positions up to 16,383; `MAX_DOCUMENT_WORDS` keeps to the second,
/// and only the first 255 positions of a word are given.
fn tsvector(words: &[String]) -> String {
    let mut positions: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, w) in words.iter().enumerate() {
        let slot = *at.entry(w.as_str()).or_insert_with(|| {
            positions.push((w.as_str(), Vec::new()));
            positions.len() - 1
        });
        if positions[slot].1.len() < 255 {
            positions[slot].1.push(i + 1);
        }
    }
    positions
        .iter()
        .map(|(w, ps)| {
            let ps = ps.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            format!("{}:{ps}", lexeme(w))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word as a quoted lexeme of `tsvector` or `tsquery` text, taken as is
/// (no parser, no dictionary). Words are letters and digits only; quotes
/// and backslashes are escaped all the same.
fn lexeme(word: &str) -> String {
    format!("'{}'", word.replace('\\', "\\\\").replace('\'', "''"))
}

/// The `tsquery` for a checked search: every word, the last as a prefix.
fn tsquery(search: &Search) -> String {
    let last = search.words.len() - 1;
    let term = |(i, w): (usize, &String)| if i == last { format!("{}:*", lexeme(w)) } else { lexeme(w) };
    search.words.iter().enumerate().map(term).collect::<Vec<_>>().join(" & ")
}

/// SQL expression for a field of the document (`id` is the key column).
/// `field` is validated by `is_field_path` (ASCII letters, digits, `_` and
/// `.`), so splicing it into a path literal is safe; a literal path, not a
/// bound parameter, is what lets PostgreSQL match the expression index.
fn field_expr(field: &str) -> String {
    if field == "id" {
        "id".to_owned()
    } else {
        format!("NULLIF(doc #> '{{{}}}', 'null'::jsonb)", field.replace('.', ","))
    }
}

fn record_from_row(row: &PgRow) -> Result<ProjectionRecord, StoreError> {
    let name: String = row.try_get("projection")?;
    let corrupt = |reason: String| StoreError::Corrupt { projection: name.clone(), reason };
    let manifest: Manifest = serde_json::from_str(row.try_get("manifest")?).map_err(|e| corrupt(e.to_string()))?;
    let state: String = row.try_get("state")?;
    let role: String = row.try_get("role")?;
    Ok(ProjectionRecord {
        key: ModelKey { projection: name.clone(), generation: row.try_get::<i64, _>("generation")? as u32 },
        role: Role::parse(&role).ok_or_else(|| corrupt(format!("unknown role `{role}`")))?,
        module_hash: row.try_get("module_hash")?,
        source: row.try_get("source")?,
        checkpoint: row.try_get::<i64, _>("checkpoint")? as u64,
        state: ProjectionState::parse(&state).ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get::<i64, _>("created_at")? as u64,
        activated_at: row.try_get::<Option<i64>, _>("activated_at")?.map(|t| t as u64),
        updated_at: row.try_get::<i64, _>("updated_at")? as u64,
        manifest,
    })
}

fn records(rows: Vec<PgRow>) -> Result<Vec<ProjectionRecord>, StoreError> {
    rows.iter().map(record_from_row).collect()
}

async fn active_in(conn: &mut PgConnection, name: &str) -> Result<ProjectionRecord, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = $1 AND role = 'active'")))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))?;
    record_from_row(&row)
}

/// A transaction on the PostgreSQL database.
pub struct PgTx(DbTx<Postgres>);

impl PgTx {
    fn c(&mut self) -> &mut PgConnection {
        self.0.conn()
    }
}

/// Runs `sql` with a generation's key as `$1, $2`; rows affected.
async fn exec_for(conn: &mut PgConnection, sql: &'static str, key: &ModelKey) -> Result<u64, StoreError> {
    Ok(sqlx::query(sql).bind(&key.projection).bind(key.generation as i64).execute(conn).await?.rows_affected())
}

#[async_trait]
impl Tx for PgTx {
    async fn live_generations(&mut self, name: Option<&str>) -> Result<Vec<ProjectionRecord>, StoreError> {
        let rows = match name {
            Some(name) => {
                sqlx::query(AssertSqlSafe(format!(
                    "{RECORD} WHERE projection = $1 AND role <> 'retired' ORDER BY generation"
                )))
                .bind(name)
                .fetch_all(self.c())
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "{RECORD} WHERE role <> 'retired' ORDER BY projection COLLATE \"C\", generation"
                )))
                .fetch_all(self.c())
                .await?
            }
        };
        records(rows)
    }

    async fn all_generations(&mut self, name: &str) -> Result<Vec<ProjectionRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = $1 ORDER BY generation")))
            .bind(name)
            .fetch_all(self.c())
            .await?;
        records(rows)
    }

    async fn record(&mut self, key: &ModelKey) -> Result<Option<ProjectionRecord>, StoreError> {
        sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = $1 AND generation = $2")))
            .bind(&key.projection)
            .bind(key.generation as i64)
            .fetch_optional(self.c())
            .await?
            .as_ref()
            .map(record_from_row)
            .transpose()
    }

    async fn next_generation(&mut self, name: &str) -> Result<u32, StoreError> {
        let max: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(generation), 0)::BIGINT FROM refract_generations WHERE projection = $1",
        )
        .bind(name)
        .fetch_one(self.c())
        .await?;
        Ok(max as u32 + 1)
    }

    async fn insert_generation(&mut self, g: &NewGeneration<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        let state = if g.role == Role::Failed { ProjectionState::Faulted } else { ProjectionState::Running };
        let manifest = serde_json::to_string(g.manifest).map_err(|e| StoreError::Corrupt {
            projection: g.key.projection.clone(),
            reason: format!("manifest does not serialize: {e}"),
        })?;
        sqlx::query(
            "INSERT INTO refract_generations (projection, generation, role, state, version, module_hash, source, \
                 manifest, checkpoint, last_error, created_at, activated_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11, $10)",
        )
        .bind(&g.key.projection)
        .bind(g.key.generation as i64)
        .bind(g.role.as_str())
        .bind(state.as_str())
        .bind(&g.manifest.version)
        .bind(g.module_hash)
        .bind(g.source)
        .bind(manifest)
        .bind(g.error)
        .bind(now)
        .bind((g.role == Role::Active).then_some(now))
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn set_role(
        &mut self,
        key: &ModelKey,
        role: Role,
        state: ProjectionState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_generations SET role = $1, state = $2, last_error = COALESCE($3, last_error), \
                 updated_at = $4 \
             WHERE projection = $5 AND generation = $6",
        )
        .bind(role.as_str())
        .bind(state.as_str())
        .bind(error)
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn resume(&mut self, key: &ModelKey, source: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_generations SET \
                 state = CASE WHEN state = 'faulted' THEN 'faulted' ELSE 'running' END, \
                 last_error = CASE WHEN state = 'faulted' THEN last_error ELSE NULL END, \
                 source = $1, updated_at = $2 \
             WHERE projection = $3 AND generation = $4",
        )
        .bind(source)
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn make_active(&mut self, key: &ModelKey) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_generations SET role = 'active', activated_at = $1, updated_at = $1 \
             WHERE projection = $2 AND generation = $3",
        )
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn set_state(
        &mut self,
        key: &ModelKey,
        state: ProjectionState,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_generations SET state = $1, last_error = $2, updated_at = $3 \
             WHERE projection = $4 AND generation = $5 AND role IN ('active', 'building')",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn clear_fault(&mut self, key: &ModelKey) -> Result<bool, StoreError> {
        let cleared = sqlx::query(
            "UPDATE refract_generations SET state = 'stopped', last_error = NULL, updated_at = $1 \
             WHERE projection = $2 AND generation = $3 AND state = 'faulted'",
        )
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(self.c())
        .await?
        .rows_affected();
        Ok(cleared == 1)
    }

    async fn delete_projection(&mut self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM refract_generations WHERE projection = $1").bind(name).execute(self.c()).await?;
        sqlx::query("DELETE FROM refract_dead_letters WHERE projection = $1").bind(name).execute(self.c()).await?;
        sqlx::query("DELETE FROM refract_leases WHERE projection = $1").bind(name).execute(self.c()).await?;
        sqlx::query("DELETE FROM refract_change_consumers WHERE projection = $1").bind(name).execute(self.c()).await?;
        Ok(())
    }

    async fn create_tables(&mut self, key: &ModelKey, manifest: &Manifest) -> Result<(), StoreError> {
        for c in &manifest.collections {
            let name = table_name(key, &c.name);
            if name.len() > MAX_IDENTIFIER {
                return Err(StoreError::NameTooLong { name, max: MAX_IDENTIFIER });
            }
            let t = quote_ident(&name);
            let words = if c.is_searchable() { ", words TSVECTOR NOT NULL DEFAULT ''" } else { "" };
            // COLLATE "C": ids sort bytewise, as in SQLite, whatever the database's collation.
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {t} (id TEXT COLLATE \"C\" PRIMARY KEY, doc JSONB NOT NULL{words})"
            )))
            .execute(self.c())
            .await?;
            if c.is_searchable() {
                // `:` never occurs in a field path, so this name is no field's index.
                let index = index_name(&name, ":words");
                create_index(self.c(), &index, format!("{index} ON {t} USING GIN (words)")).await?;
            }
            for field in &c.indexes {
                let index = index_name(&name, field);
                // NULLS FIRST matches SQLite's order; with id it serves order-by-field-then-id pages.
                create_index(self.c(), &index, format!("{index} ON {t} (({}) NULLS FIRST, id)", field_expr(field)))
                    .await?;
            }
        }
        let log = log_table_name(key);
        if log.len() > MAX_IDENTIFIER {
            return Err(StoreError::NameTooLong { name: log, max: MAX_IDENTIFIER });
        }
        // doc stays text: the log keeps what was written, and parsing it
        // into jsonb a second time would only cost.
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {} (seq BIGINT PRIMARY KEY, checkpoint BIGINT NOT NULL, \
             collection TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, doc TEXT, at BIGINT NOT NULL)",
            quote_ident(&log)
        )))
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn drop_tables(&mut self, key: &ModelKey, manifest: &Manifest) -> Result<(), StoreError> {
        for c in &manifest.collections {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table(key, &c.name))))
                .execute(self.c())
                .await?;
        }
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", log_table(key)))).execute(self.c()).await?;
        Ok(())
    }

    async fn migrate_table(&mut self, key: &ModelKey, collection: &str, indexes: &[String]) -> Result<(), StoreError> {
        let old = legacy_table_name(key, collection);
        for field in indexes {
            let index = index_name(&old, field);
            sqlx::query(AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}"))).execute(self.c()).await?;
        }
        let exists: bool = sqlx::query_scalar("SELECT to_regclass(quote_ident($1)) IS NOT NULL")
            .bind(&old)
            .fetch_one(self.c())
            .await?;
        if exists {
            let (old, new) = (quote_ident(&old), table(key, collection));
            sqlx::query(AssertSqlSafe(format!("ALTER TABLE {old} RENAME TO {new}"))).execute(self.c()).await?;
        }
        Ok(())
    }

    async fn meta(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM refract_meta WHERE name = $1")
            .bind(name)
            .fetch_optional(self.c())
            .await?)
    }

    async fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn letters(&mut self, key: &ModelKey) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM refract_dead_letters WHERE projection = $1 AND generation = $2 ORDER BY position",
        )
        .bind(&key.projection)
        .bind(key.generation as i64)
        .fetch_all(self.c())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    position: r.try_get::<i64, _>("position")? as u64,
                    stream_id: r.try_get("stream_id")?,
                    event_type: r.try_get("event_type")?,
                    error: r.try_get("error")?,
                    module_hash: r.try_get("module_hash")?,
                    recorded_at: r.try_get::<i64, _>("recorded_at")? as u64,
                    replay: r.try_get("replay")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn delete_letters(&mut self, key: &ModelKey) -> Result<(), StoreError> {
        exec_for(self.c(), "DELETE FROM refract_dead_letters WHERE projection = $1 AND generation = $2", key).await?;
        Ok(())
    }

    async fn insert_letter(&mut self, key: &ModelKey, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_dead_letters \
                 (projection, generation, position, stream_id, event_type, error, module_hash, recorded_at, replay) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false) \
             ON CONFLICT (projection, generation, position) DO UPDATE SET error = excluded.error, \
                 module_hash = excluded.module_hash, recorded_at = excluded.recorded_at, replay = false",
        )
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(letter.position as i64)
        .bind(&letter.stream_id)
        .bind(&letter.event_type)
        .bind(&letter.error)
        .bind(&letter.module_hash)
        .bind(letter.recorded_at as i64)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn mark_replays(&mut self, key: &ModelKey) -> Result<u64, StoreError> {
        exec_for(
            self.c(),
            "UPDATE refract_dead_letters SET replay = true WHERE projection = $1 AND generation = $2",
            key,
        )
        .await
    }

    async fn claim_letter(&mut self, key: &ModelKey, position: u64) -> Result<bool, StoreError> {
        // The DELETE row-locks the letter: a second claimer waits for this
        // transaction, then re-checks the row and finds it gone.
        let claimed = sqlx::query(
            "DELETE FROM refract_dead_letters \
             WHERE projection = $1 AND generation = $2 AND position = $3 AND replay",
        )
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(position as i64)
        .execute(self.c())
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn unmark_letter(&mut self, key: &ModelKey, position: u64, error: &str) -> Result<bool, StoreError> {
        let unmarked = sqlx::query(
            "UPDATE refract_dead_letters SET replay = false, error = $1, recorded_at = $2 \
             WHERE projection = $3 AND generation = $4 AND position = $5 AND replay",
        )
        .bind(error)
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(position as i64)
        .execute(self.c())
        .await?
        .rows_affected();
        Ok(unmarked == 1)
    }

    /// The conditional UPDATE row-locks the generation, so a concurrent
    /// `activate` or a second writer either waits for this transaction or makes
    /// this UPDATE match nothing: it is re-checked after the lock under READ COMMITTED.
    async fn move_checkpoint(&mut self, key: &ModelKey, from: u64, to: u64) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE refract_generations SET checkpoint = $1, updated_at = $2 \
             WHERE projection = $3 AND generation = $4 AND checkpoint = $5 AND role IN ('active', 'building')",
        )
        .bind(to as i64)
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(from as i64)
        .execute(self.c())
        .await?
        .rows_affected();
        Ok(moved == 1)
    }

    /// One statement per collection and kind, whatever the batch size, with
    /// the rows sent as arrays and unpacked by UNNEST.
    async fn apply_changes(
        &mut self,
        key: &ModelKey,
        manifest: &Manifest,
        changes: &ChangeSet,
    ) -> Result<(), StoreError> {
        for (collection, c) in &changes.collections {
            let t = table(key, collection);
            if !c.deletes.is_empty() {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {t} WHERE id = ANY($1::text[])")))
                    .bind(&c.deletes)
                    .execute(self.c())
                    .await?;
            }
            if c.upserts.is_empty() {
                continue;
            }
            let ids: Vec<&str> = c.upserts.iter().map(|(id, _)| id.as_str()).collect();
            let docs: Vec<&str> = c.upserts.iter().map(|(_, doc)| doc.as_str()).collect();
            match manifest.collection(collection).filter(|s| s.is_searchable()) {
                Some(spec) => {
                    // The words go in the document's own row and statement.
                    let words: Vec<String> =
                        c.upserts.iter().map(|(_, doc)| tsvector(&document_words(spec, doc))).collect();
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {t} (id, doc, words) \
                         SELECT u.id, u.doc::jsonb, u.words::tsvector \
                         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(id, doc, words) \
                         ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, words = excluded.words"
                    )))
                    .bind(&ids)
                    .bind(&docs)
                    .bind(&words)
                    .execute(self.c())
                    .await?;
                }
                None => {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {t} (id, doc) \
                         SELECT u.id, u.doc::jsonb FROM UNNEST($1::text[], $2::text[]) AS u(id, doc) \
                         ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
                    )))
                    .bind(&ids)
                    .bind(&docs)
                    .execute(self.c())
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn all_documents(&mut self, key: &ModelKey, collection: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(AssertSqlSafe(format!("SELECT id, doc::text FROM {} ORDER BY id", table(key, collection))))
            .fetch_all(self.c())
            .await?)
    }

    async fn log_head(&mut self, key: &ModelKey) -> Result<u64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!("SELECT MAX(seq) FROM {}", log_table(key))))
            .fetch_one(self.c())
            .await?;
        Ok(head.unwrap_or(0) as u64)
    }

    async fn log_first(&mut self, key: &ModelKey) -> Result<Option<u64>, StoreError> {
        let first: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!("SELECT MIN(seq) FROM {}", log_table(key))))
            .fetch_one(self.c())
            .await?;
        Ok(first.map(|f| f as u64))
    }

    async fn append_log(&mut self, key: &ModelKey, rows: &LogRows<'_>) -> Result<u64, StoreError> {
        // One statement: each row's kind comes from an existence test on the
        // document's table, and row_number (counted after the filter, in
        // the arrays' order) keeps the sequences gap-free.
        let ids: Vec<&str> = rows.rows.iter().map(|(id, _)| *id).collect();
        let docs: Vec<Option<&str>> = rows.rows.iter().map(|(_, doc)| *doc).collect();
        let appended = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {log} (seq, checkpoint, collection, id, kind, doc, at) \
             SELECT $1 + row_number() OVER (ORDER BY ord), $2, $3, id, kind, doc, $4 FROM ( \
                 SELECT u.ord, u.id, u.doc, \
                     CASE WHEN EXISTS (SELECT 1 FROM {t} AS t WHERE t.id = u.id) THEN $5::text ELSE $6::text END AS kind \
                 FROM UNNEST($7::text[], $8::text[]) WITH ORDINALITY AS u(id, doc, ord)) AS k \
             WHERE kind IS NOT NULL",
            log = log_table(key),
            t = table(key, rows.collection),
        )))
        .bind(rows.after as i64)
        .bind(rows.checkpoint as i64)
        .bind(rows.collection)
        .bind(rows.recorded_at as i64)
        .bind(rows.if_present.map(ChangeKind::as_str))
        .bind(rows.if_absent.map(ChangeKind::as_str))
        .bind(&ids)
        .bind(&docs)
        .execute(self.c())
        .await?
        .rows_affected();
        Ok(appended)
    }

    async fn read_log(&mut self, key: &ModelKey, after: u64, limit: u32) -> Result<Vec<ChangeEntry>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, checkpoint, collection, id, kind, doc, at FROM {} WHERE seq > $1 ORDER BY seq LIMIT $2",
            log_table(key)
        )))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(self.c())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn prune_log(&mut self, key: &ModelKey, through: u64) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {} WHERE seq <= $1", log_table(key))))
            .bind(through as i64)
            .execute(self.c())
            .await?;
        Ok(())
    }

    async fn first_logged_since(&mut self, key: &ModelKey, at_ms: u64) -> Result<Option<u64>, StoreError> {
        let first: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT seq FROM {} WHERE at >= $1 ORDER BY seq LIMIT 1",
            log_table(key)
        )))
        .bind(at_ms as i64)
        .fetch_optional(self.c())
        .await?;
        Ok(first.map(|f| f as u64))
    }

    async fn consumer(&mut self, projection: &str, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT generation, sequence FROM refract_change_consumers WHERE projection = $1 AND consumer = $2",
        )
        .bind(projection)
        .bind(consumer)
        .fetch_optional(self.c())
        .await?;
        Ok(row.map(|(g, s)| ConsumerPosition { generation: g as u32, sequence: s as u64 }))
    }

    async fn set_consumer(
        &mut self,
        projection: &str,
        consumer: &str,
        position: ConsumerPosition,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_change_consumers (projection, consumer, generation, sequence, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (projection, consumer) DO UPDATE \
             SET generation = excluded.generation, sequence = excluded.sequence, updated_at = excluded.updated_at",
        )
        .bind(projection)
        .bind(consumer)
        .bind(position.generation as i64)
        .bind(position.sequence as i64)
        .bind(now_ms())
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn lease_holder(&mut self, key: &ModelKey) -> Result<Option<(String, u64)>, StoreError> {
        // FOR SHARE: a take-over (an UPDATE of this row) waits until this
        // write commits, so the write lands under the lease or not at all.
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT owner, epoch FROM refract_leases WHERE projection = $1 AND generation = $2 FOR SHARE",
        )
        .bind(&key.projection)
        .bind(key.generation as i64)
        .fetch_optional(self.c())
        .await?;
        Ok(row.map(|(owner, epoch)| (owner, epoch as u64)))
    }

    async fn take_lease(&mut self, key: &ModelKey, node: &str, ttl_ms: i64) -> Result<Option<u64>, StoreError> {
        let epoch: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO refract_leases AS l (projection, generation, owner, epoch, expires_at) \
             VALUES ($1, $2, $3, 1, {NOW_MS} + $4) \
             ON CONFLICT (projection, generation) DO UPDATE \
             SET owner = EXCLUDED.owner, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at \
             WHERE l.owner = EXCLUDED.owner OR l.expires_at <= {NOW_MS} \
             RETURNING epoch"
        )))
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(node)
        .bind(ttl_ms)
        .fetch_optional(self.c())
        .await?;
        Ok(epoch.map(|e| e as u64))
    }

    async fn renew_lease(&mut self, key: &ModelKey, node: &str, epoch: u64, ttl_ms: i64) -> Result<bool, StoreError> {
        let renewed = sqlx::query(AssertSqlSafe(format!(
            "UPDATE refract_leases SET expires_at = {NOW_MS} + $1 \
             WHERE projection = $2 AND generation = $3 AND owner = $4 AND epoch = $5"
        )))
        .bind(ttl_ms)
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(node)
        .bind(epoch as i64)
        .execute(self.c())
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn release_lease(&mut self, key: &ModelKey, node: &str, epoch: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_leases SET expires_at = 0 \
             WHERE projection = $1 AND generation = $2 AND owner = $3 AND epoch = $4",
        )
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(node)
        .bind(epoch as i64)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn all_leases(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        let rows: Vec<(String, i64, String, i64, i64, bool)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT projection, generation, owner, epoch, expires_at, expires_at <= {NOW_MS} \
             FROM refract_leases ORDER BY projection COLLATE \"C\", generation"
        )))
        .fetch_all(self.c())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(p, g, owner, epoch, expires, expired)| lease_record(p, g, owner, epoch, expires, expired))
            .collect())
    }

    async fn delete_lease(&mut self, key: &ModelKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM refract_leases WHERE projection = $1 AND generation = $2")
            .bind(&key.projection)
            .bind(key.generation as i64)
            .execute(self.c())
            .await?;
        Ok(())
    }

    async fn announce_node(&mut self, node: &str, ttl_ms: i64) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO refract_nodes (node, expires_at) VALUES ($1, {NOW_MS} + $2) \
             ON CONFLICT (node) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        )))
        .bind(node)
        .bind(ttl_ms)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn live_nodes(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT node FROM refract_nodes WHERE expires_at > {NOW_MS} ORDER BY node COLLATE \"C\""
        )))
        .fetch_all(self.c())
        .await?)
    }

    async fn put_module(&mut self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_modules (hash, bytes, stored_at) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(bytes)
        .bind(now_ms())
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn module(&mut self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT bytes FROM refract_modules WHERE hash = $1")
            .bind(hash)
            .fetch_optional(self.c())
            .await?)
    }

    async fn delete_unused_module(&mut self, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM refract_modules WHERE hash = $1 \
             AND NOT EXISTS (SELECT 1 FROM refract_generations WHERE module_hash = $2)",
        )
        .bind(hash)
        .bind(hash)
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}

#[async_trait]
impl Backend for PostgresReadModelStore {
    type Tx = PgTx;

    async fn registry_tx(&self) -> Result<PgTx, StoreError> {
        let mut tx = PgTx(DbTx::begin(&self.pool, "BEGIN").await?);
        sqlx::query(REGISTRY_LOCK).execute(tx.c()).await?;
        Ok(tx)
    }

    async fn write_tx(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx(DbTx::begin(&self.pool, "BEGIN").await?))
    }

    async fn read_tx(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx(DbTx::begin(&self.pool, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?))
    }

    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        get_in(&mut *self.pool.acquire().await?, key, collection, id).await
    }

    fn fences(&self) -> &Fences {
        &self.fences
    }

    fn log_settings(&self) -> &LogSettings {
        &self.log
    }

    async fn tables_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 AND left(tablename, char_length($1)) = $1 ORDER BY tablename COLLATE \"C\"",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// SQL text that builds a query with numbered parameters.
struct Sql {
    args: PgArguments,
    count: usize,
}

impl Sql {
    fn new() -> Self {
        Self { args: PgArguments::default(), count: 0 }
    }

    /// Binds a JSON scalar as JSONB, to compare with `field_expr`.
    fn json(&mut self, value: &Value) -> Result<String, sqlx::Error> {
        Ok(format!("{}::jsonb", self.text(value.to_string())?))
    }

    fn text(&mut self, value: String) -> Result<String, sqlx::Error> {
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        self.count += 1;
        Ok(format!("${}", self.count))
    }

    /// Binds a `real`, as `ts_rank` returns.
    fn real(&mut self, value: f32) -> Result<String, sqlx::Error> {
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        self.count += 1;
        Ok(format!("${}", self.count))
    }

    /// A bound value for a filter on `field`: text for `id`, JSONB otherwise.
    fn value(&mut self, field: &str, value: &Value) -> Result<String, sqlx::Error> {
        if field == "id" {
            // Like SQLite's text affinity: a number compares as its text, a boolean as 0/1.
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => (*b as u8).to_string(),
                other => other.to_string(),
            };
            self.text(text)
        } else {
            self.json(value)
        }
    }
}

/// Adds a condition per filter, binding their values in order.
fn push_filters(conds: &mut Vec<String>, sql: &mut Sql, filters: &[Filter]) -> Result<(), sqlx::Error> {
    for f in filters {
        let e = field_expr(&f.field);
        conds.push(match (&f.op, &f.value) {
            (Op::Eq, Value::Null) => format!("{e} IS NULL"),
            (Op::Ne, Value::Null) => format!("{e} IS NOT NULL"),
            (Op::In, Value::Array(items)) => {
                // `x IN ()` is not SQL; an empty list matches nothing, as in SQLite.
                if items.is_empty() {
                    "false".to_owned()
                } else {
                    let marks = items.iter().map(|v| sql.value(&f.field, v)).collect::<Result<Vec<_>, _>>()?.join(",");
                    format!("{e} IN ({marks})")
                }
            }
            (op, v) => format!("{e} {} {}", op.sql(), sql.value(&f.field, v)?),
        });
    }
    Ok(())
}

/// The condition selecting rows after `cursor` in `order` (ties broken by id).
fn push_cursor(conds: &mut Vec<String>, sql: &mut Sql, order: &Order, cursor: &Cursor) -> Result<(), sqlx::Error> {
    if order.field == "id" {
        let id = sql.text(cursor.id.clone())?;
        conds.push(if order.descending { format!("id < {id}") } else { format!("id > {id}") });
        return Ok(());
    }
    let e = field_expr(&order.field);
    // NULL sorts first ascending and last descending, as in SQLite.
    let cond = match (&cursor.key, order.descending) {
        (Value::Null, false) => format!("(({e} IS NULL AND id > {}) OR {e} IS NOT NULL)", sql.text(cursor.id.clone())?),
        (Value::Null, true) => format!("({e} IS NULL AND id < {})", sql.text(cursor.id.clone())?),
        (key, descending) => {
            let k = sql.json(key)?;
            let id = sql.text(cursor.id.clone())?;
            if descending {
                format!("({e} < {k} OR ({e} = {k} AND id < {id}) OR {e} IS NULL)")
            } else {
                format!("({e} > {k} OR ({e} = {k} AND id > {id}))")
            }
        }
    };
    conds.push(cond);
    Ok(())
}

/// Reads behind `query`: shared by key-based and name-based callers.
async fn query_in(
    conn: &mut PgConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &Query,
) -> Result<Page, StoreError> {
    let search = query.checked_search(spec)?;
    let cursor = query.checked_cursor(search.as_ref())?;
    let mut conds = Vec::new();
    let mut sql = Sql::new();
    let rank = matching(&mut conds, &mut sql, search.as_ref(), &query.filters)?;
    let sort = query.sort();
    if let Some(cursor) = &cursor {
        match &sort {
            Sort::Field(order) => push_cursor(&mut conds, &mut sql, order, cursor)?,
            Sort::Rank => {
                // ts_rank: higher is better. The cursor holds a `real` widened to f64, exactly.
                let r = cursor.rank().expect("checked_cursor: a rank cursor has a rank") as f32;
                let (r, id) = (sql.real(r)?, sql.text(cursor.id.clone())?);
                conds.push(format!("({rank} < {r} OR ({rank} = {r} AND id > {id}))"));
            }
        }
    }
    let mut text = format!("SELECT id, doc::text, {rank} FROM {}{}", table(key, &spec.name), where_clause(&conds));
    match &sort {
        Sort::Rank => text.push_str(&format!(" ORDER BY {rank} DESC, id ASC")),
        Sort::Field(order) if order.field == "id" => {
            text.push_str(if order.descending { " ORDER BY id DESC" } else { " ORDER BY id ASC" })
        }
        Sort::Field(order) if order.descending => {
            text.push_str(&format!(" ORDER BY {} DESC NULLS LAST, id DESC", field_expr(&order.field)))
        }
        Sort::Field(order) => text.push_str(&format!(" ORDER BY {} ASC NULLS FIRST, id ASC", field_expr(&order.field))),
    }
    // One row more than asked tells whether there is a next page.
    sql.args.add(query.limit as i64 + 1).map_err(sqlx::Error::Encode)?;
    text.push_str(&format!(" LIMIT ${}", sql.count + 1));
    let rows = sqlx::query_with::<Postgres, _>(AssertSqlSafe(text), sql.args).fetch_all(&mut *conn).await?;
    let rows = rows
        .iter()
        .map(|r| {
            let rank: Option<f32> = r.try_get(2)?;
            Ok(PageRow { document: Document { id: r.try_get(0)?, body: r.try_get(1)? }, rank: rank.map(f64::from) })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(page_of(query, search.as_ref(), rows))
}

/// Pushes the conditions of a query's search and filters; returns the rank
/// expression (NULL without a search).
fn matching(
    conds: &mut Vec<String>,
    sql: &mut Sql,
    search: Option<&Search>,
    filters: &[Filter],
) -> Result<String, StoreError> {
    let rank = match search {
        Some(s) => {
            let q = format!("{}::tsquery", sql.text(tsquery(s))?);
            conds.push(format!("words @@ {q}"));
            format!("ts_rank(words, {q})")
        }
        None => "NULL::real".to_owned(),
    };
    push_filters(conds, sql, filters)?;
    Ok(rank)
}

async fn count_in(
    conn: &mut PgConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &Query,
) -> Result<u64, StoreError> {
    let search = query.checked_search(spec)?;
    let mut conds = Vec::new();
    let mut sql = Sql::new();
    matching(&mut conds, &mut sql, search.as_ref(), &query.filters)?;
    let text = format!("SELECT COUNT(*) FROM {}{}", table(key, &spec.name), where_clause(&conds));
    let n: i64 = sqlx::query_scalar_with::<Postgres, _, _>(AssertSqlSafe(text), sql.args).fetch_one(&mut *conn).await?;
    Ok(n as u64)
}

async fn get_in(
    conn: &mut PgConnection,
    key: &ModelKey,
    collection: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let doc =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT doc::text FROM {} WHERE id = $1", table(key, collection))))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(doc)
}

/// Measures `query`'s groups: the SQL half of an aggregate (the meaning is
/// given by `AggregateResult::assemble`). Sums are `numeric`, so exact;
/// their text says whether they are integers.
async fn aggregate_in(
    conn: &mut PgConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &AggregateQuery,
) -> Result<Vec<RawGroup>, StoreError> {
    let mut conds = Vec::new();
    let mut sql = Sql::new();
    push_filters(&mut conds, &mut sql, &query.filters)?;
    let mut cols: Vec<String> = query.group_by.iter().map(|g| field_expr(g)).collect();
    cols.push("COUNT(*)".to_owned());
    let measured = query.measured_fields();
    for m in &measured {
        let e = field_expr(m.field);
        let (num, text) = (format!("jsonb_typeof({e}) = 'number'"), format!("jsonb_typeof({e}) = 'string'"));
        let when = |on: bool, sql: String| if on { sql } else { "NULL".to_owned() };
        cols.push(format!("COUNT({e})"));
        cols.push(format!("COUNT(*) FILTER (WHERE {num})"));
        cols.push(format!("COUNT(*) FILTER (WHERE {text})"));
        cols.push(when(m.sum, format!("(SUM(({e})::numeric) FILTER (WHERE {num}))::text")));
        cols.push(when(m.bounds, format!("(MIN(({e})::numeric) FILTER (WHERE {num}))::text")));
        cols.push(when(m.bounds, format!("(MAX(({e})::numeric) FILTER (WHERE {num}))::text")));
        cols.push(when(m.bounds, format!("MIN({e} #>> '{{}}') FILTER (WHERE {text})")));
        cols.push(when(m.bounds, format!("MAX({e} #>> '{{}}') FILTER (WHERE {text})")));
    }
    let mut text = format!("SELECT {} FROM {}{}", cols.join(", "), table(key, &spec.name), where_clause(&conds));
    if !query.group_by.is_empty() {
        let keys = query.group_by.iter().map(|g| field_expr(g)).collect::<Vec<_>>();
        let order = keys.iter().map(|k| format!("{k} ASC NULLS FIRST")).collect::<Vec<_>>().join(", ");
        text.push_str(&format!(" GROUP BY {} ORDER BY {order}", keys.join(", ")));
    }
    // One group more than allowed tells that there are too many.
    text.push_str(&format!(" LIMIT {}", MAX_GROUPS + 1));
    let rows = sqlx::query_with::<Postgres, _>(AssertSqlSafe(text), sql.args).fetch_all(&mut *conn).await?;
    let n = query.group_by.len();
    let mut groups = Vec::with_capacity(rows.len());
    for r in &rows {
        let key = (0..n)
            .map(|i| Ok(r.try_get::<Option<Value>, _>(i)?.unwrap_or(Value::Null)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let mut fields = Vec::with_capacity(measured.len());
        for (m, f) in measured.iter().map(|m| m.field).enumerate() {
            let c = n + 1 + 8 * m;
            let count = |i: usize| r.try_get::<i64, _>(i).map(|v| v as u64);
            let decimal = |i: usize| r.try_get::<Option<String>, _>(i);
            // A min or max is one of the values, which JSON held as an
            // i64 or an f64: one of the two parses always succeeds.
            let bound =
                |i: usize, s: usize| -> Result<Option<Value>, sqlx::Error> {
                    Ok(match decimal(i)? {
                        Some(d) => d.parse::<i64>().map(Value::from).ok().or_else(|| {
                            d.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
                        }),
                        None => decimal(s)?.map(Value::String),
                    })
                };
            fields.push(FieldStats {
                values: count(c)?,
                numbers: count(c + 1)?,
                strings: count(c + 2)?,
                sum: decimal(c + 3)?.map(|d| exact_number(&d, f)).transpose()?,
                min: bound(c + 4, c + 6)?,
                max: bound(c + 5, c + 7)?,
            });
        }
        groups.push(RawGroup { key, rows: r.try_get::<i64, _>(n)? as u64, fields });
    }
    Ok(groups)
}

/// Whether a name-based read should run again on a new snapshot: it failed
/// because a swap dropped the tables it resolved after its snapshot began
/// (PostgreSQL's catalog is not part of the snapshot; a new snapshot sees
/// the new generation), and it has not raced [`SWAP_RETRIES`] times yet.
fn retry_after_swap(attempt: &mut usize, result: &Result<impl Sized, StoreError>) -> bool {
    *attempt += 1;
    *attempt < SWAP_RETRIES && matches!(result, Err(StoreError::Database(e)) if e.code() == Some(UNDEFINED_TABLE))
}

/// Tries a name-based read a few times while it keeps racing swaps.
const SWAP_RETRIES: usize = 3;

impl PostgresReadModelStore {
    /// A read snapshot with the projection's active generation resolved
    /// and the read time limit armed.
    async fn begin_read(
        &self,
        projection: &str,
    ) -> Result<(sqlx::Transaction<'static, Postgres>, ProjectionRecord, Armed), StoreError> {
        let mut tx = self.snapshot().await?;
        let record = active_in(&mut tx, projection).await?;
        let armed = Armed::postgres(&mut tx, self.limits.timeout()).await?;
        Ok((tx, record, armed))
    }
}

#[async_trait]
impl ModelReader for PostgresReadModelStore {
    async fn get_document(&self, projection: &str, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        check_document_id(id)?;
        let mut attempt = 0;
        loop {
            let mut tx = self.snapshot().await?;
            let record = active_in(&mut tx, projection).await?;
            record.collection(collection)?;
            let result = get_in(&mut tx, &record.key, collection, id).await;
            if !retry_after_swap(&mut attempt, &result) {
                return result;
            }
        }
    }

    async fn query_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<Page, StoreError> {
        let mut attempt = 0;
        loop {
            let (mut tx, record, armed) = self.begin_read(projection).await?;
            let spec = record.collection(collection)?;
            query.validate(spec)?;
            let result = armed.check(query_in(&mut tx, &record.key, spec, query).await);
            if !retry_after_swap(&mut attempt, &result) {
                return result;
            }
        }
    }

    async fn count_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<u64, StoreError> {
        let mut attempt = 0;
        loop {
            let (mut tx, record, armed) = self.begin_read(projection).await?;
            let spec = record.collection(collection)?;
            query.validate(spec)?;
            let result = armed.check(count_in(&mut tx, &record.key, spec, query).await);
            if !retry_after_swap(&mut attempt, &result) {
                return result;
            }
        }
    }

    async fn aggregate_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &AggregateQuery,
    ) -> Result<AggregateResult, StoreError> {
        let mut attempt = 0;
        loop {
            let (mut tx, record, armed) = self.begin_read(projection).await?;
            let spec = record.collection(collection)?;
            query.validate(spec)?;
            let result = armed.check(aggregate_in(&mut tx, &record.key, spec, query).await);
            if !retry_after_swap(&mut attempt, &result) {
                return Ok(AggregateResult::assemble(query, result?)?);
            }
        }
    }

    fn set_read_timeout(&self, limit: std::time::Duration) {
        self.limits.set(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_literal_lexemes() {
        let words: Vec<String> = ["ada", "lovelace", "ada", "o'x\\"].iter().map(|w| w.to_string()).collect();
        assert_eq!(tsvector(&words), r"'ada':1,3 'lovelace':2 'o''x\\':4");
        assert_eq!(tsvector(&[]), "");
        let many = vec!["w".to_owned(); 300];
        assert_eq!(tsvector(&many).matches(',').count(), 254, "255 positions at most");
        let search = Search { words: vec!["ada".into(), "lov".into()] };
        assert_eq!(tsquery(&search), "'ada' & 'lov':*");
    }
}
