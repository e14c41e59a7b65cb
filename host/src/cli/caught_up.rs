//! What `refract run --exit-when-caught-up` concludes: the run is a batch job
//! that CI gates on, so it succeeds only when every plugin loaded and every
//! projection reached the head. Anything else fails the job with one line
//! that says what went wrong; the log above it has the details.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Result, bail};
use refract::{Host, HostError, ProjectionState};

/// How much of one error the summary line quotes.
const REASON_CHARS: usize = 160;

/// Fails unless the caught-up run was clean: at least one projection, no
/// plugin rejected, none faulted.
pub fn verdict(host: &Host, rejected: &[HostError], plugins: &Path) -> Result<()> {
    let faulted: Vec<(String, String)> = host
        .projections()
        .into_iter()
        .filter_map(|name| {
            // Any generation: a rebuild that faulted beside a serving one is a broken module too.
            let p = host.generations(&name).into_iter().find(|p| p.state == ProjectionState::Faulted)?;
            Some((name, p.last_error.unwrap_or_default()))
        })
        .collect();
    if rejected.is_empty() && faulted.is_empty() {
        if host.projections().is_empty() {
            bail!(
                "no plugins in {} and none deployed to the store: nothing was projected (add *.wasm files, pass --plugins DIR, or `refract deploy FILE`)",
                plugins.display()
            );
        }
        return Ok(());
    }
    let mut summary = String::from("not every projection caught up:");
    if !faulted.is_empty() {
        let _ = write!(summary, " {} faulted (", plural(faulted.len(), "projection"));
        let list: Vec<String> = faulted.iter().map(|(name, error)| format!("{name}: {}", short(error))).collect();
        let _ = write!(summary, "{})", list.join("; "));
    }
    if !rejected.is_empty() {
        if !faulted.is_empty() {
            summary.push(',');
        }
        let _ = write!(summary, " {} rejected (", plural(rejected.len(), "plugin"));
        let list: Vec<String> = rejected.iter().map(|e| short(&e.to_string())).collect();
        let _ = write!(summary, "{})", list.join("; "));
    }
    bail!("{summary}")
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// The first line of an error (a trap's message is followed by a wasm
/// backtrace), cut to a length that keeps the summary one readable line.
fn short(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_bounded_line() {
        assert_eq!(short("trap: unreachable\nwasm backtrace:\n  0: f"), "trap: unreachable");
        let long = "é".repeat(500);
        assert_eq!(short(&long).chars().count(), REASON_CHARS + 1);
        assert_eq!(short(""), "");
    }

    #[test]
    fn counts_read_as_english() {
        assert_eq!(plural(1, "plugin"), "1 plugin");
        assert_eq!(plural(2, "plugin"), "2 plugins");
    }
}
