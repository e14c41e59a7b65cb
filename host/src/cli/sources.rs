//! `refract sources`: each table sync source's progress and errors;
//! `refract sources reset NAME`: re-sync a source from the start.

use std::sync::Arc;

use anyhow::{Context, Result};
use refract::{Config, SourceStatus, SyncError, SyncLog};

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct SourcesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<SourcesCommand>,
}

#[derive(clap::Subcommand)]
enum SourcesCommand {
    /// Forget a source's progress: the next pass (of a running host too) re-syncs
    /// the whole table, emitting every row again.
    Reset {
        /// The source's name, as in `[sources.NAME]`.
        name: String,
    },
}

/// The sync role of the event store, or why there is none.
pub async fn sync_log(data: &Stores) -> Result<Arc<dyn SyncLog>> {
    let (_, log) = data.open_events_with_sync().await?;
    let scheme = data.events_url().split("://").next().unwrap_or_default().to_owned();
    log.ok_or_else(|| SyncError::Unsupported(format!("{scheme}://")).into())
}

/// Prints the sources (those the config file names, and any the event store
/// keeps state for), or resets one.
pub async fn sources(data: &Stores, args: SourcesArgs, config: &Config) -> Result<()> {
    let log = sync_log(data).await?;
    if let Some(SourcesCommand::Reset { name }) = args.command {
        log.sync_reset(&name).await.with_context(|| format!("resetting source `{name}`"))?;
        outln!("source `{name}` reset: the next pass re-syncs it from the start")?;
        return Ok(());
    }
    let status = refract::source_status(log.as_ref(), &config.sources()?).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?)?;
        return Ok(());
    }
    print_table(&status)
}

/// The sources table, as `refract sources` and `refract status` print it.
pub fn print_table(status: &[SourceStatus]) -> Result<()> {
    outln!(
        "{:<20} {:<20} {:>10} {:>8} {:<32} {:<24} LAST ERROR",
        "SOURCE",
        "TABLE",
        "ROWS",
        "PENDING",
        "LAST VALUE",
        "LAST SYNC"
    )?;
    for s in status {
        let last_value = match &s.last_value {
            None => "-".to_owned(),
            Some(serde_json::Value::String(v)) => v.clone(),
            Some(v) => v.to_string(),
        };
        let last_sync = s.last_sync_ms.map_or_else(|| "-".to_owned(), |ms| refract_time(ms));
        let pending = s.rows_pending.map_or_else(|| "-".to_owned(), |n| n.to_string());
        outln!(
            "{:<20} {:<20} {:>10} {:>8} {:<32} {:<24} {}",
            s.name,
            s.table.as_deref().unwrap_or("-"),
            s.rows,
            pending,
            last_value,
            last_sync,
            s.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the millisecond.
fn refract_time(ms: u64) -> String {
    let text = refract::rfc3339_micros((ms as i64).saturating_mul(1000));
    // 2024-01-15T10:30:00.123456Z -> 2024-01-15T10:30:00.123Z
    format!("{}Z", &text[..text.len() - 4])
}
