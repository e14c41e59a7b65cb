//! Issue 22, errors a person can act on: a user error prints as `error:`
//! plus its causes, each once, without a backtrace even under
//! `RUST_BACKTRACE=1`; an unreachable PostgreSQL is named and reported in
//! seconds, not after a silent pool timeout.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::common;
use common::cli::{output, refract, succeed};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No frames, no "Stack backtrace:", whatever the environment asks for.
fn assert_no_backtrace(text: &str) {
    assert!(!text.to_lowercase().contains("backtrace"), "{text}");
    assert!(!text.lines().any(|l| l.trim_start().starts_with("0: ")), "{text}");
}

#[test]
fn a_version_conflict_prints_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let append = |data: &std::path::Path| {
        let mut cmd = refract(data);
        cmd.args(["append", "account-1", "AccountOpened", "{}", "--expected-version", "no-stream"]);
        cmd.env("RUST_BACKTRACE", "1").env("RUST_LIB_BACKTRACE", "1");
        cmd
    };
    succeed(&mut append(&data));
    let out = output(&mut append(&data));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_no_backtrace(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("error: "), "{text}");
    assert!(lines.iter().all(|l| l.starts_with("error: ") || l.starts_with("caused by: ")), "{text}");
    assert!(text.contains("account-1"), "{text}");
}

#[test]
fn each_cause_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    succeed(refract(&data).args(["append", "a-1", "T", "{}"]));
    // A taken port: the context and the OS error, each on its own line, once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let out =
        output(refract(&data).args(["run", "--http", &addr, "--plugins"]).arg(&plugins).env("RUST_BACKTRACE", "1"));
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_no_backtrace(&text);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ") || l.starts_with("caused by: ")).collect();
    assert_eq!(errors.len(), 2, "{text}");
    assert!(errors[0].starts_with("error: binding the HTTP API to ") && errors[0].contains(&addr), "{text}");
    assert!(errors[1].starts_with("caused by: ") && errors[1].to_lowercase().contains("in use"), "{text}");
    for line in &errors {
        let cause = line.split_once(": ").unwrap().1;
        assert_eq!(text.matches(cause).count(), 1, "`{cause}` printed more than once:\n{text}");
    }
}

#[test]
fn an_unreachable_postgres_is_named_and_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://postgres@127.0.0.1:1/refract";
    for args in [vec!["append", "a-1", "T", "{}"], vec!["status"]] {
        let started = Instant::now();
        let out = output(refract(dir.path()).args(["--events", url, "--store", url]).args(&args));
        let took = started.elapsed();
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(took < Duration::from_secs(15), "{args:?} took {took:?} to fail: {text}");
        assert!(text.contains("127.0.0.1:1"), "{args:?} must name the server: {text}");
        assert_no_backtrace(&text);
    }
}

/// A URL whose search path selects a schema that does not exist is named,
/// with the statement that creates it; once created, the same URL works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_schema_is_named_with_how_to_create_it() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    // A fresh schema, dropped at once: its name is unique, and the guard
    // drops it again (with what the last step put in it) at the end.
    let schema = common::pg::fresh_schema().await;
    let mut conn = sqlx::PgConnection::connect(&common::pg::database_url()).await.unwrap();
    let drop = format!("DROP SCHEMA {} CASCADE", schema.name);
    sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await.unwrap();

    let server = common::pg::database_url().split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let expected = format!(
        "the URL selects schema `{name}`, which does not exist in the database at {server}: create it with `CREATE SCHEMA {name}` (or choose another with `options[search_path]=`)",
        name = schema.name
    );
    let url = schema.url.as_str();
    for args in [vec!["append", "a-1", "T", "{}"], vec!["status"]] {
        let out = output(refract(dir.path()).args(["--events", url, "--store", url]).args(&args));
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains(&expected), "{args:?}: {text}");
        assert!(!text.contains("no schema has been selected"), "{args:?}: {text}");
        assert_no_backtrace(&text);
    }

    let create = format!("CREATE SCHEMA {}", schema.name);
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let position = succeed(refract(dir.path()).args(["--events", url, "--store", url, "append", "a-1", "T", "{}"]));
    assert_eq!(position.trim(), "1");
}
