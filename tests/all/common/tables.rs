//! Source tables for the table sync tests: a fresh PostgreSQL schema, a
//! fresh MariaDB/MySQL database (`MYSQL_URL`) or a SQLite file per test,
//! and the concurrent-writers workload the sync must keep up with.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};

use super::Rng;
use super::pg::{Schema, fresh_schema};

/// `MYSQL_URL`, or a panic: a test that needs MariaDB fails, never skips.
pub fn mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| {
        panic!("MYSQL_URL is not set: the MariaDB tests need it, e.g. MYSQL_URL=mysql://root@127.0.0.1:3306/test")
    })
}

/// Which database a source table lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MariaDb,
    Sqlite,
}

/// A connection pool on the source database.
pub enum Db {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

/// A source database of one test, dropped with it.
pub struct SourceDb {
    pub backend: Backend,
    pub db: Db,
    /// The URL refract.toml names.
    pub url: String,
    _schema: Option<Schema>,
    mysql_database: Option<String>,
}

impl Drop for SourceDb {
    fn drop(&mut self) {
        if let Some(name) = self.mysql_database.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(pool) = MySqlPool::connect(&mysql_url()).await {
                        let _ =
                            sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&pool).await;
                    }
                })
            })
            .join();
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl SourceDb {
    /// A fresh, empty database of `backend`; SQLite files go in `dir`.
    pub async fn fresh(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Postgres => {
                let schema = fresh_schema().await;
                let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&schema.url).await.unwrap();
                Self { backend, db: Db::Pg(pool), url: schema.url.clone(), _schema: Some(schema), mysql_database: None }
            }
            Backend::MariaDb => {
                let base = mysql_url();
                let admin = MySqlPool::connect(&base)
                    .await
                    .unwrap_or_else(|e| panic!("MariaDB at MYSQL_URL={base} is unreachable: {e}"));
                let name = format!("refract_sync_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
                sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&admin).await.unwrap();
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
                admin.close().await;
                let cut = base.rfind('/').filter(|i| *i > "mysql://".len()).unwrap_or(base.len());
                let url = format!("{}/{name}", &base[..cut]);
                let pool = sqlx::mysql::MySqlPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
                Self { backend, db: Db::My(pool), url, _schema: None, mysql_database: Some(name) }
            }
            Backend::Sqlite => {
                let path = dir.join(format!("source-{}.db", COUNTER.fetch_add(1, Ordering::Relaxed)));
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(30));
                let pool =
                    sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).connect_with(options).await.unwrap();
                Self {
                    backend,
                    db: Db::Lite(pool),
                    url: format!("sqlite://{}", path.display()),
                    _schema: None,
                    mysql_database: None,
                }
            }
        }
    }

    /// Runs statements (`;`-free each), in order.
    pub async fn exec(&self, statements: &[&str]) {
        for s in statements {
            let r = match &self.db {
                Db::Pg(p) => sqlx::query(AssertSqlSafe(*s)).execute(p).await.map(|_| ()),
                Db::My(p) => sqlx::query(AssertSqlSafe(*s)).execute(p).await.map(|_| ()),
                Db::Lite(p) => sqlx::query(AssertSqlSafe(*s)).execute(p).await.map(|_| ()),
            };
            r.unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    /// Statements in one transaction, after waiting `hold` inside it (a
    /// transaction that commits late). `begin` runs first (MariaDB: taking
    /// the timestamp).
    pub async fn transaction(&self, statements: &[String], hold: Duration) {
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.unwrap();
                for s in statements {
                    sqlx::query(AssertSqlSafe(s.as_str()))
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{s}: {e}"));
                }
                tokio::time::sleep(hold).await;
                tx.commit().await.unwrap();
            }};
        }
        match &self.db {
            Db::Pg(p) => run!(p),
            Db::My(p) => run!(p),
            Db::Lite(p) => run!(p),
        }
    }

    /// `SELECT id, n, note FROM items WHERE deleted_at IS NULL`, by stream id.
    pub async fn live_items(&self) -> BTreeMap<String, (i64, String)> {
        let sql = "SELECT id, n, note FROM items WHERE deleted_at IS NULL";
        let rows: Vec<(i64, i64, String)> = match &self.db {
            Db::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Db::My(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            Db::Lite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        };
        rows.into_iter().map(|(id, n, note)| (format!("items-{id}"), (n, note))).collect()
    }

    /// The `items` table of the workload: a timestamp tracking column, a
    /// soft-delete column, an index on (tracking, key).
    pub async fn create_items(&self) {
        let ts = match self.backend {
            Backend::Postgres => "TIMESTAMP(6)",
            Backend::MariaDb => "DATETIME(6)",
            Backend::Sqlite => "TEXT",
        };
        let note = if self.backend == Backend::MariaDb { "VARCHAR(200)" } else { "TEXT" };
        self.exec(&[
            &format!(
                "CREATE TABLE items (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, note {note} NOT NULL, \
                 updated_at {ts} NOT NULL, deleted_at {ts} NULL)"
            ),
            "CREATE INDEX items_sync ON items (updated_at, id)",
        ])
        .await;
    }
}

/// The read model of the `copy` plugin as `(n, note)` by document id.
pub fn copied(docs: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, (i64, String)> {
    docs.iter()
        .map(|(id, d)| (id.clone(), (d["n"].as_i64().unwrap_or(-1), d["note"].as_str().unwrap_or("?").to_owned())))
        .collect()
}

/// What the workload did.
#[derive(Debug, Default)]
pub struct Workload {
    pub changes: u64,
    pub late: u64,
    pub soft_deletes: u64,
    pub hard_deletes: u64,
}

/// The last SQLite timestamp handed out, in µs: unique per transaction.
static SQLITE_CLOCK: AtomicI64 = AtomicI64::new(0);

fn sqlite_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let mut prev = SQLITE_CLOCK.load(Ordering::Relaxed);
    let ts = loop {
        let next = now.max(prev + 1);
        match SQLITE_CLOCK.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    let text = refract::rfc3339_micros(ts);
    // 2024-01-15T10:30:00.123456Z -> 2024-01-15 10:30:00.123456 (SQLite's own format)
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

/// One writer: inserts, updates, soft and hard deletes of its own rows
/// (ids `writer * 10^9 + n`, so writers never wait on each other's row
/// locks), in transactions of 1 to 20 changes that share a timestamp; about
/// one in twenty is held open for 0.3 to 1.2 s before it commits, with the
/// lower timestamp it took at its start. Runs `changes` changes spread over `over`.
pub async fn writer(db: &SourceDb, writer: u64, changes: u64, over: Duration) -> Workload {
    let mut rng = Rng::new(writer * 7919 + 17);
    let mut ids: Vec<i64> = Vec::new();
    let mut next = 0i64;
    let mut done = Workload::default();
    let started = Instant::now();
    while done.changes < changes {
        let n_ops = 1 + rng.below(20);
        let (ts, mut statements) = match db.backend {
            Backend::Postgres => ("now()".to_owned(), vec![]),
            Backend::MariaDb => ("@ts".to_owned(), vec!["SET @ts = NOW(6)".to_owned()]),
            Backend::Sqlite => (format!("'{}'", sqlite_now()), vec![]),
        };
        let later = match db.backend {
            Backend::Postgres => format!("GREATEST({ts}, updated_at + INTERVAL '1 microsecond')"),
            Backend::MariaDb => format!("GREATEST({ts}, updated_at + INTERVAL 1 MICROSECOND)"),
            // Each transaction's timestamp is unique (`sqlite_now`), so even
            // a late one that sets an older value changes the row's value.
            Backend::Sqlite => ts.clone(),
        };
        let mut touched = std::collections::HashSet::new();
        for _ in 0..n_ops {
            let roll = rng.below(100);
            let pick = |rng: &mut Rng, ids: &Vec<i64>| ids[rng.below(ids.len() as u64) as usize];
            if ids.len() < 20 || roll < 45 {
                let id = writer as i64 * 1_000_000_000 + next;
                next += 1;
                ids.push(id);
                touched.insert(id);
                statements.push(format!(
                    "INSERT INTO items (id, n, note, updated_at) VALUES ({id}, 0, 'new {id} ,%é', {ts})"
                ));
            } else if roll < 90 {
                let id = pick(&mut rng, &ids);
                // A second change of a row in one SQLite transaction would
                // keep its value, so it could not be told from the first.
                if db.backend == Backend::Sqlite && !touched.insert(id) {
                    continue;
                }
                statements.push(format!(
                    "UPDATE items SET n = n + 1, note = 'upd {}', updated_at = {later} WHERE id = {id}",
                    rng.below(1000)
                ));
            } else if roll < 96 {
                let id = pick(&mut rng, &ids);
                if db.backend == Backend::Sqlite && !touched.insert(id) {
                    continue;
                }
                done.soft_deletes += 1;
                statements.push(format!("UPDATE items SET deleted_at = {ts}, updated_at = {later} WHERE id = {id}"));
            } else {
                let at = rng.below(ids.len() as u64) as usize;
                let id = ids.swap_remove(at);
                done.hard_deletes += 1;
                statements.push(format!("DELETE FROM items WHERE id = {id}"));
            }
            done.changes += 1;
        }
        let hold = if rng.below(20) == 0 {
            done.late += 1;
            Duration::from_millis(300 + rng.below(900))
        } else {
            Duration::ZERO
        };
        if db.backend == Backend::Sqlite && !hold.is_zero() {
            // SQLite has one writer at a time: a transaction held open would
            // hold everyone up. The timestamp was taken above; committing
            // after the pause is the same late commit with a lower value.
            tokio::time::sleep(hold).await;
            db.transaction(&statements, Duration::ZERO).await;
        } else {
            db.transaction(&statements, hold).await;
        }
        // Spread the changes over the run.
        let due = over.mul_f64(done.changes as f64 / changes as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    done
}

/// The naive incremental read of the reference design, `WHERE updated_at >
/// $last ORDER BY updated_at LIMIT n`, run alongside the workload on
/// PostgreSQL: its copy of the live rows.
pub async fn naive_copy(pool: &PgPool, stop: &std::sync::atomic::AtomicBool) -> BTreeMap<String, (i64, String)> {
    let mut copy = BTreeMap::new();
    let mut last: Option<String> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let rows = sqlx::query(
            "SELECT id, n, note, updated_at::text, deleted_at IS NOT NULL FROM items \
             WHERE $1::timestamp IS NULL OR updated_at > $1::timestamp ORDER BY updated_at LIMIT 500",
        )
        .bind(&last)
        .fetch_all(pool)
        .await
        .unwrap();
        for r in &rows {
            let key = format!("items-{}", r.get::<i64, _>(0));
            if r.get::<bool, _>(4) {
                copy.remove(&key);
            } else {
                copy.insert(key, (r.get::<i64, _>(1), r.get::<String, _>(2)));
            }
            last = Some(r.get(3));
        }
        if rows.len() < 500 {
            if stopping {
                return copy;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
