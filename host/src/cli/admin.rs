//! `refract pause`, `refract resume` and `refract reset`: registry flags and
//! moves that a host running on the store picks up within a second, and
//! that a host started later honours.

use anyhow::Result;

use super::Stores;
use super::output::{errln, outln};

#[derive(clap::Args)]
pub struct PauseArgs {
    /// Projection name.
    projection: String,
}

#[derive(clap::Args)]
pub struct ResetArgs {
    /// Projection name.
    projection: String,
    /// The new checkpoint: a global position from 0 to the head. The events
    /// after it are projected again on top of the documents as they are
    /// (0 empties the read model first).
    #[arg(long, value_name = "POSITION")]
    to: u64,
}

/// Pauses a projection and waits until a host running it has stopped it.
pub async fn pause(data: &Stores, PauseArgs { projection }: PauseArgs) -> Result<()> {
    let models = data.open_models().await?;
    let p = refract::pause(models.as_ref(), &projection, refract::STOP_TIMEOUT).await?;
    let already = if p.changed { "" } else { " (it already was)" };
    outln!(
        "{projection}: paused at checkpoint {}{already}; `refract resume {projection}` starts it again",
        p.checkpoint
    )?;
    Ok(())
}

/// Resumes a paused projection.
pub async fn resume(data: &Stores, PauseArgs { projection }: PauseArgs) -> Result<()> {
    let models = data.open_models().await?;
    let p = refract::resume(models.as_ref(), &projection).await?;
    if !p.changed {
        outln!("{projection}: was not paused")?;
        return Ok(());
    }
    outln!("{projection}: resumed from checkpoint {}", p.checkpoint)?;
    if data.registry_is_local() && data.running_host().is_none() {
        errln!("note: no host is running on this data dir; the next `refract run` runs it");
    }
    Ok(())
}

/// Moves a projection's checkpoint.
pub async fn reset(data: &Stores, ResetArgs { projection, to }: ResetArgs) -> Result<()> {
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let r = refract::reset(events.as_ref(), models.as_ref(), &projection, to, refract::STOP_TIMEOUT).await?;
    let state = if r.paused { "it stays paused" } else { "it projects again from there" };
    outln!("{projection}: checkpoint moved from {} to {}; {state}", r.from, r.to)?;
    Ok(())
}
