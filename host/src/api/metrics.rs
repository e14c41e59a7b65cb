//! Projection metrics: counted from commit notices, exposed as Prometheus text.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};

use crate::projection::host::ProjectionStatus;
use crate::projection::runner::CommitNotice;

/// Upper bounds of the batch latency histogram, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Window over which the events/s rate is averaged.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct ProjectionMetrics {
    events: u64,
    batches: u64,
    /// Cumulative counts per bucket, as Prometheus wants them.
    buckets: [u64; BUCKETS.len()],
    latency_sum: f64,
    recent: VecDeque<(Instant, u64)>,
}

impl ProjectionMetrics {
    fn record(&mut self, n: &CommitNotice, now: Instant) {
        self.events += n.events as u64;
        self.batches += 1;
        let seconds = n.micros as f64 / 1e6;
        self.latency_sum += seconds;
        for (bound, count) in BUCKETS.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.recent.push_back((now, n.events as u64));
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while self.recent.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            self.recent.pop_front();
        }
    }

    fn rate(&mut self, now: Instant) -> f64 {
        self.prune(now);
        self.recent.iter().map(|(_, n)| *n).sum::<u64>() as f64 / RATE_WINDOW.as_secs_f64()
    }
}

/// Counters per projection, fed by a task that follows the commit notices.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<String, ProjectionMetrics>>>,
    /// Notices the collector missed because it fell behind.
    missed: Arc<std::sync::atomic::AtomicU64>,
}

impl Metrics {
    /// Starts counting the notices of `rx` on a background task, which ends
    /// when every sender is gone. Must be called inside a Tokio runtime.
    pub fn follow(mut rx: broadcast::Receiver<CommitNotice>) -> Self {
        let metrics = Self::default();
        let m = metrics.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(n) => m.record(&n),
                    Err(RecvError::Lagged(k)) => {
                        m.missed.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProjectionMetrics>> {
        // The data is plain counters: a panic elsewhere cannot leave them unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one committed batch.
    pub fn record(&self, n: &CommitNotice) {
        self.lock().entry(n.projection.clone()).or_default().record(n, Instant::now());
    }

    /// Events per second over the last ten seconds.
    pub fn events_per_second(&self, projection: &str) -> f64 {
        self.lock().get_mut(projection).map_or(0.0, |m| m.rate(Instant::now()))
    }

    /// Prometheus text exposition (format 0.0.4) of the counters and of the
    /// given status (checkpoint, head, lag and faults read at scrape time).
    pub fn render(&self, status: &[ProjectionStatus]) -> String {
        let mut out = String::new();
        let mut map = self.lock();
        let now = Instant::now();
        for (name, kind, help) in [
            (
                "refract_events_processed_total",
                "counter",
                "Subscribed events projected and committed since the host started.",
            ),
            ("refract_batches_committed_total", "counter", "Batches committed since the host started."),
            ("refract_events_per_second", "gauge", "Projected events per second over the last 10 s."),
            ("refract_batch_duration_seconds", "histogram", "Time from reading a batch to the end of its commit."),
            ("refract_projection_checkpoint", "gauge", "Position of the last projected event."),
            ("refract_projection_head", "gauge", "Newest event position in the store."),
            ("refract_projection_lag", "gauge", "Events between the checkpoint and the head."),
            (
                "refract_projection_errors",
                "gauge",
                "1 when the projection is faulted (see last_error in /projections), else 0.",
            ),
            (
                "refract_projection_store_error",
                "gauge",
                "1 while the generation retries a store or source error (see store_error in /projections), else 0.",
            ),
            (
                "refract_projection_lease",
                "gauge",
                "1 while the node named in `node` holds the generation's lease, 0 once it expired.",
            ),
            (
                "refract_notices_missed_total",
                "counter",
                "Commit notices the metrics collector missed by falling behind.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        for (name, m) in map.iter_mut() {
            let p = label(name);
            let _ = writeln!(out, "refract_events_processed_total{{projection=\"{p}\"}} {}", m.events);
            let _ = writeln!(out, "refract_batches_committed_total{{projection=\"{p}\"}} {}", m.batches);
            let _ = writeln!(out, "refract_events_per_second{{projection=\"{p}\"}} {}", m.rate(now));
            for (bound, count) in BUCKETS.iter().zip(m.buckets) {
                let _ =
                    writeln!(out, "refract_batch_duration_seconds_bucket{{projection=\"{p}\",le=\"{bound}\"}} {count}");
            }
            let _ =
                writeln!(out, "refract_batch_duration_seconds_bucket{{projection=\"{p}\",le=\"+Inf\"}} {}", m.batches);
            let _ = writeln!(out, "refract_batch_duration_seconds_sum{{projection=\"{p}\"}} {}", m.latency_sum);
            let _ = writeln!(out, "refract_batch_duration_seconds_count{{projection=\"{p}\"}} {}", m.batches);
        }
        for s in status {
            let p = label(&s.name);
            let _ = writeln!(out, "refract_projection_checkpoint{{projection=\"{p}\"}} {}", s.checkpoint);
            let _ = writeln!(out, "refract_projection_head{{projection=\"{p}\"}} {}", s.head);
            let _ = writeln!(out, "refract_projection_lag{{projection=\"{p}\"}} {}", s.lag);
            let faulted = u8::from(s.state == crate::store::ProjectionState::Faulted);
            let _ = writeln!(out, "refract_projection_errors{{projection=\"{p}\"}} {faulted}");
            let (g, failing) = (s.generation, u8::from(s.store_error.is_some()));
            let _ = writeln!(out, "refract_projection_store_error{{projection=\"{p}\",generation=\"{g}\"}} {failing}");
            if let Some(owner) = &s.owner {
                let held = u8::from(s.host != Some(crate::projection::host::HostLiveness::Gone));
                let n = label(owner);
                let _ = writeln!(
                    out,
                    "refract_projection_lease{{projection=\"{p}\",generation=\"{g}\",node=\"{n}\"}} {held}"
                );
            }
        }
        let missed = self.missed.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "refract_notices_missed_total {missed}");
        out
    }
}

/// Escapes a label value as the exposition format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(events: usize, micros: u64) -> CommitNotice {
        CommitNotice { projection: "p\"1".into(), generation: 1, checkpoint: 1, events, changed: vec![], micros }
    }

    #[test]
    fn histogram_is_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.record(&notice(3, 700));
        m.record(&notice(2, 20_000));
        let text = m.render(&[]);
        assert!(text.contains("refract_events_processed_total{projection=\"p\\\"1\"} 5\n"), "{text}");
        assert!(text.contains("refract_batch_duration_seconds_bucket{projection=\"p\\\"1\",le=\"0.0005\"} 0\n"));
        assert!(text.contains("refract_batch_duration_seconds_bucket{projection=\"p\\\"1\",le=\"0.001\"} 1\n"));
        assert!(text.contains("refract_batch_duration_seconds_bucket{projection=\"p\\\"1\",le=\"0.025\"} 2\n"));
        assert!(text.contains("refract_batch_duration_seconds_bucket{projection=\"p\\\"1\",le=\"+Inf\"} 2\n"));
        assert!((m.events_per_second("p\"1") - 0.5).abs() < 1e-9);
        // Every sample belongs to a family announced with a TYPE line.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            let family = if text.contains(&format!("# TYPE {family} ")) { family } else { name };
            assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {sample}");
        }
    }
}
