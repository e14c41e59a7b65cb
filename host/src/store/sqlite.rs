//! Read models in a SQLite file: a table per collection, JSON text documents,
//! expression indexes on the declared fields.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, AssertSqlSafe, Row, SqliteConnection};

use super::{DeadLetter, ModelKey, ProjectionRecord, ProjectionState, ReadModelStore, RetryRequest, StoreError};
use crate::changes::ChangeSet;
use crate::manifest::{CollectionSpec, Manifest};
use crate::query::{Cursor, Document, Filter, Op, Order, Page, Query, field_value};
use crate::sqlite::{SqliteDb, quote_ident};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS refract_projections (
    name        TEXT    PRIMARY KEY,
    generation  INTEGER NOT NULL,
    version     TEXT    NOT NULL,
    module_hash TEXT    NOT NULL,
    manifest    TEXT    NOT NULL,
    checkpoint  INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    last_error  TEXT,
    updated_at  INTEGER NOT NULL
)";

const DEAD_LETTERS: &str = "
CREATE TABLE IF NOT EXISTS refract_dead_letters (
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
)";

/// Read models and checkpoints in one SQLite file, so a batch's changes and
/// its checkpoint commit in one transaction.
///
/// ```no_run
/// # async fn demo() -> Result<(), refract::StoreError> {
/// use refract::{ReadModelStore, SqliteReadModelStore};
/// let store = SqliteReadModelStore::open("data/models.db".as_ref()).await?;
/// for p in store.projections().await? {
///     println!("{} at {}", p.key.projection, p.checkpoint);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteReadModelStore {
    db: SqliteDb,
}

impl SqliteReadModelStore {
    /// Opens or creates the read-model file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = SqliteDb::open(path).await?;
        sqlx::query(SCHEMA).execute(&db.writer).await?;
        sqlx::query(DEAD_LETTERS).execute(&db.writer).await?;
        Ok(Self { db })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn table(key: &ModelKey, collection: &str) -> String {
    quote_ident(&format!("rm_{}_g{}__{}", key.projection, key.generation, collection))
}

/// SQL expression for a field of the document (`id` is the key column).
/// `field` is validated by `is_field_path`, so splicing it is safe; a literal
/// path (not a bound parameter) is what lets SQLite use the expression index.
fn field_expr(field: &str) -> String {
    if field == "id" { "id".to_owned() } else { format!("json_extract(doc, '$.{field}')") }
}

async fn create_tables(conn: &mut SqliteConnection, key: &ModelKey, manifest: &Manifest) -> Result<(), sqlx::Error> {
    for c in &manifest.collections {
        let t = table(key, &c.name);
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID"
        )))
        .execute(&mut *conn)
        .await?;
        for field in &c.indexes {
            let index = quote_ident(&format!("rm_{}_g{}__{}__{field}", key.projection, key.generation, c.name));
            sqlx::query(AssertSqlSafe(format!("CREATE INDEX IF NOT EXISTS {index} ON {t} ({})", field_expr(field))))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

async fn drop_tables(conn: &mut SqliteConnection, key: &ModelKey, manifest: &Manifest) -> Result<(), sqlx::Error> {
    for c in &manifest.collections {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table(key, &c.name)))).execute(&mut *conn).await?;
    }
    Ok(())
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ProjectionRecord, StoreError> {
    let name: String = row.try_get("name")?;
    let corrupt = |reason: String| StoreError::Corrupt { projection: name.clone(), reason };
    let manifest: Manifest = serde_json::from_str(row.try_get("manifest")?).map_err(|e| corrupt(e.to_string()))?;
    let state: String = row.try_get("state")?;
    Ok(ProjectionRecord {
        key: ModelKey { projection: name.clone(), generation: row.try_get::<i64, _>("generation")? as u32 },
        module_hash: row.try_get("module_hash")?,
        checkpoint: row.try_get::<i64, _>("checkpoint")? as u64,
        state: ProjectionState::parse(&state).ok_or_else(|| corrupt(format!("unknown state `{state}`")))?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get::<i64, _>("updated_at")? as u64,
        manifest,
    })
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

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
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

/// The order key of a document, as the cursor records it.
fn order_key(body: &str, order: &Order) -> Value {
    let doc: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match field_value(&doc, &order.field) {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::Array(_) | Value::Object(_))) => Value::String(v.to_string()),
        Some(v) => v.clone(),
    }
}

/// Moves the checkpoint from `from` to `to`, or fails with `CheckpointMoved`.
async fn move_checkpoint(conn: &mut SqliteConnection, key: &ModelKey, from: u64, to: u64) -> Result<(), StoreError> {
    let moved = sqlx::query(
        "UPDATE refract_projections SET checkpoint = ?, updated_at = ? \
         WHERE name = ? AND generation = ? AND checkpoint = ?",
    )
    .bind(to as i64)
    .bind(now_ms())
    .bind(&key.projection)
    .bind(key.generation as i64)
    .bind(from as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved != 1 {
        return Err(StoreError::CheckpointMoved { projection: key.projection.clone(), expected: from });
    }
    Ok(())
}

/// Writes a batch's net changes.
async fn apply_changes(conn: &mut SqliteConnection, key: &ModelKey, changes: &ChangeSet) -> Result<(), sqlx::Error> {
    // One statement per collection and kind, whatever the batch size:
    // rows travel as one JSON array and json_each unpacks them in SQLite.
    for (collection, c) in &changes.collections {
        let t = table(key, collection);
        if !c.deletes.is_empty() {
            let ids = serde_json::to_string(&c.deletes).expect("strings always serialize");
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {t} WHERE id IN (SELECT value FROM json_each(?))")))
                .bind(ids)
                .execute(&mut *conn)
                .await?;
        }
        if !c.upserts.is_empty() {
            let rows = serde_json::to_string(&c.upserts).expect("strings always serialize");
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {t} (id, doc) \
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) WHERE true \
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
            )))
            .bind(rows)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl ReadModelStore for SqliteReadModelStore {
    async fn register(&self, manifest: &Manifest, module_hash: &str) -> Result<ProjectionRecord, StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let existing = sqlx::query("SELECT * FROM refract_projections WHERE name = ?")
            .bind(&manifest.name)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| record_from_row(&row))
            .transpose()?;
        let manifest_json = serde_json::to_string(manifest).expect("a manifest always serializes");
        let key = match &existing {
            Some(old) if old.module_hash == module_hash => old.key.clone(),
            Some(old) => {
                drop_tables(&mut tx, &old.key, &old.manifest).await?;
                ModelKey { projection: manifest.name.clone(), generation: old.key.generation + 1 }
            }
            None => ModelKey { projection: manifest.name.clone(), generation: 1 },
        };
        create_tables(&mut tx, &key, manifest).await?;
        let rebuild = existing.as_ref().is_none_or(|old| old.key != key);
        if rebuild {
            sqlx::query("DELETE FROM refract_dead_letters WHERE projection = ?")
                .bind(&manifest.name)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO refract_projections \
                 (name, generation, version, module_hash, manifest, checkpoint, state, last_error, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 'running', NULL, ?6) \
             ON CONFLICT (name) DO UPDATE SET generation = ?2, version = ?3, module_hash = ?4, manifest = ?5, \
                 checkpoint = CASE WHEN ?7 THEN 0 ELSE checkpoint END, \
                 state = CASE WHEN NOT ?7 AND state = 'faulted' THEN 'faulted' ELSE 'running' END, \
                 last_error = CASE WHEN NOT ?7 AND state = 'faulted' THEN last_error ELSE NULL END, \
                 updated_at = ?6",
        )
        .bind(&manifest.name)
        .bind(key.generation as i64)
        .bind(&manifest.version)
        .bind(module_hash)
        .bind(&manifest_json)
        .bind(now_ms())
        .bind(rebuild)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM refract_projections WHERE name = ?")
            .bind(&manifest.name)
            .fetch_one(&mut *tx)
            .await?;
        let record = record_from_row(&row)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        sqlx::query("SELECT * FROM refract_projections ORDER BY name")
            .fetch_all(&self.db.readers)
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn projection(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM refract_projections WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.db.readers)
            .await?
            .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))?;
        record_from_row(&row)
    }

    async fn set_state(
        &self,
        key: &ModelKey,
        state: ProjectionState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_projections SET state = ?, last_error = ?, updated_at = ? WHERE name = ? AND generation = ?",
        )
        .bind(state.as_str())
        .bind(last_error)
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(&self.db.writer)
        .await?;
        Ok(())
    }

    async fn commit(&self, key: &ModelKey, changes: &ChangeSet, from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        move_checkpoint(&mut tx, key, from, to).await?;
        apply_changes(&mut tx, key, changes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn skip_event(&self, key: &ModelKey, letter: &DeadLetter, from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        move_checkpoint(&mut tx, key, from, to).await?;
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
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let record = self.projection(name).await?;
        let rows =
            sqlx::query("SELECT * FROM refract_dead_letters WHERE projection = ? AND generation = ? ORDER BY position")
                .bind(name)
                .bind(record.key.generation as i64)
                .fetch_all(&self.db.readers)
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

    async fn request_retry(&self, name: &str) -> Result<RetryRequest, StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let generation: i64 = sqlx::query_scalar("SELECT generation FROM refract_projections WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))?;
        let cleared = sqlx::query(
            "UPDATE refract_projections SET state = 'stopped', last_error = NULL, updated_at = ? \
             WHERE name = ? AND state = 'faulted'",
        )
        .bind(now_ms())
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let replays = sqlx::query("UPDATE refract_dead_letters SET replay = 1 WHERE projection = ? AND generation = ?")
            .bind(name)
            .bind(generation)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(RetryRequest { cleared_fault: cleared == 1, replays })
    }

    async fn finish_replay(
        &self,
        key: &ModelKey,
        position: u64,
        outcome: Result<&ChangeSet, &str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let letter = "WHERE projection = ? AND generation = ? AND position = ?";
        let query = match outcome {
            Ok(changes) => {
                apply_changes(&mut tx, key, changes).await?;
                sqlx::query(AssertSqlSafe(format!("DELETE FROM refract_dead_letters {letter}")))
            }
            Err(error) => sqlx::query(AssertSqlSafe(format!(
                "UPDATE refract_dead_letters SET replay = 0, error = ?, recorded_at = ? {letter}"
            )))
            .bind(error.to_owned())
            .bind(now_ms()),
        };
        query.bind(key.projection.clone()).bind(key.generation as i64).bind(position as i64).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        let doc = sqlx::query_scalar(AssertSqlSafe(format!("SELECT doc FROM {} WHERE id = ?", table(key, collection))))
            .bind(id)
            .fetch_optional(&self.db.readers)
            .await?;
        Ok(doc)
    }

    async fn query(&self, key: &ModelKey, spec: &CollectionSpec, query: &Query) -> Result<Page, StoreError> {
        let order = query.order_or_id();
        let mut conds = Vec::new();
        let mut args = SqliteArguments::default();
        push_filters(&mut conds, &mut args, &query.filters)?;
        if let Some(text) = &query.cursor {
            push_cursor(&mut conds, &mut args, &order, &Cursor::decode(text)?)?;
        }
        let mut sql = format!("SELECT id, doc FROM {}{}", table(key, &spec.name), where_clause(&conds));
        let dir = if order.descending { "DESC" } else { "ASC" };
        if order.field == "id" {
            sql.push_str(&format!(" ORDER BY id {dir}"));
        } else {
            sql.push_str(&format!(" ORDER BY {} {dir}, id {dir}", field_expr(&order.field)));
        }
        // One row more than asked tells whether there is a next page.
        sql.push_str(" LIMIT ?");
        args.add(query.limit as i64 + 1).map_err(sqlx::Error::Encode)?;
        let rows = sqlx::query_with::<Sqlite, _>(AssertSqlSafe(sql), args).fetch_all(&self.db.readers).await?;
        let mut documents = rows
            .iter()
            .map(|r| Ok(Document { id: r.try_get(0)?, body: r.try_get(1)? }))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next_cursor = if documents.len() > query.limit as usize {
            documents.truncate(query.limit as usize);
            documents.last().map(|d| Cursor { key: order_key(&d.body, &order), id: d.id.clone() }.encode())
        } else {
            None
        };
        Ok(Page { documents, next_cursor })
    }

    async fn count(&self, key: &ModelKey, spec: &CollectionSpec, filters: &[Filter]) -> Result<u64, StoreError> {
        let mut conds = Vec::new();
        let mut args = SqliteArguments::default();
        push_filters(&mut conds, &mut args, filters)?;
        let sql = format!("SELECT COUNT(*) FROM {}{}", table(key, &spec.name), where_clause(&conds));
        let n: i64 =
            sqlx::query_scalar_with::<Sqlite, _, _>(AssertSqlSafe(sql), args).fetch_one(&self.db.readers).await?;
        Ok(n as u64)
    }
}
