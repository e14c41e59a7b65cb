//! `refract completions SHELL` and `refract man`: generated from the same
//! clap definitions as the parser, so they cannot drift from it.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Command;

/// Writes `shell`'s completion script for `cmd` to stdout.
pub fn completions(mut cmd: Command, shell: clap_complete::Shell) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "refract", &mut out);
    write(&out)
}

/// Writes the man page (roff) for `cmd` to stdout.
pub fn man(cmd: Command) -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).context("rendering the man page")?;
    write(&out)
}

/// Writes through the pipe-safe stdout, so `refract man | head` ends quietly.
fn write(bytes: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(bytes);
    super::output::outln!("{}", text.trim_end())?;
    std::io::stdout().flush().ok();
    Ok(())
}
