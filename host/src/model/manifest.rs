//! A projection's manifest as the host checks and records it.

use serde::{Deserialize, Serialize};

use crate::model::event::Subscription;

/// Longest projection name; keeps generated table names within PostgreSQL's 63 bytes.
const MAX_PROJECTION_NAME: usize = 30;
/// Longest collection name, for the same reason.
const MAX_COLLECTION_NAME: usize = 20;

/// A manifest that failed validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The projection or a collection has a name the host cannot use.
    #[error(
        "invalid {what} name `{name}`: use 1 to {max} lowercase ASCII letters, digits, `-` or `_`, starting with a letter"
    )]
    InvalidName {
        /// `projection` or `collection`.
        what: &'static str,
        /// The offending name.
        name: String,
        /// Maximum length for this kind of name.
        max: usize,
    },
    /// An index field is not a dotted path of plain identifiers.
    #[error(
        "invalid index field `{field}` in collection `{collection}`: use a JSON field path like `balance` or `owner.name` (ASCII letters, digits, `_`, separated by `.`)"
    )]
    InvalidField {
        /// Collection declaring the index.
        collection: String,
        /// The offending field path.
        field: String,
    },
    /// The same collection is declared twice.
    #[error("collection `{0}` is declared twice")]
    DuplicateCollection(String),
    /// The projection declares no collection at all.
    #[error("the manifest declares no collection")]
    NoCollection,
}

/// A collection a projection writes, with the JSON fields the host indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    /// Collection name.
    pub name: String,
    /// Indexed JSON field paths; queries filter and order on these and `id`.
    pub indexes: Vec<String>,
}

impl CollectionSpec {
    /// Whether `field` can be used in a filter or an order (`id` always can).
    pub fn is_queryable(&self, field: &str) -> bool {
        field == "id" || self.indexes.iter().any(|f| f == field)
    }
}

/// A validated projection manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Projection name, unique in a host.
    pub name: String,
    /// Version string of the projection's logic.
    pub version: String,
    /// Which events the projection receives.
    pub subscription: Subscription,
    /// The collections it writes.
    pub collections: Vec<CollectionSpec>,
}

impl Manifest {
    /// Checks names and fields; the host refuses a plugin whose manifest fails.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name("projection", &self.name, MAX_PROJECTION_NAME)?;
        if self.collections.is_empty() {
            return Err(ManifestError::NoCollection);
        }
        for (i, c) in self.collections.iter().enumerate() {
            check_name("collection", &c.name, MAX_COLLECTION_NAME)?;
            if self.collections[..i].iter().any(|o| o.name == c.name) {
                return Err(ManifestError::DuplicateCollection(c.name.clone()));
            }
            if let Some(bad) = c.indexes.iter().find(|f| !is_field_path(f)) {
                return Err(ManifestError::InvalidField { collection: c.name.clone(), field: bad.clone() });
            }
        }
        Ok(())
    }

    /// A stand-in for a module that failed to load, so the failure can be
    /// recorded under the projection's name. It declares nothing.
    pub fn unknown(name: &str) -> Self {
        Manifest {
            name: name.to_owned(),
            version: "(failed to load)".to_owned(),
            subscription: Subscription::default(),
            collections: Vec::new(),
        }
    }

    /// The declared collection named `name`, if any.
    pub fn collection(&self, name: &str) -> Option<&CollectionSpec> {
        self.collections.iter().find(|c| c.name == name)
    }
}

fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err(ManifestError::InvalidName { what, name: name.to_owned(), max }) }
}

/// A JSON field path safe to splice into SQL: `a`, `a.b_c`, `x1.y2`.
pub(crate) fn is_field_path(field: &str) -> bool {
    !field.is_empty()
        && field.len() <= 64
        && field.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, collection: &str, index: &str) -> Manifest {
        Manifest {
            name: name.into(),
            version: "1".into(),
            subscription: Subscription::default(),
            collections: vec![CollectionSpec { name: collection.into(), indexes: vec![index.into()] }],
        }
    }

    #[test]
    fn accepts_good_names() {
        assert_eq!(manifest("account-summary", "accounts", "owner.name").validate(), Ok(()));
    }

    #[test]
    fn rejects_names_that_would_break_sql() {
        for bad in ["", "Accounts", "a\"b", "1abc", "a b", &"x".repeat(31)] {
            assert!(matches!(manifest(bad, "c", "f").validate(), Err(ManifestError::InvalidName { .. })), "{bad:?}");
        }
        for bad in ["", "a..b", "a'b", "$.a", "a-b"] {
            assert!(matches!(manifest("p", "c", bad).validate(), Err(ManifestError::InvalidField { .. })), "{bad:?}");
        }
    }

    #[test]
    fn rejects_duplicate_and_missing_collections() {
        let mut m = manifest("p", "c", "f");
        m.collections.push(m.collections[0].clone());
        assert_eq!(m.validate(), Err(ManifestError::DuplicateCollection("c".into())));
        m.collections.clear();
        assert_eq!(m.validate(), Err(ManifestError::NoCollection));
    }
}
