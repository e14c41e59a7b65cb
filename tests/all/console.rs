//! The web console in a real headless browser: Debian's Chromium driven
//! through chromedriver (WebDriver) against a `refract run` process. The
//! tests read what the page shows (its table rows) and compare it with
//! what they appended and with the API. With tokens, the page signs in, and
//! its admin buttons are checked against the host's own state.
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
use crate::common::served::{bearer, make_token};

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
                paused: tr.dataset.paused === "true",
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

    /// Runs `script` (a function body) until `done` holds for what it returns.
    async fn wait_js(&self, script: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.client().execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"));
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "`{script}` never gave what was expected; it gives {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client().execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    async fn click(&self, css: &str) {
        let element = self.client().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
        element.click().await.unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    /// Types `secret` into the sign-in form and sends it, as a person would.
    async fn sign_in(&self, secret: &str) {
        let input = self.client().find(Locator::Id("token")).await.expect("the token field");
        input.clear().await.unwrap();
        input.send_keys(secret).await.unwrap();
        input.send_keys("\u{E007}").await.unwrap(); // Enter
    }

    /// Waits until the page's notice contains `text`; returns it and whether it is marked as an error.
    async fn notice(&self, text: &str) -> (String, bool) {
        let script =
            r#"const n = document.getElementById("notice"); return [n.textContent, n.classList.contains("error")];"#;
        let v = self.wait_js(script, |v| v[0].as_str().is_some_and(|t| t.contains(text))).await;
        (v[0].as_str().unwrap().to_owned(), v[1].as_bool().unwrap())
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
    paused: bool,
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
    // The `slow` fixture takes at least 2 ms over each event, so the projection stays behind
    // the head for seconds and the page can be read many times meanwhile, on a machine of any
    // speed. (With a fast projection, a burst was often projected before the page looked.)
    let host = running::start(300, &["slow"], &["--batch-size", "1", "--commit-interval-ms", "100"]).await;
    let preloaded = host.events.len() as u64;
    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser
        .wait_rows(Duration::from_secs(60), |rows| active(rows, "slow").is_some_and(|r| r.checkpoint == preloaded))
        .await;

    // Bursts of deposits straight into the event store (as `refract append` would). After each
    // one the page is read until it shows the new head, so every step of the head is seen.
    const BURSTS: usize = 4;
    const BURST: usize = 500;
    let events = refract::DataDir(host.data.clone()).open_events().await.unwrap();
    let mut samples: Vec<Row> = Vec::new();
    let mut record = |rows: &[Row]| {
        let r = active(rows, "slow").expect("the page shows the slow projection").clone();
        samples.push(r.clone());
        r
    };
    let mut appended = preloaded;
    for b in 0..BURSTS {
        let burst: Vec<common::BankEvent> = (0..BURST)
            .map(|i| common::BankEvent {
                stream: format!("account-{}", (b * BURST + i) % 200),
                event_type: "MoneyDeposited",
                payload: json!({ "amount": 1 }),
            })
            .collect();
        common::append_all(events.as_ref(), &burst).await;
        appended += BURST as u64;
        browser.wait_rows(Duration::from_secs(30), |rows| record(rows).head == appended).await;
    }
    // Then the page is read until it shows the projection at the head: every event appended.
    let rows = browser.wait_rows(Duration::from_secs(120), |rows| record(rows).checkpoint == appended).await;
    let r = active(&rows, "slow").unwrap();
    assert_eq!((r.head, r.lag), (appended, 0), "{r:#?}");

    // Each row the page showed was consistent (the lag is the head less the checkpoint), the
    // projection was behind, and while it caught up the lag it showed fell again and again.
    for r in &samples {
        assert_eq!(r.lag, r.head.saturating_sub(r.checkpoint), "{r:#?}");
    }
    assert!(samples.iter().any(|r| r.lag >= BURST as u64), "the page never showed a lag: {samples:#?}");
    let falls = samples.windows(2).filter(|w| w[1].lag < w[0].lag).count();
    assert!(falls >= 3, "lag fell only {falls} times: {samples:#?}");
    let heads: Vec<u64> = samples.iter().map(|r| r.head).collect();
    assert!(heads.is_sorted(), "the head the page showed went back: {heads:?}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_started_from_the_page_swaps_generations() {
    // The `slow` fixture (2 ms an event): the rebuild takes seconds on a machine of any speed,
    // long enough for the page to show its progress.
    let host = running::start(2_000, &["slow"], &["--batch-size", "1", "--commit-interval-ms", "100"]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    assert_eq!(http.get(&format!("/ready?min_position={total}&timeout_ms=60000")).await.status, 200);

    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser
        .wait_rows(Duration::from_secs(20), |rows| active(rows, "slow").is_some_and(|r| r.checkpoint == total))
        .await;
    browser
        .client()
        .find(Locator::Css("button[aria-label='Rebuild slow']"))
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
    assert!(active(&rows, "slow").is_some_and(|r| r.generation == 1), "generation 1 serves meanwhile: {rows:#?}");
    let shot = browser.client().screenshot().await.unwrap();
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    if let Ok(path) = std::env::var("REFRACT_CONSOLE_SCREENSHOT") {
        std::fs::write(common::root().join(path), &shot).unwrap();
    }

    // Then it is swapped in: the page shows generation 2 active at the head, and generation 1 is gone.
    let rows = browser
        .wait_rows(Duration::from_secs(120), |rows| {
            rows.len() == 1 && active(rows, "slow").is_some_and(|r| r.generation == 2 && r.checkpoint == total)
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

/// A GET of the API with `secret`, as the host answers it.
async fn get_with(http: &mut Http, path: &str, secret: &str) -> crate::common::http::Reply {
    let auth = bearer(secret);
    http.request_with("GET", path, &[("authorization", auth.as_str())], Vec::new()).await
}

/// Polls `GET path` with `secret` until `done` holds for its JSON; returns it.
async fn wait_api(http: &mut Http, path: &str, secret: &str, mut done: impl FnMut(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get_with(http, path, secret).await;
        let v = if r.text.is_empty() { Value::Null } else { r.json() };
        if done(r.status, &v) {
            return v;
        }
        assert!(Instant::now() < deadline, "GET {path} never gave what was expected; it gives {} {}", r.status, r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tokens file with `refract token` entries of the given names and scopes, and their secrets.
fn tokens_file(dir: &Path, tokens: &[(&str, &[&str])]) -> (std::path::PathBuf, Vec<String>) {
    let made: Vec<_> = tokens.iter().map(|(name, scopes)| make_token(&dir.join("data"), name, scopes)).collect();
    let path = dir.join("tokens.toml");
    std::fs::write(&path, made.iter().map(|m| m.entry.as_str()).collect::<String>()).unwrap();
    (path, made.into_iter().map(|m| m.secret).collect())
}

const STORED_TOKEN: &str = "return [sessionStorage.getItem('refract.token'), localStorage.length]";
const SIGN_IN_SHOWN: &str = "return !document.getElementById('signin').hidden";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_page_signs_in_and_shows_the_hosts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, secrets) = tokens_file(dir.path(), &[("viewer", &["read"]), ("writer", &["append"])]);
    let (reader, writer) = (&secrets[0], &secrets[1]);
    let host = running::start(2_000, &["account_summary"], &["--tokens", tokens.to_str().unwrap()]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    // The API is closed without a token; the page and its files are not.
    assert_eq!(http.get("/projections").await.status, 401);
    for file in ["/", "/console/console.js", "/console/console.css"] {
        assert_eq!(http.get(file).await.status, 200, "{file}");
    }
    let ready = get_with(&mut http, &format!("/ready?min_position={total}&timeout_ms=30000"), reader).await;
    assert_eq!(ready.status, 200, "{}", ready.text);

    // The page asks for a token, with the focus in its field, and shows no projection.
    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser.wait_js(SIGN_IN_SHOWN, |v| v == &json!(true)).await;
    browser.wait_js("return document.activeElement.id", |v| v == "token").await;
    assert!(browser.rows().await.is_empty());
    let label = browser.js("return document.querySelector('label[for=token]').textContent").await;
    assert_eq!(label, "API token");

    // A wrong token: refused with the host's reason, and not kept.
    browser.sign_in("rft_not-a-token").await;
    let error = browser
        .wait_js("return document.getElementById('signin-error').textContent", |v| {
            v.as_str().is_some_and(|t| !t.is_empty())
        })
        .await;
    assert_eq!(error, "The token was refused: unknown token.");
    assert_eq!(browser.js(SIGN_IN_SHOWN).await, json!(true));
    assert_eq!(browser.js(STORED_TOKEN).await, json!([null, 0]));
    // The append token is a real token without `read`: the page names the scope it lacks.
    browser.sign_in(writer).await;
    browser
        .wait_js("return document.getElementById('signin-error').textContent", |v| {
            v.as_str().is_some_and(|t| t.contains("token `writer` does not have the `read` scope"))
        })
        .await;
    assert_eq!(browser.js(STORED_TOKEN).await, json!([null, 0]));

    // The read token: the projections at the head, and the live feed, kept for this tab only.
    browser.sign_in(reader).await;
    browser
        .wait_rows(Duration::from_secs(20), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == total && r.lag == 0)
        })
        .await;
    assert_eq!(browser.js(SIGN_IN_SHOWN).await, json!(false));
    assert_eq!(browser.js(STORED_TOKEN).await, json!([reader, 0]));
    browser.wait_js("return document.getElementById('feed').dataset.state", |v| v == "live").await;

    // Events appended (with the append token) show up: head, checkpoint and lag follow the host.
    let deposits: Vec<Value> =
        (0..50).map(|i| json!({ "type": "MoneyDeposited", "payload": { "amount": i + 1 } })).collect();
    let auth = bearer(writer);
    let appended = http
        .request_with(
            "POST",
            "/streams/account-1/events",
            &[("authorization", auth.as_str())],
            json!({ "events": deposits }).to_string().into_bytes(),
        )
        .await;
    assert_eq!(appended.status, 200, "{}", appended.text);
    let head = appended.json()["position"].as_u64().unwrap();
    assert_eq!(head, total + 50);
    let rows = browser
        .wait_rows(Duration::from_secs(30), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == head && r.head == head)
        })
        .await;
    assert_eq!(active(&rows, "account-summary").unwrap().lag, 0);

    // An admin action with the read token: the host's 403, on the page; the projection runs on.
    browser.click("button[aria-label='Pause account-summary']").await;
    let (notice, is_error) = browser.notice("Could not pause account-summary").await;
    assert_eq!(
        notice,
        "Could not pause account-summary: token `viewer` does not have the `admin` scope this endpoint needs"
    );
    assert!(is_error);
    let status = get_with(&mut http, "/projections/account-summary", reader).await.json();
    assert_eq!((&status["paused"], &status["state"]), (&json!(false), &json!("running")), "{status}");

    // Sign out: the token is forgotten, the projections leave the page, the form is back.
    browser.click("#signout").await;
    browser.wait_js(SIGN_IN_SHOWN, |v| v == &json!(true)).await;
    assert_eq!(browser.js(STORED_TOKEN).await, json!([null, 0]));
    assert!(browser.rows().await.is_empty());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_pauses_resets_resumes_and_drops_from_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, secrets) = tokens_file(dir.path(), &[("ops", &["read", "admin"])]);
    let ops = &secrets[0];
    let host = running::start(2_000, &["account_summary"], &["--tokens", tokens.to_str().unwrap()]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser.wait_js(SIGN_IN_SHOWN, |v| v == &json!(true)).await;
    browser.sign_in(ops).await;
    browser
        .wait_rows(Duration::from_secs(30), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.checkpoint == total)
        })
        .await;
    const P: &str = "/projections/account-summary";

    // Pause: the host stops it at its checkpoint; the page offers Resume instead of Pause.
    browser.click("button[aria-label='Pause account-summary']").await;
    let status = wait_api(&mut http, P, ops, |_, s| s["paused"] == true).await;
    assert_eq!(status["checkpoint"], total, "{status}");
    browser.notice(&format!("account-summary is paused at {}", fmt(total))).await;
    browser.wait_rows(Duration::from_secs(10), |rows| active(rows, "account-summary").is_some_and(|r| r.paused)).await;
    let visible = browser
        .js("return [...document.querySelectorAll('.row-actions button')].filter(b => !b.hidden).map(b => b.dataset.action)")
        .await;
    assert_eq!(visible, json!(["resume", "retry", "reset", "rebuild", "drop"]));
    // Keyboard focus moved to the button that undoes it.
    browser
        .wait_js("return document.activeElement.getAttribute('aria-label')", |v| v == "Resume account-summary")
        .await;

    // While it is paused, appends go on: the page shows the lag growing to what was appended.
    let more: Vec<common::BankEvent> = (0..100)
        .map(|i| common::BankEvent {
            stream: format!("account-{}", i % 200),
            event_type: "MoneyDeposited",
            payload: json!({ "amount": 3 }),
        })
        .collect();
    let events = refract::DataDir(host.data.clone()).open_events().await.unwrap();
    common::append_all(events.as_ref(), &more).await;
    let head = total + 100;
    browser
        .wait_rows(Duration::from_secs(30), |rows| {
            active(rows, "account-summary").is_some_and(|r| r.head == head && r.checkpoint == total && r.lag == 100)
        })
        .await;

    // Reset to 0, after the confirmation: the host empties the read model and it stays paused.
    browser.click("button[aria-label='Reset account-summary']").await;
    browser.wait_js("return document.getElementById('confirm').open", |v| v == &json!(true)).await;
    assert_eq!(browser.js("return document.activeElement.id").await, "confirm-to");
    let to = browser.client().find(Locator::Id("confirm-to")).await.unwrap();
    to.clear().await.unwrap();
    to.send_keys("0").await.unwrap();
    browser.click("#confirm-ok").await;
    let status = wait_api(&mut http, P, ops, |_, s| s["checkpoint"] == 0).await;
    assert_eq!(status["paused"], true, "{status}");
    let count = get_with(&mut http, &format!("{P}/accounts?count=true"), ops).await;
    assert_eq!(count.json()["count"], 0, "{}", count.text);
    browser.notice(&format!("account-summary was reset from {} to 0; it stays paused.", fmt(total))).await;

    // Resume: it projects every event again, and the documents are what the test computes.
    browser.click("button[aria-label='Resume account-summary']").await;
    wait_api(&mut http, P, ops, |_, s| s["paused"] == false).await;
    let ready = get_with(&mut http, &format!("/ready?min_position={head}&timeout_ms=30000"), ops).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let all: Vec<common::BankEvent> = host.events.iter().cloned().chain(more).collect();
    let expected = common::expected_accounts(&all);
    let page = get_with(&mut http, &format!("{P}/accounts?limit=1000"), ops).await.json();
    let documents = page["documents"].as_array().unwrap();
    assert_eq!(documents.len(), expected.len());
    for d in documents {
        let id = d["id"].as_str().unwrap();
        assert_eq!(d["document"]["balance"], expected[id].balance, "{id}");
    }
    browser
        .wait_rows(Duration::from_secs(30), |rows| {
            active(rows, "account-summary").is_some_and(|r| !r.paused && r.checkpoint == head && r.lag == 0)
        })
        .await;

    // Drop asks first, with the focus on Cancel; cancelled, nothing happens.
    browser.click("button[aria-label='Drop account-summary']").await;
    browser.wait_js("return document.getElementById('confirm').open", |v| v == &json!(true)).await;
    assert_eq!(browser.js("return document.activeElement.id").await, "confirm-cancel");
    browser.click("#confirm-cancel").await;
    browser.wait_js("return document.getElementById('confirm').open", |v| v == &json!(false)).await;
    assert_eq!(get_with(&mut http, P, ops).await.status, 200, "cancelled: still there");
    // Confirmed, the host forgets it and so does the page.
    browser.click("button[aria-label='Drop account-summary']").await;
    browser.wait_js("return document.getElementById('confirm').open", |v| v == &json!(true)).await;
    browser.click("#confirm-ok").await;
    wait_api(&mut http, P, ops, |status, _| status == 404).await;
    browser.notice("account-summary was dropped").await;
    browser.wait_rows(Duration::from_secs(10), |rows| rows.is_empty()).await;
    browser.close().await;
}

/// A number as the page writes it (`en-US` grouping).
fn fmt(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A config file in `dir` with these `[defaults]` lines.
fn config(dir: &Path, name: &str, defaults: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("[defaults]\n{defaults}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `ledger` (the `poison` fixture) over bank events with, at position
/// `at`, a deposit whose note makes its document larger than 1 KiB.
fn events_with_a_large_note(at: usize) -> Vec<common::BankEvent> {
    let mut events = common::bank_events(200, 1_000, 7);
    let note = "n".repeat(2_000);
    let event = common::BankEvent {
        stream: "account-3".into(),
        event_type: "MoneyDeposited",
        payload: json!({ "amount": 7, "note": note }),
    };
    events.insert(at - 1, event);
    events
}

/// A projection faulted by a document over `max_document_kib`; the
/// operator raises the limit, restarts the host, and clicks Retry on the
/// page: the projection resumes from its checkpoint to the head, with the
/// documents the test computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_the_page_resumes_a_faulted_projection() {
    let dir = tempfile::tempdir().unwrap();
    let strict = config(dir.path(), "strict.toml", "retries = 0\nmax_document_kib = 1");
    let relaxed = config(dir.path(), "relaxed.toml", "retries = 0\nmax_document_kib = 4");
    let at = 500;
    let mut host = running::start_with(events_with_a_large_note(at), &["poison"], &["--config", &strict]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = http.get("/projections/ledger").await;
        if status.status == 200 && status.json()["state"] == "faulted" {
            break status.json();
        }
        assert!(Instant::now() < deadline, "never faulted: {}", status.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["checkpoint"], at as u64 - 1, "{status}");

    host.restart(&["--config", &relaxed]);
    let mut http = Http::connect(host.addr).await;
    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    let rows = browser
        .wait_rows(Duration::from_secs(30), |rows| active(rows, "ledger").is_some_and(|r| r.state == "faulted"))
        .await;
    let row = active(&rows, "ledger").unwrap();
    assert_eq!((row.checkpoint, row.head), (at as u64 - 1, total), "{row:#?}");
    let retry = "button[aria-label='Retry ledger']";
    let enabled = format!("return !document.querySelector(\"{retry}\").disabled");
    browser.wait_js(&enabled, |v| v == &json!(true)).await;

    browser.click(retry).await;
    browser.notice("ledger: fault cleared, 0 dead letter(s) to replay.").await;
    let rows = browser
        .wait_rows(Duration::from_secs(60), |rows| {
            active(rows, "ledger").is_some_and(|r| r.state == "running" && r.checkpoint == total)
        })
        .await;
    assert_eq!(active(&rows, "ledger").unwrap().lag, 0, "{rows:#?}");
    // And it keeps following the log: one more deposit is projected.
    let mut more = host.events.clone();
    let deposit =
        common::BankEvent { stream: "account-3".into(), event_type: "MoneyDeposited", payload: json!({ "amount": 5 }) };
    let events = refract::DataDir(host.data.clone()).open_events().await.unwrap();
    common::append_all(events.as_ref(), std::slice::from_ref(&deposit)).await;
    more.push(deposit);
    browser
        .wait_rows(Duration::from_secs(30), |rows| {
            active(rows, "ledger").is_some_and(|r| r.checkpoint == total + 1 && r.lag == 0)
        })
        .await;
    // Every event projected once: the ledger the test computes.
    let page = http.get("/projections/ledger/entries?limit=1000").await.json();
    let stored: std::collections::BTreeMap<String, (i64, u64)> = page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let doc = &d["document"];
            (d["id"].as_str().unwrap().to_owned(), (doc["net"].as_i64().unwrap(), doc["movements"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(stored, common::expected_ledger(&more));
    browser.close().await;
}

/// An event the projection fails on, under `on_failure = "skip"`, is a dead
/// letter: the page's dead-letters panel shows it as the API lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_panel_shows_a_skipped_event() {
    let dir = tempfile::tempdir().unwrap();
    let skip = config(dir.path(), "skip.toml", "retries = 0\non_failure = \"skip\"");
    let mut events = common::bank_events(200, 1_000, 7);
    let poison = common::BankEvent {
        stream: "account-42".into(),
        event_type: "MoneyDeposited",
        payload: json!({ "amount": 9, "poison": true }),
    };
    events.insert(699, poison);
    let host = running::start_with(events, &["poison"], &["--config", &skip]).await;
    let total = host.events.len() as u64;
    let mut http = Http::connect(host.addr).await;
    let ready = http.get(&format!("/ready?min_position={total}&timeout_ms=30000")).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let letters = http.get("/projections/ledger/dead-letters").await.json();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((&letters[0]["position"], &letters[0]["stream_id"]), (&json!(700), &json!("account-42")));
    let error = letters[0]["error"].as_str().unwrap().to_owned();

    let browser = Browser::open().await;
    browser.client().goto(&format!("http://{}/", host.addr)).await.unwrap();
    browser.wait_js("return document.getElementById('letters-projection').value", |v| v == "ledger").await;
    let cells = browser
        .wait_js(
            "return [...document.querySelectorAll('#letter-rows tr')].map(tr => [...tr.cells].map(td => td.textContent))",
            |v| v.as_array().is_some_and(|rows| rows.first().is_some_and(|r| r.as_array().is_some_and(|c| c.len() == 5))),
        )
        .await;
    assert_eq!(cells, json!([["700", "account-42", "MoneyDeposited", error, "not marked"]]));
    // Its Retry all marks it for replay; the page says so once the host has.
    let retry_all = "return !document.getElementById('letters-retry').disabled";
    browser.wait_js(retry_all, |v| v == &json!(true)).await;
    browser.click("#letters-retry").await;
    browser.notice("ledger: 1 dead letter(s) to replay.").await;
    browser.close().await;
}
