//! `GET /aggregate/{name}/{collection}` over a real socket with the real
//! `account-summary` plugin: grouped aggregates over 10,000 accounts equal
//! those computed here from the events; bad input is a 400 that names the
//! problem; a read past the store's time limit is a 503 naming the limit.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::http::{Client, enc, start_api};
use common::*;
use refract::{ModelReader, SyncConfig};
use serde_json::{Value, json};

const AGG: &str = "/aggregate/account-summary/accounts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_aggregates_match_independent_results_and_bad_input_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let mut host = stores.host(SyncConfig::default());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    let addr = start_api(&host).await;
    let events = bank_events(10_000, 14_000, 29);
    append_all(stores.events.as_ref(), &events).await;
    let expected = expected_accounts(&events);
    let mut client = Client::connect(addr).await;
    let head = events.len();

    // Per status: count, sum, min, max and avg of balance, computed here.
    let mut by_status: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for a in expected.values() {
        by_status.entry(if a.closed { "closed" } else { "open" }).or_default().push(a.balance);
    }
    let want: Vec<Value> = by_status
        .iter()
        .map(|(status, b)| {
            let sum: i64 = b.iter().sum();
            json!({
                "key": { "status": status },
                "values": {
                    "count": b.len(),
                    "sum(balance)": sum,
                    "min(balance)": b.iter().min(),
                    "max(balance)": b.iter().max(),
                    "avg(balance)": sum as f64 / b.len() as f64,
                }
            })
        })
        .collect();
    let path = format!(
        "{AGG}?group_by=status&agg=count&agg={}&agg={}&agg={}&agg={}&min_position={head}&timeout_ms=60000",
        enc("sum(balance)"),
        enc("min(balance)"),
        enc("max(balance)"),
        enc("avg(balance)")
    );
    let reply = client.get(&path).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json(), json!({ "groups": want }));

    // Filtered, ungrouped, with the query endpoint's filter syntax.
    let rich: Vec<&ExpectedAccount> = expected.values().filter(|a| a.balance >= 300 && a.transactions > 0).collect();
    let path = format!(
        "{AGG}?agg=count&agg={}&agg={}&filter={}&filter={}",
        enc("sum(transactions)"),
        enc("count(owner)"),
        enc("balance>=300"),
        enc("transactions>0")
    );
    let reply = client.get(&path).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sum: u64 = rich.iter().map(|a| a.transactions).sum();
    let values = json!({ "count": rich.len(), "sum(transactions)": sum, "count(owner)": rich.len() });
    assert_eq!(reply.json(), json!({ "groups": [{ "key": {}, "values": values }] }));

    // Bad input: 400, and the message names the problem.
    for (query, needle) in [
        (format!("agg={}", enc("sum(opened_at)")), "cannot aggregate on `opened_at`: it is not indexed"),
        ("agg=count&group_by=opened_at".into(), "cannot aggregate on `opened_at`"),
        (format!("agg={}", enc("sum(owner)")), "`sum(owner)` needs numbers, but `owner` holds strings"),
        (format!("agg={}", enc("avg(status)")), "`avg(status)` needs numbers"),
        (format!("agg={}", enc("median(balance)")), "unknown function `median`"),
        (format!("agg={}", enc("sum(balance")), "bad aggregate `sum(balance`: missing `)`"),
        ("agg=sum".into(), "`sum` needs a field"),
        ("group_by=status".into(), "at least one aggregate"),
        ("agg=count&order=balance".into(), "unknown query parameter `order`"),
        (format!("agg=count&filter={}", enc("secret>1")), "`secret` is not indexed"),
    ] {
        let reply = client.get(&format!("{AGG}?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{query}: {error}");
    }
    assert_eq!(client.get("/aggregate/nope/accounts?agg=count").await.status, 404);

    // A read past the time limit: 503 with the limit, not a 500.
    stores.models.set_read_timeout(Duration::from_millis(1));
    let heavy = format!(
        "{AGG}?group_by=status&group_by=owner&agg=count&agg={}&agg={}",
        enc("sum(balance)"),
        enc("max(transactions)")
    );
    let reply = client.get(&heavy).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.json()["limit_ms"], 1);
    assert!(reply.json()["error"].as_str().unwrap().contains("read time limit of 1 ms"), "{}", reply.text);
    stores.models.set_read_timeout(refract::DEFAULT_READ_TIMEOUT);
    assert_eq!(client.get(&heavy).await.status, 200);
    host.shutdown().await;
}
