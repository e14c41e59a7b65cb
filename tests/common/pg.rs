//! PostgreSQL for tests: every test gets a fresh schema in `DATABASE_URL`,
//! so tests run in parallel without seeing each other's tables.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// `DATABASE_URL`, or a panic: a test that needs PostgreSQL fails, never skips.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: PostgreSQL tests need it, e.g. \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/test (.ci/run sets it)"
        )
    })
}

/// Creates a new schema and returns a URL whose connections use it
/// (`options[search_path]`, which sqlx sends as `-c search_path=...`).
pub async fn fresh_schema() -> String {
    fresh_schema_named().await.0
}

/// Like [`fresh_schema`], also returning the schema's name.
pub async fn fresh_schema_named() -> (String, String) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let url = database_url();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let schema = format!(
        "refract_test_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL={url} is unreachable: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{separator}options[search_path]={schema}"), schema)
}
