//! The web console in a real headless browser: Debian's Chromium driven
//! through chromedriver (WebDriver) against a `refract run` process. The
//! tests read what the page shows (its table rows) and compare it with
//! what they appended and with the API.
//!
//! `REFRACT_CONSOLE_SCREENSHOT=docs/console.png` saves the README's
//! screenshot, taken during the rebuild test.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common;
use crate::common::http::Client as Http;
use crate::common::running::{self, Killed};

/// Where Debian's packages put them; scripts/test installs both.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, and a headless Chromium session through it.
struct Browser {
    client: Option<Client>,
    _driver: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: `apt-get install -y chromium chromium-driver` (scripts/test does it)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Killed(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver"),
        );
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1440,900", format!("--user-data-dir={}", profile.path().display())]
            }
        });
        let caps = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                // chromedriver takes a moment to listen.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Self { client: Some(client), _driver: driver, _profile: profile }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// The projection rows as the page shows them.
    async fn rows(&self) -> Vec<Row> {
        let script = r##"
            const num = (tr, f) => Number(tr.querySelector(`[data-field="${f}"]`).textContent.replace(/,/g, ""));
            return [...document.querySelectorAll("#projection-rows tr[data-generation]")].map((tr) => ({
                name: tr.dataset.projection,
                generation: Number(tr.dataset.generation),
                role: tr.dataset.role,
                state: tr.dataset.state,
                checkpoint: num(tr, "checkpoint"),
                head: num(tr, "head"),
                lag: num(tr, "lag"),
                progress: tr.querySelector("progress") ? tr.querySelector("progress").value : null,
                progress_text: tr.querySelector('[data-field="progress"]').textContent,
            }));
        "##;
        let rows = self.client().execute(script, vec![]).await.expect("reading the rows");
        serde_json::from_value(rows).unwrap()
    }

    /// Samples the rows until `done` holds; panics after `timeout` with the last rows.
    async fn wait_rows(&self, timeout: Duration, mut done: impl FnMut(&[Row]) -> bool) -> Vec<Row> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.rows().await;
            if done(&rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "the page never showed what was expected; it shows {rows:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Row {
    name: String,
    generation: u32,
    role: String,
    state: String,
    checkpoint: u64,
    head: u64,
    lag: u64,
    progress: Option<f64>,
    progress_text: String,
}

/// The active generation of `name` on the page.
fn active<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name && r.role == "active")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_projections_of_a_running_host() {
    let host = running::start(2_000, &["account_summary"], &[]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    assert_eq!(http.get(&format!("/ready?min_position={total}&timeout_ms=30000")).await.status, 200);

    let page = http.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);

    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    let rows = browser
        .wait_rows(Duration::from_secs(20), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == total)
        })
        .await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!((r.generation, r.state.as_str(), r.head, r.lag), (1, "running", total, 0), "{r:#?}");

    // The header has the head too, and the document browser lists the collection.
    let head = browser.client().find(Locator::Id("head")).await.unwrap().text().await.unwrap();
    assert_eq!(head.replace(',', ""), total.to_string());
    let collections = browser
        .client()
        .execute("return [...document.querySelectorAll('#docs-collection option')].map(o => o.value)", vec![])
        .await
        .unwrap();
    assert_eq!(collections, json!(["accounts"]));

    // Query the browser's document table: account-0's balance as the test computes it.
    let expected = common::expected_accounts(&host.events);
    let filters = browser.client().find(Locator::Id("docs-filters")).await.unwrap();
    filters.send_keys("id=account-0").await.unwrap();
    browser.client().find(Locator::Css("#docs-form button[type=submit]")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown: Value = loop {
        let cells = browser
            .client()
            .execute("return [...document.querySelectorAll('#doc-rows td.json')].map(td => td.textContent)", vec![])
            .await
            .unwrap();
        if let Some(text) = cells.as_array().and_then(|a| a.first()).and_then(Value::as_str) {
            break serde_json::from_str(text).unwrap();
        }
        assert!(Instant::now() < deadline, "no document shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shown["balance"], expected["account-0"].balance, "{shown}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_falls_while_events_are_appended() {
    // Batches of one event, so that bursts of appends put the projection behind for a while.
    let host = running::start(2_000, &["account_summary"], &["--batch-size", "1", "--commit-interval-ms", "100"]).await;
    let preloaded = host.events.len() as u64;
    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser
        .wait_rows(Duration::from_secs(30), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == preloaded)
        })
        .await;

    // Bursts of deposits straight into the event store (as `refract append` would), while the
    // page is sampled: the head it shows grows with each burst and the lag falls between them.
    const BURSTS: usize = 12;
    const BURST: usize = 4_000;
    let events = refract::DataDir(host.data.clone()).open_events().await.unwrap();
    let appender = tokio::spawn(async move {
        for b in 0..BURSTS {
            let burst: Vec<common::BankEvent> = (0..BURST)
                .map(|i| common::BankEvent {
                    stream: format!("account-{}", (b * BURST + i) % 200),
                    event_type: "MoneyDeposited",
                    payload: json!({ "amount": 1 }),
                })
                .collect();
            common::append_all(events.as_ref(), &burst).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut samples: Vec<Row> = Vec::new();
    while !appender.is_finished() {
        if let Some(r) = active(&browser.rows().await, "account-summary") {
            samples.push(r.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    appender.await.unwrap();
    let total = preloaded + (BURSTS * BURST) as u64;

    // While events were being appended, the page showed the projection behind, and the lag
    // it showed fell again and again (between two samples, the lag fell).
    assert!(samples.iter().any(|r| r.lag > 0), "the page never showed a lag: {samples:#?}");
    let falls = samples.windows(2).filter(|w| w[1].lag < w[0].lag).count();
    let head_grew = samples.windows(2).filter(|w| w[1].head > w[0].head).count();
    assert!(falls >= 3, "lag fell only {falls} times: {samples:#?}");
    assert!(head_grew >= 3, "the head the page showed grew only {head_grew} times: {samples:#?}");

    // And in the end it shows the projection at the head: every event the test appended.
    let rows = browser
        .wait_rows(Duration::from_secs(120), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == total)
        })
        .await;
    let r = active(&rows, "account-summary").unwrap();
    assert_eq!((r.head, r.lag), (total, 0), "{r:#?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_started_from_the_page_swaps_generations() {
    // Batches of one event, so the rebuild takes long enough to show its progress.
    let host =
        running::start(20_000, &["account_summary"], &["--batch-size", "1", "--commit-interval-ms", "100"]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    assert_eq!(http.get(&format!("/ready?min_position={total}&timeout_ms=60000")).await.status, 200);

    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser
        .wait_rows(Duration::from_secs(20), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == total)
        })
        .await;
    browser
        .client()
        .find(Locator::Css("button[aria-label='Rebuild account-summary']"))
        .await
        .expect("a Rebuild button on the active row")
        .click()
        .await
        .unwrap();

    // The building generation shows up with its progress and an ETA.
    let rows = browser
        .wait_rows(Duration::from_secs(20), |rows| {
            // Far enough along for the screenshot to show the progress bar moving.
            rows.iter().any(|r| {
                r.generation == 2 && r.role == "building" && r.progress_text.contains("ETA") && r.progress >= Some(25.0)
            })
        })
        .await;
    let building = rows.iter().find(|r| r.generation == 2).unwrap();
    assert!(building.progress.is_some_and(|p| (0.0..=100.0).contains(&p)), "{building:?}");
    assert!(
        active(&rows, "account-summary").is_some_and(|r| r.generation == 1),
        "generation 1 serves meanwhile: {rows:#?}"
    );
    let shot = browser.client().screenshot().await.unwrap();
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    if let Ok(path) = std::env::var("REFRACT_CONSOLE_SCREENSHOT") {
        std::fs::write(common::root().join(path), &shot).unwrap();
    }

    // Then it is swapped in: the page shows generation 2 active at the head, and generation 1 is gone.
    let rows = browser
        .wait_rows(Duration::from_secs(120), |rows| {
            rows.len() == 1
                && active(rows, "account-summary").is_some_and(|r| r.generation == 2 && r.checkpoint == total)
        })
        .await;
    assert_eq!(rows[0].lag, 0, "{rows:#?}");
    let api = http.get("/projections").await.json();
    let generations: Vec<(u64, String)> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["generation"].as_u64().unwrap(), p["role"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(generations, [(2, "active".to_owned())]);
    let notice = browser.client().find(Locator::Id("notice")).await.unwrap().text().await.unwrap();
    assert!(notice.contains("generation 2 is building"), "{notice}");
    browser.close().await;
}
