//! PostgreSQL for tests: every test gets a fresh schema in `DATABASE_URL`,
//! so tests run in parallel without seeing each other's tables, and the
//! schema is dropped when the test is done so repeated runs leave nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// Names of the schemas made here; the creation time follows it, in Unix seconds.
const PREFIX: &str = "refract_test_at";

/// A schema older than this is a leftover of a test process that was killed
/// before its guard could drop it. No test runs this long, so sweeping these
/// never touches a schema in use by a concurrent test process, whichever
/// process or machine it runs on.
const STALE_AFTER: Duration = Duration::from_secs(3 * 60 * 60);

/// How long dropping a schema waits for a lock: a test that failed may leave
/// a transaction open on its tables; the schema is then left to the sweep
/// rather than hanging the test.
const DROP_LOCK_TIMEOUT: &str = "10s";

/// `DATABASE_URL`, or a panic: a test that needs PostgreSQL fails, never skips.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: PostgreSQL tests need it, e.g. \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/test (scripts/test starts a \
             throwaway PostgreSQL and sets it when it is unset)"
        )
    })
}

/// A schema of its own for one test, dropped (with everything in it) when
/// this guard is dropped, also when the test panics. Keep it alive as long
/// as the stores that use it.
pub struct Schema {
    /// A URL whose connections use the schema (`options[search_path]`,
    /// which sqlx sends as `-c search_path=...`).
    pub url: String,
    /// The schema's name.
    pub name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's tokio runtime, which must not block on a
        // future; a thread with a runtime of its own can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(drop_schema(&database_url(), &name))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}; a later run sweeps it", self.name);
        }
    }
}

/// Creates a new schema, after sweeping the stale ones of killed runs.
pub async fn fresh_schema() -> Schema {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let url = database_url();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    // The pid and a counter keep names unique across parallel test processes.
    let name = format!("{PREFIX}{now}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL={url} is unreachable: {e}"));
    sweep_stale(&mut conn, now).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    Schema { url: format!("{url}{separator}options[search_path]={name}"), name }
}

/// Drops the schemas of this helper created more than [`STALE_AFTER`] ago.
/// Best effort: another process may be sweeping the same ones.
async fn sweep_stale(conn: &mut sqlx::PgConnection, now: u64) {
    let timeout = format!("SET lock_timeout = '{DROP_LOCK_TIMEOUT}'");
    let _ = sqlx::query(sqlx::AssertSqlSafe(timeout)).execute(&mut *conn).await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE left(nspname, char_length($1)) = $1")
            .bind(PREFIX)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name[PREFIX.len()..].split('_').next().and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| now.saturating_sub(t) > STALE_AFTER.as_secs()) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE")))
                .execute(&mut *conn)
                .await;
        }
    }
}

async fn drop_schema(url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SET lock_timeout = '{DROP_LOCK_TIMEOUT}'"))).execute(&mut conn).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {name} CASCADE"))).execute(&mut conn).await?;
    conn.close().await
}
