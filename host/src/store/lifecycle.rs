//! The generation lifecycle and the writer's transactions, decided once for
//! every backend.
//!
//! A backend supplies a [`Backend`]: transactions made of small SQL verbs
//! ([`Tx`]). Everything that decides something — which generation a module
//! gets, what a swap retires, that a new generation starts empty, that a
//! dead letter is claimed before it is applied, when a refused checkpoint
//! move means "retired" — lives here, so the SQLite and PostgreSQL stores
//! cannot drift apart. Only their SQL differs.

use async_trait::async_trait;

use super::change_log::{ChangeEntry, ConsumerPosition, LogRows, LogSettings, log_commit};
use super::lease::{Fences, LeaseRecord, check_fence};
use super::modules::{forget_modules, redeploy};
use super::names;
use super::{
    DeadLetter, ModelKey, ModelWriter, ProjectionRecord, ProjectionState, Registration, Registry, RetryRequest, Role,
    StoreError,
};
use crate::model::changes::ChangeSet;
use crate::model::manifest::Manifest;

/// A generation row to insert.
pub struct NewGeneration<'a> {
    /// Projection and generation number.
    pub key: &'a ModelKey,
    /// Active (serves at once), building, or failed (a module that did not load).
    pub role: Role,
    /// What the module declared.
    pub manifest: &'a Manifest,
    /// SHA-256 of the module, hex.
    pub module_hash: &'a str,
    /// File the module came from.
    pub source: &'a str,
    /// Why it failed, for a failed generation.
    pub error: Option<&'a str>,
}

/// One transaction on a backend, as the SQL verbs the lifecycle is made of.
/// Dropping it without [`commit`](Tx::commit) rolls it back (the connection
/// is closed rather than reused, so a connection left in a broken state by
/// a failed write — a full disk — is never handed out again).
#[async_trait]
pub trait Tx: Send + Sized {
    /// Live (non-retired) generations of one projection, or of all when
    /// `name` is `None`, by projection then generation.
    async fn live_generations(&mut self, name: Option<&str>) -> Result<Vec<ProjectionRecord>, StoreError>;
    /// Every generation of a projection, retired ones included.
    async fn all_generations(&mut self, name: &str) -> Result<Vec<ProjectionRecord>, StoreError>;
    /// One generation's record.
    async fn record(&mut self, key: &ModelKey) -> Result<Option<ProjectionRecord>, StoreError>;
    /// One more than the highest generation number ever used by the projection.
    async fn next_generation(&mut self, name: &str) -> Result<u32, StoreError>;
    /// Inserts a generation at checkpoint 0 (state `faulted` for a failed one, else `running`).
    async fn insert_generation(&mut self, generation: &NewGeneration<'_>) -> Result<(), StoreError>;
    /// Sets role, state and (when given) error.
    async fn set_role(
        &mut self,
        key: &ModelKey,
        role: Role,
        state: ProjectionState,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Marks the generation running under `source`, unless it is faulted
    /// (which keeps its state and error).
    async fn resume(&mut self, key: &ModelKey, source: &str) -> Result<(), StoreError>;
    /// Makes the generation the active one, noting when.
    async fn make_active(&mut self, key: &ModelKey) -> Result<(), StoreError>;
    /// Sets state and error of an active or building generation.
    async fn set_state(
        &mut self,
        key: &ModelKey,
        state: ProjectionState,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// A faulted generation becomes `stopped` with no error; whether it was faulted.
    async fn clear_fault(&mut self, key: &ModelKey) -> Result<bool, StoreError>;
    /// Deletes the registry rows, dead letters and change consumers of a projection.
    async fn delete_projection(&mut self, name: &str) -> Result<(), StoreError>;

    /// Creates the generation's tables, indexes and change log if they do not exist.
    async fn create_tables(&mut self, key: &ModelKey, manifest: &Manifest) -> Result<(), StoreError>;
    /// Drops the generation's tables and change log if they exist.
    async fn drop_tables(&mut self, key: &ModelKey, manifest: &Manifest) -> Result<(), StoreError>;
    /// Renames a table kept under a pre-0.2 name to its current name and
    /// drops its old indexes (the caller then creates the current ones).
    async fn migrate_table(&mut self, key: &ModelKey, collection: &str, indexes: &[String]) -> Result<(), StoreError>;
    /// A value of the store's own metadata.
    async fn meta(&mut self, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets a value of the store's own metadata.
    async fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StoreError>;

    /// The generation's dead letters, by position.
    async fn letters(&mut self, key: &ModelKey) -> Result<Vec<DeadLetter>, StoreError>;
    /// Deletes the generation's dead letters.
    async fn delete_letters(&mut self, key: &ModelKey) -> Result<(), StoreError>;
    /// Records a dead letter (replacing one at the same position), unmarked.
    async fn insert_letter(&mut self, key: &ModelKey, letter: &DeadLetter) -> Result<(), StoreError>;
    /// Marks every dead letter of the generation for replay; how many.
    async fn mark_replays(&mut self, key: &ModelKey) -> Result<u64, StoreError>;
    /// Deletes the letter if it is marked for replay; whether it was.
    async fn claim_letter(&mut self, key: &ModelKey, position: u64) -> Result<bool, StoreError>;
    /// Unmarks the letter with a new error if it is marked; whether it was.
    async fn unmark_letter(&mut self, key: &ModelKey, position: u64, error: &str) -> Result<bool, StoreError>;

    /// Moves the checkpoint from `from` to `to` if the generation is active
    /// or building and at `from`; whether it moved.
    async fn move_checkpoint(&mut self, key: &ModelKey, from: u64, to: u64) -> Result<bool, StoreError>;
    /// Writes a batch's net changes, and the search index of each
    /// collection of `manifest` that declares search fields (the words come
    /// from `search::document_words`), in this transaction.
    async fn apply_changes(
        &mut self,
        key: &ModelKey,
        manifest: &Manifest,
        changes: &ChangeSet,
    ) -> Result<(), StoreError>;

    /// Every document of a collection as `(id, JSON text)`, by id.
    async fn all_documents(&mut self, key: &ModelKey, collection: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// The newest sequence of the generation's change log (0: empty).
    async fn log_head(&mut self, key: &ModelKey) -> Result<u64, StoreError>;
    /// The oldest sequence still in the generation's change log.
    async fn log_first(&mut self, key: &ModelKey) -> Result<Option<u64>, StoreError>;
    /// Appends `rows` to the generation's change log, each with the kind
    /// [`LogRows`] gives it by whether its document exists now, numbered
    /// from `rows.after + 1` without gaps; how many were appended. Existence
    /// is tested in the database, in the same statement, so no ids travel back.
    async fn append_log(&mut self, key: &ModelKey, rows: &LogRows<'_>) -> Result<u64, StoreError>;
    /// Up to `limit` log entries after sequence `after`, in order.
    async fn read_log(&mut self, key: &ModelKey, after: u64, limit: u32) -> Result<Vec<ChangeEntry>, StoreError>;
    /// Deletes log entries up to and including `through`.
    async fn prune_log(&mut self, key: &ModelKey, through: u64) -> Result<(), StoreError>;
    /// The first sequence recorded at or after `at_ms` (sequences and times rise together).
    async fn first_logged_since(&mut self, key: &ModelKey, at_ms: u64) -> Result<Option<u64>, StoreError>;
    /// A named consumer's acknowledged position.
    async fn consumer(&mut self, projection: &str, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError>;
    /// Stores a named consumer's acknowledged position.
    async fn set_consumer(
        &mut self,
        projection: &str,
        consumer: &str,
        position: ConsumerPosition,
    ) -> Result<(), StoreError>;

    /// The `(owner, epoch)` of the generation's lease, if it has one, read
    /// with a row lock where the backend has them (see `lease::check_fence`).
    async fn lease_holder(&mut self, key: &ModelKey) -> Result<Option<(String, u64)>, StoreError>;
    /// Takes the lease for `node` if it has none, it expired, or `node` holds
    /// it; bumps the epoch and sets the expiry `ttl_ms` from now. The new
    /// epoch, or `None` when another node holds it.
    async fn take_lease(&mut self, key: &ModelKey, node: &str, ttl_ms: i64) -> Result<Option<u64>, StoreError>;
    /// Pushes the expiry `ttl_ms` from now if `(node, epoch)` still holds it; whether it did.
    async fn renew_lease(&mut self, key: &ModelKey, node: &str, epoch: u64, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Expires the lease now if `(node, epoch)` holds it.
    async fn release_lease(&mut self, key: &ModelKey, node: &str, epoch: u64) -> Result<(), StoreError>;
    /// Every lease row, by projection then generation.
    async fn all_leases(&mut self) -> Result<Vec<LeaseRecord>, StoreError>;
    /// Deletes the generation's lease row (it retired).
    async fn delete_lease(&mut self, key: &ModelKey) -> Result<(), StoreError>;
    /// Sets the node's announcement to expire `ttl_ms` from now (negative: already gone).
    async fn announce_node(&mut self, node: &str, ttl_ms: i64) -> Result<(), StoreError>;
    /// The nodes whose announcement has not expired, sorted.
    async fn live_nodes(&mut self) -> Result<Vec<String>, StoreError>;

    /// Keeps a module's bytes under `hash` unless some are kept there already.
    async fn put_module(&mut self, hash: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// The module bytes kept under `hash`.
    async fn module(&mut self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes the module kept under `hash` unless a generation (of any
    /// projection, any role) still names it.
    async fn delete_unused_module(&mut self, hash: &str) -> Result<(), StoreError>;

    /// Commits.
    async fn commit(self) -> Result<(), StoreError>;
}

/// A backend: where transactions come from, and the reads that need none.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's transaction.
    type Tx: Tx;
    /// A write transaction that excludes other registry writers.
    async fn registry_tx(&self) -> Result<Self::Tx, StoreError>;
    /// A write transaction for a runner's commit.
    async fn write_tx(&self) -> Result<Self::Tx, StoreError>;
    /// A read-only transaction: one snapshot.
    async fn read_tx(&self) -> Result<Self::Tx, StoreError>;
    /// One document of a generation (hot: the plugin's `get`).
    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError>;
    /// Names of the model tables whose names start with `prefix`, sorted bytewise.
    async fn tables_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// The leases this handle was granted, which its writes are fenced on.
    fn fences(&self) -> &Fences;
    /// Change-log retention and its commit counter.
    fn log_settings(&self) -> &LogSettings;
}

/// Why a conditional checkpoint move matched nothing, given the role the
/// generation has now (`None`: it is gone): another writer moved the
/// checkpoint of a live generation, or the generation was retired.
fn checkpoint_refused(key: &ModelKey, from: u64, role: Option<Role>) -> StoreError {
    match role {
        Some(Role::Active | Role::Building) => {
            StoreError::CheckpointMoved { projection: key.projection.clone(), expected: from }
        }
        _ => StoreError::Retired { projection: key.projection.clone(), generation: key.generation },
    }
}

/// Moves the checkpoint or says why it could not.
async fn move_checkpoint<T: Tx>(tx: &mut T, key: &ModelKey, from: u64, to: u64) -> Result<(), StoreError> {
    if tx.move_checkpoint(key, from, to).await? {
        return Ok(());
    }
    let role = tx.record(key).await?.map(|r| r.role);
    Err(checkpoint_refused(key, from, role))
}

/// Writes `changes` with the generation's manifest, which says which
/// collections keep a search index. The record is read in the writing
/// transaction: a generation's manifest never changes, but a dropped
/// projection's name may come back with another.
async fn apply_changes<T: Tx>(tx: &mut T, key: &ModelKey, changes: &ChangeSet) -> Result<(), StoreError> {
    if changes.collections.is_empty() {
        return Ok(());
    }
    let record = record_in(tx, key).await?;
    tx.apply_changes(key, &record.manifest, changes).await
}

/// Takes a generation out of service: its tables and dead letters go, the
/// record stays as history with its new role.
async fn retire<T: Tx>(
    tx: &mut T,
    record: &ProjectionRecord,
    role: Role,
    error: Option<&str>,
) -> Result<(), StoreError> {
    tx.drop_tables(&record.key, &record.manifest).await?;
    tx.delete_letters(&record.key).await?;
    tx.delete_lease(&record.key).await?;
    let state = if role == Role::Failed { ProjectionState::Faulted } else { ProjectionState::Stopped };
    tx.set_role(&record.key, role, state, error).await
}

/// Inserts a new generation whose tables start empty, whatever a foreign or
/// older registry left under the same names.
async fn start_generation<T: Tx>(tx: &mut T, generation: &NewGeneration<'_>) -> Result<(), StoreError> {
    tx.insert_generation(generation).await?;
    tx.drop_tables(generation.key, generation.manifest).await?;
    tx.create_tables(generation.key, generation.manifest).await
}

async fn active_in<T: Tx>(tx: &mut T, name: &str) -> Result<ProjectionRecord, StoreError> {
    tx.live_generations(Some(name))
        .await?
        .into_iter()
        .find(|g| g.role == Role::Active)
        .ok_or_else(|| StoreError::UnknownProjection(name.to_owned()))
}

async fn record_in<T: Tx>(tx: &mut T, key: &ModelKey) -> Result<ProjectionRecord, StoreError> {
    tx.record(key).await?.ok_or_else(|| StoreError::UnknownProjection(key.projection.clone()))
}

/// The metadata entry that holds whether a projection is paused: registry
/// metadata rather than a column, so that a host's own state writes
/// (`stopped`, `faulted`) never overwrite it.
fn paused_key(name: &str) -> String {
    format!("paused/{name}")
}
const PAUSED: &str = "1";
const RUNNABLE: &str = "0";

/// The metadata key recording that tables carry collision-free names.
const NAMES_MIGRATED: &str = "storage_names";
const NAMES_VERSION: &str = "2";

/// Renames the tables of every live generation from the ambiguous pre-0.2
/// scheme to [`names`], once per store.
pub(crate) async fn migrate_names<B: Backend>(backend: &B) -> Result<(), StoreError> {
    // Every open (a `refract status` too) asks; only a store that still
    // needs migrating takes the write lock, so readers never contend with
    // a host for it.
    let mut read = backend.read_tx().await?;
    let done = read.meta(NAMES_MIGRATED).await?.as_deref() == Some(NAMES_VERSION);
    read.commit().await?;
    if done {
        return Ok(());
    }
    let mut tx = backend.registry_tx().await?;
    if tx.meta(NAMES_MIGRATED).await?.as_deref() == Some(NAMES_VERSION) {
        return tx.commit().await;
    }
    for g in tx.live_generations(None).await? {
        for c in &g.manifest.collections {
            tx.migrate_table(&g.key, &c.name, &c.indexes).await?;
        }
        if matches!(g.role, Role::Active | Role::Building) {
            tx.create_tables(&g.key, &g.manifest).await?;
        }
    }
    tx.set_meta(NAMES_MIGRATED, NAMES_VERSION).await?;
    tx.commit().await
}

#[async_trait]
impl<B: Backend> Registry for B {
    async fn register(&self, manifest: &Manifest, module_hash: &str, source: &str) -> Result<Registration, StoreError> {
        let mut tx = self.registry_tx().await?;
        let live = tx.live_generations(Some(&manifest.name)).await?;
        let active = live.iter().find(|g| g.role == Role::Active).cloned();
        // A building generation of this module resumes before the active one
        // does: after `refract rebuild` both run the same module, and a host
        // restarted mid-rebuild must carry the rebuild on, not retire it.
        let of_module = |role: Role| live.iter().find(|g| g.module_hash == module_hash && g.role == role);
        let resumable = of_module(Role::Building).or_else(|| of_module(Role::Active)).cloned();
        let mut superseded = Vec::new();
        for g in live.iter().filter(|g| g.role == Role::Building) {
            if resumable.as_ref().is_none_or(|r| r.key != g.key) {
                retire(&mut tx, g, Role::Retired, None).await?;
                superseded.push(g.key.clone());
            }
        }
        let target_key = match &resumable {
            Some(g) => {
                tx.create_tables(&g.key, manifest).await?;
                g.key.clone()
            }
            None => {
                let key = ModelKey {
                    projection: manifest.name.clone(),
                    generation: tx.next_generation(&manifest.name).await?,
                };
                // A projection with nothing serving builds in place; otherwise
                // the old generation keeps serving while this one builds.
                let role = if active.is_some() { Role::Building } else { Role::Active };
                start_generation(
                    &mut tx,
                    &NewGeneration { key: &key, role, manifest, module_hash, source, error: None },
                )
                .await?;
                key
            }
        };
        // A faulted generation stays faulted for the same module until
        // `refract retry`: restarting must not silently re-run a poison event.
        tx.resume(&target_key, source).await?;
        redeploy(&mut tx, &manifest.name).await?;
        let target = record_in(&mut tx, &target_key).await?;
        tx.commit().await?;
        let active = active.filter(|a| a.key != target.key);
        Ok(Registration { target, active, superseded })
    }

    async fn record_load_failure(
        &self,
        name: &str,
        module_hash: &str,
        source: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.registry_tx().await?;
        // The watcher may see the same broken file more than once.
        if !tx.live_generations(Some(name)).await?.iter().any(|g| g.module_hash == module_hash) {
            let key = ModelKey { projection: name.to_owned(), generation: tx.next_generation(name).await? };
            let placeholder = Manifest::unknown(name);
            tx.insert_generation(&NewGeneration {
                key: &key,
                role: Role::Failed,
                manifest: &placeholder,
                module_hash,
                source,
                error: Some(error),
            })
            .await?;
        }
        tx.commit().await
    }

    async fn request_rebuild(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        let mut tx = self.registry_tx().await?;
        let active = active_in(&mut tx, name).await?;
        for g in tx.live_generations(Some(name)).await?.iter().filter(|g| g.role == Role::Building) {
            retire(&mut tx, g, Role::Retired, None).await?;
        }
        let key = ModelKey { projection: name.to_owned(), generation: tx.next_generation(name).await? };
        start_generation(
            &mut tx,
            &NewGeneration {
                key: &key,
                role: Role::Building,
                manifest: &active.manifest,
                module_hash: &active.module_hash,
                source: &active.source,
                error: None,
            },
        )
        .await?;
        let record = record_in(&mut tx, &key).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn activate(&self, key: &ModelKey) -> Result<Option<ModelKey>, StoreError> {
        let mut tx = self.registry_tx().await?;
        let live = tx.live_generations(Some(&key.projection)).await?;
        let Some(target) = live.iter().find(|g| g.key == *key) else {
            return Err(StoreError::Retired { projection: key.projection.clone(), generation: key.generation });
        };
        if target.role == Role::Active {
            tx.commit().await?;
            return Ok(None);
        }
        check_fence(self, &mut tx, key).await?;
        let mut retired = None;
        for g in live.iter().filter(|g| g.key != *key) {
            // Failed attempts are history once a newer generation serves.
            retire(&mut tx, g, Role::Retired, None).await?;
            if g.role == Role::Active {
                retired = Some(g.key.clone());
            }
        }
        tx.make_active(key).await?;
        tx.commit().await?;
        Ok(retired)
    }

    async fn fail_generation(&self, key: &ModelKey, error: &str) -> Result<(), StoreError> {
        let mut tx = self.registry_tx().await?;
        if let Some(record) = tx.record(key).await? {
            retire(&mut tx, &record, Role::Failed, Some(error)).await?;
        }
        tx.commit().await
    }

    async fn drop_projection(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.registry_tx().await?;
        let all = tx.all_generations(name).await?;
        if all.is_empty() {
            return Err(StoreError::UnknownProjection(name.to_owned()));
        }
        for g in &all {
            tx.drop_tables(&g.key, &g.manifest).await?;
        }
        tx.delete_projection(name).await?;
        let mut hashes: Vec<String> = all.iter().map(|g| g.module_hash.clone()).collect();
        hashes.sort();
        hashes.dedup();
        forget_modules(&mut tx, &hashes).await?;
        // A projection registered again under the name starts deployed.
        redeploy(&mut tx, name).await?;
        // A projection registered again under the name starts unpaused.
        if tx.meta(&paused_key(name)).await?.is_some() {
            tx.set_meta(&paused_key(name), RUNNABLE).await?;
        }
        // ... and unverified: its generation numbers start over.
        let verified = super::verifications::verify_key(name);
        if tx.meta(&verified).await?.is_some() {
            tx.set_meta(&verified, "").await?;
        }
        tx.commit().await
    }

    async fn projections(&self) -> Result<Vec<ProjectionRecord>, StoreError> {
        let mut tx = self.read_tx().await?;
        let all = tx.live_generations(None).await?;
        tx.commit().await?;
        Ok(all)
    }

    async fn projection(&self, name: &str) -> Result<ProjectionRecord, StoreError> {
        let mut tx = self.read_tx().await?;
        let active = active_in(&mut tx, name).await;
        tx.commit().await?;
        active
    }

    async fn generation(&self, key: &ModelKey) -> Result<ProjectionRecord, StoreError> {
        let mut tx = self.read_tx().await?;
        let record = record_in(&mut tx, key).await;
        tx.commit().await?;
        record
    }

    async fn set_state(
        &self,
        key: &ModelKey,
        state: ProjectionState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        tx.set_state(key, state, last_error).await?;
        tx.commit().await
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let mut tx = self.read_tx().await?;
        let active = active_in(&mut tx, name).await?;
        let letters = tx.letters(&active.key).await?;
        tx.commit().await?;
        Ok(letters)
    }

    async fn request_retry(&self, name: &str) -> Result<RetryRequest, StoreError> {
        let mut tx = self.registry_tx().await?;
        let active = active_in(&mut tx, name).await?;
        let cleared_fault = tx.clear_fault(&active.key).await?;
        let replays = tx.mark_replays(&active.key).await?;
        tx.commit().await?;
        Ok(RetryRequest { cleared_fault, replays })
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool, StoreError> {
        let mut tx = self.registry_tx().await?;
        if tx.all_generations(name).await?.is_empty() {
            return Err(StoreError::UnknownProjection(name.to_owned()));
        }
        let was = tx.meta(&paused_key(name)).await?.as_deref() == Some(PAUSED);
        if was != paused {
            tx.set_meta(&paused_key(name), if paused { PAUSED } else { RUNNABLE }).await?;
        }
        tx.commit().await?;
        Ok(was != paused)
    }

    async fn is_paused(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.read_tx().await?;
        let paused = tx.meta(&paused_key(name)).await?.as_deref() == Some(PAUSED);
        tx.commit().await?;
        Ok(paused)
    }

    async fn reset_checkpoint(&self, name: &str, to: u64) -> Result<u64, StoreError> {
        let refused = |reason: String| StoreError::AdminRefused { projection: name.to_owned(), reason };
        let mut tx = self.registry_tx().await?;
        let active = active_in(&mut tx, name).await?;
        if let Some(b) = tx.live_generations(Some(name)).await?.iter().find(|g| g.role == Role::Building) {
            return Err(refused(format!(
                "generation {} is being built (a rebuild or a new module): reset applies to a projection whose module did not change; wait for the swap",
                b.key.generation
            )));
        }
        if tx.meta(&paused_key(name)).await?.as_deref() != Some(PAUSED) {
            return Err(refused("it is not paused: pause it first".into()));
        }
        if let Some(l) = tx.all_leases().await?.into_iter().find(|l| l.key == active.key && !l.expired) {
            return Err(refused(format!("node `{}` still runs it; wait until it has stopped", l.owner)));
        }
        let key = &active.key;
        if to == 0 {
            tx.drop_tables(key, &active.manifest).await?;
            tx.create_tables(key, &active.manifest).await?;
            tx.delete_letters(key).await?;
        } else {
            let letters = tx.letters(key).await?;
            if letters.iter().any(|l| l.position > to) {
                tx.delete_letters(key).await?;
                for l in letters.iter().filter(|l| l.position <= to) {
                    tx.insert_letter(key, l).await?;
                }
            }
        }
        move_checkpoint(&mut tx, key, active.checkpoint, to).await?;
        tx.clear_fault(key).await?;
        tx.commit().await?;
        Ok(active.checkpoint)
    }

    async fn tables(&self, projection: &str) -> Result<Vec<String>, StoreError> {
        let prefix = names::table_prefix(projection);
        Ok(self.tables_with_prefix(&prefix).await?.into_iter().filter(|t| names::is_table_of(&prefix, t)).collect())
    }

    async fn claim_source_identity(&self, key: &ModelKey, identity: &str) -> Result<String, StoreError> {
        // The generation number leads: a projection name cannot end the
        // number early, so every (projection, generation) gets its own name.
        let name = format!("source-identity:{}:{}", key.generation, key.projection);
        let mut tx = self.registry_tx().await?;
        let recorded = match tx.meta(&name).await? {
            Some(recorded) => recorded,
            None => {
                tx.set_meta(&name, identity).await?;
                identity.to_owned()
            }
        };
        tx.commit().await?;
        Ok(recorded)
    }
}

#[async_trait]
impl<B: Backend> ModelWriter for B {
    async fn commit(&self, key: &ModelKey, changes: &ChangeSet, from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        check_fence(self, &mut tx, key).await?;
        move_checkpoint(&mut tx, key, from, to).await?;
        log_commit(self, &mut tx, key, to, changes).await?;
        apply_changes(&mut tx, key, changes).await?;
        tx.commit().await
    }

    async fn skip_event(&self, key: &ModelKey, letter: &DeadLetter, from: u64, to: u64) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        check_fence(self, &mut tx, key).await?;
        move_checkpoint(&mut tx, key, from, to).await?;
        tx.insert_letter(key, letter).await?;
        tx.commit().await
    }

    async fn finish_replay(
        &self,
        key: &ModelKey,
        position: u64,
        outcome: Result<&ChangeSet, &str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        check_fence(self, &mut tx, key).await?;
        // The claim comes first and in the same transaction: a second host
        // replaying the same letter finds it claimed and applies nothing.
        let claimed = match outcome {
            Ok(changes) => {
                let claimed = tx.claim_letter(key, position).await?;
                if claimed {
                    log_commit(self, &mut tx, key, position, changes).await?;
                    apply_changes(&mut tx, key, changes).await?;
                }
                claimed
            }
            Err(error) => tx.unmark_letter(key, position, error).await?,
        };
        tx.commit().await?;
        Ok(claimed)
    }

    async fn get(&self, key: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        Backend::get(self, key, collection, id).await
    }
}
