//! 10,000 bank events over 500 accounts through the real `account-summary`
//! plugin; every account is checked against values computed in the test.

use crate::common;

use common::*;
use refract::{Filter, Order, Query, SyncConfig};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_summary_matches_independent_computation() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(500, 10_000, 7);
    append_all(stores.events.as_ref(), &events).await;
    let expected = expected_accounts(&events);

    let mut host = stores.host(SyncConfig { batch_size: 250, ..SyncConfig::default() });
    let plugin = host.runtime().load(&plugin("account_summary")).unwrap();
    host.start(plugin).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let progress = host.progress("account-summary").unwrap();
    assert_eq!(progress.checkpoint, 10_000, "{progress:?}");
    host.shutdown().await;

    let models = stores.models_dyn();
    let docs = all_documents(models.as_ref(), "account-summary", "accounts").await;
    assert_eq!(docs.len(), 500);
    assert_accounts(&docs, &expected);
    let record = models.projection("account-summary").await.unwrap();
    assert_eq!(record.checkpoint, 10_000);
    assert_eq!(record.key.generation, 1);
}

/// Filters, order and cursor pagination over the projected accounts give
/// exactly the set and order computed in the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_match_independent_filtering_and_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    let events = bank_events(400, 4_000, 11);
    append_all(stores.events.as_ref(), &events).await;
    let expected = expected_accounts(&events);
    let mut host = stores.host(SyncConfig::default());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    host.shutdown().await;
    let models = stores.models_dyn();

    // balance >= 1000 AND status = "open", ordered by balance descending, pages of 7.
    let query = |cursor| Query {
        filters: vec![Filter::parse("balance>=1000").unwrap(), Filter::parse("status=open").unwrap()],
        order: Some(Order::parse("-balance")),
        limit: 7,
        cursor,
        search: None,
    };
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = models.query_documents("account-summary", "accounts", &query(cursor)).await.unwrap();
        assert!(page.documents.len() <= 7);
        got.extend(page.documents.into_iter().map(|d| d.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want: Vec<(&String, &ExpectedAccount)> =
        expected.iter().filter(|(_, a)| a.balance >= 1000 && !a.closed).collect();
    // Ties on balance are broken by id, in the same direction.
    want.sort_by(|(ia, a), (ib, b)| b.balance.cmp(&a.balance).then(ib.cmp(ia)));
    let want: Vec<String> = want.into_iter().map(|(id, _)| id.clone()).collect();
    assert!(want.len() > 20, "the filter should leave several pages");
    assert_eq!(got, want);

    let count = models
        .count_documents(
            "account-summary",
            "accounts",
            &Query::new().with_filter(Filter::parse("owner=in:[\"owner-1\",\"owner-2\"]").unwrap()),
        )
        .await
        .unwrap();
    let want = expected.values().filter(|a| a.owner == "owner-1" || a.owner == "owner-2").count();
    assert_eq!(count, want as u64);

    // Ascending with a range on both sides, then the next page after the last.
    let page = models
        .query_documents(
            "account-summary",
            "accounts",
            &Query {
                filters: vec![Filter::parse("transactions>5").unwrap(), Filter::parse("transactions<=9").unwrap()],
                order: Some(Order::parse("transactions")),
                limit: refract::MAX_LIMIT,
                cursor: None,
                search: None,
            },
        )
        .await
        .unwrap();
    let mut want: Vec<(u64, String)> = expected
        .iter()
        .filter(|(_, a)| a.transactions > 5 && a.transactions <= 9)
        .map(|(id, a)| (a.transactions, id.clone()))
        .collect();
    want.sort();
    let got: Vec<(u64, String)> = page
        .documents
        .iter()
        .map(|d| (serde_json::from_str::<Value>(&d.body).unwrap()["transactions"].as_u64().unwrap(), d.id.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(page.next_cursor, None);

    // Querying a field that is not indexed is refused with the indexed ones named.
    let err = models
        .query_documents(
            "account-summary",
            "accounts",
            &Query { filters: vec![Filter::parse("opened_at>0").unwrap()], ..Query::default() },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`opened_at` is not indexed"), "{err}");
}
