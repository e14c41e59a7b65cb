//! "All read models ready": whether every active projection has committed
//! the events up to a position. The HTTP API (`GET /ready`, the host-wide
//! change feed) and `refract wait` both judge it here, from registry records.
//!
//! Only active generations count: they are what reads are served from. A
//! building generation is not read until it is swapped in, and by then it
//! has caught up to the head. A projection's checkpoint moves past events
//! it does not subscribe to (a runner commits the empty batch up to the
//! head), so a projection that subscribes to nothing new still gets there.

use serde::Serialize;

use crate::store::{ProjectionRecord, ProjectionState, Role};

/// Where one active projection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionCheckpoint {
    /// Projection name.
    pub projection: String,
    /// Its active generation.
    pub generation: u32,
    /// Position of the last event it committed.
    pub checkpoint: u64,
    /// Why it faulted; only on a faulted projection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProjectionCheckpoint {
    fn of(r: &ProjectionRecord) -> Self {
        Self {
            projection: r.key.projection.clone(),
            generation: r.key.generation,
            checkpoint: r.checkpoint,
            error: (r.state == ProjectionState::Faulted).then(|| r.last_error.clone().unwrap_or_default()),
        }
    }
}

impl std::fmt::Display for ProjectionCheckpoint {
    /// `name (generation G, checkpoint C)`, with `: error` for a faulted one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (generation {}, checkpoint {}", self.projection, self.generation, self.checkpoint)?;
        match &self.error {
            Some(e) => write!(f, ": {e})"),
            None => write!(f, ")"),
        }
    }
}

/// The projections in a message: each as it displays, comma-separated.
pub fn list(projections: &[ProjectionCheckpoint]) -> String {
    projections.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The verdict on a set of active projections for one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every active projection is at the position or beyond (each one's checkpoint).
    Ready(Vec<ProjectionCheckpoint>),
    /// Some are behind and none is faulted: waiting may help.
    Behind(Vec<ProjectionCheckpoint>),
    /// Some active projection is faulted: it will not move until someone
    /// retries it, so waiting cannot help. A faulted projection counts even
    /// if it is past the position, because a read model that stopped
    /// following the log is not ready for the next write either.
    Faulted(Vec<ProjectionCheckpoint>),
}

/// Where each active generation among `records` is.
pub fn active_checkpoints<'a>(records: impl IntoIterator<Item = &'a ProjectionRecord>) -> Vec<ProjectionCheckpoint> {
    records.into_iter().filter(|r| r.role == Role::Active).map(ProjectionCheckpoint::of).collect()
}

/// Judges the active generations among `records` against `min_position`.
/// With no active projection at all, there is nothing to wait for: ready.
pub fn readiness<'a>(records: impl IntoIterator<Item = &'a ProjectionRecord>, min_position: u64) -> Readiness {
    let active = active_checkpoints(records);
    let faulted: Vec<_> = active.iter().filter(|p| p.error.is_some()).cloned().collect();
    if !faulted.is_empty() {
        return Readiness::Faulted(faulted);
    }
    let behind: Vec<_> = active.iter().filter(|p| p.checkpoint < min_position).cloned().collect();
    if behind.is_empty() { Readiness::Ready(active) } else { Readiness::Behind(behind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::Manifest;
    use crate::store::ModelKey;

    fn record(name: &str, generation: u32, role: Role, checkpoint: u64, state: ProjectionState) -> ProjectionRecord {
        ProjectionRecord {
            key: ModelKey { projection: name.into(), generation },
            role,
            manifest: Manifest::unknown(name),
            module_hash: String::new(),
            source: String::new(),
            checkpoint,
            state,
            last_error: (state == ProjectionState::Faulted).then(|| "boom".to_owned()),
            created_at: 0,
            activated_at: None,
            updated_at: 0,
        }
    }

    #[test]
    fn only_active_generations_count_and_a_fault_wins() {
        use ProjectionState::*;
        let a = record("a", 1, Role::Active, 10, Running);
        let b = record("b", 2, Role::Active, 7, Stopped);
        let shadow = record("b", 3, Role::Building, 1, Running);
        let failed = record("c", 1, Role::Failed, 0, Faulted);

        let all = [a.clone(), b.clone(), shadow.clone(), failed.clone()];
        assert!(matches!(readiness(&all, 7), Readiness::Ready(v) if v.len() == 2));
        match readiness(&all, 8) {
            Readiness::Behind(v) => assert_eq!((v.len(), v[0].projection.as_str(), v[0].checkpoint), (1, "b", 7)),
            other => panic!("{other:?}"),
        }
        let broken = record("a", 1, Role::Active, 10, Faulted);
        match readiness(&[broken, b], 0) {
            Readiness::Faulted(v) => assert_eq!((v[0].projection.as_str(), v[0].error.as_deref()), ("a", Some("boom"))),
            other => panic!("{other:?}"),
        }
        assert_eq!(readiness(&[shadow, failed], 99), Readiness::Ready(vec![]), "nothing active: nothing to wait for");
    }
}
