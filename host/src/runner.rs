//! The per-projection loop: read a batch after the checkpoint, call the
//! plugin, commit the changes and the new checkpoint in one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::changes::{Change, ChangeSet};
use crate::event::Event;
use crate::plugin::{Instance, ModelAccess, Plugin, PluginError};
use crate::source::EventSource;
use crate::store::{ModelKey, ProjectionState, ReadModelStore, Role, StoreError};

/// How a projection batches events: the three sync strategies.
///
/// - realtime: `batch_size = 1`, each event is projected as soon as it is seen;
/// - batch: `batch_size = N` with `max_wait`, a partial batch waits up to
///   `max_wait` for more events before it is projected anyway;
/// - scheduled: `interval`, pending events are projected once per interval.
///
/// Catching up always uses full batches.
///
/// ```
/// use std::time::Duration;
/// let realtime = refract::SyncConfig::realtime();
/// assert_eq!(realtime.batch_size, 1);
/// let batched = refract::SyncConfig { batch_size: 500, max_wait: Duration::from_millis(200), ..Default::default() };
/// assert!(batched.interval.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Most events per `handle` call and per transaction.
    pub batch_size: usize,
    /// How long a partial batch waits for more events (0 = project at once).
    pub max_wait: Duration,
    /// Scheduled mode: after catching up, sleep this long before looking again.
    pub interval: Option<Duration>,
    /// How often an idle projection looks for new events.
    pub poll: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self { batch_size: 1000, max_wait: Duration::ZERO, interval: None, poll: Duration::from_millis(100) }
    }
}

impl SyncConfig {
    /// One event per batch, projected as soon as it is seen.
    pub fn realtime() -> Self {
        Self { batch_size: 1, ..Self::default() }
    }
}

/// What a runner reports after each commit or state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Generation this runner builds or serves.
    pub generation: u32,
    /// Active (serving) or building (shadow tables, swapped in at the head).
    pub role: Role,
    /// Position of the last committed event.
    pub checkpoint: u64,
    /// Running, faulted or stopped.
    pub state: ProjectionState,
    /// Why it faulted.
    pub last_error: Option<String>,
}

/// Sent after every committed batch: the "operations ready" signal that
/// HTTP consistency waits, change feeds and metrics listen to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitNotice {
    /// Projection that committed.
    pub projection: String,
    /// Its generation.
    pub generation: u32,
    /// Checkpoint after the commit.
    pub checkpoint: u64,
    /// Subscribed events in the batch.
    pub events: usize,
    /// Documents the batch changed, as `(collection, id)`.
    pub changed: Vec<(String, String)>,
    /// Time from reading the batch to the end of its commit, in microseconds.
    pub micros: u64,
}

/// A fault that stops a projection (other projections keep running).
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Change(#[from] crate::changes::ChangeError),
    #[error(transparent)]
    Store(StoreError),
}

/// Everything a runner needs; built by the host for each started projection.
pub(crate) struct Runner {
    pub plugin: Arc<Plugin>,
    pub key: ModelKey,
    pub role: Role,
    pub switches: Switches,
    pub checkpoint: u64,
    pub source: Arc<dyn EventSource>,
    pub store: Arc<dyn ReadModelStore>,
    pub sync: SyncConfig,
    pub progress: watch::Sender<Progress>,
    pub notices: broadcast::Sender<CommitNotice>,
    pub stop: watch::Receiver<bool>,
}

/// Stop switches of every runner of a host, so the runner that swaps a
/// generation in can stop the one it replaced.
pub(crate) type Switches = Arc<Mutex<HashMap<ModelKey, watch::Sender<bool>>>>;

/// Longest pause between retries of a failing store or source.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Runner {
    /// Runs until stopped or faulted.
    pub async fn run(mut self) {
        let name = self.key.projection.clone();
        let access = ModelAccess {
            store: self.store.clone(),
            key: self.key.clone(),
            collections: self.plugin.manifest().collections.iter().map(|c| c.name.clone()).collect::<HashSet<_>>(),
            runtime: tokio::runtime::Handle::current(),
        };
        let mut instance: Option<Instance> = None;
        let mut partial_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        tracing::info!(projection = %name, generation = self.key.generation, checkpoint = self.checkpoint, "projection started");
        while !*self.stop.borrow() {
            match self.step(&access, &mut instance, &mut partial_since).await {
                Ok(pause) => {
                    backoff = Duration::from_millis(100);
                    if let Some(pause) = pause {
                        self.sleep(pause).await;
                    }
                }
                Err(StepError::Fault(fault)) => {
                    let message = fault.to_string();
                    tracing::error!(projection = %name, generation = self.key.generation, role = %self.role,
                        checkpoint = self.checkpoint, error = %message, "projection faulted");
                    // A failed rebuild must not disturb the generation that serves.
                    let recorded = match self.role {
                        Role::Building => self.store.fail_generation(&self.key, &message).await,
                        _ => self.store.set_state(&self.key, ProjectionState::Faulted, Some(&message)).await,
                    };
                    if let Err(e) = recorded {
                        tracing::error!(projection = %name, error = %e, "could not record the fault");
                    }
                    self.report(ProjectionState::Faulted, Some(message));
                    return;
                }
                Err(StepError::Retired) => {
                    tracing::info!(projection = %name, generation = self.key.generation, "generation retired");
                    self.report(ProjectionState::Stopped, None);
                    return;
                }
                Err(StepError::Transient(e)) => {
                    tracing::warn!(projection = %name, error = %e, retry_in = ?backoff, "store unavailable, retrying");
                    self.sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Err(e) = self.store.set_state(&self.key, ProjectionState::Stopped, None).await {
            tracing::warn!(projection = %name, error = %e, "could not record the stop");
        }
        self.report(ProjectionState::Stopped, None);
        tracing::info!(projection = %name, checkpoint = self.checkpoint, "projection stopped");
    }

    /// One read-project-commit cycle. Returns how long to pause before the next.
    async fn step(
        &mut self,
        access: &ModelAccess,
        instance: &mut Option<Instance>,
        partial_since: &mut Option<Instant>,
    ) -> Result<Option<Duration>, StepError> {
        let head = self.source.head().await.map_err(|e| StepError::Transient(e.to_string()))?;
        if self.checkpoint >= head {
            *partial_since = None;
            if self.role == Role::Building {
                // The last batch was full and ended exactly at the head.
                self.swap_in().await?;
                self.report(ProjectionState::Running, None);
            }
            return Ok(Some(self.sync.interval.unwrap_or(self.sync.poll)));
        }
        let started = Instant::now();
        let subscription = &self.plugin.manifest().subscription;
        let events = self
            .source
            .read(self.checkpoint, head, subscription, self.sync.batch_size)
            .await
            .map_err(|e| StepError::Transient(e.to_string()))?;
        let full = events.len() >= self.sync.batch_size;
        if !full && !events.is_empty() && !self.sync.max_wait.is_zero() {
            let since = *partial_since.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            if waited < self.sync.max_wait {
                return Ok(Some((self.sync.max_wait - waited).min(self.sync.poll)));
            }
        }
        *partial_since = None;
        // A full batch ends at its last event; otherwise everything up to the
        // head was read, including events this projection does not subscribe to.
        let to = if full { events.last().map_or(head, |e| e.position) } else { head };
        let batch_len = events.len();
        let (to, changes, fault) = if events.is_empty() {
            (to, ChangeSet::default(), None)
        } else {
            match self.call_plugin(access, instance, events).await {
                (_, Ok(raw)) => (to, self.check(raw)?, None),
                (mut events, Err(PluginError::Failed { position, message })) => {
                    let fault = Fault::Plugin(PluginError::Failed { position, message });
                    if !events.iter().any(|e| e.position == position) || position <= self.checkpoint {
                        return Err(StepError::Fault(fault));
                    }
                    // Commit what comes before the failing event, so the
                    // checkpoint stops right before it and a fix resumes there.
                    events.retain(|e| e.position < position);
                    let changes = if events.is_empty() {
                        ChangeSet::default()
                    } else {
                        match self.call_plugin(access, instance, events).await {
                            (_, Ok(raw)) => self.check(raw)?,
                            (_, Err(e)) => return Err(StepError::Fault(e.into())),
                        }
                    };
                    (position - 1, changes, Some(fault))
                }
                (_, Err(e)) => return Err(StepError::Fault(e.into())),
            }
        };
        match self.store.commit(&self.key, &changes, self.checkpoint, to).await {
            Ok(()) => {}
            Err(StoreError::Retired { .. }) => return Err(StepError::Retired),
            Err(e @ StoreError::CheckpointMoved { .. }) => return Err(StepError::Fault(Fault::Store(e))),
            Err(e) => return Err(StepError::Transient(e.to_string())),
        }
        self.checkpoint = to;
        if self.role == Role::Building && !full && fault.is_none() {
            self.swap_in().await?;
        }
        self.report(ProjectionState::Running, None);
        // No receiver is fine: nobody is listening.
        let _ = self.notices.send(CommitNotice {
            projection: self.key.projection.clone(),
            generation: self.key.generation,
            checkpoint: to,
            events: batch_len,
            changed: changes.keys().collect(),
            micros: started.elapsed().as_micros() as u64,
        });
        if let Some(fault) = fault {
            return Err(StepError::Fault(fault));
        }
        let caught_up = !full;
        Ok(caught_up.then_some(self.sync.interval).flatten())
    }

    /// Calls `handle` on a blocking thread, instantiating first if needed.
    /// After a failure the instance is dropped, since a trapped instance
    /// cannot be trusted again.
    async fn call_plugin(
        &self,
        access: &ModelAccess,
        instance: &mut Option<Instance>,
        events: Vec<Event>,
    ) -> (Vec<Event>, Result<Vec<Change>, PluginError>) {
        let plugin = self.plugin.clone();
        let access = access.clone();
        let current = instance.take();
        let joined = tokio::task::spawn_blocking(move || {
            let mut inst = match current {
                Some(i) => i,
                None => match plugin.instantiate(access) {
                    Ok(i) => i,
                    Err(e) => return (None, events, Err(e)),
                },
            };
            let result = inst.handle(&events);
            (result.is_ok().then_some(inst), events, result)
        })
        .await;
        match joined {
            Ok((back, events, result)) => {
                *instance = back;
                (events, result)
            }
            Err(e) => (Vec::new(), Err(PluginError::Trap(format!("plugin thread failed: {e}")))),
        }
    }

    /// Checks the plugin's changes against its manifest.
    fn check(&self, raw: Vec<Change>) -> Result<ChangeSet, StepError> {
        ChangeSet::from_changes(raw, self.plugin.manifest()).map_err(|e| StepError::Fault(e.into()))
    }

    /// A building generation that has read up to the head becomes active;
    /// the generation it replaces is stopped (its tables are already gone).
    async fn swap_in(&mut self) -> Result<(), StepError> {
        let retired = match self.store.activate(&self.key).await {
            Ok(retired) => retired,
            Err(StoreError::Retired { .. }) => return Err(StepError::Retired),
            Err(e) => return Err(StepError::Transient(e.to_string())),
        };
        self.role = Role::Active;
        if let Some(old) = &retired {
            if let Some(switch) = self.switches.lock().expect("switch map lock").get(old) {
                switch.send_replace(true);
            }
        }
        tracing::info!(
            projection = %self.key.projection,
            generation = self.key.generation,
            retired = ?retired.map(|k| k.generation),
            checkpoint = self.checkpoint,
            "new generation swapped in"
        );
        Ok(())
    }

    fn report(&self, state: ProjectionState, last_error: Option<String>) {
        self.progress.send_replace(Progress {
            generation: self.key.generation,
            role: self.role,
            checkpoint: self.checkpoint,
            state,
            last_error,
        });
    }

    async fn sleep(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
    }
}

enum StepError {
    Fault(Fault),
    Transient(String),
    /// The generation was replaced or dropped: stop without a fault.
    Retired,
}
