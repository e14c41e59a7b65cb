//! PostgreSQL connection setup shared by the event store and the read-model store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Connections per pool: enough for a host's runners, readers and HTTP
/// handlers, small enough that several hosts share one server.
const MAX_CONNECTIONS: u32 = 8;
/// How long to wait for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a store waits for the server to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a pool on a `postgres://` URL.
///
/// The URL may choose a schema with `?options[search_path]=name` (or
/// `?options=-c%20search_path%3Dname`); the tables of both stores are created
/// unqualified, so they land in the first schema of the search path.
///
/// One connection is made first, on its own: the pool retries a refused
/// connection silently until its acquire timeout, so a wrong host or port
/// would surface only after 30 s as "pool timed out", naming neither. The
/// probe fails within [`CONNECT_TIMEOUT`] with the server's address and
/// what went wrong.
pub(crate) async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    probe(&options).await?;
    PgPoolOptions::new().max_connections(MAX_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options).await
}

/// Connects once and closes, failing fast with the server's address.
async fn probe(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let failed = |kind, why: String| {
        let at = format!("{}:{}", options.get_host(), options.get_port());
        sqlx::Error::Io(std::io::Error::new(kind, format!("cannot connect to PostgreSQL at {at}: {why}")))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Io(e))) => Err(failed(e.kind(), e.to_string())),
        // The server answered (a wrong password, an unknown database): its words, with its address.
        Ok(Err(e)) => Err(failed(std::io::ErrorKind::Other, e.to_string())),
        Err(_) => {
            Err(failed(std::io::ErrorKind::TimedOut, format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))
        }
    }
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
