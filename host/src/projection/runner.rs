//! The per-projection loop: read a batch after the checkpoint, call the
//! plugin, commit the changes and the new checkpoint in one transaction.
//!
//! A batch that fails (trap, timeout, memory limit, error, bad output) is
//! retried with backoff; if it keeps failing, the runner bisects it to find
//! the single poison event, commits everything before it, and applies the
//! projection's [`FailurePolicy`]: halt there, or skip the event into the
//! dead-letter table and go on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::db::DbErrorKind;
use crate::model::changes::{Change, ChangeError, ChangeSet};
use crate::model::event::Event;
use crate::projection::config::ProjectionConfig;
use crate::projection::lease::{LeaseBook, NoLease, Renewal, wait_for_lease};
use crate::projection::policy::FailurePolicy;
use crate::projection::read_ahead::{ReadAhead, batch_end};
use crate::runtime::call_thread::CallThread;
use crate::runtime::plugin::{Instance, ModelAccess, Plugin, PluginError};
use crate::runtime::tiering::CodeTier;
use crate::source::{EventSource, SourceError};
use crate::store::document_cache::DocumentCache;
use crate::store::{DeadLetter, Lease, Leases, ModelKey, ModelWriter, ProjectionState, Registry, Role, StoreError};

/// How a projection batches events: the three sync strategies.
///
/// - realtime: `batch_size = 1`, each event is projected as soon as it is seen;
/// - batch: `batch_size = N` with `max_wait`, a partial batch waits up to
///   `max_wait` for more events before it is projected anyway;
/// - scheduled: `interval`, pending events are projected once per interval.
///
/// Catching up always uses full batches, and commits several of them in one
/// transaction (at most `commit_events` events, at most `commit_interval`
/// apart): a commit rewrites every page the batch touched, so one commit per
/// batch made the store, not the projection, the limit. The checkpoint still
/// commits with the changes, so a crash loses or repeats nothing; a
/// projection that is caught up commits each batch at once.
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
    /// While catching up: most events whose changes wait for one commit
    /// (1 commits every batch on its own).
    pub commit_events: usize,
    /// While catching up: longest time between commits, which bounds how
    /// stale the read model is behind a projection that is busy catching up.
    pub commit_interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            max_wait: Duration::ZERO,
            interval: None,
            poll: Duration::from_millis(100),
            commit_events: 50_000,
            commit_interval: Duration::from_millis(250),
        }
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
    /// Why it faulted; while it is `running`, the store or source error it
    /// is retrying ("store unavailable: ..."), cleared by the next step that
    /// succeeds.
    pub last_error: Option<String>,
    /// Whether the runner holds the generation's lease and has taken up
    /// its stored checkpoint and replayed the dead letters marked for it:
    /// until then `checkpoint` is the one it was started with.
    pub leased: bool,
    /// Which compiler's code the last projected batch ran on (see
    /// [`Tiering`](crate::Tiering)); none before the first batch.
    pub code: Option<CodeTier>,
}

/// The store or source error each generation is retrying, while it retries:
/// what `/health`, `/metrics` and `/projections` show. Shared by a host's
/// runners and its API.
#[derive(Debug, Clone, Default)]
pub struct StoreErrors(Arc<Mutex<BTreeMap<ModelKey, String>>>);

impl StoreErrors {
    fn set(&self, key: &ModelKey, message: &str) {
        self.0.lock().expect("store error map lock").insert(key.clone(), message.to_owned());
    }

    fn clear(&self, key: &ModelKey) {
        self.0.lock().expect("store error map lock").remove(key);
    }

    /// The errors now being retried, by generation.
    pub fn snapshot(&self) -> BTreeMap<ModelKey, String> {
        self.0.lock().expect("store error map lock").clone()
    }
}

/// Clears a runner's entry in [`StoreErrors`] however the runner ends.
struct ClearStoreError(StoreErrors, ModelKey);

impl Drop for ClearStoreError {
    fn drop(&mut self) {
        self.0.clear(&self.1);
    }
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
    Change(#[from] ChangeError),
    #[error(transparent)]
    Store(StoreError),
    /// The store refused a value it can never hold: retrying cannot help.
    #[error("store refused: {0}")]
    Refused(StoreError),
    #[error(transparent)]
    Source(SourceError),
}

impl Fault {
    /// The kind of failure, as logged.
    fn kind(&self) -> &'static str {
        match self {
            Self::Plugin(e) => e.kind(),
            Self::Change(ChangeError::UndeclaredCollection(_)) => "undeclared collection",
            Self::Change(ChangeError::InvalidId { .. } | ChangeError::InvalidDocument { .. }) => "invalid document",
            Self::Refused(_) => "store refused",
            Self::Store(_) => "store",
            Self::Source(_) => "event store",
        }
    }

    /// Whether the store refused a value it can never hold: like a failing
    /// plugin call, that is the fault of one event, isolated and put under
    /// the projection's failure policy.
    fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// The event the plugin itself blamed, if it did.
    fn position_hint(&self) -> Option<u64> {
        match self {
            Self::Plugin(PluginError::Failed { position, .. }) => Some(*position),
            _ => None,
        }
    }
}

/// Everything a runner needs; built by the host for each started projection.
pub(crate) struct Runner {
    pub plugin: Arc<Plugin>,
    pub key: ModelKey,
    pub role: Role,
    pub switches: Switches,
    pub checkpoint: u64,
    pub source: Arc<dyn EventSource>,
    /// Where the generation's role, state and dead letters are kept.
    pub registry: Arc<dyn Registry>,
    /// Where its batches are committed.
    pub writer: Arc<dyn ModelWriter>,
    /// Whether it holds its lease and has synced to the store (see [`Progress::leased`]).
    pub leased: bool,
    /// Where the generation's lease is taken and renewed.
    pub leases: Arc<dyn Leases>,
    /// This node's id and lease lifetime.
    pub book: Arc<LeaseBook>,
    pub sync: SyncConfig,
    pub config: ProjectionConfig,
    pub progress: watch::Sender<Progress>,
    pub notices: broadcast::Sender<CommitNotice>,
    pub stop: watch::Receiver<bool>,
    /// Staged and committed documents the plugin's `get` reads from; kept
    /// in step with every batch and commit. Holds the staged changes themselves.
    pub documents: Arc<DocumentCache>,
    /// Batches projected since the last commit.
    pub staged: Staged,
    /// The next batches, read while the current one is projected.
    pub read_ahead: Option<ReadAhead>,
    /// The commit running while the next batches are projected.
    pub committing: Option<Committing>,
    /// The thread the plugin is called on.
    pub calls: CallThread,
    /// Position a commit the store refused reached: until the checkpoint
    /// passes it, batches commit one at a time so a refusal can be pinned
    /// to one event (0: no refusal pending).
    pub refused_to: u64,
    /// Where it shows the store error it is retrying.
    pub store_errors: StoreErrors,
}

/// A commit of staged batches that runs on the store while the runner
/// projects the batches after them. At most one is in flight, so commits
/// still apply in order, each from the checkpoint the previous one set.
pub(crate) struct Committing {
    /// Checkpoint it commits.
    to: u64,
    /// Subscribed events it covers.
    events: usize,
    /// When the first of its batches was read.
    since: Instant,
    /// Gives the change set back with the outcome, for the commit notice.
    task: tokio::task::JoinHandle<(Arc<ChangeSet>, Result<(), StoreError>)>,
}

/// Batches projected but not committed yet; their changes wait in the
/// runner's [`DocumentCache`].
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// Position the staged batches reach (0: nothing staged).
    to: u64,
    /// Subscribed events in them.
    events: usize,
    /// When the first of them was read.
    since: Option<Instant>,
}

/// Stop switches of every runner of a host, so the runner that swaps a
/// generation in can stop the one it replaced.
pub(crate) type Switches = Arc<Mutex<HashMap<ModelKey, watch::Sender<bool>>>>;

/// Longest pause between retries of a failing store or source.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The plugin's instance, kept across calls until one fails or the host
/// discards projected work, with the document cache's epoch it started in.
type Slot = Option<(Instance, u64)>;

impl Runner {
    /// Runs until stopped or faulted, while it holds the generation's lease.
    ///
    /// A runner writes only under its lease. Another node holding it, the
    /// runner stands by and asks again; losing it (a write the store fenced),
    /// the runner drops everything it projected and stands by again.
    pub async fn run(mut self) {
        let name = self.key.projection.clone();
        let access = ModelAccess {
            store: self.writer.clone(),
            key: self.key.clone(),
            collections: self.plugin.manifest().collections.iter().map(|c| c.name.clone()).collect::<HashSet<_>>(),
            runtime: tokio::runtime::Handle::current(),
            documents: self.documents.clone(),
        };
        let mut instance: Slot = None;
        let _clear = ClearStoreError(self.store_errors.clone(), self.key.clone());
        // Subscribed before the first head query, so no append after it is missed.
        let mut appended = self.source.subscribe();
        loop {
            let mut stop = self.stop.clone();
            let progress = self.progress.clone();
            let lease = match wait_for_lease(self.leases.as_ref(), &self.key, &self.book, &mut stop, |owner| {
                progress.send_modify(|p| p.last_error = Some(format!("standby: {owner} holds the lease")));
            })
            .await
            {
                Ok(lease) => lease,
                Err(NoLease::Stopped) => {
                    self.report(ProjectionState::Stopped, None);
                    return;
                }
                Err(NoLease::Retired) => {
                    tracing::info!(projection = %name, generation = self.key.generation, "generation retired");
                    self.report(ProjectionState::Stopped, None);
                    return;
                }
            };
            let renewal = Renewal::start(self.leases.clone(), lease.clone(), self.book.settings());
            let outcome = self.run_leased(&access, &mut instance, &lease, &mut appended).await;
            drop(renewal);
            self.book.gave_up(&self.key);
            match outcome {
                Leased::Lost(reason) => {
                    self.leased = false;
                    tracing::warn!(projection = %name, generation = self.key.generation, node = %lease.node,
                        reason = %reason, "lost the lease; dropped what was not committed and standing by");
                    instance = None;
                    self.discard();
                    self.report(ProjectionState::Running, Some(format!("standby: {reason}")));
                }
                Leased::Released => {
                    self.leased = false;
                    if let Err(e) = self.leases.release(&lease).await {
                        tracing::warn!(projection = %name, error = %e, "could not release the lease; it expires by itself");
                    }
                    tracing::info!(projection = %name, generation = self.key.generation, node = %lease.node,
                        checkpoint = self.checkpoint, "gave the lease up to a node with less work");
                    instance = None;
                    self.discard();
                    self.report(ProjectionState::Running, Some("standby: handed over to a node with less work".into()));
                    // Long enough for the node it was meant for to take it.
                    self.sleep(self.book.settings().renew_every() * 2).await;
                }
                Leased::Ended => {
                    if let Err(e) = self.leases.release(&lease).await {
                        tracing::warn!(projection = %name, error = %e, "could not release the lease; it expires by itself");
                    }
                    return;
                }
            }
        }
    }

    /// Forgets everything projected after the committed checkpoint.
    fn discard(&mut self) {
        if let Some(c) = self.committing.take() {
            c.task.abort();
        }
        self.documents.clear();
        self.staged = Staged::default();
        self.read_ahead = None;
    }

    /// Takes the stored checkpoint and role as they are now: another node
    /// may have moved them while this one did not hold the lease.
    async fn resync(&mut self) -> Result<(), StepError> {
        let record = self.registry.generation(&self.key).await.map_err(StepError::from_store)?;
        if !matches!(record.role, Role::Active | Role::Building) {
            return Err(StepError::Retired);
        }
        self.check_source_identity().await?;
        if record.checkpoint != self.checkpoint {
            tracing::info!(projection = %self.key.projection, from = self.checkpoint, to = record.checkpoint,
                "another node moved the checkpoint; resuming from it");
            self.discard();
            self.checkpoint = record.checkpoint;
        }
        self.role = record.role;
        Ok(())
    }

    /// Faults when the source was replaced under the generation's
    /// checkpoint (a re-created JetStream stream starts over at 1).
    async fn check_source_identity(&self) -> Result<(), StepError> {
        let Some(now) = self.source.identity().await.map_err(StepError::from_source)? else {
            return Ok(());
        };
        let was = self.registry.claim_source_identity(&self.key, &now).await.map_err(StepError::from_store)?;
        if was == now {
            return Ok(());
        }
        Err(StepError::Fault(Fault::Source(SourceError::Recreated { was, now })))
    }

    /// The runner's work while it holds `lease`.
    async fn run_leased(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
        lease: &Lease,
        appended: &mut Option<watch::Receiver<u64>>,
    ) -> Leased {
        let name = self.key.projection.clone();
        let mut partial_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(100);
        let mut retrying = false;
        tracing::info!(projection = %name, generation = self.key.generation, checkpoint = self.checkpoint,
            node = %lease.node, epoch = lease.epoch, "projection started");
        let mut synced = false;
        while !*self.stop.borrow() {
            let step = if synced {
                self.step(access, instance, &mut partial_since).await
            } else {
                match self.resync().await {
                    Ok(()) => {
                        synced = true;
                        // Dead letters belong to the serving generation; a rebuild starts clean.
                        if self.role == Role::Active {
                            if let Err(e) = self.replay_dead_letters(access, instance).await {
                                if let ReplayError::Store(StoreError::LeaseLost { .. }) = &e {
                                    return Leased::Lost(e.to_string());
                                }
                                tracing::warn!(projection = %name, error = %e,
                                    "could not replay dead letters; they stay for the next run");
                            }
                        }
                        self.leased = true;
                        // The registry says `stopped` after a clean stop, a
                        // pause or `refract retry`; from here this node projects.
                        if let Err(e) = self.registry.set_state(&self.key, ProjectionState::Running, None).await {
                            tracing::warn!(projection = %name, error = %e, "could not record the projection as running");
                        }
                        self.report(ProjectionState::Running, None);
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            };
            match step {
                Ok(pause) => {
                    backoff = Duration::from_millis(100);
                    if std::mem::take(&mut retrying) {
                        tracing::info!(projection = %name, "store available again");
                        self.store_errors.clear(&self.key);
                        self.report(ProjectionState::Running, None);
                    }
                    // A batch boundary: the place to hand an extra lease over.
                    if synced && self.book.should_release(&self.key) {
                        return match self.flush(true).await {
                            Ok(()) => Leased::Released,
                            Err(StepError::LeaseLost(reason)) => Leased::Lost(reason),
                            // Whatever was not committed is read again by the next holder.
                            Err(_) => Leased::Released,
                        };
                    }
                    if let Some(pause) = pause {
                        self.pause(pause, appended).await;
                    }
                }
                Err(StepError::LeaseLost(reason)) => return Leased::Lost(reason),
                Err(StepError::Fault(fault)) => {
                    let message = fault.to_string();
                    tracing::error!(projection = %name, generation = self.key.generation, role = %self.role,
                        checkpoint = self.checkpoint, kind = fault.kind(), error = %message, "projection faulted");
                    // A failed rebuild must not disturb the generation that serves.
                    let recorded = match self.role {
                        Role::Building => self.registry.fail_generation(&self.key, &message).await,
                        _ => self.registry.set_state(&self.key, ProjectionState::Faulted, Some(&message)).await,
                    };
                    if let Err(e) = recorded {
                        tracing::error!(projection = %name, error = %e, "could not record the fault");
                    }
                    self.report(ProjectionState::Faulted, Some(message));
                    return Leased::Ended;
                }
                Err(StepError::Retired) => {
                    tracing::info!(projection = %name, generation = self.key.generation, "generation retired");
                    self.report(ProjectionState::Stopped, None);
                    return Leased::Ended;
                }
                Err(StepError::Transient(e)) => {
                    tracing::warn!(projection = %name, error = %e, retry_in = ?backoff, "store unavailable, retrying");
                    let message = format!("store unavailable: {e}");
                    self.store_errors.set(&self.key, &message);
                    self.report(ProjectionState::Running, Some(message));
                    retrying = true;
                    self.sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Keep what was projected before the stop. A generation retired in
        // the meantime refuses the commit, and its events are simply re-read
        // by whoever runs next: either way nothing is lost or doubled.
        if let Err(StepError::LeaseLost(_)) = self.flush(true).await {
            // Another node runs it now: its state is that node's to record.
            self.report(ProjectionState::Stopped, None);
            return Leased::Ended;
        }
        if let Err(e) = self.registry.set_state(&self.key, ProjectionState::Stopped, None).await {
            tracing::warn!(projection = %name, error = %e, "could not record the stop");
        }
        self.report(ProjectionState::Stopped, None);
        tracing::info!(projection = %name, checkpoint = self.checkpoint, "projection stopped");
        Leased::Ended
    }

    /// One read-project-commit cycle. Returns how long to pause before the next.
    ///
    /// A grouped commit the store refused (a value it can never hold, such
    /// as U+0000 in a PostgreSQL jsonb document) covers many events: the
    /// runner goes back to its checkpoint and commits batch by batch up to
    /// where that commit reached, so the refusal can be isolated to its event.
    async fn step(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
        partial_since: &mut Option<Instant>,
    ) -> Result<Option<Duration>, StepError> {
        if self.checkpoint < self.refused_to {
            return self.step_one_batch(access, instance).await;
        }
        match self.step_grouped(access, instance, partial_since).await {
            Err(StepError::Fault(fault)) if fault.is_refusal() && self.refused_to > self.checkpoint => {
                tracing::warn!(
                    projection = %self.key.projection,
                    checkpoint = self.checkpoint,
                    refused_to = self.refused_to,
                    error = %fault,
                    "the store refused a commit; committing batch by batch to find the event"
                );
                Ok(None)
            }
            other => other,
        }
    }

    /// One batch after the checkpoint, projected and committed on its own;
    /// a batch whose call fails or whose commit the store refuses is isolated.
    async fn step_one_batch(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
    ) -> Result<Option<Duration>, StepError> {
        debug_assert!(self.read_to() <= self.checkpoint, "refusals are isolated from a committed checkpoint");
        self.read_ahead = None;
        let started = Instant::now();
        let (from, up_to, limit) = (self.checkpoint, self.refused_to, self.sync.batch_size);
        let subscription = &self.plugin.manifest().subscription;
        let events = self.source.read(from, up_to, subscription, limit).await.map_err(StepError::from_source)?;
        let to = batch_end(&events, limit, up_to);
        let (events, result) = self.project_with_retries(access, instance, events).await;
        let fault = match result {
            Ok(changes) => match self.commit(changes, to, events.len(), started).await {
                Ok(()) => return Ok(None),
                Err(StepError::Fault(fault)) if fault.is_refusal() && !events.is_empty() => fault,
                Err(e) => return Err(e),
            },
            Err(_) if *self.stop.borrow() => return Ok(None),
            Err(fault) => fault,
        };
        self.isolate(access, instance, events, fault).await
    }

    /// One read-project-commit cycle of batches committed in groups.
    async fn step_grouped(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
        partial_since: &mut Option<Instant>,
    ) -> Result<Option<Duration>, StepError> {
        let read_to = self.read_to();
        // The read ahead of the next batch already knows a head beyond it;
        // asking again costs a store round trip per batch, most of a small
        // batch's time. The head is asked again once that one is reached.
        let head = match self.read_ahead.as_ref().filter(|r| r.covers(read_to)) {
            Some(r) => r.up_to(),
            None => self.source.head().await.map_err(StepError::from_source)?,
        };
        if read_to >= head {
            *partial_since = None;
            // The last batch was full and ended exactly at the head.
            self.flush(true).await?;
            if self.role == Role::Building {
                self.swap_in().await?;
            }
            return Ok(Some(self.sync.interval.unwrap_or(self.sync.poll)));
        }
        let started = Instant::now();
        let (events, head) = match self.read_batch(read_to, head).await {
            // A message the source cannot read: project up to it, then put
            // it under the failure policy like an event the plugin fails on.
            Err(StepError::Fault(Fault::Source(SourceError::BadEvent { position, .. }))) if position > read_to + 1 => {
                self.read_ahead = None;
                self.read_batch(read_to, position - 1).await?
            }
            Err(StepError::Fault(Fault::Source(SourceError::BadEvent { position, stream_id, event_type, reason }))) => {
                self.read_ahead = None;
                self.flush(true).await?;
                let event = Event {
                    position,
                    stream_id: stream_id.clone(),
                    stream_version: 0,
                    event_type: event_type.clone(),
                    payload: String::new(),
                    metadata: String::new(),
                    timestamp: 0,
                };
                let fault = Fault::Source(SourceError::BadEvent { position, stream_id, event_type, reason });
                return self.poison(event, fault).await;
            }
            other => other?,
        };
        let full = events.len() >= self.sync.batch_size;
        if !full && !events.is_empty() && !self.sync.max_wait.is_zero() {
            let since = *partial_since.get_or_insert_with(Instant::now);
            let waited = since.elapsed();
            if waited < self.sync.max_wait {
                // What is staged should not wait for a partial batch to fill.
                self.flush(true).await?;
                return Ok(Some((self.sync.max_wait - waited).min(self.sync.poll)));
            }
        }
        *partial_since = None;
        let to = batch_end(&events, self.sync.batch_size, head);
        // Reached the head: what was read is committed at once, even a
        // full batch, so grouping only ever applies to a real backlog.
        let caught_up = !full || to >= head;
        if !caught_up && !self.read_ahead.as_ref().is_some_and(|r| r.covers(to)) {
            let subscription = self.plugin.manifest().subscription.clone();
            let limit = self.sync.batch_size;
            self.read_ahead = Some(ReadAhead::start(self.source.clone(), subscription, to, head, limit));
        }
        let batch_len = events.len();
        if !events.is_empty() {
            match self.project_with_retries(access, instance, events).await {
                (events, Ok(changes)) => {
                    self.documents.stage(changes);
                    // Freeing a batch's strings is a few percent of a
                    // batch's time: let another worker do it while the
                    // plugin projects the next batch. A small batch is
                    // freed faster than a task is spawned.
                    if events.len() >= 64 {
                        tokio::spawn(async move { drop(events) });
                    }
                }
                (_, Err(_)) if *self.stop.borrow() => return Ok(None),
                (events, Err(fault)) => {
                    // Bisection commits as it goes, from a committed checkpoint.
                    self.flush(true).await?;
                    return self.isolate(access, instance, events, fault).await;
                }
            }
        }
        self.staged.to = to;
        self.staged.events += batch_len;
        self.staged.since.get_or_insert(started);
        let due = self.staged.events >= self.sync.commit_events
            || self.staged.since.is_some_and(|t| t.elapsed() >= self.sync.commit_interval);
        if caught_up || due {
            // Caught up, the commit is waited for so readers see it at once;
            // catching up, the next batches are projected while it runs.
            self.flush(caught_up).await?;
        }
        if self.role == Role::Building && caught_up {
            self.swap_in().await?;
        }
        Ok(caught_up.then_some(self.sync.interval).flatten())
    }

    /// Up to a batch of events after `from`, and the head they were read up
    /// to: the batch read ahead if it starts at `from`, else a new read.
    async fn read_batch(&mut self, from: u64, head: u64) -> Result<(Vec<Event>, u64), StepError> {
        if let Some(ahead) = &mut self.read_ahead {
            match ahead.next(from).await {
                Some(read) => return Ok(read),
                // Out of step or failed: read on our own, and start over later.
                None => self.read_ahead = None,
            }
        }
        let subscription = &self.plugin.manifest().subscription;
        let events =
            self.source.read(from, head, subscription, self.sync.batch_size).await.map_err(StepError::from_source)?;
        Ok((events, head))
    }

    /// Position up to which events have been read and projected: the
    /// staged batches', else the commit in flight's, else the checkpoint.
    fn read_to(&self) -> u64 {
        let committing = self.committing.as_ref().map_or(0, |c| c.to);
        self.checkpoint.max(committing).max(self.staged.to)
    }

    /// Commits the staged batches' changes with their checkpoint in one
    /// transaction, after the commit in flight; `wait` waits for it too.
    async fn flush(&mut self, wait: bool) -> Result<(), StepError> {
        self.finish_commit().await?;
        let staged = std::mem::take(&mut self.staged);
        if staged.to > self.checkpoint {
            let changes = self.documents.begin_commit();
            let (store, key, from, to) = (self.writer.clone(), self.key.clone(), self.checkpoint, staged.to);
            let task = tokio::spawn(async move {
                let result = store.commit(&key, &changes, from, to).await;
                (changes, result)
            });
            let since = staged.since.unwrap_or_else(Instant::now);
            self.committing = Some(Committing { to, events: staged.events, since, task });
        }
        if wait {
            self.finish_commit().await?;
        }
        Ok(())
    }

    /// Waits for the commit in flight, if any, then moves the checkpoint
    /// and tells listeners; or, if it failed, forgets everything projected
    /// after the checkpoint, since the commit may or may not have reached
    /// the store: the runner reads again from its committed checkpoint.
    async fn finish_commit(&mut self) -> Result<(), StepError> {
        let Some(c) = self.committing.take() else {
            return Ok(());
        };
        let outcome = match c.task.await {
            Ok((changes, Ok(()))) => Ok(changes),
            Ok((_, Err(e))) => Err(StepError::from_store(e)),
            Err(e) => Err(StepError::Transient(format!("commit task failed: {e}"))),
        };
        match outcome {
            Ok(changes) => {
                self.committed(&changes, c.to, c.events, c.since);
                // Let go of the change set first, so the cache can move the
                // documents into its committed layer instead of copying them.
                drop(changes);
                self.documents.promote();
                Ok(())
            }
            Err(e) => {
                self.documents.clear();
                self.staged = Staged::default();
                if matches!(&e, StepError::Fault(f) if f.is_refusal()) {
                    self.refused_to = self.refused_to.max(c.to);
                }
                Err(e)
            }
        }
    }

    /// Commits a batch's changes with the checkpoint `to` at once (nothing
    /// may be staged), through the same path as grouped commits.
    async fn commit(&mut self, changes: ChangeSet, to: u64, events: usize, started: Instant) -> Result<(), StepError> {
        debug_assert!(self.read_to() <= self.checkpoint, "a direct commit with batches staged or committing");
        self.documents.stage(changes);
        self.staged = Staged { to, events, since: Some(started) };
        self.flush(true).await
    }

    /// Moves the checkpoint after a commit and tells listeners.
    fn committed(&mut self, changes: &ChangeSet, to: u64, events: usize, started: Instant) {
        self.checkpoint = to;
        self.report(ProjectionState::Running, None);
        // Listing thousands of changed ids is wasted when nobody listens.
        if self.notices.receiver_count() == 0 {
            return;
        }
        let _ = self.notices.send(CommitNotice {
            projection: self.key.projection.clone(),
            generation: self.key.generation,
            checkpoint: to,
            events,
            changed: changes.keys().collect(),
            micros: started.elapsed().as_micros() as u64,
        });
    }

    /// Commits the changes of `events`, moving the checkpoint to the last of them.
    async fn commit_through(
        &mut self,
        changes: ChangeSet,
        events: &[Event],
        started: Instant,
    ) -> Result<(), StepError> {
        let to = events.last().map_or(self.checkpoint, |e| e.position);
        self.commit(changes, to, events.len(), started).await
    }

    /// Projects `events`, retrying with exponential backoff while it fails.
    /// Gives the events back with the result.
    async fn project_with_retries(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
        mut events: Vec<Event>,
    ) -> (Vec<Event>, Result<ChangeSet, Fault>) {
        let mut attempt = 0;
        loop {
            let (back, result) = self.project(access, instance, events).await;
            events = back;
            let fault = match result {
                Ok(changes) => return (events, Ok(changes)),
                Err(fault) => fault,
            };
            if attempt >= self.config.retry.retries || *self.stop.borrow() {
                return (events, Err(fault));
            }
            let delay = self.config.retry.delay(attempt);
            tracing::warn!(
                projection = %self.key.projection,
                kind = fault.kind(),
                error = %fault,
                attempt = attempt + 1,
                retry_in = ?delay,
                "batch failed, retrying"
            );
            self.sleep(delay).await;
            attempt += 1;
        }
    }

    /// Calls the plugin once and checks its changes.
    async fn project(
        &self,
        access: &ModelAccess,
        instance: &mut Slot,
        events: Vec<Event>,
    ) -> (Vec<Event>, Result<ChangeSet, Fault>) {
        let (events, result) = self.call_plugin(access, instance, events).await;
        let result =
            result.map_err(Fault::from).and_then(|raw| Ok(ChangeSet::from_changes(raw, self.plugin.manifest())?));
        if result.is_err() {
            // A trapped instance cannot be trusted again, and one whose
            // changes were refused already counted them (the SDK keeps what
            // it wrote decoded): a retry must start from what the host holds.
            *instance = None;
        }
        (events, result)
    }

    /// Finds the event of `events` that fails by bisection, committing the
    /// events before it as it goes, then applies the failure policy to it.
    /// Each probe is a single call: the batch as a whole was already retried.
    async fn isolate(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
        mut pending: Vec<Event>,
        mut fault: Fault,
    ) -> Result<Option<Duration>, StepError> {
        tracing::warn!(
            projection = %self.key.projection,
            kind = fault.kind(),
            events = pending.len(),
            "batch keeps failing; isolating the failing event"
        );
        while pending.len() > 1 {
            // Trust the plugin's own blame first: try what comes before it.
            let split = fault
                .position_hint()
                .and_then(|p| pending.iter().position(|e| e.position == p))
                .map_or(pending.len() / 2, |i| i.max(1));
            let right = pending.split_off(split);
            match self.apply(access, instance, pending).await? {
                (_, Ok(())) => {
                    let (rest, result) = self.apply(access, instance, right).await?;
                    match result {
                        // The whole batch fails but both halves pass: the
                        // failure was not caused by one event. Go on.
                        Ok(()) => return Ok(None),
                        Err(f) => (pending, fault) = (rest, f),
                    }
                }
                (left, Err(f)) => (pending, fault) = (left, f),
            }
        }
        match pending.pop() {
            Some(poison) => self.poison(poison, fault).await,
            None => Err(StepError::Fault(fault)),
        }
    }

    /// Projects `events` once and commits their changes at once. A failing
    /// call, or a commit the store refuses, is the events' fault; any other
    /// commit error stops the isolation.
    async fn apply(
        &mut self,
        access: &ModelAccess,
        instance: &mut Slot,
        events: Vec<Event>,
    ) -> Result<(Vec<Event>, Result<(), Fault>), StepError> {
        let started = Instant::now();
        let (events, result) = self.project(access, instance, events).await;
        let changes = match result {
            Ok(changes) => changes,
            Err(fault) => return Ok((events, Err(fault))),
        };
        match self.commit_through(changes, &events, started).await {
            Ok(()) => Ok((events, Ok(()))),
            Err(StepError::Fault(fault)) if fault.is_refusal() => Ok((events, Err(fault))),
            Err(e) => Err(e),
        }
    }

    /// Applies the failure policy to the event that fails on its own.
    async fn poison(&mut self, event: Event, fault: Fault) -> Result<Option<Duration>, StepError> {
        let name = self.key.projection.clone();
        match self.config.on_failure {
            FailurePolicy::Halt => {
                // Stop exactly before the event, so a fix resumes there.
                let before = event.position - 1;
                if before > self.checkpoint {
                    self.commit(ChangeSet::default(), before, 0, Instant::now()).await?;
                }
                Err(StepError::Fault(fault))
            }
            FailurePolicy::Skip => {
                let letter = DeadLetter {
                    position: event.position,
                    stream_id: event.stream_id,
                    event_type: event.event_type,
                    error: fault.to_string(),
                    module_hash: self.plugin.hash().to_owned(),
                    recorded_at: crate::clock::now_ms() as u64,
                    replay: false,
                };
                self.writer
                    .skip_event(&self.key, &letter, self.checkpoint, letter.position)
                    .await
                    .map_err(StepError::from_store)?;
                tracing::warn!(
                    projection = %name,
                    position = letter.position,
                    kind = fault.kind(),
                    error = %letter.error,
                    "event skipped into the dead-letter table"
                );
                self.checkpoint = letter.position;
                self.report(ProjectionState::Running, None);
                let _ = self.notices.send(CommitNotice {
                    projection: name,
                    generation: self.key.generation,
                    checkpoint: self.checkpoint,
                    events: 0,
                    changed: Vec::new(),
                    micros: 0,
                });
                Ok(None)
            }
        }
    }

    /// Replays the dead letters `refract retry` marked, through the current
    /// plugin, before any new event: one that now succeeds is applied and
    /// removed; one that fails again stays, unmarked, with the new error.
    async fn replay_dead_letters(&mut self, access: &ModelAccess, instance: &mut Slot) -> Result<(), ReplayError> {
        let letters = self.registry.dead_letters(&self.key.projection).await?;
        let plugin = self.plugin.clone();
        let subscription = &plugin.manifest().subscription;
        for letter in letters.into_iter().filter(|l| l.replay) {
            let events = self
                .source
                .read(letter.position - 1, letter.position, subscription, 1)
                .await
                .map_err(|source| ReplayError::Read { position: letter.position, source })?;
            if events.is_empty() {
                let gone = "the event is no longer in the event store";
                self.writer.finish_replay(&self.key, letter.position, Err(gone)).await?;
                continue;
            }
            let outcome = match self.project_with_retries(access, instance, events).await {
                (_, Ok(changes)) => Ok(changes),
                (_, Err(fault)) => Err(fault.to_string()),
            };
            tracing::info!(
                projection = %self.key.projection,
                position = letter.position,
                ok = outcome.is_ok(),
                "dead letter replayed"
            );
            let finished =
                self.writer.finish_replay(&self.key, letter.position, outcome.as_ref().map_err(String::as_str)).await;
            match (&finished, &outcome) {
                (Ok(true), Ok(changes)) => self.documents.committed(changes),
                (Ok(true), Err(_)) => {}
                // Another host claimed the letter first and applied it: the
                // instance projected it too, so its work is discarded.
                (Ok(false), _) => {
                    tracing::info!(projection = %self.key.projection, position = letter.position, "dead letter already replayed by another host");
                    self.documents.clear();
                }
                (Err(_), _) => self.documents.clear(),
            }
            finished?;
        }
        Ok(())
    }

    /// Calls `handle` on the runner's plugin thread, instantiating first if
    /// needed, and gives the instance back (`project` drops it if the call
    /// failed). An instance from before the host last discarded projected
    /// work (a failed commit) is replaced first, since its memory still
    /// holds that work.
    async fn call_plugin(
        &self,
        access: &ModelAccess,
        instance: &mut Slot,
        events: Vec<Event>,
    ) -> (Vec<Event>, Result<Vec<Change>, PluginError>) {
        let plugin = self.plugin.clone();
        let access = access.clone();
        let limits = self.config.limits.clone();
        let epoch = self.documents.epoch();
        // Optimized code that became ready since the last batch is taken
        // up here, between two batches, by a fresh instance.
        let current = instance.take().filter(|(i, started)| *started == epoch && !self.plugin.outdated(i));
        let (events, joined) = self
            .calls
            .run_with(events, move |events| {
                let mut inst = match current {
                    Some((i, _)) => i,
                    None => match plugin.instantiate(access, &limits) {
                        Ok(i) => i,
                        Err(e) => return (None, Err(e)),
                    },
                };
                let result = inst.handle(events, &limits);
                (Some((inst, epoch)), result)
            })
            .await;
        match joined {
            Ok((back, result)) => {
                if let Some((i, _)) = &back {
                    let tier = Some(i.tier());
                    self.progress.send_if_modified(|p| std::mem::replace(&mut p.code, tier) != tier);
                }
                *instance = back;
                (events, result)
            }
            // A panic (in a host import, say) fails the batch like a trap:
            // the instance went with it, and the batch is retried, then
            // isolated, never committed as if it had projected nothing.
            Err(e) => (events, Err(PluginError::Trap(e.to_string()))),
        }
    }

    /// A building generation that has read up to the head becomes active;
    /// the generation it replaces is stopped (its tables are already gone).
    async fn swap_in(&mut self) -> Result<(), StepError> {
        let retired = self.registry.activate(&self.key).await.map_err(StepError::from_store)?;
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
        self.report(ProjectionState::Running, None);
        Ok(())
    }

    fn report(&self, state: ProjectionState, last_error: Option<String>) {
        // Read apart: a borrow alive in the statement that sends deadlocks.
        let code = self.progress.borrow().code;
        self.progress.send_replace(Progress {
            generation: self.key.generation,
            role: self.role,
            checkpoint: self.checkpoint,
            state,
            last_error,
            leased: self.leased,
            code,
        });
    }

    async fn sleep(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
    }

    /// The pause between two steps: until `d` has passed, the runner is
    /// stopped, or the source reports an append (see
    /// [`EventSource::subscribe`]), so new events are read at once and the
    /// poll is only the fallback. A scheduled projection is the exception:
    /// projecting once per interval is what it asked for. An append seen
    /// while the runner was busy ends the next pause at once, since the
    /// receiver remembers it; at worst that costs one head query too many.
    async fn pause(&mut self, d: Duration, appended: &mut Option<watch::Receiver<u64>>) {
        let wakes = appended.as_mut().filter(|_| self.sync.interval.is_none());
        let append = async {
            match wakes {
                // An error means the source is gone: only the timer and stop are left.
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
            _ = append => {}
        }
    }
}

/// Why replaying dead letters stopped; they stay for the next run.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not read event {position} from the event store: {source}")]
    Read { position: u64, source: SourceError },
}

enum StepError {
    Fault(Fault),
    Transient(String),
    /// The generation was replaced or dropped: stop without a fault.
    Retired,
    /// Another node holds the lease now: stand by, without a fault.
    LeaseLost(String),
}

/// How a runner's time under a lease ended.
enum Leased {
    /// Another node took the lease over.
    Lost(String),
    /// This node holds more than its share: it committed and gives the lease up.
    Released,
    /// Stopped, faulted or retired: the runner is done.
    Ended,
}

impl StepError {
    /// A moved checkpoint means another host runs the projection: a fault.
    /// Anything else from the store may pass: retry.
    /// A store that refuses a value it can never hold, or whose file is
    /// damaged, would refuse every retry: a fault, named as such.
    fn from_store(e: StoreError) -> Self {
        match e {
            e @ StoreError::CheckpointMoved { .. } => Self::Fault(Fault::Store(e)),
            StoreError::Retired { .. } => Self::Retired,
            e @ StoreError::LeaseLost { .. } => Self::LeaseLost(e.to_string()),
            StoreError::Database(e) if e.kind() == DbErrorKind::Refused => {
                Self::Fault(Fault::Refused(StoreError::Database(e)))
            }
            StoreError::Database(e) if e.kind() == DbErrorKind::Corrupt => {
                Self::Fault(Fault::Store(StoreError::Database(e)))
            }
            e => Self::Transient(e.to_string()),
        }
    }

    /// Reads that fail because the event store is damaged fault the
    /// projection with the store's message; anything else is retried.
    fn from_source(e: SourceError) -> Self {
        let corrupt = match &e {
            SourceError::Database(db) => db.kind() == DbErrorKind::Corrupt,
            // SQLITE_CORRUPT and SQLITE_NOTADB, from the C-API read.
            SourceError::Sqlite { code, .. } => matches!(code & 0xff, 11 | 26),
            e => e.is_permanent(),
        };
        if corrupt { Self::Fault(Fault::Source(e)) } else { Self::Transient(e.to_string()) }
    }
}
