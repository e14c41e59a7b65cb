//! Operator actions on a projection that go through the registry, so they
//! work the same from the CLI (with or without a host running) and over
//! HTTP: pause, resume and reset to a position.
//!
//! A pause is a registry flag. Every host looks at the registry once a
//! second and stops the runners of a paused projection (each commits what
//! it projected and releases its lease); no host starts one until the flag
//! is cleared, also after a restart. A reset moves the checkpoint of a
//! paused projection nobody runs, so no runner's commit can race it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::source::{EventSource, SourceError};
use crate::store::{ReadModelStore, StoreError};

/// How long [`reset`] and [`pause`] wait for running hosts to stop the projection.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The read-model store refused or failed (an unknown projection, a
    /// projection being rebuilt, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event store failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A reset to a position past the newest event.
    #[error("position {to} is past the head of the log ({head}): reset to a position from 0 to {head}")]
    BeyondHead {
        /// Position asked for.
        to: u64,
        /// Newest position.
        head: u64,
    },
    /// A host still ran the projection after the wait.
    #[error("projection `{projection}` was still running after {} s: the host did not stop it", waited.as_secs())]
    StillRunning {
        /// Projection.
        projection: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// What a pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paused {
    /// The projection.
    pub projection: String,
    /// Whether it is paused now.
    pub paused: bool,
    /// Whether this call changed that.
    pub changed: bool,
    /// Its checkpoint now (once stopped, for a pause).
    pub checkpoint: u64,
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// The projection.
    pub projection: String,
    /// The checkpoint before.
    pub from: u64,
    /// The checkpoint now.
    pub to: u64,
    /// Whether it stays paused (it was paused before the reset).
    pub paused: bool,
}

/// Whether no node runs any generation of `name`: none holds a live lease.
async fn stopped(models: &dyn ReadModelStore, name: &str) -> Result<bool, StoreError> {
    Ok(!models.leases().await?.iter().any(|l| l.key.projection == name && !l.expired))
}

/// Waits until no node runs the projection, up to `timeout`.
async fn wait_stopped(models: &dyn ReadModelStore, name: &str, timeout: Duration) -> Result<(), AdminError> {
    let started = Instant::now();
    while !stopped(models, name).await? {
        if started.elapsed() >= timeout {
            return Err(AdminError::StillRunning { projection: name.to_owned(), waited: timeout });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Pauses a projection and waits, up to `timeout`, until the hosts running
/// it have stopped it (committing what they had projected).
pub async fn pause(models: &dyn ReadModelStore, name: &str, timeout: Duration) -> Result<Paused, AdminError> {
    let changed = models.set_paused(name, true).await?;
    wait_stopped(models, name, timeout).await?;
    let checkpoint = models.projection(name).await?.checkpoint;
    Ok(Paused { projection: name.to_owned(), paused: true, changed, checkpoint })
}

/// Resumes a paused projection: hosts that have its module start it again
/// from its checkpoint within a second.
pub async fn resume(models: &dyn ReadModelStore, name: &str) -> Result<Paused, AdminError> {
    let changed = models.set_paused(name, false).await?;
    let checkpoint = models.projection(name).await?.checkpoint;
    Ok(Paused { projection: name.to_owned(), paused: false, changed, checkpoint })
}

/// Resets a projection's checkpoint to `to` (see
/// [`Registry::reset_checkpoint`](crate::Registry::reset_checkpoint)). A
/// projection that was not paused is paused for the reset and resumed
/// after it, so hosts running it pick it up from `to`.
pub async fn reset(
    source: &dyn EventSource,
    models: &dyn ReadModelStore,
    name: &str,
    to: u64,
    timeout: Duration,
) -> Result<Reset, AdminError> {
    // Unknown projection before anything else.
    models.projection(name).await?;
    let head = source.head().await?;
    if to > head {
        return Err(AdminError::BeyondHead { to, head });
    }
    let was_paused = models.is_paused(name).await?;
    if !was_paused {
        models.set_paused(name, true).await?;
    }
    let outcome = async {
        wait_stopped(models, name, timeout).await?;
        Ok::<_, AdminError>(models.reset_checkpoint(name, to).await?)
    }
    .await;
    if !was_paused {
        models.set_paused(name, false).await?;
    }
    Ok(Reset { projection: name.to_owned(), from: outcome?, to, paused: was_paused })
}
