//! PostgreSQL connection setup shared by the event store and the read-model store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Connections per pool: enough for a host's runners, readers and HTTP
/// handlers, small enough that several hosts share one server.
const MAX_CONNECTIONS: u32 = 8;
/// How long to wait for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a pool on a `postgres://` URL.
///
/// The URL may choose a schema with `?options[search_path]=name` (or
/// `?options=-c%20search_path%3Dname`); the tables of both stores are created
/// unqualified, so they land in the first schema of the search path.
pub(crate) async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await
}

/// Runs schema statements under an advisory lock, so two processes starting
/// at once do not race on `CREATE ... IF NOT EXISTS` (which is not atomic in
/// PostgreSQL and can fail with a unique violation on the catalog).
pub(crate) async fn create_schema(pool: &PgPool, statements: &[&str]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('refract.schema:' || current_schema()))")
        .execute(&mut *tx)
        .await?;
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(*statement)).execute(&mut *tx).await?;
    }
    tx.commit().await
}
