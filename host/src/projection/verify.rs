//! `refract verify`: rebuilds a projection's active module into a shadow
//! model up to the active generation's checkpoint, compares the two
//! document by document, and reports every difference (up to a limit).
//!
//! The shadow lives in memory, not in store tables: it is thrown away at
//! the end, it must never be swapped in, and it must not be seen by
//! readers or by another node's registry. The comparison is exact because
//! the stored side is read in one snapshot together with its checkpoint
//! (`ModelSnapshot`), and the shadow is rebuilt to exactly that checkpoint,
//! while the active generation keeps following the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::model::changes::{ChangeError, ChangeSet};
use crate::projection::config::{Config, ProjectionConfig};
use crate::projection::modules::module_by_hash;
use crate::projection::policy::VerifyPolicy;
use crate::runtime::plugin::{ModelAccess, Plugin, PluginError, PluginRuntime};
use crate::source::{EventSource, SourceError};
use crate::store::document_cache::DocumentCache;
use crate::store::{
    DeadLetter, ModelKey, ModelWriter, ProjectionState, ReadModelStore, Role, StoreError, VerifyOutcome, VerifyResult,
    VerifyRuns,
};

/// Events per call to the plugin while rebuilding the shadow.
const BATCH: usize = 1000;

/// Why a verification could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The read-model store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The module failed while rebuilding the shadow.
    #[error("the module failed while rebuilding the shadow model: {0}")]
    Plugin(#[from] PluginError),
    /// The module returned changes the host refuses.
    #[error("the module returned a change the host refuses while rebuilding the shadow model: {0}")]
    Refused(#[from] ChangeError),
    /// The active module is neither loaded, nor in the module cache, nor in the store.
    #[error("the module of `{projection}` is not available: {reason}")]
    ModuleUnavailable {
        /// Projection name.
        projection: String,
        /// Why.
        reason: String,
    },
    /// The active generation has dead letters: the active model skipped
    /// events the shadow would have to skip too, so the two cannot be compared.
    #[error(
        "projection `{projection}` has {count} dead letters: retry or drop them first (a model with skipped events cannot be verified)"
    )]
    DeadLetters {
        /// Projection name.
        projection: String,
        /// How many.
        count: usize,
    },
    /// The active generation is faulted: it stopped short of the events
    /// after its checkpoint, and a verify would only tell what the fault does.
    #[error("projection `{projection}` is faulted ({reason}): retry it first (`refract retry {projection}`)")]
    Faulted {
        /// Projection name.
        projection: String,
        /// Its last error.
        reason: String,
    },
    /// A new generation is being built and will replace the active one.
    #[error(
        "projection `{projection}` is being rebuilt (generation {generation} is building): verify it once the new generation is swapped in"
    )]
    Rebuilding {
        /// Projection name.
        projection: String,
        /// The building generation.
        generation: u32,
    },
    /// Another verification of the projection is under way in this host.
    #[error("projection `{projection}` is being verified already: wait for that verification to end")]
    AlreadyRunning {
        /// Projection name.
        projection: String,
    },
}

impl VerifyError {
    /// Whether the projection's state refused the verification before it
    /// started (it was not run, so no result is recorded for it).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Faulted { .. }
                | Self::Rebuilding { .. }
                | Self::AlreadyRunning { .. }
                | Self::Store(StoreError::UnknownProjection(_))
        )
    }
}

/// How a document differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The rebuilt model has it; the store does not.
    MissingInStore,
    /// The store has it; the rebuilt model does not.
    NotRebuilt,
    /// Both have it, with different contents.
    Differs,
}

/// One document that is not the same in the store and in the rebuilt model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Collection.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// How it differs.
    pub kind: DifferenceKind,
    /// The document in the store.
    pub stored: Option<Value>,
    /// The document rebuilt from the log.
    pub rebuilt: Option<Value>,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Projection name.
    pub projection: String,
    /// The active generation that was verified.
    pub generation: u32,
    /// The checkpoint both models were compared at.
    pub checkpoint: u64,
    /// Documents compared (in either model).
    pub documents: u64,
    /// How many documents differ in all.
    pub different: u64,
    /// The differences, up to the limit asked for, by collection then id.
    pub differences: Vec<Difference>,
    /// How long it took, in ms.
    pub elapsed_ms: u64,
}

impl VerifyReport {
    /// Whether the two models are the same.
    pub fn clean(&self) -> bool {
        self.different == 0
    }
}

/// The shadow model: the plugin's `get` reads it, each batch's changes go into it.
#[derive(Default)]
struct Shadow {
    documents: Mutex<HashMap<(String, String), String>>,
}

impl Shadow {
    fn apply(&self, changes: &ChangeSet) {
        let mut docs = self.documents.lock().expect("shadow lock");
        for (collection, c) in &changes.collections {
            for id in &c.deletes {
                docs.remove(&(collection.clone(), id.clone()));
            }
            for (id, body) in &c.upserts {
                docs.insert((collection.clone(), id.clone()), body.clone());
            }
        }
    }
}

#[async_trait]
impl ModelWriter for Shadow {
    async fn commit(&self, key: &ModelKey, _: &ChangeSet, _: u64, _: u64) -> Result<(), StoreError> {
        Err(StoreError::Retired { projection: key.projection.clone(), generation: key.generation })
    }

    async fn skip_event(&self, key: &ModelKey, _: &DeadLetter, _: u64, _: u64) -> Result<(), StoreError> {
        Err(StoreError::Retired { projection: key.projection.clone(), generation: key.generation })
    }

    async fn finish_replay(&self, key: &ModelKey, _: u64, _: Result<&ChangeSet, &str>) -> Result<bool, StoreError> {
        Err(StoreError::Retired { projection: key.projection.clone(), generation: key.generation })
    }

    async fn get(&self, _: &ModelKey, collection: &str, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.documents.lock().expect("shadow lock").get(&(collection.to_owned(), id.to_owned())).cloned())
    }
}

/// The modules a host has loaded, by hash: shared with its [`Verifier`], so
/// that verifying reuses a module the host compiled.
pub(crate) type Plugins = Arc<Mutex<HashMap<String, Arc<Plugin>>>>;

/// Verifies a host's projections: `refract verify`, `POST
/// /projections/{name}/verify` and the `verify_every` schedule all go
/// through [`Verifier::verify`], which checks that the projection can be
/// verified now, finds its module, runs the one comparison below, and
/// records the outcome in the store (what status and metrics show).
/// Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    runtime: PluginRuntime,
    plugins: Plugins,
    source: Arc<dyn EventSource>,
    models: Arc<dyn ReadModelStore>,
    config: Arc<Config>,
    /// Projections being verified now: one verification of a projection at
    /// a time, since each holds the whole model in memory twice.
    running: Arc<Mutex<HashSet<String>>>,
}

/// Marks a projection as being verified until dropped.
struct Claim {
    running: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

impl Verifier {
    pub(crate) fn new(
        runtime: PluginRuntime,
        plugins: Plugins,
        source: Arc<dyn EventSource>,
        models: Arc<dyn ReadModelStore>,
        config: Arc<Config>,
    ) -> Self {
        Self { runtime, plugins, source, models, config, running: Arc::default() }
    }

    /// The same, loading modules that are not loaded yet with `runtime` (the
    /// host's, once it has its module cache).
    pub(crate) fn with_runtime(mut self, runtime: PluginRuntime) -> Self {
        self.runtime = runtime;
        self
    }

    /// Rebuilds the active module of `name` into a shadow model up to the
    /// active checkpoint and compares the two, listing up to `limit`
    /// differences; the outcome becomes the projection's last verification.
    /// Refused (nothing recorded) while the projection is faulted, being
    /// rebuilt, or being verified already.
    pub async fn verify(&self, name: &str, limit: usize) -> Result<VerifyReport, VerifyError> {
        self.verify_with(name, limit, VerifyPolicy::Report).await
    }

    /// [`verify`](Self::verify), and on a difference under
    /// [`VerifyPolicy::Rebuild`] a new generation of the active module (the
    /// registry's `request_rebuild`, as `POST …/rebuild`), noted in the outcome.
    pub(crate) async fn verify_with(
        &self,
        name: &str,
        limit: usize,
        policy: VerifyPolicy,
    ) -> Result<VerifyReport, VerifyError> {
        let _claim = self.claim(name)?;
        let started = Instant::now();
        let record = self.models.projection(name).await?;
        if record.state == ProjectionState::Faulted {
            let reason = record.last_error.unwrap_or_else(|| "no error recorded".to_owned());
            return Err(VerifyError::Faulted { projection: name.to_owned(), reason });
        }
        let generations = self.models.projections().await?;
        if let Some(b) = generations.iter().find(|g| g.key.projection == name && g.role == Role::Building) {
            return Err(VerifyError::Rebuilding { projection: name.to_owned(), generation: b.key.generation });
        }
        let outcome = match self.plugin(name, &record.module_hash, &record.source).await {
            Ok(plugin) => {
                let config = self.config.for_projection(name);
                verify(&plugin, self.source.as_ref(), self.models.as_ref(), &config, limit).await
            }
            Err(e) => Err(e),
        };
        let mut rebuild = None;
        if let Ok(report) = &outcome {
            if !report.clean() && policy == VerifyPolicy::Rebuild {
                match self.models.request_rebuild(name).await {
                    Ok(r) => {
                        tracing::warn!(
                            projection = %name,
                            different = report.different,
                            generation = r.key.generation,
                            "verify found differences; rebuilding (verify_policy = \"rebuild\")"
                        );
                        rebuild = Some(r.key.generation);
                    }
                    Err(e) => {
                        tracing::error!(projection = %name, error = %e, "verify found differences; the rebuild could not be started")
                    }
                }
            }
        }
        self.record(name, record.key.generation, &outcome, rebuild, started).await;
        outcome
    }

    fn claim(&self, name: &str) -> Result<Claim, VerifyError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !running.insert(name.to_owned()) {
            return Err(VerifyError::AlreadyRunning { projection: name.to_owned() });
        }
        Ok(Claim { running: self.running.clone(), name: name.to_owned() })
    }

    /// The module with this hash: the host's, else from the module cache or the store.
    async fn plugin(&self, name: &str, hash: &str, source: &str) -> Result<Arc<Plugin>, VerifyError> {
        module_by_hash(&self.runtime, &self.plugins, self.models.as_ref(), hash, source)
            .await
            .map_err(|e| VerifyError::ModuleUnavailable { projection: name.to_owned(), reason: e.to_string() })
    }

    /// Records how a verification that ran ended; a store that cannot
    /// record it is logged, and does not turn the verification into a failure.
    async fn record(
        &self,
        name: &str,
        generation: u32,
        outcome: &Result<VerifyReport, VerifyError>,
        rebuild: Option<u32>,
        started: Instant,
    ) {
        let mut o = VerifyOutcome {
            at: crate::clock::now_ms().max(0) as u64,
            generation,
            result: VerifyResult::Error,
            checkpoint: None,
            documents: None,
            different: None,
            error: None,
            elapsed_ms: started.elapsed().as_millis() as u64,
            rebuild,
            runs: VerifyRuns::default(),
        };
        match outcome {
            Ok(r) => {
                o.result = if r.clean() { VerifyResult::Clean } else { VerifyResult::Differences };
                (o.checkpoint, o.documents, o.different) = (Some(r.checkpoint), Some(r.documents), Some(r.different));
            }
            Err(e) if e.is_refusal() => return,
            Err(e) => o.error = Some(e.to_string()),
        }
        if let Err(e) = self.models.record_verification(name, &o).await {
            tracing::warn!(projection = %name, error = %e, "could not record the verification's outcome");
        }
    }
}

/// Verifies `projection`, whose active module is `plugin`: see the module docs.
pub(crate) async fn verify(
    plugin: &Plugin,
    source: &dyn EventSource,
    models: &dyn ReadModelStore,
    config: &ProjectionConfig,
    limit: usize,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let manifest = plugin.manifest().clone();
    let name = manifest.name.clone();
    let letters = models.dead_letters(&name).await?;
    if !letters.is_empty() {
        return Err(VerifyError::DeadLetters { projection: name, count: letters.len() });
    }
    let (record, stored) = models.snapshot(&name).await?;
    let shadow = Arc::new(Shadow::default());
    let access = ModelAccess {
        store: shadow.clone(),
        key: ModelKey { projection: name.clone(), generation: 0 },
        collections: manifest.collections.iter().map(|c| c.name.clone()).collect::<HashSet<_>>(),
        runtime: tokio::runtime::Handle::current(),
        // No cache: every `get` reads the shadow, which is already in memory.
        documents: Arc::new(DocumentCache::new(0)),
    };
    let mut instance = plugin.instantiate(access, &config.limits)?;
    let mut from = 0;
    while from < record.checkpoint {
        let events = source.read(from, record.checkpoint, &manifest.subscription, BATCH).await?;
        let Some(last) = events.last() else { break };
        from = last.position;
        let limits = config.limits.clone();
        let (back, changes) = tokio::task::spawn_blocking(move || {
            let changes = instance.handle(&events, &limits);
            (instance, changes)
        })
        .await
        .map_err(|e| PluginError::Trap(format!("the plugin call panicked: {e}")))?;
        instance = back;
        shadow.apply(&ChangeSet::from_changes(changes?, &manifest)?);
    }
    let rebuilt: BTreeMap<(String, String), String> =
        std::mem::take(&mut *shadow.documents.lock().expect("shadow lock")).into_iter().collect();
    let stored: BTreeMap<(String, String), String> =
        stored.into_iter().map(|d| ((d.collection, d.id), d.body)).collect();
    let (documents, different, differences) = compare(&stored, &rebuilt, limit);
    Ok(VerifyReport {
        projection: name,
        generation: record.key.generation,
        checkpoint: record.checkpoint,
        documents,
        different,
        differences,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Compares the two models as JSON values (so key order and spacing, which
/// a store may normalize, do not count): how many documents in all, how many
/// differ, and the first `limit` differences.
fn compare(
    stored: &BTreeMap<(String, String), String>,
    rebuilt: &BTreeMap<(String, String), String>,
    limit: usize,
) -> (u64, u64, Vec<Difference>) {
    let keys: std::collections::BTreeSet<&(String, String)> = stored.keys().chain(rebuilt.keys()).collect();
    let mut different = 0;
    let mut out = Vec::new();
    for key in &keys {
        let (s, r) = (stored.get(*key).map(|t| parse(t)), rebuilt.get(*key).map(|t| parse(t)));
        let kind = match (&s, &r) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => DifferenceKind::Differs,
            (None, _) => DifferenceKind::MissingInStore,
            (_, None) => DifferenceKind::NotRebuilt,
        };
        different += 1;
        if out.len() < limit {
            out.push(Difference { collection: key.0.clone(), id: key.1.clone(), kind, stored: s, rebuilt: r });
        }
    }
    (keys.len() as u64, different, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(docs: &[(&str, &str)]) -> BTreeMap<(String, String), String> {
        docs.iter().map(|(id, body)| (("c".to_owned(), id.to_string()), body.to_string())).collect()
    }

    #[test]
    fn every_kind_of_difference_is_found_and_the_list_is_cut_at_the_limit() {
        let stored = model(&[("a", r#"{"x":1,"y":2}"#), ("b", r#"{"x":1}"#), ("c", "{}")]);
        let rebuilt = model(&[("a", r#"{"y":2, "x":1}"#), ("b", r#"{"x":2}"#), ("d", "{}")]);
        let (documents, different, diffs) = compare(&stored, &rebuilt, 10);
        assert_eq!((documents, different), (4, 3));
        let kinds: Vec<(&str, DifferenceKind)> = diffs.iter().map(|d| (d.id.as_str(), d.kind)).collect();
        assert_eq!(
            kinds,
            [("b", DifferenceKind::Differs), ("c", DifferenceKind::NotRebuilt), ("d", DifferenceKind::MissingInStore)],
            "key order does not count as a difference"
        );
        let (_, different, diffs) = compare(&stored, &rebuilt, 1);
        assert_eq!((different, diffs.len()), (3, 1));
    }
}
