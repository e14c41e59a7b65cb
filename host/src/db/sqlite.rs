//! SQLite connection setup shared by the embedded event store and read-model store.

mod statement;

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

pub(crate) use statement::{SqliteError, Statement, begin_immediate_now, execute, in_transaction};

/// How long a writer waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent readers per database file.
const READERS: u32 = 4;
/// Page cache of an event store's writer connection, in KiB: each step of
/// the per-stream index rewrites most of its pages (`source/sqlite/`), and
/// the cache fills only in a process that appends.
pub(crate) const EVENTS_WRITER_CACHE_KIB: u32 = 64 * 1024;
/// Page cache of a read-model store's writer connection, in KiB. A commit
/// rewrites one projection's documents and appends to its change log, so
/// it touches a few MiB however many projections share the file, and the
/// OS page cache serves the rest. A large cache here cost memory twice: it
/// filled with ten projections' change logs, which are only appended to,
/// and dirty pages grew well past it within a commit (BENCHMARKS.md, peak
/// RSS of one host). The price is paid by models far larger than the
/// cache: loading a million documents with three indexed fields takes
/// about a quarter longer.
pub(crate) const MODELS_WRITER_CACHE_KIB: u32 = 4 * 1024;
/// Page cache of each reader connection, in KiB: readers mostly scan the
/// event log once, which the OS page cache serves as well.
const READER_CACHE_KIB: u32 = 1024;

/// A database file opened as one writer connection plus a pool of readers.
///
/// SQLite allows one writer at a time; funnelling this process's writes
/// through a single connection turns lock contention into a queue, while
/// WAL mode lets readers run next to it. Other processes (a CLI `append`
/// beside a running host) wait on the busy timeout, and writers start with
/// `BEGIN IMMEDIATE` so they never deadlock upgrading a read lock.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDb {
    pub writer: SqlitePool,
    pub readers: SqlitePool,
}

impl SqliteDb {
    /// Opens (creating if needed) the database file at `path`, with a page
    /// cache of `writer_cache_kib` for the writer connection.
    pub async fn open(path: &Path, writer_cache_kib: u32) -> Result<Self, sqlx::Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        // synchronous=NORMAL in WAL mode: a killed process loses nothing that
        // committed; only a power cut may lose the last commits, and then the
        // changes and their checkpoint are lost together, never one without the other.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        use_wal(&options).await?;
        // Negative cache sizes are in KiB.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone().pragma("cache_size", format!("-{writer_cache_kib}")))
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true).pragma("cache_size", format!("-{READER_CACHE_KIB}")))
            .await?;
        Ok(Self { writer, readers })
    }

    /// Closes both pools, letting SQLite checkpoint the WAL into the main file.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// Puts the file in WAL mode, once, before the pools connect.
///
/// WAL mode is kept in the file, so every later connection uses it without
/// asking. Asking is what hurts: `PRAGMA journal_mode = WAL` on a new file
/// that another process is switching at the same moment (`refract import`
/// next to a host starting on a fresh data dir) fails with SQLITE_BUSY at
/// once, without waiting on the busy timeout. So the switch is made on one
/// connection and retried on SQLITE_BUSY for as long as the busy timeout.
async fn use_wal(options: &SqliteConnectOptions) -> Result<(), sqlx::Error> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match switch_to_wal(options).await {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            outcome => return outcome,
        }
    }
}

async fn switch_to_wal(options: &SqliteConnectOptions) -> Result<(), sqlx::Error> {
    let mut conn: SqliteConnection = options.connect().await?;
    let switched = sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL").fetch_one(&mut conn).await;
    let _ = conn.close().await;
    match switched?.to_ascii_lowercase().as_str() {
        "wal" => Ok(()),
        other => Err(sqlx::Error::Protocol(format!("SQLite kept journal mode `{other}` instead of WAL"))),
    }
}

/// SQLITE_BUSY, whatever its extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else { return false };
    db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5)
}

/// Quotes an identifier for SQL. Callers pass only validated names; the
/// doubling of `"` is a second line of defence.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
