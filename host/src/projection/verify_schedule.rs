//! `verify_every` in `refract.toml`: a running host verifies each of its
//! projections on that schedule, through the same [`Verifier`] as `refract
//! verify` and `POST /projections/{name}/verify`, and on a difference
//! applies the projection's `verify_policy` (see [`Verifier::verify_with`]).
//!
//! A host verifies the projections whose active generation it holds the
//! lease of: in a cluster, each projection is verified by the one node
//! that runs it, not by all of them. The first verification comes one
//! interval after the host starts (or the projection first shows up), and
//! the next one an interval after each ends, so a verification that takes
//! longer than the interval never piles up behind itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::projection::config::Config;
use crate::projection::verify::Verifier;
use crate::store::{ReadModelStore, Role};

/// How often the schedule looks for a verification that is due.
const TICK: Duration = Duration::from_millis(250);

/// Differences a scheduled verification lists in the log (the status and
/// metrics hold the counts; `refract verify` lists them all).
const LOGGED: usize = 10;

/// The schedule's task, aborted when dropped.
pub(crate) struct Schedule(JoinHandle<()>);

impl Drop for Schedule {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the schedule, unless no projection has `verify_every`.
pub(crate) fn start(
    verifier: Verifier,
    models: Arc<dyn ReadModelStore>,
    config: Arc<Config>,
    node: String,
) -> Option<Schedule> {
    config.verifies().then(|| Schedule(tokio::spawn(run(verifier, models, config, node))))
}

async fn run(verifier: Verifier, models: Arc<dyn ReadModelStore>, config: Arc<Config>, node: String) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (records, leases) = match (models.projections().await, models.leases().await) {
            (Ok(r), Ok(l)) => (r, l),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "verify schedule: could not read the registry");
                continue;
            }
        };
        for r in records.iter().filter(|r| r.role == Role::Active) {
            let name = &r.key.projection;
            let c = config.for_projection(name);
            let Some(every) = c.verify_every else { continue };
            let mine = leases.iter().any(|l| l.key == r.key && l.owner == node && !l.expired);
            let next = *due.entry(name.clone()).or_insert_with(|| Instant::now() + every);
            if !mine || Instant::now() < next {
                continue;
            }
            match verifier.verify_with(name, LOGGED, c.verify_policy).await {
                Ok(report) if report.clean() => tracing::info!(
                    projection = %name,
                    generation = report.generation,
                    checkpoint = report.checkpoint,
                    documents = report.documents,
                    elapsed_ms = report.elapsed_ms,
                    "verified: clean"
                ),
                Ok(report) => {
                    let ids: Vec<String> =
                        report.differences.iter().map(|d| format!("{}/{}", d.collection, d.id)).collect();
                    tracing::warn!(
                        projection = %name,
                        generation = report.generation,
                        checkpoint = report.checkpoint,
                        different = report.different,
                        first = %ids.join(" "),
                        "verified: documents differ from a rebuild of the active module"
                    );
                }
                // Faulted, being rebuilt: nothing to verify now.
                Err(e) if e.is_refusal() => tracing::debug!(projection = %name, error = %e, "verify skipped"),
                Err(e) => tracing::warn!(projection = %name, error = %e, "verify failed"),
            }
            due.insert(name.clone(), Instant::now() + every);
        }
    }
}
