//! Writing to standard output and standard error without panicking when the
//! reader has gone.
//!
//! `println!` panics when standard output is a pipe whose reader has exited
//! (`refract dead-letters NAME | head`). Commands write through [`outln!`]
//! instead, which returns the error. When the error is a broken pipe, `main`
//! exits quietly with success, as ripgrep does, because the reader already
//! has all it asked for. Notes to standard error go through [`errln!`], which
//! ignores failures because nothing is left to report them on.

use std::fmt;
use std::io::{self, Write};

/// Standard output could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct StdoutError(#[source] io::Error);

impl StdoutError {
    /// The reader of the pipe has gone: not a failure of the command.
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Writes one line to standard output.
pub fn line(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    writeln!(io::stdout().lock(), "{args}").map_err(StdoutError)
}

/// Writes one line to standard error, ignoring failures.
pub fn note(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// `println!` that returns a [`StdoutError`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

/// `eprintln!` that ignores a closed standard error instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::note(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_pipe_is_quiet() {
        assert!(StdoutError(io::ErrorKind::BrokenPipe.into()).is_broken_pipe());
        assert!(!StdoutError(io::ErrorKind::StorageFull.into()).is_broken_pipe());
    }
}
