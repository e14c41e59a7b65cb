//! `refract dead-letters` and `refract retry`: the events a projection
//! skipped or faulted on, and replaying them.

use anyhow::Result;

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct DeadLettersArgs {
    /// Projection name.
    projection: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RetryArgs {
    /// Projection name.
    projection: String,
}

/// Lists the dead letters of a projection's active generation.
pub async fn dead_letters(data: &Stores, DeadLettersArgs { projection, json }: DeadLettersArgs) -> Result<()> {
    let models = data.open_models().await?;
    let letters = models.dead_letters(&projection).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&letters)?)?;
        return Ok(());
    }
    outln!("{:>10}  {:<24} {:<20} {:<6} {:<12} ERROR", "POSITION", "STREAM", "TYPE", "REPLAY", "MODULE")?;
    for l in letters {
        outln!(
            "{:>10}  {:<24} {:<20} {:<6} {:<12} {}",
            l.position,
            l.stream_id,
            l.event_type,
            if l.replay { "yes" } else { "no" },
            &l.module_hash[..l.module_hash.len().min(12)],
            l.error
        )?;
    }
    Ok(())
}

/// Clears a fault and marks the dead letters for replay by the next `run`.
pub async fn retry(data: &Stores, RetryArgs { projection }: RetryArgs) -> Result<()> {
    let models = data.open_models().await?;
    let r = models.request_retry(&projection).await?;
    if r.cleared_fault {
        outln!("{projection}: fault cleared; the next `refract run` resumes from the checkpoint")?;
    } else {
        outln!("{projection}: was not faulted")?;
    }
    outln!("{projection}: {} dead letter(s) will be replayed by the next `refract run`", r.replays)?;
    Ok(())
}
