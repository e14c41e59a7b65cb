//! How a failed command tells the user why.
//!
//! A user error (a taken port, a version conflict, a store that cannot be
//! reached) is a message, not a crash: it prints as `error: ...` and one
//! `caused by: ...` line per cause, without the backtrace that anyhow's
//! `{:?}` adds whenever `RUST_BACKTRACE` is set. Real bugs panic, and the
//! panic hook still prints their backtrace.
//!
//! Many errors quote their source in their own message (`cannot write
//! data/refract.pid: Permission denied`) and also return it as `source()`.
//! A cause already quoted by the line above it is not printed again, so each
//! cause is printed once.

/// The lines that describe `error`: `error: ...`, then `caused by: ...` per cause.
pub fn lines(error: &anyhow::Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || shown.iter().any(|s| s.contains(&text)) {
            continue;
        }
        let prefix = if out.is_empty() { "error" } else { "caused by" };
        out.push(format!("{prefix}: {text}"));
        shown.push(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write data/refract.pid: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied");
        let e = Err::<(), _>(Quoting(io)).context("starting the host").unwrap_err();
        assert_eq!(
            lines(&e),
            ["error: starting the host", "caused by: cannot write data/refract.pid: Permission denied"]
        );
    }

    #[test]
    fn a_plain_error_is_one_line() {
        assert_eq!(lines(&anyhow::anyhow!("no document `x`")), ["error: no document `x`"]);
    }
}
