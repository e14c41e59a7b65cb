//! Reading events back over HTTP (`GET /streams/{id}`, `GET /events`) and
//! the CLI (`refract events`), page by page, compared with what the test
//! appended.

use serde_json::{Value, json};

use crate::common::cli::{output, refract, succeed};
use crate::common::http::Client;
use crate::common::pg::fresh_schema;
use crate::common::served::serve;

/// What the test appended: (position, stream, version, type, payload).
type Appended = Vec<(u64, String, u64, String, Value)>;

async fn append_mixed(c: &mut Client) -> Appended {
    let mut out = Appended::new();
    let mut versions = std::collections::HashMap::new();
    for i in 0..23u64 {
        let stream = if i % 3 == 0 { "order-1" } else { "order-2" };
        let kind = if i % 2 == 0 { "ItemAdded" } else { "ItemRemoved" };
        let payload = json!({ "sku": format!("sku-{i}"), "qty": i, "note": "ünïcode \"quoted\"" });
        let position = c.append(stream, kind, payload.clone(), json!("any")).await;
        let v = versions.entry(stream).or_insert(0);
        *v += 1;
        out.push((position, stream.to_owned(), *v, kind.to_owned(), payload));
    }
    out
}

fn summary(e: &Value) -> (u64, String, u64, String, Value) {
    (
        e["position"].as_u64().unwrap(),
        e["stream_id"].as_str().unwrap().to_owned(),
        e["stream_version"].as_u64().unwrap(),
        e["type"].as_str().unwrap().to_owned(),
        e["payload"].clone(),
    )
}

/// Every page of `path` (which has its own query), following `next_after`.
async fn all_pages(c: &mut Client, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut pages = 0;
    let mut after = 0;
    loop {
        let r = c.get(&format!("{path}?after={after}&limit={limit}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.json();
        let page = body["events"].as_array().unwrap().clone();
        assert!(page.len() <= limit);
        pages += 1;
        events.extend(page);
        match body["next_after"].as_u64() {
            Some(next) => after = next,
            None => return (events, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_back_page_by_page_as_appended() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let (_host, addr) = serve(&data, "127.0.0.1:0", &["--plugins", dir.path().join("plugins").to_str().unwrap()]);
    let mut c = Client::connect(addr).await;
    let appended = append_mixed(&mut c).await;

    // One stream, pages of 3: every event of the stream, by version.
    let (events, pages) = all_pages(&mut c, "/streams/order-2", 3).await;
    let want: Appended = appended.iter().filter(|e| e.1 == "order-2").cloned().collect();
    assert_eq!(events.iter().map(summary).collect::<Appended>(), want);
    assert_eq!(pages, want.len().div_ceil(3) + usize::from(want.len().is_multiple_of(3)));
    let head = c.get("/streams/order-1?limit=1").await.json();
    assert_eq!(head["version"], appended.iter().filter(|e| e.1 == "order-1").count());
    assert_eq!(head["stream_id"], "order-1");
    let from = c.get("/streams/order-1?from=2&limit=1").await.json();
    assert_eq!(from["events"][0]["stream_version"], 2);

    // The whole log, pages of 5, by position.
    let (events, _) = all_pages(&mut c, "/events", 5).await;
    assert_eq!(events.iter().map(summary).collect::<Appended>(), appended);
    let r = c.get("/events?from=4&limit=2").await.json();
    let positions: Vec<u64> = r["events"].as_array().unwrap().iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, [4, 5]);
    assert_eq!(r["head"], 23);
    assert_eq!(r["next_after"], 5);

    // Mistakes: 4xx JSON naming what is wrong.
    for (path, status, needle) in [
        ("/streams/nope", 404, "no stream `nope`"),
        ("/streams/order-1?limit=0", 400, "`limit` must be from 1 to 1000"),
        ("/events?limit=5000", 400, "`limit` must be from 1 to 1000"),
        ("/events?after=-3", 400, "`after` must be a non-negative integer"),
        ("/events?from=0", 400, "`from` counts from 1"),
        ("/events?after=1&from=1", 400, "not both"),
        ("/events?page=2", 400, "unknown query parameter `page`"),
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert!(r.json()["error"].as_str().unwrap().contains(needle), "{path}: {}", r.text);
    }

    // The CLI, with the host running.
    let lines = |out: String| -> Appended { out.lines().map(|l| summary(&serde_json::from_str(l).unwrap())).collect() };
    assert_eq!(lines(succeed(refract(&data).args(["events", "order-2"]))), want);
    assert_eq!(lines(succeed(refract(&data).args(["events"]))), appended);
    assert_eq!(lines(succeed(refract(&data).args(["events", "--from", "21", "--limit", "2"]))), appended[20..22]);
    let out = output(refract(&data).args(["events", "nope"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stream `nope`"));
}

/// The PostgreSQL store answers a stream's read from its own index, as SQLite does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_stream_reads_back_in_version_order() {
    let schema = fresh_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run =
        |args: &[&str]| succeed(refract(&data).args(["--events", &schema.url, "--store", &schema.url]).args(args));
    let mut want = Vec::new();
    for i in 0..7 {
        let stream = if i % 2 == 0 { "pg-a" } else { "pg-b" };
        let position: u64 = run(&["append", stream, "Noted", &format!("{{\"n\": {i}}}")]).trim().parse().unwrap();
        if stream == "pg-a" {
            want.push((position, json!({ "n": i })));
        }
    }
    let out = run(&["events", "pg-a", "--from", "2"]);
    let got: Vec<(u64, Value)> = out
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            (e["position"].as_u64().unwrap(), e["payload"].clone())
        })
        .collect();
    assert_eq!(got, want[1..]);
}
