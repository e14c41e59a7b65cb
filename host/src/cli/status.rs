//! `refract status`: every projection's version, generation, progress and state.

use anyhow::Result;

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
    let status = refract::status(events.as_ref(), models.as_ref()).await?;
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
            s.state,
            s.last_error.unwrap_or_default()
        )?;
    }
    Ok(())
}
