//! `GET /ready`: wait until every active projection has committed the
//! events up to a position, and the tracking of the active generations'
//! checkpoints that it shares with the host-wide change feed.

use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::params::ReadyParams;
use crate::projection::runner::CommitNotice;
use crate::ready::{ProjectionCheckpoint, Readiness, active_checkpoints, readiness};
use crate::store::{ProjectionRecord, Role};

/// How often a waiting `/ready` reads the registry again although no commit
/// arrived: a runner that faults sends no notice, and a wait should end on
/// a fault soon after it, not at its timeout.
const RECHECK: Duration = Duration::from_millis(50);

/// The registry's generations, their checkpoints kept current from commit
/// notices between reads of the registry.
pub struct Active {
    records: Vec<ProjectionRecord>,
}

impl Active {
    /// Reads the registry.
    pub async fn read(state: &ApiState) -> Result<Self, ApiError> {
        Ok(Self { records: state.models().projections().await? })
    }

    /// Moves a generation's checkpoint to the notice's. Returns false when
    /// the notice is about a generation the last read did not see (a new
    /// projection, a swap): then only a new read of the registry says which
    /// generations are active.
    pub fn apply(&mut self, n: &CommitNotice) -> bool {
        let known =
            self.records.iter_mut().find(|r| r.key.projection == n.projection && r.key.generation == n.generation);
        match known {
            Some(r) => {
                r.checkpoint = r.checkpoint.max(n.checkpoint);
                true
            }
            None => false,
        }
    }

    /// The verdict for `min_position`.
    pub fn readiness(&self, min_position: u64) -> Readiness {
        readiness(&self.records, min_position)
    }

    /// Where each active generation is.
    pub fn checkpoints(&self) -> Vec<ProjectionCheckpoint> {
        active_checkpoints(&self.records)
    }

    /// The one checkpoint every active generation is at, if they all are at
    /// the same one (and there is at least one).
    pub fn common_checkpoint(&self) -> Option<u64> {
        let mut active = self.records.iter().filter(|r| r.role == Role::Active).map(|r| r.checkpoint);
        let first = active.next()?;
        active.all(|c| c == first).then_some(first)
    }
}

/// `GET /ready?min_position=N&timeout_ms=T`.
pub async fn ready(State(s): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let params = ReadyParams::parse(raw.as_deref())?;
    let min_position = match params.min_position {
        Some(position) => position,
        // Without a token: everything written before the request.
        None => s.source().head().await?,
    };
    let projections = wait_ready(&s, min_position, params.timeout).await?;
    Ok(Json(json!({ "ready": true, "min_position": min_position, "projections": projections })))
}

/// Waits until every active projection's checkpoint is at `min_position`
/// or beyond; fails at once when one is faulted, and after `timeout` with
/// the ones still behind.
async fn wait_ready(
    state: &ApiState,
    min_position: u64,
    timeout: Duration,
) -> Result<Vec<ProjectionCheckpoint>, ApiError> {
    // Subscribe before reading the registry: a commit landing between the
    // two would otherwise never wake us.
    let mut notices = state.subscribe();
    let deadline = Instant::now() + timeout;
    let mut active = Active::read(state).await?;
    let mut recheck = tokio::time::interval_at(Instant::now() + RECHECK, RECHECK);
    let mut host_gone = false;
    loop {
        let behind = match active.readiness(min_position) {
            Readiness::Ready(projections) => return Ok(projections),
            Readiness::Faulted(faulted) => return Err(ApiError::Faulted { faulted }),
            Readiness::Behind(behind) => behind,
        };
        let timed_out = || ApiError::NotReady { min_position, timeout_ms: timeout.as_millis() as u64, behind };
        if host_gone {
            return Err(timed_out());
        }
        let reread = tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
            _ = recheck.tick() => true,
            received = notices.recv() => match received {
                Ok(n) => !active.apply(&n),
                // Missed notices may include the ones we wait for.
                Err(RecvError::Lagged(_)) => true,
                // Nothing will move a checkpoint any more: one last look.
                Err(RecvError::Closed) => {
                    host_gone = true;
                    true
                }
            },
        };
        if reread {
            active = Active::read(state).await?;
        }
    }
}
