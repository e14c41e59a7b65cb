//! Full-text search on every backend: each result over 12,000 documents is
//! compared with a plain word match computed here, in Rust, from the texts
//! the test wrote. The meaning under test (README, "Full-text search"): a
//! word is a run of letters and digits, case is ignored, a document matches
//! when it holds every word of the search, the last one as a prefix.

use std::collections::BTreeSet;
use std::sync::Arc;

use refract::{
    ChangeSet, CollectionChanges, CollectionSpec, Filter, Manifest, ModelKey, Op, Query, QueryError, ReadModelStore,
    StoreError, Subscription,
};
use serde_json::{Value, json};

const DOCS: usize = 12_000;

const FIRST: [&str; 13] =
    ["Ada", "Adams", "Adaline", "Alan", "Grace", "Émile", "ZOË", "Lovisa", "Bob", "東京", "Ærø", "Max", "Lin"];
const LAST: [&str; 11] =
    ["Lovelace", "Turing", "Hopper", "Love", "Lovely", "Byron", "O'Brien", "Straße", "Smith-Jones", "Ng", "Lee"];
const VOCAB: [&str; 17] = [
    "loves",
    "math",
    "engines",
    "poetry",
    "AND",
    "\"quoted\"",
    "(paren)",
    "star*",
    "near/3",
    "x:y",
    "café",
    "analytical",
    "a1b2",
    "2024",
    "ada",
    "-minus",
    "hyphen-ated",
];

fn manifest() -> Manifest {
    Manifest {
        name: "fts".into(),
        version: "1.0.0".into(),
        subscription: Subscription::default(),
        collections: vec![
            CollectionSpec::new("people", ["balance", "status"]).with_search(["name", "bio", "tags"]),
            CollectionSpec::new("plain", ["balance"]),
        ],
    }
}

/// The documents: names, sentences with words that are search syntax,
/// tags as arrays (with a number in them), some fields missing or not text.
fn docs() -> Vec<(String, Value)> {
    (0..DOCS)
        .map(|i| {
            let (first, last) = (FIRST[i % FIRST.len()], LAST[(i * 7) % LAST.len()]);
            let name = if i % 5 == 0 { format!("{last}, {first}") } else { format!("{first} {last}") };
            let mut doc = json!({
                "name": name,
                "balance": ((i * 7919) % 2_001) as i64 - 1_000,
                "status": if i % 3 == 0 { "closed" } else { "open" },
                "note": "never searched: turing lovelace",
            });
            if i % 17 != 0 {
                let n = 3 + i % 4;
                let bio: Vec<&str> = (0..n).map(|k| VOCAB[(i * 31 + k * 13) % VOCAB.len()]).collect();
                doc["bio"] = json!(bio.join(if i % 2 == 0 { " " } else { ", " }));
            } else {
                doc["bio"] = json!(i);
            }
            if i % 4 == 0 {
                doc["tags"] = json!([VOCAB[i % VOCAB.len()], 7, FIRST[(i / 4) % FIRST.len()]]);
            }
            (format!("p{i:05}"), doc)
        })
        .collect()
}

/// The words of a document, computed here: the strings of `name`, `bio`
/// and `tags`, split at anything but letters and digits, lowercased.
fn words_of(doc: &Value) -> Vec<String> {
    let mut texts = Vec::new();
    for field in ["name", "bio", "tags"] {
        match &doc[field] {
            Value::String(s) => texts.push(s.clone()),
            Value::Array(items) => texts.extend(items.iter().filter_map(|v| v.as_str().map(str::to_owned))),
            _ => {}
        }
    }
    let mut words = Vec::new();
    for t in texts {
        let mut word = String::new();
        for c in t.chars().chain([' ']) {
            if c.is_alphanumeric() {
                word.push(c);
            } else if !word.is_empty() {
                words.push(word.to_lowercase());
                word.clear();
            }
        }
    }
    words
}

/// Whether the document matches: every search word present, the last as a prefix.
fn matches(doc: &Value, search: &[&str]) -> bool {
    let words = words_of(doc);
    let (last, rest) = search.split_last().unwrap();
    rest.iter().all(|s| words.iter().any(|w| w == s)) && words.iter().any(|w| w.starts_with(last))
}

fn expected(docs: &[(String, Value)], search: &[&str], keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    docs.iter().filter(|(_, d)| keep(d) && matches(d, search)).map(|(id, _)| id.clone()).collect()
}

async fn commit(store: &dyn ReadModelStore, key: &ModelKey, upserts: Vec<(String, String)>, deletes: Vec<String>) {
    let from = store.generation(key).await.unwrap().checkpoint;
    let mut set = ChangeSet::default();
    set.collections.insert("people".into(), CollectionChanges { upserts, deletes });
    store.commit(key, &set, from, from + 1).await.unwrap();
}

async fn load(store: &dyn ReadModelStore, docs: &[(String, Value)]) -> ModelKey {
    let key = store.register(&manifest(), "h", "fts.wasm").await.unwrap().target.key;
    for chunk in docs.chunks(3_000) {
        commit(store, &key, chunk.iter().map(|(id, d)| (id.clone(), d.to_string())).collect(), vec![]).await;
    }
    key
}

/// Every page of `query`, following cursors: ids in page order.
async fn all_pages(store: &dyn ReadModelStore, query: Query) -> Vec<String> {
    let mut out = Vec::new();
    let mut query = query;
    loop {
        let page = store.query_documents("fts", "people", &query).await.unwrap();
        assert!(page.documents.len() <= query.limit as usize);
        out.extend(page.documents.iter().map(|d| d.id.clone()));
        match page.next_cursor {
            Some(c) => query = query.after(c),
            None => return out,
        }
    }
}

async fn found(store: &dyn ReadModelStore, query: Query) -> BTreeSet<String> {
    let ids = all_pages(store, query.limit(refract::MAX_LIMIT)).await;
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "no document twice");
    set
}

/// Searches, alone and with filters, order and paging, find exactly the
/// documents the plain word match finds; updates, deletes and a rebuild
/// keep the index in step with the documents.
pub async fn search_matches_independent_results(store: Arc<dyn ReadModelStore>) {
    let mut docs = docs();
    let key = load(store.as_ref(), &docs).await;
    let s = store.as_ref();

    for (text, words) in [
        ("lovelace", vec!["lovelace"]),
        ("LOV", vec!["lov"]),
        ("ada lov", vec!["ada", "lov"]),
        ("Ada, Lovelace.", vec!["ada", "lovelace"]),
        ("ada", vec!["ada"]),
        ("adam", vec!["adam"]),
        ("o'brien", vec!["o", "brien"]),
        ("émile", vec!["émile"]),
        ("emile", vec!["emile"]),
        ("zoë straße", vec!["zoë", "straße"]),
        ("東", vec!["東"]),
        ("quoted paren", vec!["quoted", "paren"]),
        ("and near", vec!["and", "near"]),
        ("smith jones", vec!["smith", "jones"]),
        ("a1", vec!["a1"]),
        ("2024 café", vec!["2024", "café"]),
        ("never", vec!["never"]),
        ("turing lovelace", vec!["turing", "lovelace"]),
        ("nothing-here", vec!["nothing", "here"]),
    ] {
        let want = expected(&docs, &words, |_| true);
        assert_eq!(found(s, Query::new().search(text)).await, want, "search {text:?}");
        let count = s.count_documents("fts", "people", &Query::new().search(text)).await.unwrap();
        assert_eq!(count, want.len() as u64, "count of search {text:?}");
    }
    let common = expected(&docs, &["lov"], |_| true);
    assert!(common.len() > 5_000, "a search with more matches than a page: {}", common.len());
    assert!(expected(&docs, &["never"], |_| true).is_empty(), "`note` is not a search field");

    // With filters, written with the builder and parsed alike.
    let q =
        Query::new().search("ada lov").filter("balance", Op::Ge, 0).with_filter(Filter::parse("status=open").unwrap());
    let want = expected(&docs, &["ada", "lov"], |d| d["balance"].as_i64().unwrap() >= 0 && d["status"] == "open");
    assert!(!want.is_empty());
    assert_eq!(s.count_documents("fts", "people", &q).await.unwrap(), want.len() as u64);
    assert_eq!(found(s, q).await, want);

    // With an order: the order is defined, so the sequence is compared, page by page.
    let mut want: Vec<(i64, String)> = docs
        .iter()
        .filter(|(_, d)| matches(d, &["lov"]))
        .map(|(id, d)| (d["balance"].as_i64().unwrap(), id.clone()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    let got = all_pages(s, Query::new().search("lov").order_by_desc("balance").limit(997)).await;
    assert_eq!(got, want.into_iter().map(|w| w.1).collect::<Vec<_>>());

    // Rank order: small pages give the same sequence as one page, each match once.
    let one_page = store.query_documents("fts", "people", &Query::new().search("ada").limit(10_000)).await.unwrap();
    assert!(one_page.next_cursor.is_none());
    let one: Vec<String> = one_page.documents.iter().map(|d| d.id.clone()).collect();
    assert_eq!(all_pages(s, Query::new().search("ada").limit(89)).await, one);
    assert_eq!(one.iter().cloned().collect::<BTreeSet<_>>(), expected(&docs, &["ada"], |_| true));

    // Where the rank is defined on both backends: more of the word in a
    // shorter text ranks first, equal texts by id.
    let special = vec![
        ("rank-b".to_owned(), json!({ "name": "zyxw filler filler filler filler filler" }).to_string()),
        ("rank-a".to_owned(), json!({ "name": "zyxw zyxw zyxw" }).to_string()),
        ("tie-3".to_owned(), json!({ "name": "qqqz tie" }).to_string()),
        ("tie-1".to_owned(), json!({ "name": "qqqz tie" }).to_string()),
        ("tie-2".to_owned(), json!({ "name": "qqqz tie" }).to_string()),
    ];
    commit(s, &key, special, vec![]).await;
    let ids = |page: refract::Page| page.documents.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.query_documents("fts", "people", &Query::new().search("zyxw")).await.unwrap()),
        ["rank-a", "rank-b"]
    );
    assert_eq!(all_pages(s, Query::new().search("qqqz").limit(1)).await, ["tie-1", "tie-2", "tie-3"]);

    // Updates and deletes move documents in and out of the index.
    let mut upserts = Vec::new();
    for (id, d) in docs.iter_mut().filter(|(_, d)| matches(d, &["lovelace"])).take(400) {
        d["name"] = json!("Renamed Person");
        upserts.push((id.clone(), d.to_string()));
    }
    let deleted: Vec<String> =
        docs.iter().filter(|(_, d)| matches(d, &["hopper"])).take(300).map(|(id, _)| id.clone()).collect();
    docs.retain(|(id, _)| !deleted.contains(id));
    commit(s, &key, upserts, deleted.clone()).await;
    for words in [vec!["lovelace"], vec!["renamed", "pers"], vec!["hopper"], vec!["lov"]] {
        let text = words.join(" ");
        assert_eq!(
            found(s, Query::new().search(&text)).await,
            expected(&docs, &words, |_| true),
            "after changes: {text}"
        );
    }
    // A document deleted and written again in one later batch is found once.
    let back = docs.iter().find(|(_, d)| matches(d, &["renamed"])).unwrap().clone();
    commit(s, &key, vec![], vec![back.0.clone()]).await;
    commit(s, &key, vec![(back.0.clone(), back.1.to_string())], vec![]).await;
    assert_eq!(found(s, Query::new().search("renamed")).await, expected(&docs, &["renamed"], |_| true));

    // A refused commit leaves no words behind.
    let mut set = ChangeSet::default();
    let ghost = ("ghost".to_owned(), json!({ "name": "Phantomword" }).to_string());
    set.collections.insert("people".into(), CollectionChanges { upserts: vec![ghost], deletes: vec![] });
    let err = s.commit(&key, &set, 0, 1).await.unwrap_err();
    assert!(matches!(err, StoreError::CheckpointMoved { .. }), "{err}");
    assert!(found(s, Query::new().search("phantomword")).await.is_empty());

    // A rebuilt generation starts with an empty index and indexes its own documents.
    let rebuilt = s.request_rebuild("fts").await.unwrap().key;
    commit(s, &rebuilt, vec![("new-1".into(), json!({ "name": "Fresh Lovelace" }).to_string())], vec![]).await;
    s.activate(&rebuilt).await.unwrap();
    assert_eq!(found(s, Query::new().search("lovelace")).await, BTreeSet::from(["new-1".to_owned()]));
    assert!(found(s, Query::new().search("ada")).await.is_empty());
}

/// Bad searches are refused by kind, before any database sees them.
pub async fn bad_searches_are_refused(store: Arc<dyn ReadModelStore>) {
    load(store.as_ref(), &docs()[..500]).await;
    let s = store.as_ref();
    let refused = |collection: &'static str, q: Query| async move {
        match s.query_documents("fts", collection, &q).await.unwrap_err() {
            StoreError::Query(e) => e,
            other => panic!("expected a query error, got {other}"),
        }
    };
    let op = |o: &str| QueryError::SearchOperator { operator: o.into() };
    for (text, want) in [
        ("\"ada", op("\"")),
        ("ada\"", op("\"")),
        ("lov*", op("*")),
        ("name:ada", op(":")),
        ("(ada)", op("(")),
        ("ada)", op(")")),
        ("^ada", op("^")),
        ("ada & lov", op("&")),
        ("ada | lov", op("|")),
        ("!ada", op("!")),
        ("ada <-> lov", op("<")),
        ("{ada}", op("{")),
        ("ada AND lov", op("AND")),
        ("ada OR lov", op("OR")),
        ("NOT ada", op("NOT")),
        ("ada NEAR lov", op("NEAR")),
        ("ada NEAR/2 lov", op("NEAR/2")),
        ("", QueryError::EmptySearch),
        ("  -- ,. ", QueryError::EmptySearch),
        ("a\0b", QueryError::NulCharacter { what: "the search text".into() }),
    ] {
        assert_eq!(refused("people", Query::new().search(text)).await, want, "{text:?}");
    }
    for text in ["w ".repeat(refract::MAX_SEARCH_WORDS + 1), "x".repeat(refract::MAX_WORD_BYTES + 1), "é".repeat(600)]
    {
        assert!(matches!(refused("people", Query::new().search(&text)).await, QueryError::SearchTooLong(_)));
    }
    assert_eq!(
        refused("plain", Query::new().search("ada")).await,
        QueryError::SearchNotDeclared { collection: "plain".into() }
    );
    let err = refused("people", Query::new().search("ada").filter("note", Op::Eq, "x")).await;
    assert!(matches!(&err, QueryError::NotIndexed { field, .. } if field == "note"), "{err}");

    // A cursor continues only the search and order it came from; any other
    // query refuses it, saying what differs.
    let page = s.query_documents("fts", "people", &Query::new().search("ada").limit(2)).await.unwrap();
    let cursor = page.next_cursor.unwrap();
    let mismatch = |differs: &str| QueryError::CursorMismatch { differs: differs.into() };
    assert_eq!(
        refused("people", Query::new().search("lov").limit(2).after(&cursor)).await,
        mismatch("it was made for the search `ada`, not `lov`")
    );
    assert_eq!(
        refused("people", Query::new().limit(2).after(&cursor)).await,
        mismatch("it was made for best match first, not order `id`")
    );
    let ordered = Query::new().search("ada").order_by("balance").limit(2).after(&cursor);
    assert_eq!(refused("people", ordered).await, mismatch("it was made for best match first, not order `balance`"));
    let plain = s.query_documents("fts", "people", &Query::new().limit(2)).await.unwrap().next_cursor.unwrap();
    assert_eq!(
        refused("people", Query::new().search("ada").after(plain)).await,
        mismatch("it was made for order `id`, not best match first")
    );
    assert!(s.query_documents("fts", "people", &Query::new().search("ada").limit(2).after(cursor)).await.is_ok());
}
