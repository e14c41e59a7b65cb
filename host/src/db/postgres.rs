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

/// Connects once and closes, failing fast with the server's address, and
/// checks that the URL's search path selects a schema that exists.
async fn probe(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let at = format!("{}:{}", options.get_host(), options.get_port());
    let failed = |kind, why: String| {
        sqlx::Error::Io(std::io::Error::new(kind, format!("cannot connect to PostgreSQL at {at}: {why}")))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(mut conn)) => {
            let missing = missing_schema(&mut conn).await;
            let _ = conn.close().await;
            match missing? {
                None => Ok(()),
                Some(schema) => Err(sqlx::Error::Configuration(
                    format!(
                        "the URL selects schema `{schema}`, which does not exist in the database at {at}: create it with `CREATE SCHEMA {}` (or choose another with `options[search_path]=`)",
                        quoted(&schema)
                    )
                    .into(),
                )),
            }
        }
        Ok(Err(sqlx::Error::Io(e))) => Err(failed(e.kind(), e.to_string())),
        // The server answered (a wrong password, an unknown database): its words, with its address.
        Ok(Err(e)) => Err(failed(std::io::ErrorKind::Other, e.to_string())),
        Err(_) => {
            Err(failed(std::io::ErrorKind::TimedOut, format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))
        }
    }
}

/// The schema the tables would be created in when it does not exist:
/// `None` when the search path selects one that does. Without a schema,
/// the first `CREATE TABLE` failed with PostgreSQL's "no schema has been
/// selected to create in", naming neither the schema nor the remedy.
async fn missing_schema(conn: &mut sqlx::PgConnection) -> Result<Option<String>, sqlx::Error> {
    let current: Option<String> = sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut *conn).await?;
    if current.is_some() {
        return Ok(None);
    }
    let path: String = sqlx::query_scalar("SELECT current_setting('search_path')").fetch_one(&mut *conn).await?;
    // The first entry that names a schema: `"$user"` stands for the role's
    // own schema, which the URL did not choose.
    let schema = path
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .find(|s| !s.is_empty() && *s != "$user")
        .unwrap_or("public")
        .to_owned();
    Ok(Some(schema))
}

/// A schema name as `CREATE SCHEMA` takes it: bare when PostgreSQL would
/// read it back unchanged, else in double quotes (which keep capitals).
fn quoted(name: &str) -> String {
    let bare = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare { name.to_owned() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
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

#[cfg(test)]
mod tests {
    #[test]
    fn schema_names_are_quoted_only_when_needed() {
        assert_eq!(super::quoted("refract_1"), "refract_1");
        assert_eq!(super::quoted("Ledger"), "\"Ledger\"");
        assert_eq!(super::quoted("1st"), "\"1st\"");
        assert_eq!(super::quoted("a\"b"), "\"a\"\"b\"");
    }
}
