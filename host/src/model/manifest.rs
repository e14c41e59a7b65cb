//! A projection's manifest as the host checks and records it.

use serde::{Deserialize, Serialize};

use crate::model::event::Subscription;

/// Longest projection name; keeps generated table names within PostgreSQL's 63 bytes.
const MAX_PROJECTION_NAME: usize = 30;
/// Longest collection name, for the same reason.
const MAX_COLLECTION_NAME: usize = 20;

/// Most stream prefixes a manifest may subscribe to. The event stores turn
/// each into a condition of their read statement (SQLite: two bound
/// parameters in a chain of `OR`s, one level of expression depth each), so
/// thousands of them made every read fail on SQLite's limits of 32,766
/// parameters and an expression depth of 1,000, and the projection sat
/// "store unavailable" forever. 64 stays far below both.
pub const MAX_STREAM_PREFIXES: usize = 64;
/// Most event types a manifest may subscribe to: one bound parameter each
/// in the read's `IN` list (with [`MAX_STREAM_PREFIXES`], under 400 in all).
pub const MAX_EVENT_TYPES: usize = 256;

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
    /// The subscription lists more stream prefixes ([`MAX_STREAM_PREFIXES`])
    /// or event types ([`MAX_EVENT_TYPES`]) than the event stores can read by.
    #[error("the manifest subscribes to {count} {what}; the limit is {max}")]
    TooManySubscriptions {
        /// `stream prefixes` or `event types`.
        what: &'static str,
        /// How many it lists.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A subscribed stream prefix or event type holds NUL, which no event
    /// can (PostgreSQL refuses to even compare with it).
    #[error("a subscribed {what} contains a NUL character (U+0000), which no event can hold")]
    NulInSubscription {
        /// `stream prefix` or `event type`.
        what: &'static str,
    },
}

/// A collection a projection writes, with the JSON fields the host indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    /// Collection name.
    pub name: String,
    /// Indexed JSON field paths; queries filter and order on these and `id`.
    pub indexes: Vec<String>,
    /// Top-level or dotted JSON field paths whose text the host indexes for full-text search.
    pub search: Vec<String>,
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
        let Subscription { event_types, stream_prefixes } = &self.subscription;
        for (what, one, list, max) in [
            ("stream prefixes", "stream prefix", stream_prefixes, MAX_STREAM_PREFIXES),
            ("event types", "event type", event_types, MAX_EVENT_TYPES),
        ] {
            if list.len() > max {
                return Err(ManifestError::TooManySubscriptions { what, count: list.len(), max });
            }
            if list.iter().any(|s| s.contains('\0')) {
                return Err(ManifestError::NulInSubscription { what: one });
            }
        }
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
            collections: vec![CollectionSpec { name: collection.into(), indexes: vec![index.into()], search: vec![] }],
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
    fn subscriptions_are_limited_by_name() {
        let mut m = manifest("p", "c", "f");
        let many = |n: usize, what: &str| (0..n).map(|i| format!("{what}-{i}")).collect::<Vec<_>>();
        m.subscription = Subscription {
            event_types: many(MAX_EVENT_TYPES, "Type"),
            stream_prefixes: many(MAX_STREAM_PREFIXES, "stream"),
        };
        assert_eq!(m.validate(), Ok(()), "at the limits");
        m.subscription.stream_prefixes = many(5_000, "stream");
        let err = m.validate().unwrap_err();
        assert_eq!(err, ManifestError::TooManySubscriptions { what: "stream prefixes", count: 5_000, max: 64 });
        assert_eq!(err.to_string(), "the manifest subscribes to 5000 stream prefixes; the limit is 64");
        m.subscription.stream_prefixes.clear();
        m.subscription.event_types = many(MAX_EVENT_TYPES + 1, "Type");
        assert_eq!(
            m.validate(),
            Err(ManifestError::TooManySubscriptions { what: "event types", count: 257, max: MAX_EVENT_TYPES })
        );
        m.subscription.event_types = vec!["Opened".into(), "Clo\0sed".into()];
        assert_eq!(m.validate(), Err(ManifestError::NulInSubscription { what: "event type" }));
        m.subscription = Subscription { event_types: vec![], stream_prefixes: vec!["\0".into()] };
        assert_eq!(m.validate(), Err(ManifestError::NulInSubscription { what: "stream prefix" }));
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
