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
use crate::projection::config::ProjectionConfig;
use crate::runtime::plugin::{ModelAccess, Plugin, PluginError};
use crate::source::{EventSource, SourceError};
use crate::store::document_cache::DocumentCache;
use crate::store::{DeadLetter, ModelKey, ModelWriter, ReadModelStore, StoreError};

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
    /// The active module is neither loaded nor in the module cache.
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
