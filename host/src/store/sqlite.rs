//! Read models in a SQLite file: a table per collection, JSON text documents,
//! expression indexes on the declared fields. The lifecycle decisions are
//! in `lifecycle.rs`; this file is the SQL they run here.

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, AssertSqlSafe, Row, SqliteConnection};

use super::change_log::{ChangeEntry, ChangeKind, ConsumerPosition, LogRows, LogSettings};
use super::lease::{Fences, LeaseRecord, lease_record};
use super::lifecycle::{self, Backend, NewGeneration, Tx};
use super::names::{index_name, legacy_table_name, log_table_name, search_table_name, table_name};
use super::{DeadLetter, ModelKey, ModelReader, ProjectionRecord, ProjectionState, Role, StoreError};
use crate::clock::now_ms;
use crate::db::DbTx;
use crate::db::sqlite::{SqliteDb, Statement, quote_ident};
use crate::model::changes::ChangeSet;
use crate::model::manifest::{CollectionSpec, Manifest};
use crate::store::aggregate::{AggregateQuery, AggregateResult, FieldStats, MAX_GROUPS, RawGroup};
use crate::store::limits::{Armed, ReadLimits};
use crate::store::query::{
    Cursor, Document, Filter, Op, Order, Page, Query, QueryError, Row as PageRow, Sort, check_document_id, page_of,
    where_clause,
};
use crate::store::search::{Search, document_words};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS refract_generations (
        projection   TEXT    NOT NULL,
        generation   INTEGER NOT NULL,
        role         TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        version      TEXT    NOT NULL,
        module_hash  TEXT    NOT NULL,
        source       TEXT    NOT NULL,
        manifest     TEXT    NOT NULL,
        checkpoint   INTEGER NOT NULL,
        last_error   TEXT,
        created_at   INTEGER NOT NULL,
        activated_at INTEGER,
        updated_at   INTEGER NOT NULL,
        PRIMARY KEY (projection, generation)
    )",
    // The registry itself enforces the one-active-generation rule.
    "CREATE UNIQUE INDEX IF NOT EXISTS refract_one_active ON refract_generations (projection) WHERE role = 'active'",
    // Events a projection skipped under the `skip` policy, per generation.
    "CREATE TABLE IF NOT EXISTS refract_dead_letters (
        projection  TEXT    NOT NULL,
        generation  INTEGER NOT NULL,
        position    INTEGER NOT NULL,
        stream_id   TEXT    NOT NULL,
        event_type  TEXT    NOT NULL,
        error       TEXT    NOT NULL,
        module_hash TEXT    NOT NULL,
        recorded_at INTEGER NOT NULL,
        replay      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (projection, generation, position)
    )",
    "CREATE TABLE IF NOT EXISTS refract_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    // Which node may write a generation (`lease.rs`); expiry in ms since the Unix epoch.
    "CREATE TABLE IF NOT EXISTS refract_leases (
        projection TEXT    NOT NULL,
        generation INTEGER NOT NULL,
        owner      TEXT    NOT NULL,
        epoch      INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (projection, generation)
    )",
    // Nodes sharing the store, each until its announcement expires (`lease.rs`).
    "CREATE TABLE IF NOT EXISTS refract_nodes (node TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)",
    // Named consumers of the change logs (`change_log.rs`).
    "CREATE TABLE IF NOT EXISTS refract_change_consumers (
        projection TEXT    NOT NULL,
        consumer   TEXT    NOT NULL,
        generation INTEGER NOT NULL,
        sequence   INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (projection, consumer)
    )",
    // Module bytes by SHA-256 (`modules.rs`), so every node can load every generation.
    "CREATE TABLE IF NOT EXISTS refract_modules (hash TEXT PRIMARY KEY, bytes BLOB NOT NULL, stored_at INTEGER NOT NULL)",
];

/// Columns of a registry row, in the order `record_from_row` reads them.
const RECORD: &str = "SELECT projection, generation, role, state, module_hash, source, manifest, checkpoint, \
                      last_error, created_at, activated_at, updated_at FROM refract_generations";

/// Read models and checkpoints in one SQLite file, so a batch's changes and
/// its checkpoint commit in one transaction.
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::StoreError> {
/// use refract::{Registry, SqliteReadModelStore};
/// let store = SqliteReadModelStore::open("data/models.db".as_ref()).await?;
/// for p in store.projections().await? {
///     println!("{} at {}", p.key.projection, p.checkpoint);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteReadModelStore {
    db: SqliteDb,
    fences: Fences,
    limits: std::sync::Arc<ReadLimits>,
    log: std::sync::Arc<LogSettings>,
}

impl SqliteReadModelStore {
    /// Opens or creates the read-model file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = SqliteDb::open(path, crate::db::sqlite::MODELS_WRITER_CACHE_KIB).await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&db.writer).await?;
        }
        let store = Self { db, fences: Fences::default(), limits: Default::default(), log: Default::default() };
        lifecycle::migrate_names(&store).await?;
        Ok(store)
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// A read transaction: in WAL mode it reads one snapshot, so resolving
    /// the active generation and reading its tables can never straddle a swap.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.db.readers.begin().await?)
    }
}

fn table(key: &ModelKey, collection: &str) -> String {
    quote_ident(&table_name(key, collection))
}

fn log_table(key: &ModelKey) -> String {
    quote_ident(&log_table_name(key))
}

fn search_table(key: &ModelKey, collection: &str) -> String {
    quote_ident(&search_table_name(key, collection))
}

/// The FTS5 query for a checked search: each word a quoted string, all of
/// them required (FTS5's implicit AND), the last a prefix. The words are
/// letters and digits only; quotes are doubled all the same.
fn fts5_match(search: &Search) -> String {
    let last = search.words.len() - 1;
    let term = |(i, w): (usize, &String)| {
        let quoted = format!("\"{}\"", w.replace('"', "\"\""));
        if i == last { format!("{quoted}*") } else { quoted }
    };
    search.words.iter().enumerate().map(term).collect::<Vec<_>>().join(" ")
}

/// SQL expression for a field of the document (`id` is the key column).
/// `field` is validated by `is_field_path`, so splicing it is safe; a literal
/// path (not a bound parameter) is what lets SQLite use the expression index.
fn field_expr(field: &str) -> String {
    if field == "id" { "id".to_owned() } else { format!("json_extract(doc, '$.{field}')") }
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ProjectionRecord, StoreError> {
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

fn records(rows: Vec<sqlx::sqlite::SqliteRow>) -> Result<Vec<ProjectionRecord>, StoreError> {
    rows.iter().map(record_from_row).collect()
}

/// A transaction on the SQLite file.
pub struct SqliteTx(DbTx<Sqlite>);

impl SqliteTx {
    fn c(&mut self) -> &mut SqliteConnection {
        self.0.conn()
    }
}

/// Binds a generation's key after the other parameters of `sql`.
async fn exec_for(conn: &mut SqliteConnection, sql: &'static str, key: &ModelKey) -> Result<u64, StoreError> {
    Ok(sqlx::query(sql).bind(&key.projection).bind(key.generation as i64).execute(conn).await?.rows_affected())
}

#[async_trait]
impl Tx for SqliteTx {
    async fn live_generations(&mut self, name: Option<&str>) -> Result<Vec<ProjectionRecord>, StoreError> {
        let rows = match name {
            Some(name) => {
                sqlx::query(AssertSqlSafe(format!(
                    "{RECORD} WHERE projection = ? AND role <> 'retired' ORDER BY generation"
                )))
                .bind(name)
                .fetch_all(self.c())
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE role <> 'retired' ORDER BY projection, generation")))
                    .fetch_all(self.c())
                    .await?
            }
        };
        records(rows)
    }

    async fn all_generations(&mut self, name: &str) -> Result<Vec<ProjectionRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? ORDER BY generation")))
            .bind(name)
            .fetch_all(self.c())
            .await?;
        records(rows)
    }

    async fn record(&mut self, key: &ModelKey) -> Result<Option<ProjectionRecord>, StoreError> {
        sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND generation = ?")))
            .bind(&key.projection)
            .bind(key.generation as i64)
            .fetch_optional(self.c())
            .await?
            .as_ref()
            .map(record_from_row)
            .transpose()
    }

    async fn next_generation(&mut self, name: &str) -> Result<u32, StoreError> {
        let max: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(generation), 0) FROM refract_generations WHERE projection = ?")
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
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
        .bind(now)
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
            "UPDATE refract_generations SET role = ?, state = ?, last_error = COALESCE(?, last_error), updated_at = ? \
             WHERE projection = ? AND generation = ?",
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
                 source = ?, updated_at = ? \
             WHERE projection = ? AND generation = ?",
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
            "UPDATE refract_generations SET role = 'active', activated_at = ?1, updated_at = ?1 \
             WHERE projection = ?2 AND generation = ?3",
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
            "UPDATE refract_generations SET state = ?, last_error = ?, updated_at = ? \
             WHERE projection = ? AND generation = ? AND role IN ('active', 'building')",
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
            "UPDATE refract_generations SET state = 'stopped', last_error = NULL, updated_at = ? \
             WHERE projection = ? AND generation = ? AND state = 'faulted'",
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
        sqlx::query("DELETE FROM refract_generations WHERE projection = ?").bind(name).execute(self.c()).await?;
        sqlx::query("DELETE FROM refract_dead_letters WHERE projection = ?").bind(name).execute(self.c()).await?;
        sqlx::query("DELETE FROM refract_leases WHERE projection = ?").bind(name).execute(self.c()).await?;
        sqlx::query("DELETE FROM refract_change_consumers WHERE projection = ?").bind(name).execute(self.c()).await?;
        Ok(())
    }

    async fn create_tables(&mut self, key: &ModelKey, manifest: &Manifest) -> Result<(), StoreError> {
        for c in &manifest.collections {
            let t = table(key, &c.name);
            let create = if c.is_searchable() {
                // The search index finds rows by an integer: `rid`, kept
                // by upserts (ON CONFLICT updates in place) and, being an
                // INTEGER PRIMARY KEY, never renumbered by VACUUM.
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc TEXT NOT NULL)"
                )
            } else {
                format!("CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID")
            };
            sqlx::query(AssertSqlSafe(create)).execute(self.c()).await?;
            if c.is_searchable() {
                // Contentless: the documents already hold the text. The
                // words arrive split by `search::document_words`, so the
                // `ascii` tokenizer only has to split them at the spaces.
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING fts5(words, content='', contentless_delete=1, \
                     tokenize='ascii')",
                    search_table(key, &c.name)
                )))
                .execute(self.c())
                .await?;
            }
            for field in &c.indexes {
                let index = quote_ident(&index_name(key, &c.name, field));
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE INDEX IF NOT EXISTS {index} ON {t} ({})",
                    field_expr(field)
                )))
                .execute(self.c())
                .await?;
            }
        }
        // seq is the rowid: appending and range-pruning walk one b-tree.
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {} (seq INTEGER PRIMARY KEY, checkpoint INTEGER NOT NULL, \
             collection TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, doc TEXT, at INTEGER NOT NULL)",
            log_table(key)
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
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", search_table(key, &c.name))))
                .execute(self.c())
                .await?;
        }
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", log_table(key)))).execute(self.c()).await?;
        Ok(())
    }

    async fn migrate_table(&mut self, key: &ModelKey, collection: &str, indexes: &[String]) -> Result<(), StoreError> {
        let old = legacy_table_name(key, collection);
        for field in indexes {
            let index = quote_ident(&format!("{old}__{field}"));
            sqlx::query(AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}"))).execute(self.c()).await?;
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(&old)
            .fetch_optional(self.c())
            .await?;
        if exists.is_some() {
            let (old, new) = (quote_ident(&old), table(key, collection));
            sqlx::query(AssertSqlSafe(format!("ALTER TABLE {old} RENAME TO {new}"))).execute(self.c()).await?;
        }
        Ok(())
    }

    async fn meta(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM refract_meta WHERE name = ?")
            .bind(name)
            .fetch_optional(self.c())
            .await?)
    }

    async fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO refract_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(value)
            .execute(self.c())
            .await?;
        Ok(())
    }

    async fn letters(&mut self, key: &ModelKey) -> Result<Vec<DeadLetter>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM refract_dead_letters WHERE projection = ? AND generation = ? ORDER BY position")
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
                    replay: r.try_get::<i64, _>("replay")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn delete_letters(&mut self, key: &ModelKey) -> Result<(), StoreError> {
        exec_for(self.c(), "DELETE FROM refract_dead_letters WHERE projection = ? AND generation = ?", key).await?;
        Ok(())
    }

    async fn insert_letter(&mut self, key: &ModelKey, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_dead_letters \
                 (projection, generation, position, stream_id, event_type, error, module_hash, recorded_at, replay) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0) \
             ON CONFLICT DO UPDATE SET error = excluded.error, module_hash = excluded.module_hash, \
                 recorded_at = excluded.recorded_at, replay = 0",
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
        exec_for(self.c(), "UPDATE refract_dead_letters SET replay = 1 WHERE projection = ? AND generation = ?", key)
            .await
    }

    async fn claim_letter(&mut self, key: &ModelKey, position: u64) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "DELETE FROM refract_dead_letters WHERE projection = ? AND generation = ? AND position = ? AND replay = 1",
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
            "UPDATE refract_dead_letters SET replay = 0, error = ?, recorded_at = ? \
             WHERE projection = ? AND generation = ? AND position = ? AND replay = 1",
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

    async fn move_checkpoint(&mut self, key: &ModelKey, from: u64, to: u64) -> Result<bool, StoreError> {
        let moved = sqlx::query(
            "UPDATE refract_generations SET checkpoint = ?, updated_at = ? \
             WHERE projection = ? AND generation = ? AND checkpoint = ? AND role IN ('active', 'building')",
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

    async fn apply_changes(
        &mut self,
        key: &ModelKey,
        manifest: &Manifest,
        changes: &ChangeSet,
    ) -> Result<(), StoreError> {
        // One statement per collection and kind, whatever the batch size:
        // rows travel as one JSON array and json_each unpacks them in SQLite.
        // Binding the rows instead (multi-row VALUES, 256 rows per statement)
        // was measured slower (BENCHMARKS.md).
        for (collection, c) in &changes.collections {
            let t = table(key, collection);
            let searchable = manifest.collection(collection).filter(|s| s.is_searchable());
            let fts = search_table(key, collection);
            // A document's old words leave the index before the document does.
            let unindex = |ids: &str| {
                format!(
                    "DELETE FROM {fts} WHERE rowid IN (SELECT rid FROM {t} WHERE id IN (SELECT {ids} FROM json_each(?)))"
                )
            };
            if !c.deletes.is_empty() {
                let ids = serde_json::to_string(&c.deletes).expect("strings always serialize");
                if searchable.is_some() {
                    sqlx::query(AssertSqlSafe(unindex("value"))).bind(ids.clone()).execute(self.c()).await?;
                }
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {t} WHERE id IN (SELECT value FROM json_each(?))")))
                    .bind(ids)
                    .execute(self.c())
                    .await?;
            }
            if c.upserts.is_empty() {
                continue;
            }
            let mut rows = match searchable {
                Some(spec) => {
                    let rows: Vec<(&str, &str, String)> = c
                        .upserts
                        .iter()
                        .map(|(id, doc)| (id.as_str(), doc.as_str(), document_words(spec, doc).join(" ")))
                        .collect();
                    serde_json::to_string(&rows)
                }
                None => serde_json::to_string(&c.upserts),
            }
            .expect("strings always serialize");
            if searchable.is_some() {
                sqlx::query(AssertSqlSafe(unindex("value ->> 0"))).bind(rows.clone()).execute(self.c()).await?;
            }
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {t} (id, doc) \
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) WHERE true \
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
            )))
            // The rows are needed once more only to index them.
            .bind(if searchable.is_some() { rows.clone() } else { std::mem::take(&mut rows) })
            .execute(self.c())
            .await?;
            if searchable.is_some() {
                // OR REPLACE: should one batch name an id twice, the last wins, as for the document.
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT OR REPLACE INTO {fts} (rowid, words) \
                     SELECT t.rid, j.value ->> 2 FROM json_each(?) AS j JOIN {t} AS t ON t.id = j.value ->> 0 \
                     WHERE j.value ->> 2 <> ''"
                )))
                .bind(rows)
                .execute(self.c())
                .await?;
            }
        }
        Ok(())
    }

    async fn all_documents(&mut self, key: &ModelKey, collection: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(AssertSqlSafe(format!("SELECT id, doc FROM {} ORDER BY id", table(key, collection))))
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
        // One prepared statement stepped per row through SQLite's C API:
        // each row's kind comes from an existence test on the document's
        // table, and a row that logs nothing (a delete of a missing
        // document) takes no sequence, so they stay gap-free. Cheaper than
        // one statement over a JSON array of the rows, which had every
        // document quoted into the array by serde and unquoted by SQLite
        // (BENCHMARKS.md, "Change log and verify").
        let sql = format!(
            "INSERT INTO {log} (seq, checkpoint, collection, id, kind, doc, at) \
             SELECT ?1, ?2, ?3, ?4, kind, ?5, ?6 FROM ( \
                 SELECT CASE WHEN EXISTS (SELECT 1 FROM {t} WHERE id = ?4) THEN ?7 ELSE ?8 END AS kind) \
             WHERE kind IS NOT NULL",
            log = log_table(key),
            t = table(key, rows.collection),
        );
        let mut handle = self.c().lock_handle().await?;
        let mut stmt = Statement::prepare(&mut handle, &sql)?;
        stmt.bind_i64(2, rows.checkpoint as i64)?;
        stmt.bind_text(3, rows.collection)?;
        stmt.bind_i64(6, rows.recorded_at as i64)?;
        stmt.bind_opt_text(7, rows.if_present.map(ChangeKind::as_str))?;
        stmt.bind_opt_text(8, rows.if_absent.map(ChangeKind::as_str))?;
        let mut appended = 0;
        for (id, doc) in &rows.rows {
            stmt.bind_i64(1, (rows.after + appended + 1) as i64)?;
            stmt.bind_text(4, id)?;
            stmt.bind_opt_text(5, *doc)?;
            stmt.step()?;
            appended += stmt.changes();
            stmt.reset()?;
        }
        Ok(appended)
    }

    async fn read_log(&mut self, key: &ModelKey, after: u64, limit: u32) -> Result<Vec<ChangeEntry>, StoreError> {
        // Stepped here through SQLite's C API, as the event read is: a
        // consumer pages thousands of entries at a time, and sqlx would hand
        // each row over from its worker thread on its own (BENCHMARKS.md).
        let sql = format!(
            "SELECT seq, checkpoint, collection, id, kind, doc, at FROM {} WHERE seq > ? ORDER BY seq LIMIT ?",
            log_table(key)
        );
        let mut handle = self.c().lock_handle().await?;
        let mut stmt = Statement::prepare(&mut handle, &sql)?;
        stmt.bind_i64(1, after as i64)?;
        stmt.bind_i64(2, i64::from(limit))?;
        let mut entries = Vec::with_capacity((limit as usize).min(10_000));
        while stmt.step()? {
            let kind = stmt.column_str(4)?;
            entries.push(ChangeEntry {
                sequence: stmt.column_i64(0) as u64,
                checkpoint: stmt.column_i64(1) as u64,
                collection: stmt.column_str(2)?.to_owned(),
                id: stmt.column_str(3)?.to_owned(),
                kind: ChangeKind::parse(kind).ok_or_else(|| StoreError::Corrupt {
                    projection: String::new(),
                    reason: format!("unknown change kind `{kind}`"),
                })?,
                document: stmt.column_opt_str(5)?.map(str::to_owned),
                recorded_at: stmt.column_i64(6) as u64,
            });
        }
        Ok(entries)
    }

    async fn prune_log(&mut self, key: &ModelKey, through: u64) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {} WHERE seq <= ?", log_table(key))))
            .bind(through as i64)
            .execute(self.c())
            .await?;
        Ok(())
    }

    async fn first_logged_since(&mut self, key: &ModelKey, at_ms: u64) -> Result<Option<u64>, StoreError> {
        let first: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT seq FROM {} WHERE at >= ? ORDER BY seq LIMIT 1",
            log_table(key)
        )))
        .bind(at_ms as i64)
        .fetch_optional(self.c())
        .await?;
        Ok(first.map(|f| f as u64))
    }

    async fn consumer(&mut self, projection: &str, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT generation, sequence FROM refract_change_consumers WHERE projection = ? AND consumer = ?",
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
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (projection, consumer) DO UPDATE \
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
        // The write transaction already holds SQLite's one write lock.
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, epoch FROM refract_leases WHERE projection = ? AND generation = ?")
                .bind(&key.projection)
                .bind(key.generation as i64)
                .fetch_optional(self.c())
                .await?;
        Ok(row.map(|(owner, epoch)| (owner, epoch as u64)))
    }

    async fn take_lease(&mut self, key: &ModelKey, node: &str, ttl_ms: i64) -> Result<Option<u64>, StoreError> {
        let now = now_ms();
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO refract_leases (projection, generation, owner, epoch, expires_at) VALUES (?1, ?2, ?3, 1, ?4 + ?5) \
             ON CONFLICT (projection, generation) DO UPDATE \
             SET owner = excluded.owner, epoch = epoch + 1, expires_at = excluded.expires_at \
             WHERE owner = excluded.owner OR expires_at <= ?4 \
             RETURNING epoch",
        )
        .bind(&key.projection)
        .bind(key.generation as i64)
        .bind(node)
        .bind(now)
        .bind(ttl_ms)
        .fetch_optional(self.c())
        .await?;
        Ok(epoch.map(|e| e as u64))
    }

    async fn renew_lease(&mut self, key: &ModelKey, node: &str, epoch: u64, ttl_ms: i64) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE refract_leases SET expires_at = ? + ? \
             WHERE projection = ? AND generation = ? AND owner = ? AND epoch = ?",
        )
        .bind(now_ms())
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
             WHERE projection = ? AND generation = ? AND owner = ? AND epoch = ?",
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
        let now = now_ms();
        let rows: Vec<(String, i64, String, i64, i64)> = sqlx::query_as(
            "SELECT projection, generation, owner, epoch, expires_at FROM refract_leases \
             ORDER BY projection, generation",
        )
        .fetch_all(self.c())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(p, g, owner, epoch, expires)| lease_record(p, g, owner, epoch, expires, expires <= now))
            .collect())
    }

    async fn delete_lease(&mut self, key: &ModelKey) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM refract_leases WHERE projection = ? AND generation = ?")
            .bind(&key.projection)
            .bind(key.generation as i64)
            .execute(self.c())
            .await?;
        Ok(())
    }

    async fn announce_node(&mut self, node: &str, ttl_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_nodes (node, expires_at) VALUES (?1, ?2) \
             ON CONFLICT (node) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(node)
        .bind(now_ms().saturating_add(ttl_ms))
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn live_nodes(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT node FROM refract_nodes WHERE expires_at > ? ORDER BY node")
            .bind(now_ms())
            .fetch_all(self.c())
            .await?)
    }

    async fn put_module(&mut self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refract_modules (hash, bytes, stored_at) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(bytes)
        .bind(now_ms())
        .execute(self.c())
        .await?;
        Ok(())
    }

    async fn module(&mut self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT bytes FROM refract_modules WHERE hash = ?")
            .bind(hash)
            .fetch_optional(self.c())
            .await?)
    }

    async fn delete_unused_module(&mut self, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM refract_modules WHERE hash = ? \
             AND NOT EXISTS (SELECT 1 FROM refract_generations WHERE module_hash = ?)",
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
impl Backend for SqliteReadModelStore {
    type Tx = SqliteTx;

    async fn registry_tx(&self) -> Result<SqliteTx, StoreError> {
        self.write_tx().await
    }

    async fn write_tx(&self) -> Result<SqliteTx, StoreError> {
        // IMMEDIATE: take the write lock up front, so a writer never
        // deadlocks upgrading a read lock against another process.
        Ok(SqliteTx(DbTx::begin(&self.db.writer, "BEGIN IMMEDIATE").await?))
    }

    async fn read_tx(&self) -> Result<SqliteTx, StoreError> {
        Ok(SqliteTx(DbTx::begin(&self.db.readers, "BEGIN").await?))
    }

    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        get_in(&mut *self.db.readers.acquire().await?, key, collection, id).await
    }

    fn fences(&self) -> &Fences {
        &self.fences
    }

    fn log_settings(&self) -> &LogSettings {
        &self.log
    }

    async fn tables_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )
        .bind(prefix)
        .fetch_all(&self.db.readers)
        .await?)
    }
}

/// Binds a JSON scalar the way `json_extract` returns it: numbers as numbers,
/// booleans as 0/1, strings as text.
fn bind_value(args: &mut SqliteArguments, value: &Value) -> Result<(), sqlx::Error> {
    let r = match value {
        Value::Bool(b) => args.add(*b as i64),
        Value::Number(n) => match n.as_i64() {
            Some(i) => args.add(i),
            None => args.add(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => args.add(s.clone()),
        // Null is written as IS NULL; arrays and objects are refused by validation.
        Value::Null | Value::Array(_) | Value::Object(_) => args.add(Option::<String>::None),
    };
    r.map_err(sqlx::Error::Encode)
}

/// Adds a condition per filter, binding their values in order.
fn push_filters(conds: &mut Vec<String>, args: &mut SqliteArguments, filters: &[Filter]) -> Result<(), sqlx::Error> {
    for f in filters {
        let e = field_expr(&f.field);
        conds.push(match (&f.op, &f.value) {
            (Op::Eq, Value::Null) => format!("{e} IS NULL"),
            (Op::Ne, Value::Null) => format!("{e} IS NOT NULL"),
            (Op::In, Value::Array(items)) => {
                for v in items {
                    bind_value(args, v)?;
                }
                format!("{e} IN ({})", vec!["?"; items.len()].join(","))
            }
            (op, v) => {
                bind_value(args, v)?;
                format!("{e} {} ?", op.sql())
            }
        });
    }
    Ok(())
}

/// The condition selecting rows after `cursor` in `order` (ties broken by id).
fn push_cursor(
    conds: &mut Vec<String>,
    args: &mut SqliteArguments,
    order: &Order,
    cursor: &Cursor,
) -> Result<(), sqlx::Error> {
    if order.field == "id" {
        conds.push(if order.descending { "id < ?" } else { "id > ?" }.to_owned());
        return args.add(cursor.id.clone()).map_err(sqlx::Error::Encode);
    }
    let e = field_expr(&order.field);
    // NULL sorts first ascending and last descending in SQLite.
    conds.push(match (&cursor.key, order.descending) {
        (Value::Null, false) => format!("(({e} IS NULL AND id > ?) OR {e} IS NOT NULL)"),
        (Value::Null, true) => format!("({e} IS NULL AND id < ?)"),
        (_, false) => format!("({e} > ? OR ({e} = ? AND id > ?))"),
        (_, true) => format!("({e} < ? OR ({e} = ? AND id < ?) OR {e} IS NULL)"),
    });
    if !cursor.key.is_null() {
        bind_value(args, &cursor.key)?;
        bind_value(args, &cursor.key)?;
    }
    args.add(cursor.id.clone()).map_err(sqlx::Error::Encode)
}

/// Reads behind `query`: shared by key-based and name-based callers.
async fn query_in(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &Query,
) -> Result<Page, StoreError> {
    let search = query.checked_search(spec)?;
    let cursor = query.checked_cursor(search.as_ref())?;
    let mut conds = Vec::new();
    let mut args = SqliteArguments::default();
    let (from, rank) = matching(&mut conds, &mut args, key, spec, search.as_ref(), &query.filters)?;
    let sort = query.sort();
    if let Some(cursor) = &cursor {
        match &sort {
            Sort::Field(order) => push_cursor(&mut conds, &mut args, order, cursor)?,
            Sort::Rank => {
                // bm25: lower is better.
                conds.push("(f.rank > ? OR (f.rank = ? AND id > ?))".to_owned());
                let r = cursor.rank().expect("checked_cursor: a rank cursor has a rank");
                args.add(r).map_err(sqlx::Error::Encode)?;
                args.add(r).map_err(sqlx::Error::Encode)?;
                args.add(cursor.id.clone()).map_err(sqlx::Error::Encode)?;
            }
        }
    }
    let mut sql = format!("SELECT id, doc, {rank} FROM {from}{}", where_clause(&conds));
    match &sort {
        Sort::Rank => sql.push_str(" ORDER BY f.rank ASC, id ASC"),
        Sort::Field(order) => {
            let dir = if order.descending { "DESC" } else { "ASC" };
            if order.field == "id" {
                sql.push_str(&format!(" ORDER BY id {dir}"));
            } else {
                sql.push_str(&format!(" ORDER BY {} {dir}, id {dir}", field_expr(&order.field)));
            }
        }
    }
    // One row more than asked tells whether there is a next page.
    sql.push_str(" LIMIT ?");
    args.add(query.limit as i64 + 1).map_err(sqlx::Error::Encode)?;
    let rows = sqlx::query_with::<Sqlite, _>(AssertSqlSafe(sql), args).fetch_all(&mut *conn).await?;
    let rows = rows
        .iter()
        .map(|r| Ok(PageRow { document: Document { id: r.try_get(0)?, body: r.try_get(1)? }, rank: r.try_get(2)? }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(page_of(query, search.as_ref(), rows))
}

/// The rows a query's search and filters select: the `FROM` clause, with
/// their conditions pushed, and the rank expression (NULL without a search).
fn matching(
    conds: &mut Vec<String>,
    args: &mut SqliteArguments,
    key: &ModelKey,
    spec: &CollectionSpec,
    search: Option<&Search>,
    filters: &[Filter],
) -> Result<(String, &'static str), StoreError> {
    let t = table(key, &spec.name);
    let from = match search {
        Some(s) => {
            let fts = search_table(key, &spec.name);
            conds.push(format!("{fts} MATCH ?"));
            args.add(fts5_match(s)).map_err(sqlx::Error::Encode)?;
            // CROSS JOIN: SQLite keeps the left table as the outer loop.
            // Left to choose, it may walk an ordered index of the documents
            // and run the full-text query once per row: minutes on 1M rows.
            (format!("{fts} AS f CROSS JOIN {t} AS t ON t.rid = f.rowid"), "f.rank")
        }
        None => (t, "NULL"),
    };
    push_filters(conds, args, filters)?;
    Ok(from)
}

async fn count_in(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &Query,
) -> Result<u64, StoreError> {
    let search = query.checked_search(spec)?;
    let mut conds = Vec::new();
    let mut args = SqliteArguments::default();
    let (from, _) = matching(&mut conds, &mut args, key, spec, search.as_ref(), &query.filters)?;
    let sql = format!("SELECT COUNT(*) FROM {from}{}", where_clause(&conds));
    let n: i64 = sqlx::query_scalar_with::<Sqlite, _, _>(AssertSqlSafe(sql), args).fetch_one(&mut *conn).await?;
    Ok(n as u64)
}

async fn get_in(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    collection: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    let doc = sqlx::query_scalar(AssertSqlSafe(format!("SELECT doc FROM {} WHERE id = ?", table(key, collection))))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(doc)
}

/// A value as SQLite returned it: integers and reals as numbers, text as a string.
fn sql_value(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Value, sqlx::Error> {
    use sqlx::{TypeInfo, ValueRef};
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match raw.type_info().name() {
        "INTEGER" => Value::from(row.try_get::<i64, _>(i)?),
        "REAL" => serde_json::Number::from_f64(row.try_get::<f64, _>(i)?).map_or(Value::Null, Value::Number),
        _ => Value::String(row.try_get::<String, _>(i)?),
    })
}

/// A group-by value: `json_extract` gives booleans as 0/1 and arrays or
/// objects as JSON text, so the value's `json_type` restores them.
fn group_key(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Value, sqlx::Error> {
    let kind: Option<String> = row.try_get(i + 1)?;
    Ok(match kind.as_deref() {
        Some("true") => Value::Bool(true),
        Some("false") => Value::Bool(false),
        Some("array" | "object") => serde_json::from_str(&row.try_get::<String, _>(i)?).unwrap_or(Value::Null),
        _ => sql_value(row, i)?,
    })
}

/// Measures `query`'s groups: the SQL half of an aggregate (the meaning is
/// given by `AggregateResult::assemble`).
async fn aggregate_in(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &AggregateQuery,
) -> Result<Vec<RawGroup>, StoreError> {
    let mut conds = Vec::new();
    let mut args = SqliteArguments::default();
    push_filters(&mut conds, &mut args, &query.filters)?;
    let mut cols = Vec::new();
    for g in &query.group_by {
        cols.push(field_expr(g));
        cols.push(format!("json_type(doc, '$.{g}')"));
    }
    cols.push("COUNT(*)".to_owned());
    let measured = query.measured_fields();
    for m in &measured {
        let (e, t) = (field_expr(m.field), format!("json_type(doc, '$.{}')", m.field));
        cols.push(format!("COUNT({e})"));
        cols.push(format!("COUNT(CASE WHEN {t} IN ('integer', 'real') THEN 1 END)"));
        cols.push(format!("COUNT(CASE WHEN {t} = 'text' THEN 1 END)"));
        // SUM stays an INTEGER when every value is one, and fails rather
        // than lose precision on overflow.
        cols.push(if m.sum { format!("SUM({e})") } else { "NULL".into() });
        cols.push(if m.bounds { format!("MIN({e})") } else { "NULL".into() });
        cols.push(if m.bounds { format!("MAX({e})") } else { "NULL".into() });
    }
    let mut sql = format!("SELECT {} FROM {}{}", cols.join(", "), table(key, &spec.name), where_clause(&conds));
    if !query.group_by.is_empty() {
        let keys = query.group_by.iter().map(|g| field_expr(g)).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(" GROUP BY {keys} ORDER BY {keys}"));
    }
    // One group more than allowed tells that there are too many.
    sql.push_str(&format!(" LIMIT {}", MAX_GROUPS + 1));
    let rows = match sqlx::query_with::<Sqlite, _>(AssertSqlSafe(sql), args).fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e)) if e.message().contains("integer overflow") => {
            // SQLite does not say which sum overflowed: name the first.
            let field = measured.iter().find(|m| m.sum).map_or("", |m| m.field).to_owned();
            return Err(QueryError::SumOverflow { field }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let n = query.group_by.len();
    rows.iter()
        .map(|r| {
            let key = (0..n).map(|i| group_key(r, 2 * i)).collect::<Result<Vec<_>, _>>()?;
            let base = 2 * n + 1;
            let fields = (0..measured.len())
                .map(|m| {
                    let c = base + 6 * m;
                    let count = |i: usize| r.try_get::<i64, _>(i).map(|v| v as u64);
                    let number = |v: Value| match v {
                        Value::Number(n) => Some(n),
                        _ => None,
                    };
                    let some = |v: Value| (!v.is_null()).then_some(v);
                    Ok(FieldStats {
                        values: count(c)?,
                        numbers: count(c + 1)?,
                        strings: count(c + 2)?,
                        sum: number(sql_value(r, c + 3)?),
                        min: some(sql_value(r, c + 4)?),
                        max: some(sql_value(r, c + 5)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            Ok(RawGroup { key, rows: r.try_get::<i64, _>(2 * n)? as u64, fields })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}

#[async_trait]
impl ModelReader for SqliteReadModelStore {
    async fn get_document(&self, projection: &str, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        check_document_id(id)?;
        let mut tx = self.snapshot().await?;
        let record = active_in(&mut tx, projection).await?;
        record.collection(collection)?;
        get_in(&mut tx, &record.key, collection, id).await
    }

    async fn query_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<Page, StoreError> {
        let mut tx = self.snapshot().await?;
        let record = active_in(&mut tx, projection).await?;
        let spec = record.collection(collection)?;
        query.validate(spec)?;
        let armed = Armed::sqlite(&mut tx, self.limits.timeout()).await?;
        armed.check(query_in(&mut tx, &record.key, spec, query).await)
    }

    async fn count_documents(&self, projection: &str, collection: &str, query: &Query) -> Result<u64, StoreError> {
        let mut tx = self.snapshot().await?;
        let record = active_in(&mut tx, projection).await?;
        let spec = record.collection(collection)?;
        query.validate(spec)?;
        let armed = Armed::sqlite(&mut tx, self.limits.timeout()).await?;
        armed.check(count_in(&mut tx, &record.key, spec, query).await)
    }

    async fn aggregate_documents(
        &self,
        projection: &str,
        collection: &str,
        query: &AggregateQuery,
    ) -> Result<AggregateResult, StoreError> {
        let mut tx = self.snapshot().await?;
        let record = active_in(&mut tx, projection).await?;
        let spec = record.collection(collection)?;
        query.validate(spec)?;
        let armed = Armed::sqlite(&mut tx, self.limits.timeout()).await?;
        let raw = armed.check(aggregate_in(&mut tx, &record.key, spec, query).await)?;
        Ok(AggregateResult::assemble(query, raw)?)
    }

    fn set_read_timeout(&self, limit: std::time::Duration) {
        self.limits.set(limit);
    }
}

async fn active_in(conn: &mut SqliteConnection, name: &str) -> Result<ProjectionRecord, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND role = 'active'")))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))?;
    record_from_row(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_become_quoted_fts5_terms() {
        let search = Search { words: vec!["ada".into(), "and".into(), "lov".into()] };
        assert_eq!(fts5_match(&search), r#""ada" "and" "lov"*"#);
        assert_eq!(fts5_match(&Search { words: vec!["x\"y".into()] }), r#""x""y"*"#);
    }
}
