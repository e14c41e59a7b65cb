//! `refract wait`: wait until every active projection has committed the
//! events up to a position, as `GET /ready` does.
//!
//! It reads the registry straight from the store, as `refract status` does,
//! and polls it. That works whether or not the host serves HTTP (`--no-http`,
//! `--exit-when-caught-up`, a host on another machine sharing a PostgreSQL
//! store) and needs no address; the cost, a registry read every
//! [`POLL`], is small for a command that waits for seconds at most.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use refract::{Readiness, list_checkpoints as list};
use serde_json::json;

use super::Stores;
use super::output::outln;

/// How often the registry is read while waiting.
const POLL: Duration = Duration::from_millis(20);

#[derive(clap::Args)]
pub struct WaitArgs {
    /// The position to wait for: the `position` an append returned.
    /// Default: the head of the event log now.
    #[arg(long, value_name = "N")]
    min_position: Option<u64>,
    /// Give up after this long (exit code 1, naming the projections still behind).
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    timeout_ms: u64,
}

/// Prints `{"ready": true, "min_position": N, "projections": [...]}` once
/// every active projection is at the position; fails at once naming any
/// faulted projection, or after the timeout naming the ones still behind.
pub async fn wait(data: &Stores, WaitArgs { min_position, timeout_ms }: WaitArgs) -> Result<()> {
    let models = data.open_models().await?;
    let min_position = match min_position {
        Some(position) => position,
        None => data.open_events().await?.head().await?,
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        match refract::readiness(&models.projections().await?, min_position) {
            Readiness::Ready(projections) => {
                let ready = json!({ "ready": true, "min_position": min_position, "projections": projections });
                outln!("{ready}")?;
                return Ok(());
            }
            Readiness::Faulted(faulted) => {
                bail!("faulted projections will not reach position {min_position} until retried: {}", list(&faulted))
            }
            Readiness::Behind(behind) if Instant::now() >= deadline => {
                bail!(
                    "not every projection reached position {min_position} within {timeout_ms} ms; behind: {}",
                    list(&behind)
                )
            }
            Readiness::Behind(_) => tokio::time::sleep(POLL).await,
        }
    }
}
