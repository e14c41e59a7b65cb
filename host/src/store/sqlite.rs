//! Read models in a SQLite file: a table per collection, JSON text documents,
//! expression indexes on the declared fields.

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, AssertSqlSafe, Row, SqliteConnection};

use super::{
    DeadLetter, ModelKey, ProjectionRecord, ProjectionState, ReadModelStore, Registration, RetryRequest, Role,
    StoreError, checkpoint_refused,
};
use crate::changes::ChangeSet;
use crate::clock::now_ms;
use crate::manifest::{CollectionSpec, Manifest};
use crate::query::{Cursor, Document, Filter, Op, Order, Page, Query, order_key, where_clause};
use crate::sqlite::{SqliteDb, quote_ident};

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
];

/// Columns of a registry row, in the order `record_from_row` reads them.
const RECORD: &str = "SELECT projection, generation, role, state, module_hash, source, manifest, checkpoint, \
                      last_error, created_at, activated_at, updated_at FROM refract_generations";

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
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&db.writer).await?;
        }
        Ok(Self { db })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.db.close().await;
    }
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

/// Non-retired generations of one projection, oldest first.
async fn live_generations(conn: &mut SqliteConnection, name: &str) -> Result<Vec<ProjectionRecord>, StoreError> {
    sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND role <> 'retired' ORDER BY generation")))
        .bind(name)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(record_from_row)
        .collect()
}

async fn next_generation(conn: &mut SqliteConnection, name: &str) -> Result<u32, sqlx::Error> {
    let max: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(generation), 0) FROM refract_generations WHERE projection = ?")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
    Ok(max as u32 + 1)
}

/// Inserts a generation row; `role` decides whether it serves at once.
async fn insert_generation(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    role: Role,
    manifest: &Manifest,
    module_hash: &str,
    source: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let state = if role == Role::Failed { ProjectionState::Faulted } else { ProjectionState::Running };
    sqlx::query(
        "INSERT INTO refract_generations (projection, generation, role, state, version, module_hash, source, \
             manifest, checkpoint, last_error, created_at, activated_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
    )
    .bind(&key.projection)
    .bind(key.generation as i64)
    .bind(role.as_str())
    .bind(state.as_str())
    .bind(&manifest.version)
    .bind(module_hash)
    .bind(source)
    .bind(serde_json::to_string(manifest).expect("a manifest always serializes"))
    .bind(error)
    .bind(now)
    .bind((role == Role::Active).then_some(now))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets a generation's role (and, for failures, its error), dropping its
/// tables when it stops being served or built.
async fn retire(
    conn: &mut SqliteConnection,
    record: &ProjectionRecord,
    role: Role,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    drop_tables(&mut *conn, &record.key, &record.manifest).await?;
    sqlx::query("DELETE FROM refract_dead_letters WHERE projection = ? AND generation = ?")
        .bind(&record.key.projection)
        .bind(record.key.generation as i64)
        .execute(&mut *conn)
        .await?;
    let state = if role == Role::Failed { ProjectionState::Faulted } else { ProjectionState::Stopped };
    sqlx::query(
        "UPDATE refract_generations SET role = ?, state = ?, last_error = COALESCE(?, last_error), updated_at = ? \
         WHERE projection = ? AND generation = ?",
    )
    .bind(role.as_str())
    .bind(state.as_str())
    .bind(error)
    .bind(now_ms())
    .bind(&record.key.projection)
    .bind(record.key.generation as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn active_in(conn: &mut SqliteConnection, name: &str) -> Result<ProjectionRecord, StoreError> {
    let row = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND role = 'active'")))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))?;
    record_from_row(&row)
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

/// Moves the checkpoint from `from` to `to`, or fails with `Retired` (the
/// generation is no longer active or building) or `CheckpointMoved`.
async fn move_checkpoint(conn: &mut SqliteConnection, key: &ModelKey, from: u64, to: u64) -> Result<(), StoreError> {
    let moved = sqlx::query(
        "UPDATE refract_generations SET checkpoint = ?, updated_at = ? \
         WHERE projection = ? AND generation = ? AND checkpoint = ? AND role IN ('active', 'building')",
    )
    .bind(to as i64)
    .bind(now_ms())
    .bind(&key.projection)
    .bind(key.generation as i64)
    .bind(from as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 1 {
        return Ok(());
    }
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM refract_generations WHERE projection = ? AND generation = ?")
            .bind(&key.projection)
            .bind(key.generation as i64)
            .fetch_optional(&mut *conn)
            .await?;
    Err(checkpoint_refused(key, from, role.as_deref()))
}

/// Writes a batch's net changes.
async fn apply_changes(conn: &mut SqliteConnection, key: &ModelKey, changes: &ChangeSet) -> Result<(), sqlx::Error> {
    // One statement per collection and kind, whatever the batch size:
    // rows travel as one JSON array and json_each unpacks them in SQLite.
    // Binding the rows instead (multi-row VALUES, 256 rows per statement)
    // was measured slower: 213k against 276k upserted events/s in refract-bench.
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

/// Reads behind `query`: shared by key-based and name-based callers.
async fn query_in(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    query: &Query,
) -> Result<Page, StoreError> {
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
    let rows = sqlx::query_with::<Sqlite, _>(AssertSqlSafe(sql), args).fetch_all(&mut *conn).await?;
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

async fn count_in(
    conn: &mut SqliteConnection,
    key: &ModelKey,
    spec: &CollectionSpec,
    filters: &[Filter],
) -> Result<u64, StoreError> {
    let mut conds = Vec::new();
    let mut args = SqliteArguments::default();
    push_filters(&mut conds, &mut args, filters)?;
    let sql = format!("SELECT COUNT(*) FROM {}{}", table(key, &spec.name), where_clause(&conds));
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

impl SqliteReadModelStore {
    /// A read transaction: in WAL mode it reads one snapshot, so resolving
    /// the active generation and reading its tables can never straddle a swap.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.db.readers.begin().await?)
    }
}

#[async_trait]
impl ReadModelStore for SqliteReadModelStore {
    async fn register(&self, manifest: &Manifest, module_hash: &str, source: &str) -> Result<Registration, StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let live = live_generations(&mut tx, &manifest.name).await?;
        let active = live.iter().find(|g| g.role == Role::Active).cloned();
        let resumable = live
            .iter()
            .find(|g| g.module_hash == module_hash && matches!(g.role, Role::Active | Role::Building))
            .cloned();
        let mut superseded = Vec::new();
        for g in live.iter().filter(|g| g.role == Role::Building) {
            if resumable.as_ref().is_none_or(|r| r.key != g.key) {
                retire(&mut tx, g, Role::Retired, None).await?;
                superseded.push(g.key.clone());
            }
        }
        let target_key = match &resumable {
            Some(g) => g.key.clone(),
            None => {
                let key = ModelKey {
                    projection: manifest.name.clone(),
                    generation: next_generation(&mut tx, &manifest.name).await?,
                };
                // A projection with nothing serving builds in place; otherwise
                // the old generation keeps serving while this one builds.
                let role = if active.is_some() { Role::Building } else { Role::Active };
                insert_generation(&mut tx, &key, role, manifest, module_hash, source, None).await?;
                // A new generation starts empty, whatever a foreign or older
                // registry may have left under the same table names.
                drop_tables(&mut tx, &key, manifest).await?;
                key
            }
        };
        create_tables(&mut tx, &target_key, manifest).await?;
        sqlx::query(
            // A faulted generation stays faulted for the same module until
            // `refract retry`: restarting must not silently re-run a poison event.
            "UPDATE refract_generations SET \
                 state = CASE WHEN state = 'faulted' THEN 'faulted' ELSE 'running' END, \
                 last_error = CASE WHEN state = 'faulted' THEN last_error ELSE NULL END, \
                 source = ?, updated_at = ? \
             WHERE projection = ? AND generation = ?",
        )
        .bind(source)
        .bind(now_ms())
        .bind(&target_key.projection)
        .bind(target_key.generation as i64)
        .execute(&mut *tx)
        .await?;
        let target = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND generation = ?")))
            .bind(&target_key.projection)
            .bind(target_key.generation as i64)
            .fetch_one(&mut *tx)
            .await?;
        let target = record_from_row(&target)?;
        tx.commit().await?;
        let active = active.filter(|a| a.key != target.key);
        Ok(Registration { target, active, superseded })
    }

    async fn record_load_failure(
        &self,
        name: &str,
        module_hash: &str,
        source: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let live = live_generations(&mut tx, name).await?;
        // The watcher may see the same broken file more than once.
        if !live.iter().any(|g| g.module_hash == module_hash) {
            let key = ModelKey { projection: name.to_owned(), generation: next_generation(&mut tx, name).await? };
            let placeholder = Manifest::unknown(name);
            insert_generation(&mut tx, &key, Role::Failed, &placeholder, module_hash, source, Some(error)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn request_rebuild(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let active = active_in(&mut tx, name).await?;
        for g in live_generations(&mut tx, name).await?.iter().filter(|g| g.role == Role::Building) {
            retire(&mut tx, g, Role::Retired, None).await?;
        }
        let key = ModelKey { projection: name.to_owned(), generation: next_generation(&mut tx, name).await? };
        insert_generation(&mut tx, &key, Role::Building, &active.manifest, &active.module_hash, &active.source, None)
            .await?;
        drop_tables(&mut tx, &key, &active.manifest).await?;
        create_tables(&mut tx, &key, &active.manifest).await?;
        let row = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND generation = ?")))
            .bind(name)
            .bind(key.generation as i64)
            .fetch_one(&mut *tx)
            .await?;
        let record = record_from_row(&row)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn activate(&self, key: &ModelKey) -> Result<Option<ModelKey>, StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let live = live_generations(&mut tx, &key.projection).await?;
        let Some(target) = live.iter().find(|g| g.key == *key) else {
            return Err(StoreError::Retired { projection: key.projection.clone(), generation: key.generation });
        };
        if target.role == Role::Active {
            return Ok(None);
        }
        let mut retired = None;
        for g in live.iter().filter(|g| g.key != *key) {
            // Failed attempts are history once a newer generation serves.
            retire(&mut tx, g, Role::Retired, None).await?;
            if g.role == Role::Active {
                retired = Some(g.key.clone());
            }
        }
        sqlx::query(
            "UPDATE refract_generations SET role = 'active', activated_at = ?1, updated_at = ?1 \
             WHERE projection = ?2 AND generation = ?3",
        )
        .bind(now_ms())
        .bind(&key.projection)
        .bind(key.generation as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(retired)
    }

    async fn fail_generation(&self, key: &ModelKey, error: &str) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let record = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND generation = ?")))
            .bind(&key.projection)
            .bind(key.generation as i64)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = record {
            retire(&mut tx, &record_from_row(&row)?, Role::Failed, Some(error)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn drop_projection(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin_with("BEGIN IMMEDIATE").await?;
        let all = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ?")))
            .bind(name)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        if all.is_empty() {
            return Err(StoreError::UnknownProjection(name.to_owned()));
        }
        for g in &all {
            drop_tables(&mut tx, &g.key, &g.manifest).await?;
        }
        sqlx::query("DELETE FROM refract_generations WHERE projection = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM refract_dead_letters WHERE projection = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE role <> 'retired' ORDER BY projection, generation")))
            .fetch_all(&self.db.readers)
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn projection(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        active_in(&mut *self.db.readers.acquire().await?, name).await
    }

    async fn generation(&self, key: &ModelKey) -> Result<ProjectionRecord, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!("{RECORD} WHERE projection = ? AND generation = ?")))
            .bind(&key.projection)
            .bind(key.generation as i64)
            .fetch_optional(&self.db.readers)
            .await?
            .ok_or_else(|| StoreError::UnknownProjection(key.projection.clone()))?;
        record_from_row(&row)
    }

    async fn set_state(
        &self,
        key: &ModelKey,
        state: ProjectionState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refract_generations SET state = ?, last_error = ?, updated_at = ? \
             WHERE projection = ? AND generation = ? AND role IN ('active', 'building')",
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
        let generation = active_in(&mut tx, name).await?.key.generation as i64;
        let cleared = sqlx::query(
            "UPDATE refract_generations SET state = 'stopped', last_error = NULL, updated_at = ? \
             WHERE projection = ? AND generation = ? AND state = 'faulted'",
        )
        .bind(now_ms())
        .bind(name)
        .bind(generation)
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
        get_in(&mut *self.db.readers.acquire().await?, key, collection, id).await
    }

    async fn get_document(&self, projection: &str, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
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
        query_in(&mut tx, &record.key, spec, query).await
    }

    async fn count_documents(&self, projection: &str, collection: &str, filters: &[Filter]) -> Result<u64, StoreError> {
        let mut tx = self.snapshot().await?;
        let record = active_in(&mut tx, projection).await?;
        let spec = record.collection(collection)?;
        Query { filters: filters.to_vec(), ..Query::default() }.validate(spec)?;
        count_in(&mut tx, &record.key, spec, filters).await
    }

    async fn tables(&self, projection: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("rm_{projection}_g");
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )
        .bind(&prefix)
        .fetch_all(&self.db.readers)
        .await?;
        // `rm_a_g1__c` must not match projection `a` against `rm_a_gx_g1__c`.
        Ok(names
            .into_iter()
            .filter(|n| {
                let rest = &n[prefix.len()..];
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                digits > 0 && rest[digits..].starts_with("__")
            })
            .collect())
    }
}
