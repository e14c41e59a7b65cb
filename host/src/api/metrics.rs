//! Projection metrics: counted from commit notices, exposed as Prometheus text.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};

use crate::projection::compiles::CompileTime;
use crate::projection::host::ProjectionStatus;
use crate::projection::runner::CommitNotice;
use crate::store::Role;

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

/// Upper bounds of the module compile-time histogram, in seconds: a small
/// Rust component compiles in well under a second, a Python or JS one
/// (a whole interpreter) in tens of seconds.
const COMPILE_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// A projection generation: the counters of a blue/green rebuild's two
/// generations are two series, told apart by their labels.
type Key = (String, u32);

/// Counters per projection generation, fed by a task that follows the commit notices.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<Key, ProjectionMetrics>>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, ProjectionMetrics>> {
        // The data is plain counters: a panic elsewhere cannot leave them unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one committed batch.
    pub fn record(&self, n: &CommitNotice) {
        self.lock().entry((n.projection.clone(), n.generation)).or_default().record(n, Instant::now());
    }

    /// A generation's events per second over the last ten seconds.
    pub fn events_per_second(&self, projection: &str, generation: u32) -> f64 {
        self.lock().get_mut(&(projection.to_owned(), generation)).map_or(0.0, |m| m.rate(Instant::now()))
    }

    /// Prometheus text exposition (format 0.0.4) of the counters, of the
    /// given status (checkpoint, head, lag and faults read at scrape time)
    /// and of the module compile times. Every per-projection series has
    /// `generation` and `role` labels; the counters of generations the
    /// status no longer lists (retired by a swap, dropped) are forgotten.
    pub fn render(&self, status: &[ProjectionStatus], compiles: &[CompileTime]) -> String {
        let mut out = String::new();
        let mut map = self.lock();
        let now = Instant::now();
        let roles: BTreeMap<Key, Role> = status.iter().map(|s| ((s.name.clone(), s.generation), s.role)).collect();
        map.retain(|k, _| roles.contains_key(k));
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
                "refract_verify_runs_total",
                "counter",
                "Verifications of the generation (refract verify, POST /projections/{name}/verify, verify_every), by result: clean, differences or error.",
            ),
            (
                "refract_verify_last_differences",
                "gauge",
                "Documents that differed in the generation's last verification that ran to its end.",
            ),
            (
                "refract_verify_last_timestamp_seconds",
                "gauge",
                "When the generation's last verification ended, seconds since the Unix epoch.",
            ),
            (
                "refract_notices_missed_total",
                "counter",
                "Commit notices the metrics collector missed by falling behind.",
            ),
            (
                "refract_module_compile_seconds",
                "histogram",
                "Time to compile a plugin's component (cached=\"true\": loaded from the module cache).",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        for ((name, generation), m) in map.iter_mut() {
            let role = roles.get(&(name.clone(), *generation)).copied().unwrap_or(Role::Retired);
            let l = format!("projection=\"{}\",generation=\"{generation}\",role=\"{role}\"", label(name));
            let _ = writeln!(out, "refract_events_processed_total{{{l}}} {}", m.events);
            let _ = writeln!(out, "refract_batches_committed_total{{{l}}} {}", m.batches);
            let _ = writeln!(out, "refract_events_per_second{{{l}}} {}", m.rate(now));
            for (bound, count) in BUCKETS.iter().zip(m.buckets) {
                let _ = writeln!(out, "refract_batch_duration_seconds_bucket{{{l},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "refract_batch_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", m.batches);
            let _ = writeln!(out, "refract_batch_duration_seconds_sum{{{l}}} {}", m.latency_sum);
            let _ = writeln!(out, "refract_batch_duration_seconds_count{{{l}}} {}", m.batches);
        }
        for s in status {
            let (g, role) = (s.generation, s.role);
            let l = format!("projection=\"{}\",generation=\"{g}\",role=\"{role}\"", label(&s.name));
            let _ = writeln!(out, "refract_projection_checkpoint{{{l}}} {}", s.checkpoint);
            let _ = writeln!(out, "refract_projection_head{{{l}}} {}", s.head);
            let _ = writeln!(out, "refract_projection_lag{{{l}}} {}", s.lag);
            let faulted = u8::from(s.state == crate::store::ProjectionState::Faulted);
            let _ = writeln!(out, "refract_projection_errors{{{l}}} {faulted}");
            let failing = u8::from(s.store_error.is_some());
            let _ = writeln!(out, "refract_projection_store_error{{{l}}} {failing}");
            if let Some(v) = &s.verify {
                for (result, n) in
                    [("clean", v.runs.clean), ("differences", v.runs.differences), ("error", v.runs.error)]
                {
                    let _ = writeln!(out, "refract_verify_runs_total{{{l},result=\"{result}\"}} {n}");
                }
                if let Some(different) = v.different {
                    let _ = writeln!(out, "refract_verify_last_differences{{{l}}} {different}");
                }
                let _ = writeln!(out, "refract_verify_last_timestamp_seconds{{{l}}} {}", v.at as f64 / 1000.0);
            }
            if let Some(owner) = &s.owner {
                let held = u8::from(s.host != Some(crate::projection::host::HostLiveness::Gone));
                let n = label(owner);
                let _ = writeln!(out, "refract_projection_lease{{{l},node=\"{n}\"}} {held}");
            }
        }
        for cached in [false, true] {
            let times: Vec<f64> =
                compiles.iter().filter(|c| c.cached == cached).map(|c| c.duration.as_secs_f64()).collect();
            let l = format!("cached=\"{cached}\"");
            for bound in COMPILE_BUCKETS {
                let count = times.iter().filter(|t| **t <= bound).count();
                let _ = writeln!(out, "refract_module_compile_seconds_bucket{{{l},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "refract_module_compile_seconds_bucket{{{l},le=\"+Inf\"}} {}", times.len());
            let _ = writeln!(out, "refract_module_compile_seconds_sum{{{l}}} {}", times.iter().sum::<f64>());
            let _ = writeln!(out, "refract_module_compile_seconds_count{{{l}}} {}", times.len());
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
    use crate::store::ProjectionState;

    fn notice(generation: u32, events: usize, micros: u64) -> CommitNotice {
        CommitNotice { projection: "p\"1".into(), generation, checkpoint: 1, events, changed: vec![], micros }
    }

    fn status(generation: u32, role: Role) -> ProjectionStatus {
        ProjectionStatus {
            name: "p\"1".into(),
            version: "1".into(),
            generation,
            role,
            module_hash: String::new(),
            checkpoint: 7,
            head: 9,
            lag: 2,
            state: ProjectionState::Running,
            last_error: None,
            store_error: None,
            host: None,
            source: String::new(),
            paused: false,
            created_at: 0,
            activated_at: None,
            owner: None,
            lease_expires_at_ms: None,
            collections: vec![],
            verify: None,
        }
    }

    #[test]
    fn histograms_are_cumulative_labels_escaped_and_generations_apart() {
        let m = Metrics::default();
        m.record(&notice(1, 3, 700));
        m.record(&notice(1, 2, 20_000));
        m.record(&notice(2, 4, 700));
        m.record(&notice(3, 1, 700)); // A generation the status no longer lists: forgotten.
        let compiles = [
            CompileTime { duration: Duration::from_millis(30), cached: true },
            CompileTime { duration: Duration::from_secs(7), cached: false },
        ];
        let mut active = status(1, Role::Active);
        active.verify = Some(crate::store::VerifyOutcome {
            at: 1_700_000_000_500,
            generation: 1,
            result: crate::store::VerifyResult::Differences,
            checkpoint: Some(7),
            documents: Some(10),
            different: Some(2),
            error: None,
            elapsed_ms: 3,
            rebuild: None,
            runs: crate::store::VerifyRuns { clean: 4, differences: 1, error: 0 },
        });
        let text = m.render(&[active, status(2, Role::Building)], &compiles);
        let g1 = "projection=\"p\\\"1\",generation=\"1\",role=\"active\"";
        let g2 = "projection=\"p\\\"1\",generation=\"2\",role=\"building\"";
        for line in [
            format!("refract_events_processed_total{{{g1}}} 5\n"),
            format!("refract_events_processed_total{{{g2}}} 4\n"),
            format!("refract_batch_duration_seconds_bucket{{{g1},le=\"0.0005\"}} 0\n"),
            format!("refract_batch_duration_seconds_bucket{{{g1},le=\"0.001\"}} 1\n"),
            format!("refract_batch_duration_seconds_bucket{{{g1},le=\"0.025\"}} 2\n"),
            format!("refract_batch_duration_seconds_bucket{{{g1},le=\"+Inf\"}} 2\n"),
            format!("refract_projection_checkpoint{{{g1}}} 7\n"),
            format!("refract_projection_checkpoint{{{g2}}} 7\n"),
            format!("refract_verify_runs_total{{{g1},result=\"clean\"}} 4\n"),
            format!("refract_verify_runs_total{{{g1},result=\"differences\"}} 1\n"),
            format!("refract_verify_runs_total{{{g1},result=\"error\"}} 0\n"),
            format!("refract_verify_last_differences{{{g1}}} 2\n"),
            format!("refract_verify_last_timestamp_seconds{{{g1}}} 1700000000.5\n"),
            "refract_module_compile_seconds_bucket{cached=\"true\",le=\"0.05\"} 1\n".to_owned(),
            "refract_module_compile_seconds_bucket{cached=\"false\",le=\"5\"} 0\n".to_owned(),
            "refract_module_compile_seconds_bucket{cached=\"false\",le=\"10\"} 1\n".to_owned(),
            "refract_module_compile_seconds_count{cached=\"false\"} 1\n".to_owned(),
        ] {
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        assert!(!text.contains("generation=\"3\""), "{text}");
        assert!(
            !text.contains(&format!("refract_verify_runs_total{{{g2}")),
            "an unverified generation has no verify series"
        );
        assert!((m.events_per_second("p\"1", 1) - 0.5).abs() < 1e-9);
        assert!((m.events_per_second("p\"1", 2) - 0.4).abs() < 1e-9);
        // Every sample belongs to a family announced with a TYPE line, and no
        // two samples have the same name and labels (Prometheus refuses that).
        let mut seen = std::collections::BTreeSet::new();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            let family = if text.contains(&format!("# TYPE {family} ")) { family } else { name };
            assert!(text.contains(&format!("# TYPE {family} ")), "no TYPE for {sample}");
            assert!(seen.insert(sample.rsplit_once(' ').unwrap().0), "{sample} twice");
        }
    }
}
