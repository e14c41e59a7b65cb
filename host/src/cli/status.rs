//! `refract status`: every projection's version, generation, progress and state.
//!
//! The registry says `running` until a host records the stop, so a host
//! killed with SIGKILL leaves `running` behind. On a SQLite data dir the
//! status tells that apart: a live host holds the data dir's lock, and a
//! `running` projection without one is shown as `stopped (host not
//! running)` (`"host": "gone"` in JSON). PostgreSQL stores can be served
//! by hosts on other machines, which no local lock shows: there `host` is
//! null until hosts hold leases in the store (the cluster issue).

use anyhow::Result;
use refract::{HostLiveness, ProjectionState};

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the status table (or JSON).
pub async fn status(data: &Stores, StatusArgs { json }: StatusArgs) -> Result<()> {
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let mut status = refract::status(events.as_ref(), models.as_ref()).await?;
    if data.registry_is_local() {
        let host = if data.running_host().is_some() { HostLiveness::Running } else { HostLiveness::Gone };
        for s in status.iter_mut().filter(|s| s.state == ProjectionState::Running) {
            s.host = Some(host);
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&status)?)?;
        return Ok(());
    }
    outln!(
        "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<8} LAST ERROR",
        "PROJECTION",
        "VERSION",
        "GEN",
        "ROLE",
        "CHECKPOINT",
        "HEAD",
        "LAG",
        "STATE"
    )?;
    for s in status {
        outln!(
            "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<8} {}",
            s.name,
            s.version,
            s.generation,
            s.role,
            s.checkpoint,
            s.head,
            s.lag,
            match s.host {
                Some(HostLiveness::Gone) => "stopped (host not running)".to_owned(),
                _ => s.state.to_string(),
            },
            s.last_error.unwrap_or_default()
        )?;
    }
    Ok(())
}
