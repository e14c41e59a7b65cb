//! A statement stepped through SQLite's C API on a connection sqlx has
//! lent out (`lock_handle`), for the one read hot enough to need it: sqlx's
//! SQLite driver hands each row from its worker thread to the caller on
//! its own, and the JSON-aggregate workaround made SQLite quote every
//! payload and serde unquote it again (BENCHMARKS.md).
//!
//! The unsafe code is confined here: a [`Statement`] borrows the locked
//! connection, so it cannot outlive it or race sqlx's worker, and
//! finalizes itself when dropped, so the connection goes back to the pool
//! with nothing left open.

use std::ffi::{CStr, c_char, c_int};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;
use sqlx::sqlite::LockedSqliteHandle;

/// An error SQLite reported, with its result code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQLite error {code}: {message}")]
pub(crate) struct SqliteError {
    /// SQLite's (extended) result code.
    pub code: i32,
    /// What SQLite or the column reader said.
    pub message: String,
}

/// One prepared statement on a locked connection.
///
/// ```ignore
/// let mut conn = pool.acquire().await?;
/// let mut handle = conn.lock_handle().await?;
/// let mut stmt = Statement::prepare(&mut handle, "SELECT position FROM events WHERE position > ?")?;
/// stmt.bind_i64(1, 0)?;
/// while stmt.step()? {
///     let position = stmt.column_i64(0);
/// }
/// ```
pub(crate) struct Statement<'c> {
    db: NonNull<ffi::sqlite3>,
    raw: NonNull<ffi::sqlite3_stmt>,
    /// Ties the statement to the borrow of the locked connection.
    _conn: PhantomData<&'c mut ()>,
}

impl<'c> Statement<'c> {
    /// Compiles `sql` on the locked connection.
    pub fn prepare(handle: &'c mut LockedSqliteHandle<'_>, sql: &str) -> Result<Self, SqliteError> {
        let db = handle.as_raw_handle();
        let len = c_int::try_from(sql.len())
            .map_err(|_| SqliteError { code: ffi::SQLITE_TOOBIG, message: "statement too long".into() })?;
        let mut raw = ptr::null_mut();
        // SAFETY: `db` is a live connection the locked handle keeps from
        // sqlx's worker for as long as `'c`; the SQL is passed with its
        // length, so it needs no terminating NUL.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db.as_ptr(), sql.as_ptr().cast::<c_char>(), len, &mut raw, ptr::null_mut())
        };
        let db_error = error_of(db, rc);
        match NonNull::new(raw) {
            Some(raw) if rc == ffi::SQLITE_OK => Ok(Self { db, raw, _conn: PhantomData }),
            Some(raw) => {
                // SAFETY: a statement SQLite handed out, finalized once.
                unsafe { ffi::sqlite3_finalize(raw.as_ptr()) };
                Err(db_error)
            }
            None if rc == ffi::SQLITE_OK => Err(SqliteError { code: rc, message: "empty statement".into() }),
            None => Err(db_error),
        }
    }

    /// Binds an integer to the 1-based parameter `index`.
    pub fn bind_i64(&mut self, index: usize, value: i64) -> Result<(), SqliteError> {
        // SAFETY: the statement is live; SQLite checks the index.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.raw.as_ptr(), param(index)?, value) };
        self.check(rc)
    }

    /// Binds text to the 1-based parameter `index`; SQLite keeps a copy.
    pub fn bind_text(&mut self, index: usize, value: &str) -> Result<(), SqliteError> {
        let len = c_int::try_from(value.len())
            .map_err(|_| SqliteError { code: ffi::SQLITE_TOOBIG, message: "parameter too long".into() })?;
        // SAFETY: the statement is live; SQLITE_TRANSIENT makes SQLite copy
        // the bytes before this returns, so `value` need not outlive it.
        let rc = unsafe {
            ffi::sqlite3_bind_text(
                self.raw.as_ptr(),
                param(index)?,
                value.as_ptr().cast::<c_char>(),
                len,
                ffi::SQLITE_TRANSIENT(),
            )
        };
        self.check(rc)
    }

    /// Binds text, or NULL for `None`, to the 1-based parameter `index`.
    pub fn bind_opt_text(&mut self, index: usize, value: Option<&str>) -> Result<(), SqliteError> {
        match value {
            Some(value) => self.bind_text(index, value),
            None => {
                // SAFETY: the statement is live; SQLite checks the index.
                let rc = unsafe { ffi::sqlite3_bind_null(self.raw.as_ptr(), param(index)?) };
                self.check(rc)
            }
        }
    }

    /// Moves to the next row: `true` while there is one.
    pub fn step(&mut self) -> Result<bool, SqliteError> {
        // SAFETY: the statement is live and used from one thread at a time.
        match unsafe { ffi::sqlite3_step(self.raw.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(error_of(self.db, rc)),
        }
    }

    /// Readies the statement to run again with new bindings (the old ones
    /// stay until rebound).
    pub fn reset(&mut self) -> Result<(), SqliteError> {
        // SAFETY: the statement is live.
        let rc = unsafe { ffi::sqlite3_reset(self.raw.as_ptr()) };
        self.check(rc)
    }

    /// Rows the connection's last finished INSERT, UPDATE or DELETE changed.
    pub fn changes(&self) -> u64 {
        // SAFETY: the connection is live and locked.
        unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) as u64 }
    }

    /// The integer in column `index` of the current row.
    pub fn column_i64(&self, index: c_int) -> i64 {
        // SAFETY: called only after `step` returned a row; SQLite converts
        // other types and returns 0 for a column out of range.
        unsafe { ffi::sqlite3_column_int64(self.raw.as_ptr(), index) }
    }

    /// The text in column `index` of the current row; an error for NULL or
    /// bytes that are not UTF-8 (SQLite does not check what it stores).
    pub fn column_str(&self, index: c_int) -> Result<&str, SqliteError> {
        // SAFETY: called only after `step` returned a row. The pointer stays
        // valid until the next step, reset or finalize, all of which need
        // `&mut self`, which the returned borrow of `self` rules out.
        // `sqlite3_column_bytes` is called after `sqlite3_column_text`, as
        // SQLite's documentation requires.
        let bytes = unsafe {
            let text = ffi::sqlite3_column_text(self.raw.as_ptr(), index);
            if text.is_null() {
                return Err(SqliteError { code: ffi::SQLITE_MISMATCH, message: format!("column {index} is NULL") });
            }
            let len = ffi::sqlite3_column_bytes(self.raw.as_ptr(), index);
            std::slice::from_raw_parts(text, usize::try_from(len).unwrap_or(0))
        };
        std::str::from_utf8(bytes).map_err(|e| SqliteError {
            code: ffi::SQLITE_MISMATCH,
            message: format!("column {index} is not UTF-8 text ({e})"),
        })
    }

    /// The text in column `index` of the current row, `None` for NULL.
    pub fn column_opt_str(&self, index: c_int) -> Result<Option<&str>, SqliteError> {
        // SAFETY: called only after `step` returned a row.
        if unsafe { ffi::sqlite3_column_type(self.raw.as_ptr(), index) } == ffi::SQLITE_NULL {
            return Ok(None);
        }
        self.column_str(index).map(Some)
    }

    fn check(&self, rc: c_int) -> Result<(), SqliteError> {
        if rc == ffi::SQLITE_OK { Ok(()) } else { Err(error_of(self.db, rc)) }
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized exactly once; the connection is still locked.
        unsafe { ffi::sqlite3_finalize(self.raw.as_ptr()) };
    }
}

/// Runs one statement that returns no rows (`COMMIT`, `ROLLBACK`).
pub(crate) fn execute(handle: &mut LockedSqliteHandle<'_>, sql: &str) -> Result<(), SqliteError> {
    Statement::prepare(handle, sql)?.step().map(drop)
}

/// `BEGIN IMMEDIATE` without waiting: `false`, with nothing begun, when
/// another connection holds the write lock. The caller then waits where a
/// wait does not hold its thread. The connection's busy timeout is set back
/// either way.
pub(crate) fn begin_immediate_now(handle: &mut LockedSqliteHandle<'_>) -> Result<bool, SqliteError> {
    let db = handle.as_raw_handle();
    // SAFETY: the connection is live and locked to this thread.
    unsafe { ffi::sqlite3_busy_timeout(db.as_ptr(), 0) };
    let begun = execute(handle, "BEGIN IMMEDIATE");
    let ms = c_int::try_from(super::BUSY_TIMEOUT.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: as above.
    unsafe { ffi::sqlite3_busy_timeout(db.as_ptr(), ms) };
    match begun {
        Ok(()) => Ok(true),
        Err(e) if e.code & 0xff == ffi::SQLITE_BUSY => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the connection is inside a transaction.
pub(crate) fn in_transaction(handle: &mut LockedSqliteHandle<'_>) -> bool {
    // SAFETY: the connection is live and locked.
    unsafe { ffi::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) == 0 }
}

fn param(index: usize) -> Result<c_int, SqliteError> {
    c_int::try_from(index).map_err(|_| SqliteError { code: ffi::SQLITE_RANGE, message: "too many parameters".into() })
}

/// The connection's message for a failed call.
fn error_of(db: NonNull<ffi::sqlite3>, rc: c_int) -> SqliteError {
    // SAFETY: the connection is live; SQLite owns the message, copied at once.
    let message = unsafe {
        let msg = ffi::sqlite3_errmsg(db.as_ptr());
        if msg.is_null() { String::from("unknown error") } else { CStr::from_ptr(msg).to_string_lossy().into_owned() }
    };
    SqliteError { code: rc, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection as _;
    use sqlx::sqlite::SqliteConnection;

    #[tokio::test]
    async fn steps_rows_binds_and_reports_errors() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER, s TEXT)").execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1, 'one'), (2, 'twö'), (3, NULL), (4, CAST(x'ff' AS TEXT))")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut handle = conn.lock_handle().await.unwrap();

        let mut stmt = Statement::prepare(&mut handle, "SELECT n, s FROM t WHERE n > ? AND n <= ? ORDER BY n").unwrap();
        stmt.bind_i64(1, 0).unwrap();
        stmt.bind_i64(2, 2).unwrap();
        let mut rows = vec![];
        while stmt.step().unwrap() {
            rows.push((stmt.column_i64(0), stmt.column_str(1).unwrap().to_owned()));
        }
        assert_eq!(rows, [(1, "one".to_string()), (2, "twö".to_string())]);
        drop(stmt);

        let mut stmt = Statement::prepare(&mut handle, "SELECT s FROM t WHERE n = ?").unwrap();
        stmt.bind_i64(1, 3).unwrap();
        assert!(stmt.step().unwrap());
        assert!(stmt.column_str(0).unwrap_err().message.contains("NULL"));
        assert_eq!(stmt.column_opt_str(0).unwrap(), None);
        drop(stmt);

        let mut stmt = Statement::prepare(&mut handle, "SELECT s FROM t WHERE s = ?").unwrap();
        stmt.bind_text(1, "one").unwrap();
        assert!(stmt.step().unwrap());
        assert_eq!(stmt.column_str(0).unwrap(), "one");
        assert_eq!(stmt.column_opt_str(0).unwrap(), Some("one"));
        assert!(!stmt.step().unwrap());
        drop(stmt);

        let mut stmt = Statement::prepare(&mut handle, "SELECT s FROM t WHERE n = 4").unwrap();
        assert!(stmt.step().unwrap());
        assert!(stmt.column_str(0).unwrap_err().message.contains("UTF-8"));
        drop(stmt);

        let err = Statement::prepare(&mut handle, "SELECT nope FROM t").err().unwrap();
        assert_eq!(err.code, ffi::SQLITE_ERROR);
        assert!(err.message.contains("nope"), "{err}");
        let mut stmt = Statement::prepare(&mut handle, "SELECT ?").unwrap();
        assert_eq!(stmt.bind_i64(2, 1).unwrap_err().code, ffi::SQLITE_RANGE);
        drop(stmt);

        // One statement run again and again, as the change log appends:
        // reset keeps the other bindings, and `changes` counts a run that
        // inserted nothing as 0.
        let mut stmt = Statement::prepare(&mut handle, "INSERT INTO t (n, s) SELECT ?1, ?2 WHERE ?1 % 2 = 0").unwrap();
        let mut changed = vec![];
        for (n, s) in [(10, Some("ten")), (11, Some("eleven")), (12, None)] {
            stmt.bind_i64(1, n).unwrap();
            stmt.bind_opt_text(2, s).unwrap();
            assert!(!stmt.step().unwrap());
            changed.push(stmt.changes());
            stmt.reset().unwrap();
        }
        assert_eq!(changed, [1, 0, 1]);
        drop(stmt);
        drop(handle);

        // The connection is usable through sqlx again.
        let rows: Vec<(i64, Option<String>)> =
            sqlx::query_as("SELECT n, s FROM t WHERE n >= 10 ORDER BY n").fetch_all(&mut conn).await.unwrap();
        assert_eq!(rows, [(10, Some("ten".to_string())), (12, None)]);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut conn).await.unwrap();
        assert_eq!(n, 6);
    }
}
