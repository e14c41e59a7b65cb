//! Storage names derived from projection and collection names, unambiguous
//! by construction.
//!
//! Projection and collection names are `[a-z][a-z0-9_-]*` (the manifest
//! checks it), so `:` can never occur inside one: a table name
//! `rm:{projection}:g{generation}:{collection}` splits back into its parts
//! one way only. The pre-0.2 scheme `rm_{projection}_g{n}__{collection}`
//! did not: projection `a` with collection `b_g1__c` and projection
//! `a_g1__b` with collection `c` shared a table. [`legacy_table_name`] is
//! kept for the one-time migration of older stores.

use super::ModelKey;

/// The table holding one collection of one generation (unquoted).
pub(crate) fn table_name(key: &ModelKey, collection: &str) -> String {
    format!("rm:{}:g{}:{collection}", key.projection, key.generation)
}

/// An index on `field` of that table (unquoted). Field paths are
/// `[A-Za-z0-9_.]`, so `:` separates them unambiguously too.
pub(crate) fn index_name(key: &ModelKey, collection: &str, field: &str) -> String {
    format!("{}:{field}", table_name(key, collection))
}

/// The prefix every table of a projection's generations starts with.
pub(crate) fn table_prefix(projection: &str) -> String {
    format!("rm:{projection}:g")
}

/// Whether `table`, which starts with `prefix` (from [`table_prefix`]), is
/// a table of that projection: a generation number follows, then `:`.
pub(crate) fn is_table_of(prefix: &str, table: &str) -> bool {
    let Some(rest) = table.strip_prefix(prefix) else { return false };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(':')
}

/// The change log of one generation (unquoted). Its own prefix keeps it
/// apart from every collection table, and it splits like them.
pub(crate) fn log_table_name(key: &ModelKey) -> String {
    format!("changes:{}:g{}", key.projection, key.generation)
}

/// The full-text index of one collection of one generation (unquoted; an
/// FTS5 table in SQLite). Its own prefix keeps it out of the projection's
/// tables. The `:words` suffix closes the collection's name: SQLite names
/// an FTS5 table's shadow tables by appending `_data`, `_idx`..., and
/// without it the shadow `…:c_data` of collection `c` would be the index
/// of a collection named `c_data`.
pub(crate) fn search_table_name(key: &ModelKey, collection: &str) -> String {
    format!("search:{}:g{}:{collection}:words", key.projection, key.generation)
}

/// The pre-0.2 table name, for migrating older stores.
pub(crate) fn legacy_table_name(key: &ModelKey, collection: &str) -> String {
    format!("rm_{}_g{}__{collection}", key.projection, key.generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(projection: &str, generation: u32) -> ModelKey {
        ModelKey { projection: projection.into(), generation }
    }

    /// The pair that shared a table under the old scheme.
    #[test]
    fn names_that_collided_before_are_distinct() {
        let (a, b) = ((key("a", 1), "b_g1__c"), (key("a_g1__b", 1), "c"));
        assert_eq!(legacy_table_name(&a.0, a.1), legacy_table_name(&b.0, b.1), "the old scheme collided");
        assert_ne!(table_name(&a.0, a.1), table_name(&b.0, b.1));
        assert_ne!(index_name(&a.0, a.1, "x"), index_name(&b.0, b.1, "x"));
    }

    /// Every name splits back into its parts one way only: decoding gives the inputs back.
    #[test]
    fn table_names_decode_to_their_parts() {
        let alphabet = ["a", "b", "_", "-", "g", "1", "__", "_g1", "g1__"];
        let mut names = std::collections::HashMap::new();
        for p1 in alphabet {
            for p2 in alphabet {
                for c in alphabet {
                    let projection = format!("x{p1}{p2}");
                    let collection = format!("y{c}");
                    for generation in [1, 12] {
                        let name = table_name(&key(&projection, generation), &collection);
                        let parts: Vec<&str> = name.splitn(4, ':').collect();
                        assert_eq!(parts, ["rm", projection.as_str(), &format!("g{generation}"), &collection]);
                        let previous = names.insert(name.clone(), (projection.clone(), generation, collection.clone()));
                        assert!(
                            previous.is_none_or(|p| p == (projection.clone(), generation, collection.clone())),
                            "{name}"
                        );
                    }
                }
            }
        }
    }

    /// No search index, nor any shadow table SQLite derives from one by a
    /// suffix, is the index of another collection, or a model table.
    #[test]
    fn search_tables_and_their_shadows_are_distinct() {
        let k = key("p", 1);
        let index = |c: &str| search_table_name(&k, c);
        for shadow in ["_data", "_idx", "_config", "_docsize", "_content"] {
            let derived = format!("{}{shadow}", index("c"));
            assert_ne!(derived, index(&format!("c{shadow}")));
            assert!(!is_table_of(&table_prefix("p"), &derived));
        }
        assert_eq!(search_table_name(&k, "c").splitn(5, ':').collect::<Vec<_>>(), ["search", "p", "g1", "c", "words"]);
        assert_ne!(search_table_name(&k, "c"), log_table_name(&k));
    }

    #[test]
    fn tables_belong_to_their_projection_only() {
        let prefix = table_prefix("a");
        assert!(is_table_of(&prefix, &table_name(&key("a", 3), "c")));
        assert!(!is_table_of(&prefix, "rm:a:gx:c"));
        assert!(!is_table_of(&prefix, &table_name(&key("ab", 1), "c")));
    }
}
