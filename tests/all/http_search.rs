//! `GET /projections/{name}/{collection}?search=` over a real socket: a
//! collection declared searchable in the store (as a plugin's manifest
//! would declare it), 10,000 documents, searches with filters, order and
//! cursor paging equal to a word match computed here; bad searches are 400s
//! that name the problem.

use std::collections::BTreeSet;

use crate::common::http::{Client, enc, start_api};
use crate::common::*;
use refract::{
    ChangeSet, CollectionChanges, CollectionSpec, Manifest, ModelWriter, Registry, Subscription, SyncConfig,
};
use serde_json::{Value, json};

const DOCS: usize = 10_000;
const OWNERS: [&str; 6] = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Lovisa Berg", "Adam Love", "Bo Ng"];
const NOTES: [&str; 5] = ["pays on time", "loves \"quotes\" (and parens)", "late: twice", "VIP", "lovely AND kind"];

fn doc(i: usize) -> Value {
    json!({
        "owner": OWNERS[i % OWNERS.len()],
        "note": NOTES[(i / 7) % NOTES.len()],
        "balance": ((i * 7919) % 1_000) as i64 - 200,
        "status": if i % 4 == 0 { "closed" } else { "open" },
    })
}

/// The words of `owner` and `note`, as the README defines them.
fn words(d: &Value) -> Vec<String> {
    let text = format!("{} {}", d["owner"].as_str().unwrap(), d["note"].as_str().unwrap());
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn matches(d: &Value, search: &[&str]) -> bool {
    let w = words(d);
    let (last, rest) = search.split_last().unwrap();
    rest.iter().all(|s| w.iter().any(|x| x == s)) && w.iter().any(|x| x.starts_with(last))
}

/// Follows `next_cursor` to the end; the ids in order.
async fn pages(client: &mut Client, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let reply = client.get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text);
        let page = reply.json();
        out.extend(page["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_with_filters_and_paging_and_bad_searches_are_400s() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let manifest = Manifest {
        name: "crm".into(),
        version: "1".into(),
        subscription: Subscription::default(),
        collections: vec![
            CollectionSpec::new("customers", ["balance", "status"]).with_search(["owner", "note"]),
            CollectionSpec::new("plain", ["balance"]),
        ],
    };
    let key = stores.models.register(&manifest, "h", "crm.wasm").await.unwrap().target.key;
    let docs: Vec<(String, Value)> = (0..DOCS).map(|i| (format!("c{i:05}"), doc(i))).collect();
    let mut set = ChangeSet::default();
    let upserts = docs.iter().map(|(id, d)| (id.clone(), d.to_string())).collect();
    set.collections.insert("customers".into(), CollectionChanges { upserts, deletes: vec![] });
    stores.models.commit(&key, &set, 0, 1).await.unwrap();
    let host = stores.host(SyncConfig::default());
    let addr = start_api(&host).await;
    let mut client = Client::connect(addr).await;
    let base = "/projections/crm/customers";

    // Search and filter, in rank order, pages of 250: every match once.
    let path = format!("{base}?search={}&filter={}&limit=250", enc("ada lov"), enc("balance>=0"));
    let got = pages(&mut client, &path).await;
    let want: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| matches(d, &["ada", "lov"]) && d["balance"].as_i64().unwrap() >= 0)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(want.len() > 250, "more than one page: {}", want.len());
    assert_eq!(got.len(), want.len(), "no document twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);

    // Search, filter and order: the order is defined, so the sequence is compared.
    let path = format!("{base}?search=lov&filter={}&order=-balance&limit=333", enc("status=open"));
    let mut want: Vec<(i64, &str)> = docs
        .iter()
        .filter(|(_, d)| matches(d, &["lov"]) && d["status"] == "open")
        .map(|(id, d)| (d["balance"].as_i64().unwrap(), id.as_str()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(pages(&mut client, &path).await, want.iter().map(|w| w.1.to_owned()).collect::<Vec<_>>());

    // Words that look like syntax in the documents are plain words.
    let path = format!("{base}?search={}&limit=10000", enc("quotes and"));
    let want = docs.iter().filter(|(_, d)| matches(d, &["quotes", "and"])).count();
    assert_eq!(pages(&mut client, &path).await.len(), want);

    // A count of a search counts every match, filters included.
    let path = format!("{base}?search=lov&filter={}&count=true", enc("status=open"));
    let want = docs.iter().filter(|(_, d)| matches(d, &["lov"]) && d["status"] == "open").count();
    let reply = client.get(&path).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["count"].as_u64(), Some(want as u64));

    // Bad searches: 400, and the message names the problem.
    for (query, needle) in [
        (format!("search={}", enc("\"ada")), "contains `\"`, which is search syntax"),
        (format!("search={}", enc("lov*")), "contains `*`"),
        (format!("search={}", enc("ada AND lov")), "contains `AND`"),
        (format!("search={}", enc("owner:ada")), "contains `:`"),
        (format!("search={}", enc("(ada)")), "contains `(`"),
        (format!("search={}", enc("ada NEAR lov")), "contains `NEAR`"),
        ("search=".to_owned(), "the search text has no words"),
        (format!("search={}", enc("--")), "the search text has no words"),
        (format!("search={}", "x".repeat(100)), "search too long"),
        (format!("search=ada&filter={}", enc("note=x")), "`note` is not indexed"),
        ("search=ada&cursor=zz".to_owned(), "bad cursor"),
    ] {
        let reply = client.get(&format!("{base}?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{query}: {error}");
    }
    let reply = client.get("/projections/crm/plain?search=ada").await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.json()["error"].as_str().unwrap().contains("collection `plain` declares no search fields"));
}
