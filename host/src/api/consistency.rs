//! Read-your-writes: wait until a projection's checkpoint reaches a position,
//! the one a read's consistency level names.

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::params::{Consistency, Level};
use crate::store::ProjectionRecord;

/// The position a read at `level` waits for, if any: a causal read's token,
/// or for a strong read the head of the log now, as the request arrives.
pub async fn target(state: &ApiState, level: Level) -> Result<Option<u64>, ApiError> {
    Ok(match level {
        Level::Eventual => None,
        Level::Causal(position) => Some(position),
        Level::Strong => Some(state.source().head().await?),
    })
}

/// Waits until `projection` has committed every event up to the position
/// its consistency level names (its checkpoint passes events it does not
/// subscribe to as well), or the timeout passes. An eventual read only
/// checks the projection exists.
/// `check` runs on the first registry read, so a request for an unknown
/// collection fails at once instead of after the wait. Returns the
/// projection's registry record as last read.
pub async fn wait_for(
    state: &ApiState,
    projection: &str,
    c: Consistency,
    check: impl Fn(&ProjectionRecord) -> Result<(), ApiError>,
) -> Result<ProjectionRecord, ApiError> {
    let Some(min_position) = target(state, c.level).await? else {
        let record = state.models().projection(projection).await?;
        check(&record)?;
        return Ok(record);
    };
    // Subscribe before reading the checkpoint: a commit landing between the
    // read and the subscription would otherwise never wake us.
    let mut notices = state.subscribe();
    let deadline = Instant::now() + c.timeout;
    let mut record = state.models().projection(projection).await?;
    check(&record)?;
    loop {
        if record.checkpoint >= min_position {
            return Ok(record);
        }
        let timed_out = |checkpoint| ApiError::ConsistencyTimeout {
            projection: projection.to_owned(),
            min_position,
            checkpoint,
            timeout_ms: c.timeout.as_millis() as u64,
        };
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Err(_elapsed) => return Err(timed_out(record.checkpoint)),
            Ok(Ok(n)) if n.projection == projection => {
                if n.generation == record.key.generation {
                    record.checkpoint = record.checkpoint.max(n.checkpoint);
                } else {
                    // A new generation started (or our read predates it): its
                    // checkpoint is not comparable, so read the registry again.
                    record = state.models().projection(projection).await?;
                }
            }
            Ok(Ok(_other_projection)) => {}
            // Missed notices may include ours: the registry has the truth.
            Ok(Err(RecvError::Lagged(_))) => record = state.models().projection(projection).await?,
            // The host is gone, so nothing will move the checkpoint any more.
            Ok(Err(RecvError::Closed)) => {
                record = state.models().projection(projection).await?;
                if record.checkpoint >= min_position {
                    return Ok(record);
                }
                return Err(timed_out(record.checkpoint));
            }
        }
    }
}
