//! Full-text search, decided once for every backend: which words a
//! document is found by, which words a search asks for, and what a search
//! text may not contain. The backends only store and match the words this
//! module gives them (SQLite in an FTS5 table, PostgreSQL in a `tsvector`
//! column with a GIN index), so both find exactly the same documents.
//!
//! **Words.** A word is a run of letters and digits (Unicode alphanumerics),
//! lowercased; everything else separates words. `Ada Lovelace-Byron`, with
//! `ada.lovelace@example.com`, has the words `ada`, `lovelace`, `byron`,
//! `ada`, `lovelace`, `example`, `com`. The words of a document are those
//! of its collection's search fields, in the manifest's order: a string,
//! or the strings in an array; other values are skipped.
//!
//! **Matching.** A search matches the documents that hold every word of the
//! search text, the last one as a prefix: `ada lov` finds "Ada Lovelace",
//! not "Ada Byron". Neither tokenizer nor query parser of either database
//! ever sees the user's text: the words are passed as quoted terms.
//!
//! **Refused** (a 400 naming the problem): characters that are search
//! syntax in FTS5 or PostgreSQL (`"`, `*`, `(`, `)`, `:`, `^`, `&`, `|`,
//! `!`, `{`, `}`, `<`, `>`) and the operator words `AND`, `OR`, `NOT`,
//! `NEAR`, written in capitals: they would mean something else than the
//! plain words the search takes. Also refused: a text with no word, more
//! than [`MAX_SEARCH_WORDS`] words, a word longer than [`MAX_WORD_BYTES`]
//! (no document holds one), a text longer than [`MAX_SEARCH_BYTES`], NUL.

use serde_json::Value;

use crate::model::manifest::CollectionSpec;
use crate::store::query::{QueryError, field_value};

/// Longest search text, in bytes.
pub const MAX_SEARCH_BYTES: usize = 1_000;
/// Most words in one search.
pub const MAX_SEARCH_WORDS: usize = 16;
/// Longest word that is indexed, in bytes: longer runs of letters (a hash,
/// base64) are skipped in documents and refused in searches.
pub const MAX_WORD_BYTES: usize = 64;
/// Words of one document that are indexed: the first this many. Bounds the
/// index entry of a huge document (PostgreSQL's `tsvector` stops at 1 MB).
pub const MAX_DOCUMENT_WORDS: usize = 4_096;

/// Characters that are syntax in FTS5 queries or PostgreSQL's `tsquery`.
const OPERATOR_CHARS: &[char] = &['"', '*', '(', ')', ':', '^', '&', '|', '!', '{', '}', '<', '>'];
/// FTS5's operator words (only in capitals).
const OPERATOR_WORDS: &[&str] = &["AND", "OR", "NOT", "NEAR"];

/// The words of `text`, in order, lowercased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The words a document is found by: those of its search fields, in the
/// declared order, up to [`MAX_DOCUMENT_WORDS`]. Empty for a collection
/// without search fields (or a document that is not JSON).
pub(crate) fn document_words(spec: &CollectionSpec, body: &str) -> Vec<String> {
    if !spec.is_searchable() {
        return Vec::new();
    }
    let Ok(doc) = serde_json::from_str::<Value>(body) else { return Vec::new() };
    let mut out = Vec::new();
    let mut add = |text: &str| {
        out.extend(words(text).filter(|w| w.len() <= MAX_WORD_BYTES));
    };
    for field in &spec.search {
        match field_value(&doc, field) {
            Some(Value::String(s)) => add(s.as_str()),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut add),
            _ => {}
        }
    }
    out.truncate(MAX_DOCUMENT_WORDS);
    out
}

/// A checked search: the words to match, all of them, the last as a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Search {
    /// At least one, at most [`MAX_SEARCH_WORDS`].
    pub words: Vec<String>,
}

impl Search {
    /// Checks `text` for `spec` and splits it into words.
    pub fn parse(spec: &CollectionSpec, text: &str) -> Result<Self, QueryError> {
        if !spec.is_searchable() {
            return Err(QueryError::SearchNotDeclared { collection: spec.name.clone() });
        }
        Self::parse_text(text)
    }

    /// The checks that need no collection.
    pub fn parse_text(text: &str) -> Result<Self, QueryError> {
        if text.contains('\0') {
            return Err(QueryError::NulCharacter { what: "the search text".into() });
        }
        if text.len() > MAX_SEARCH_BYTES {
            return Err(QueryError::SearchTooLong(format!(
                "the search text is {} bytes; the limit is {MAX_SEARCH_BYTES}",
                text.len()
            )));
        }
        if let Some(c) = text.chars().find(|c| OPERATOR_CHARS.contains(c)) {
            return Err(QueryError::SearchOperator { operator: c.to_string() });
        }
        if let Some(w) = text.split_whitespace().find(|w| OPERATOR_WORDS.contains(w) || w.starts_with("NEAR/")) {
            return Err(QueryError::SearchOperator { operator: w.to_owned() });
        }
        let words: Vec<String> = words(text).collect();
        if words.is_empty() {
            return Err(QueryError::EmptySearch);
        }
        if words.len() > MAX_SEARCH_WORDS {
            return Err(QueryError::SearchTooLong(format!(
                "the search has {} words; the limit is {MAX_SEARCH_WORDS}",
                words.len()
            )));
        }
        if let Some(w) = words.iter().find(|w| w.len() > MAX_WORD_BYTES) {
            return Err(QueryError::SearchTooLong(format!(
                "the word `{}…` is longer than {MAX_WORD_BYTES} bytes, and no longer word is indexed",
                w.chars().take(16).collect::<String>()
            )));
        }
        Ok(Self { words })
    }

    /// The words as one string: what a cursor of this search is bound to.
    pub fn key(&self) -> String {
        self.words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CollectionSpec {
        CollectionSpec::new("people", ["age"]).with_search(["name", "tags", "bio.text"])
    }

    #[test]
    fn documents_are_found_by_the_words_of_their_search_fields() {
        let body = r#"{"name": "Ada Lovelace-Byron", "tags": ["Math", 3, "ÉCOLE"], "bio": {"text": "x1 y_2"},
                       "note": "not searched", "age": 36}"#;
        assert_eq!(document_words(&spec(), body), ["ada", "lovelace", "byron", "math", "école", "x1", "y", "2"]);
        assert_eq!(document_words(&spec(), r#"{"name": 7, "tags": "Solo"}"#), ["solo"]);
        assert!(document_words(&CollectionSpec::new("c", ["name"]), r#"{"name": "x"}"#).is_empty());
        let long = format!(r#"{{"name": "short {} end"}}"#, "a".repeat(MAX_WORD_BYTES + 1));
        assert_eq!(document_words(&spec(), &long), ["short", "end"]);
        let many = format!(r#"{{"name": "{}"}}"#, "w ".repeat(MAX_DOCUMENT_WORDS + 10));
        assert_eq!(document_words(&spec(), &many).len(), MAX_DOCUMENT_WORDS);
    }

    #[test]
    fn searches_are_plain_words() {
        let words = |t: &str| Search::parse(&spec(), t).map(|s| s.words);
        assert_eq!(words("Ada lov").unwrap(), ["ada", "lov"]);
        assert_eq!(words("o'brien - x.y@z").unwrap(), ["o", "brien", "x", "y", "z"]);
        assert_eq!(words("and or near").unwrap(), ["and", "or", "near"], "lowercase words are words");
        let op = |o: &str| Err(QueryError::SearchOperator { operator: o.into() });
        assert_eq!(words("\"ada"), op("\""));
        assert_eq!(words("lov*"), op("*"));
        assert_eq!(words("name:ada"), op(":"));
        assert_eq!(words("(a)"), op("("));
        assert_eq!(words("a & b"), op("&"));
        assert_eq!(words("ada AND lov"), op("AND"));
        assert_eq!(words("a NEAR/3 b"), op("NEAR/3"));
        assert_eq!(words(" -- "), Err(QueryError::EmptySearch));
        assert_eq!(words("a\0"), Err(QueryError::NulCharacter { what: "the search text".into() }));
        assert!(matches!(words(&"a ".repeat(17)), Err(QueryError::SearchTooLong(_))));
        assert!(matches!(words(&"a".repeat(65)), Err(QueryError::SearchTooLong(_))));
        assert!(matches!(words(&"a".repeat(1001)), Err(QueryError::SearchTooLong(_))));
        let plain = CollectionSpec::new("plain", ["age"]);
        assert_eq!(
            Search::parse(&plain, "ada").unwrap_err().to_string(),
            "collection `plain` declares no search fields: list text fields in its manifest's `search` to search it"
        );
        assert_eq!(
            words("ada OR lov").unwrap_err().to_string(),
            "the search text contains `OR`, which is search syntax: search takes plain words (all must match, the last as a prefix)"
        );
    }
}
