//! Changes returned by a projection, checked and reduced before they are stored.

use std::collections::{BTreeMap, HashMap};

use serde::de::IgnoredAny;

use crate::model::manifest::Manifest;

/// Longest document id, in bytes.
pub const MAX_ID_LEN: usize = 512;

/// One change a projection asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert or replace a document.
    Upsert {
        /// Target collection.
        collection: String,
        /// Document id.
        id: String,
        /// JSON object text.
        body: String,
    },
    /// Remove a document if present.
    Delete {
        /// Target collection.
        collection: String,
        /// Document id.
        id: String,
    },
}

/// A change the host refuses to store; the whole batch is refused with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    /// The projection wrote to a collection it did not declare.
    #[error("undeclared collection `{0}`: a projection may only write the collections in its manifest")]
    UndeclaredCollection(String),
    /// The document id is empty or too long.
    #[error("invalid document id in collection `{collection}`: ids must be 1 to {MAX_ID_LEN} bytes")]
    InvalidId {
        /// Target collection.
        collection: String,
    },
    /// The document body is not a JSON object.
    #[error("invalid document `{id}` in collection `{collection}`: {reason}")]
    InvalidDocument {
        /// Target collection.
        collection: String,
        /// Document id.
        id: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// The net effect of one batch on one collection: each id at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionChanges {
    /// Documents to insert or replace, as `(id, JSON text)`.
    pub upserts: Vec<(String, String)>,
    /// Ids to delete.
    pub deletes: Vec<String>,
}

/// The net effect of one batch, per collection. Later changes to the same
/// document win, so the store can apply upserts and deletes in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Changes keyed by collection name.
    pub collections: BTreeMap<String, CollectionChanges>,
}

impl ChangeSet {
    /// Checks each change against the manifest and keeps the last change per document.
    ///
    /// ```
    /// use refract::{Change, ChangeSet};
    /// # let manifest = refract::Manifest { name: "p".into(), version: "1".into(),
    /// #   subscription: Default::default(),
    /// #   collections: vec![refract::CollectionSpec { name: "c".into(), indexes: vec![], search: vec![] }] };
    /// let set = ChangeSet::from_changes(vec![
    ///     Change::Upsert { collection: "c".into(), id: "1".into(), body: r#"{"n":1}"#.into() },
    ///     Change::Delete { collection: "c".into(), id: "1".into() },
    /// ], &manifest).unwrap();
    /// assert_eq!(set.collections["c"].deletes, vec!["1".to_string()]);
    /// ```
    pub fn from_changes(changes: Vec<Change>, manifest: &Manifest) -> Result<Self, ChangeError> {
        // In order, per collection; duplicates are dropped at the end. (A
        // map per collection cost more than the rest of this function:
        // SDK plugins send each document once per batch.)
        let mut written: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
        for change in changes {
            let (collection, id, body) = match change {
                Change::Upsert { collection, id, body } => (collection, id, Some(body)),
                Change::Delete { collection, id } => (collection, id, None),
            };
            if manifest.collection(&collection).is_none() {
                return Err(ChangeError::UndeclaredCollection(collection));
            }
            if id.is_empty() || id.len() > MAX_ID_LEN {
                return Err(ChangeError::InvalidId { collection });
            }
            if let Some(body) = &body {
                check_document(body).map_err(|reason| ChangeError::InvalidDocument {
                    collection: collection.clone(),
                    id: id.clone(),
                    reason,
                })?;
            }
            match written.get_mut(&collection) {
                Some(docs) => docs.push((id, body)),
                None => {
                    written.insert(collection, vec![(id, body)]);
                }
            }
        }
        let collections = written.into_iter().map(|(name, docs)| (name, net_effect(docs))).collect();
        Ok(Self { collections })
    }

    /// Every changed document as `(collection, id)`.
    pub fn keys(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.collections.iter().flat_map(|(name, c)| {
            c.upserts.iter().map(|(id, _)| id).chain(&c.deletes).map(move |id| (name.clone(), id.clone()))
        })
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }
}

/// The last change of each document, in the order of those last changes.
fn net_effect(docs: Vec<(String, Option<String>)>) -> CollectionChanges {
    let mut last: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    for (i, (id, _)) in docs.iter().enumerate() {
        last.insert(id, i);
    }
    let keep: Option<Vec<bool>> =
        (last.len() < docs.len()).then(|| docs.iter().enumerate().map(|(i, (id, _))| last[id.as_str()] == i).collect());
    drop(last);
    let mut out = CollectionChanges::default();
    for (i, (id, body)) in docs.into_iter().enumerate() {
        if keep.as_ref().is_some_and(|keep| !keep[i]) {
            continue;
        }
        match body {
            Some(body) => out.upserts.push((id, body)),
            None => out.deletes.push(id),
        }
    }
    out
}

fn check_document(body: &str) -> Result<(), String> {
    if !body.trim_start().starts_with('{') {
        return Err("a document must be a JSON object".into());
    }
    serde_json::from_str::<IgnoredAny>(body).map(|_| ()).map_err(|e| format!("not valid JSON ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::CollectionSpec;

    fn manifest() -> Manifest {
        Manifest {
            name: "p".into(),
            version: "1".into(),
            subscription: Default::default(),
            collections: vec![CollectionSpec { name: "c".into(), indexes: vec![], search: vec![] }],
        }
    }

    fn upsert(id: &str, body: &str) -> Change {
        Change::Upsert { collection: "c".into(), id: id.into(), body: body.into() }
    }

    #[test]
    fn last_change_per_document_wins() {
        let set = ChangeSet::from_changes(
            vec![
                upsert("a", r#"{"v":1}"#),
                Change::Delete { collection: "c".into(), id: "a".into() },
                upsert("a", r#"{"v":2}"#),
                upsert("b", r#"{"v":1}"#),
                Change::Delete { collection: "c".into(), id: "b".into() },
            ],
            &manifest(),
        )
        .unwrap();
        let c = &set.collections["c"];
        assert_eq!(c.upserts, vec![("a".to_string(), r#"{"v":2}"#.to_string())]);
        assert_eq!(c.deletes, vec!["b".to_string()]);
    }

    #[test]
    fn net_effect_keeps_each_documents_last_change_in_order() {
        let docs = |ids: &[(&str, Option<&str>)]| {
            ids.iter().map(|(id, b)| (id.to_string(), b.map(str::to_string))).collect::<Vec<_>>()
        };
        let unique = net_effect(docs(&[("b", Some("{}")), ("a", None), ("c", Some("{}"))]));
        assert_eq!(unique.upserts.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(unique.deletes, ["a"]);
        let repeated = net_effect(docs(&[
            ("a", Some("{\"v\":1}")),
            ("b", Some("{}")),
            ("a", None),
            ("a", Some("{\"v\":3}")),
            ("b", None),
        ]));
        assert_eq!(repeated.upserts, [("a".to_string(), "{\"v\":3}".to_string())]);
        assert_eq!(repeated.deletes, ["b"]);
    }

    #[test]
    fn refuses_bad_changes() {
        let m = manifest();
        let undeclared = Change::Delete { collection: "other".into(), id: "a".into() };
        assert_eq!(
            ChangeSet::from_changes(vec![undeclared], &m),
            Err(ChangeError::UndeclaredCollection("other".into()))
        );
        assert!(matches!(ChangeSet::from_changes(vec![upsert("", "{}")], &m), Err(ChangeError::InvalidId { .. })));
        for body in ["{", "[1]", "42", "{\"a\":}"] {
            assert!(
                matches!(
                    ChangeSet::from_changes(vec![upsert("a", body)], &m),
                    Err(ChangeError::InvalidDocument { .. })
                ),
                "{body}"
            );
        }
    }
}
