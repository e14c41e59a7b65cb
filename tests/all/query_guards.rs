//! Queries that would silently answer wrongly, over HTTP and the CLI: a
//! cursor reused with another query is refused by name (and followed with
//! its own query visits every document once), an operator typo is refused,
//! and a string compared by order with a numeric field is warned about.

use crate::common;

use std::path::Path;

use common::cli::{output, refract, succeed};
use common::http::{Client, all_pages, enc, start_api};
use common::*;
use refract::SyncConfig;
use serde_json::Value;

const ACCOUNTS: &str = "/projections/account-summary/accounts";

const MISMATCH_TAIL: &str = "pass a cursor only with the order, filters and search of the query whose page returned \
                             it, or leave the cursor out to start from the first page";

/// Every page of `path` over HTTP, `limit` at a time; the ids in order.
async fn http_ids(client: &mut Client, path: &str, limit: usize) -> Vec<String> {
    all_pages(client, path, limit).await.into_iter().map(|(id, _)| id).collect()
}

/// One page of `refract query` with `args`: its ids and next cursor.
fn cli_page(data: &Path, args: &[&str]) -> (Vec<String>, Option<String>) {
    let out = succeed(refract(data).args(["query", "account-summary", "accounts"]).args(args));
    let page: Value = serde_json::from_str(&out).unwrap();
    let ids = page["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    (ids, page["next_cursor"].as_str().map(str::to_owned))
}

/// A host running `account-summary` over `events`, caught up, with the
/// API on loopback; the data dir is the temp dir, for the CLI.
async fn serve(events: &[BankEvent]) -> (refract::Host, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path()).await;
    append_all(stores.events.as_ref(), events).await;
    let mut host = stores.host(SyncConfig::default());
    host.start(host.runtime().load(&plugin("account_summary")).unwrap()).await.unwrap();
    host.wait_until_caught_up().await.unwrap();
    let addr = start_api(&host).await;
    (host, addr, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_reused_with_another_query_is_refused_and_its_own_query_pages_through_everything() {
    let events = bank_events(300, 900, 41);
    let (host, addr, dir) = serve(&events).await;

    // Largest balance first, ties by id descending, computed here.
    let mut want: Vec<(i64, String)> = expected_accounts(&events).into_iter().map(|(id, a)| (a.balance, id)).collect();
    want.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(want.len(), 300);

    // HTTP: a cursor of `-balance` is refused by `balance` and by a filtered query.
    let mut client = Client::connect(addr).await;
    let first = client.get(&format!("{ACCOUNTS}?order=-balance&limit=40")).await.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let refusals = [
        (format!("order=balance&cursor={}", enc(&cursor)), "it was made for order `-balance`, not `balance`"),
        (
            format!("order=-balance&filter={}&cursor={}", enc("status=open"), enc(&cursor)),
            "it was made for other filters",
        ),
        (format!("cursor={}", enc(&cursor)), "it was made for order `-balance`, not `id`"),
    ];
    for (query, differs) in &refusals {
        let reply = client.get(&format!("{ACCOUNTS}?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        assert_eq!(reply.content_type, "application/json", "{query}");
        let expected = format!("this cursor belongs to another query ({differs}): {MISMATCH_TAIL}");
        assert_eq!(reply.json(), serde_json::json!({ "error": expected }), "{query}");
    }
    // Its own query, at any page size, visits every document once, in order.
    assert_eq!(http_ids(&mut client, &format!("{ACCOUNTS}?order=-balance"), 40).await, want);
    assert_eq!(http_ids(&mut client, &format!("{ACCOUNTS}?order=-balance"), 7).await, want);

    // The CLI, on the same data dir: the same refusal on standard error.
    let data = dir.path();
    let (ids, cursor) = cli_page(data, &["--order=-balance", "--limit=40"]);
    assert_eq!(ids, want[..40]);
    let cursor = cursor.unwrap();
    let refused =
        output(refract(data).args(["query", "account-summary", "accounts", "--order=balance", "--cursor", &cursor]));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let expected = format!(
        "this cursor belongs to another query (it was made for order `-balance`, not `balance`): {MISMATCH_TAIL}"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(refused.stdout.is_empty(), "no page is printed");

    let mut got = ids;
    let mut next = Some(cursor);
    while let Some(c) = next {
        let (ids, cursor) = cli_page(data, &["--order=-balance", "--limit=40", "--cursor", &c]);
        got.extend(ids);
        next = cursor;
    }
    assert_eq!(got, want);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_typos_are_refused_and_strings_against_numbers_are_warned_about() {
    let events = bank_events(50, 150, 7);
    let (host, addr, dir) = serve(&events).await;
    let expected = expected_accounts(&events);
    let mut client = Client::connect(addr).await;

    let typo = |filter: &str, field: &str, operator: &str| {
        format!(
            "bad filter `{filter}`: `{operator}` is not an operator; use =, !=, <, <=, >, >= or =in:[...] (to compare \
             with a value that starts with = ! < or >, write it as a JSON string, e.g. {field}=\"=x\")"
        )
    };
    for (filter, operator) in [("balance>>100", ">>"), ("balance=>100", "=>"), ("balance<>100", "<>")] {
        let reply = client.get(&format!("{ACCOUNTS}?filter={}", enc(filter))).await;
        assert_eq!(reply.status, 400, "{filter}: {}", reply.text);
        assert_eq!(reply.json(), serde_json::json!({ "error": typo(filter, "balance", operator) }));
    }
    let data = dir.path();
    let refused = output(refract(data).args(["query", "account-summary", "accounts", "--where", "balance=<100"]));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&typo("balance=<100", "balance", "=<")), "{stderr}");

    // `balance` holds numbers: a string compared by order is warned about,
    // next to the answer; a string field compared with a string is not.
    let warning = |op: &str| {
        format!(
            "filter `balance{op}\"abc\"` compares `balance` with the string \"abc\", but `balance` holds numbers: \
             numbers and strings do not compare by value, so it matches every number or none; compare with a number, \
             e.g. `balance{op}100`"
        )
    };
    let page = client.get(&format!("{ACCOUNTS}?filter={}", enc("balance>=abc"))).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.json()["warnings"], serde_json::json!([warning(">=")]));
    let count =
        client.get(&format!("{ACCOUNTS}?count=true&filter={}&filter={}", enc("balance<abc"), enc("status=open"))).await;
    assert_eq!(count.json()["warnings"], serde_json::json!([warning("<")]), "{}", count.text);
    let owners = client.get(&format!("{ACCOUNTS}?filter={}&limit=1000", enc("owner>=owner-3"))).await.json();
    assert_eq!(owners.get("warnings"), None, "{owners}");
    let want = expected.values().filter(|a| a.owner.as_str() >= "owner-3").count();
    assert_eq!(owners["documents"].as_array().unwrap().len(), want);
    let numeric = client.get(&format!("{ACCOUNTS}?filter={}&limit=1000", enc("balance>=100"))).await.json();
    assert_eq!(numeric.get("warnings"), None, "{numeric}");

    // The CLI warns on standard error and keeps standard output a page.
    let warned = output(refract(data).args(["query", "account-summary", "accounts", "--where", "balance>abc"]));
    assert!(warned.status.success(), "{}", String::from_utf8_lossy(&warned.stderr));
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(stderr.contains(&format!("warning: {}", warning(">"))), "{stderr}");
    let page: Value = serde_json::from_slice(&warned.stdout).unwrap();
    assert!(page["documents"].is_array(), "{page}");
    let quiet =
        output(refract(data).args(["query", "account-summary", "accounts", "--where", "balance>100", "--count"]));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("warning"), "{}", String::from_utf8_lossy(&quiet.stderr));
    let want = expected.values().filter(|a| a.balance > 100).count();
    assert_eq!(String::from_utf8_lossy(&quiet.stdout).trim(), want.to_string());
    host.shutdown().await;
}
