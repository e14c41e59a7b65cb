//! `/metrics` of a running host, scraped as Prometheus would: one series per
//! projection generation (labels `generation` and `role`, so a blue/green
//! rebuild's two generations never collide), the start-up catch-up counted,
//! the module compile-time histogram, and the Grafana dashboard's metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::http::Client;
use crate::common::running;

/// The samples of a scrape: `name{labels}` to value. Panics on a sample
/// whose name and labels appear twice, which Prometheus rejects.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let previous = samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
        assert!(previous.is_none(), "{series} twice in the scrape:\n{text}");
    }
    samples
}

async fn scrape(http: &mut Client) -> (String, BTreeMap<String, f64>) {
    let reply = http.get("/metrics").await;
    assert_eq!(reply.status, 200);
    let samples = parse(&reply.text);
    (reply.text, samples)
}

fn series(name: &str, projection: &str, generation: u32, role: &str) -> String {
    format!("{name}{{projection=\"{projection}\",generation=\"{generation}\",role=\"{role}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_catch_up_is_counted_and_compile_times_are_a_histogram() {
    // account-summary is loaded first and catches up while order-summary compiles.
    let host = running::start(20_000, &["account_summary", "order_summary"], &[]).await;
    let appended = host.events.len() as u64;
    let mut http = Client::connect(host.addr).await;
    assert_eq!(http.get(&format!("/ready?min_position={appended}&timeout_ms=30000")).await.status, 200);
    let (text, samples) = scrape(&mut http).await;
    // Every event is an account event, so account-summary processed each one once.
    let processed = series("refract_events_processed_total", "account-summary", 1, "active");
    assert_eq!(samples.get(&processed), Some(&(appended as f64)), "{text}");

    // Two modules compiled on a fresh data dir (an empty module cache): two uncached compiles.
    assert_eq!(samples.get("refract_module_compile_seconds_count{cached=\"false\"}"), Some(&2.0), "{text}");
    assert_eq!(samples.get("refract_module_compile_seconds_bucket{cached=\"false\",le=\"+Inf\"}"), Some(&2.0));
    let sum = samples["refract_module_compile_seconds_sum{cached=\"false\"}"];
    assert!(sum > 0.0, "{text}");
    // Buckets are cumulative and end at the count.
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("refract_module_compile_seconds_bucket{cached=\"false\""))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.iter().all(|b| *b <= 2.0), "{text}");

    // Every metric the Grafana dashboard queries is exposed.
    let dashboard = std::fs::read_to_string(common::root().join("docs/grafana-dashboard.json")).unwrap();
    let used: BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("refract_"))
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    let exposed: BTreeSet<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    for metric in used {
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| metric.strip_suffix(s)).unwrap_or(metric);
        assert!(exposed.contains(family), "the dashboard uses {metric}, which /metrics does not expose");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_has_two_series_told_apart_by_generation_and_role() {
    // The `slow` fixture (2 ms an event): the rebuild takes seconds on a machine of any speed,
    // long enough to scrape it.
    let host = running::start(1_000, &["slow"], &["--batch-size", "1"]).await;
    let appended = host.events.len() as u64;
    let mut http = Client::connect(host.addr).await;
    assert_eq!(http.get(&format!("/ready?min_position={appended}&timeout_ms=60000")).await.status, 200);
    let rebuild = http.request("POST", "/projections/slow/rebuild", Vec::new()).await;
    assert_eq!(rebuild.status, 200, "{}", rebuild.text);
    assert_eq!(rebuild.json()["generation"], 2);

    let active = series("refract_projection_checkpoint", "slow", 1, "active");
    let building = series("refract_projection_checkpoint", "slow", 2, "building");
    let building_processed = series("refract_events_processed_total", "slow", 2, "building");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (text, samples) = loop {
        let (text, samples) = scrape(&mut http).await;
        if samples.get(&building_processed).is_some_and(|v| *v > 0.0) {
            break (text, samples);
        }
        assert!(Instant::now() < deadline, "no counter for the building generation:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(samples.get(&active), Some(&(appended as f64)), "{text}");
    let rebuilt = samples[&building];
    assert!(rebuilt > 0.0 && rebuilt <= appended as f64, "{text}");
    // The active generation's counter counts its own events only.
    let active_processed = series("refract_events_processed_total", "slow", 1, "active");
    assert_eq!(samples.get(&active_processed), Some(&(appended as f64)), "{text}");
    for name in ["refract_projection_lag", "refract_projection_head", "refract_projection_errors"] {
        for (g, role) in [(1, "active"), (2, "building")] {
            assert!(samples.contains_key(&series(name, "slow", g, role)), "no {name} g{g}:\n{text}");
        }
    }

    // After the swap only generation 2 is left, now active, with every event counted.
    let done = series("refract_projection_checkpoint", "slow", 2, "active");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (text, samples) = loop {
        let (text, samples) = scrape(&mut http).await;
        if samples.get(&done) == Some(&(appended as f64)) {
            break (text, samples);
        }
        assert!(Instant::now() < deadline, "generation 2 never swapped in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!text.contains("generation=\"1\""), "{text}");
    let processed = series("refract_events_processed_total", "slow", 2, "active");
    assert_eq!(samples.get(&processed), Some(&(appended as f64)), "{text}");
}
