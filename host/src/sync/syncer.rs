//! One syncer per source: passes over the table in keyset order, each
//! changed row an event, committed together with the sync state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::config::SourceConfig;
use super::error::SyncError;
use super::schema::Plan;
use super::stream::{encode_key, stream_id};
use super::table::{self, Table};
use super::value::SourceRow;
use super::window::Window;
use crate::model::event::{AppendRequest, ExpectedVersion, NewEvent};
use crate::source::{SeenRow, SourceError, SyncCommit, SyncLog};

/// Event type of an inserted or updated row (or an un-deleted one).
pub const ROW_UPSERTED: &str = "RowUpserted";
/// Event type of a deleted row: soft (the `deleted` column set) or hard (gone).
pub const ROW_DELETED: &str = "RowDeleted";

/// The first retry's wait after an error; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between retries of a failing source.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle source records its last sync time and looks for a reset.
const IDLE_PERSIST: Duration = Duration::from_secs(1);
/// How often a running source looks at its table's columns again.
const RECHECK: Duration = Duration::from_secs(1);
/// A continuous source (`interval_ms = 0`) that found nothing new waits
/// this long before the next pass, instead of spinning.
const IDLE_PAUSE: Duration = Duration::from_millis(20);

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    crate::clock::now_ms().max(0) as u64
}

/// A source's syncer.
pub struct Syncer {
    config: SourceConfig,
    table: Box<dyn Table>,
    log: Arc<dyn SyncLog>,
    plan: Option<Plan>,
    window: Window,
    epoch: i64,
    loaded_at: Option<u64>,
    persisted_at: u64,
    /// When the table was last checked against the configuration.
    checked_at: u64,
    failing: bool,
}

/// What a pass did.
struct Pass {
    emitted: usize,
}

impl Syncer {
    /// Connects to the source and checks the table. A configuration that
    /// does not fit the table is an error; a database that cannot be reached
    /// is not (the syncer starts failing and retries).
    pub async fn start(config: SourceConfig, log: Arc<dyn SyncLog>) -> Result<Self, SyncError> {
        let table = table::connect(&config).await?;
        let mut s = Self {
            config,
            table,
            log,
            plan: None,
            window: Window::default(),
            epoch: 0,
            loaded_at: None,
            persisted_at: 0,
            checked_at: 0,
            failing: false,
        };
        match s.check().await {
            Ok(()) | Err(SyncError::Database { .. }) => Ok(s),
            Err(e) => Err(e),
        }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Checks the table against the configuration when it has not been for
    /// [`RECHECK`]: a column renamed or retyped while running may leave the
    /// old SQL still running (MariaDB reads a `VARCHAR` as a `DATETIME`),
    /// so waiting for a query to fail is not enough.
    async fn check(&mut self) -> Result<(), SyncError> {
        let now = now_ms();
        if self.plan.is_none() || now >= self.checked_at + RECHECK.as_millis() as u64 {
            self.plan = None;
            let columns = self.table.columns().await?;
            self.plan = Some(Plan::check(&self.config, columns)?);
            self.checked_at = now;
        }
        Ok(())
    }

    /// Runs passes until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        while !*stop.borrow() {
            let wait = match self.pass().await {
                Ok(pass) => {
                    backoff = FIRST_BACKOFF;
                    if self.failing {
                        self.failing = false;
                        tracing::info!(source = %self.config.name, "source recovered");
                        let _ = self.log.sync_error(&self.config.name, None).await;
                    }
                    if self.config.interval.is_zero() && pass.emitted == 0 { IDLE_PAUSE } else { self.config.interval }
                }
                Err(SyncError::Store(SourceError::Conflict { .. })) => {
                    // A reset (or another host) moved the state: start over from what is stored.
                    self.loaded_at = None;
                    Duration::ZERO
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::warn!(source = %self.config.name, error = %message, retry_in = ?backoff, "source failing");
                    self.failing = true;
                    // Look at the table afresh: a column may have been dropped or changed.
                    self.plan = None;
                    self.loaded_at = None;
                    let _ = self.log.sync_error(&self.config.name, Some(&message)).await;
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// Loads the stored state when it may have changed behind our back.
    async fn load(&mut self) -> Result<(), SyncError> {
        let now = now_ms();
        if self.loaded_at.is_some_and(|t| now < t + IDLE_PERSIST.as_millis() as u64) {
            return Ok(());
        }
        let stored = self.log.sync_load(&self.config.name).await?;
        if stored.epoch != self.epoch || self.loaded_at.is_none() {
            self.window = if stored.state.is_empty() {
                Window::default()
            } else {
                serde_json::from_str(&stored.state).map_err(|e| {
                    SyncError::Store(SourceError::Corrupt(format!("sync state of `{}`: {e}", self.config.name)))
                })?
            };
            self.epoch = stored.epoch;
        }
        self.loaded_at = Some(now);
        Ok(())
    }

    async fn pass(&mut self) -> Result<Pass, SyncError> {
        self.check().await?;
        self.load().await?;
        let plan = self.plan.clone().expect("checked above");
        let lookback = self.config.lookback.as_millis() as u64;
        let mut after = self.window.begin(now_ms(), lookback);
        let mut emitted = 0;
        // Where a pass spends its time, for the debug log (and BENCHMARKS.md).
        let began = Instant::now();
        let (mut read, mut compare, mut commit, mut rows_read) = (Duration::ZERO, Duration::ZERO, Duration::ZERO, 0);
        loop {
            let t = Instant::now();
            let rows = self.table.page(&plan, after.as_ref(), self.config.batch_size).await?;
            read += t.elapsed();
            rows_read += rows.len();
            let full = rows.len() == self.config.batch_size;
            let Some(last) = rows.last() else { break };
            let last_position = last.position.clone();
            let last_value = last.tracking.clone();
            let t = Instant::now();
            let (events, seen) = self.changes(&plan, &rows).await?;
            compare += t.elapsed();
            self.window.advance(now_ms(), last_position.clone(), lookback);
            self.window.last_value = Some(last_value);
            self.window.watermark = Some(last_position.clone());
            if !events.is_empty() {
                let t = Instant::now();
                self.commit(&events, &seen, false).await?;
                commit += t.elapsed();
                emitted += events.len();
            }
            after = Some(last_position);
            if !full {
                break;
            }
        }
        if self.config.detect_hard_deletes
            && self
                .window
                .last_delete_scan
                .is_none_or(|t| now_ms() >= t + self.config.delete_scan_interval.as_millis() as u64)
        {
            emitted += self.hard_deletes(&plan).await?;
        }
        let now = now_ms();
        self.window.finish(now, lookback);
        if emitted > 0 || now >= self.persisted_at + IDLE_PERSIST.as_millis() as u64 {
            self.commit(&[], &[], true).await?;
        }
        if emitted > 0 {
            tracing::debug!(
                source = %self.config.name, rows_read, emitted, total = ?began.elapsed(), ?read, ?compare, ?commit,
                "pass"
            );
        }
        Ok(Pass { emitted })
    }

    /// The events for the rows of a page that were not emitted before as
    /// they are now, and what to remember of them.
    async fn changes(&self, plan: &Plan, rows: &[SourceRow]) -> Result<(Vec<AppendRequest>, Vec<SeenRow>), SyncError> {
        let keys: Vec<String> = rows.iter().map(|r| encode_key(&r.position.key)).collect();
        let before = self.log.sync_seen(&self.config.name, &keys).await?;
        let mut events = Vec::new();
        let mut seen = Vec::new();
        for (row, key) in rows.iter().zip(keys) {
            let value = serde_json::to_string(&row.position.value).unwrap_or_default();
            let now_seen = format!("{}{value}", if row.deleted { 'D' } else { 'U' });
            if before.get(&key) == Some(&now_seen) {
                continue;
            }
            let metadata = json!({ "source": self.config.name, "table": plan.source.table, "tracking": row.tracking });
            let event_type = if row.deleted { ROW_DELETED } else { ROW_UPSERTED };
            events.push(AppendRequest {
                stream_id: stream_id(&self.config.name, &row.position.key),
                expected: ExpectedVersion::Any,
                events: vec![
                    NewEvent::new(event_type, serde_json::Value::Object(row.payload.clone()).to_string())
                        .with_metadata(metadata.to_string()),
                ],
            });
            seen.push(SeenRow { key, seen: now_seen, live: !row.deleted });
        }
        Ok((events, seen))
    }

    /// Emits `RowDeleted` for every key the events say exists but the table no longer has.
    async fn hard_deletes(&mut self, plan: &Plan) -> Result<usize, SyncError> {
        // Live keys first, the table's keys second: a key live before the
        // scan and missing from it was deleted in between.
        let live = self.log.sync_live_keys(&self.config.name).await?;
        let present: HashSet<String> = self.table.keys(plan).await?.iter().map(|k| encode_key(k)).collect();
        self.window.last_delete_scan = Some(now_ms());
        let gone: Vec<String> = live.into_iter().filter(|k| !present.contains(k)).collect();
        let mut n = 0;
        for chunk in gone.chunks(self.config.batch_size) {
            let events: Vec<AppendRequest> = chunk
                .iter()
                .map(|key| AppendRequest {
                    stream_id: format!("{}-{key}", self.config.name),
                    expected: ExpectedVersion::Any,
                    events: vec![
                        NewEvent::new(ROW_DELETED, json!({ "key": key }).to_string()).with_metadata(
                            json!({ "source": self.config.name, "table": plan.source.table, "hard_delete": true })
                                .to_string(),
                        ),
                    ],
                })
                .collect();
            let seen: Vec<SeenRow> =
                chunk.iter().map(|key| SeenRow { key: key.clone(), seen: "H".into(), live: false }).collect();
            self.commit(&events, &seen, false).await?;
            n += events.len();
        }
        Ok(n)
    }

    async fn commit(&mut self, events: &[AppendRequest], rows: &[SeenRow], pass_done: bool) -> Result<(), SyncError> {
        let state = serde_json::to_string(&self.window).unwrap_or_default();
        self.log
            .sync_commit(&SyncCommit {
                source: &self.config.name,
                epoch: self.epoch,
                events,
                rows,
                state: &state,
                pass_done,
            })
            .await?;
        self.persisted_at = now_ms();
        Ok(())
    }
}

/// The running syncers of a host.
pub struct Syncers {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Syncers {
    /// Checks every source against its table and starts a syncer for each;
    /// fails, starting none, if any source's configuration is wrong.
    pub async fn start(sources: Vec<SourceConfig>, log: Arc<dyn SyncLog>) -> Result<Self, SyncError> {
        let mut syncers = Vec::with_capacity(sources.len());
        for config in sources {
            syncers.push(Syncer::start(config, log.clone()).await?);
        }
        let stop = watch::channel(false).0;
        let tasks = syncers
            .into_iter()
            .map(|s| {
                tracing::info!(source = %s.name(), "syncing table");
                tokio::spawn(s.run(stop.subscribe()))
            })
            .collect();
        Ok(Self { stop, tasks })
    }

    /// Stops every syncer after its current step.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A source's state as users see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// Its table, when the source is configured here.
    pub table: Option<String>,
    /// The tracking value at the end of the last page read.
    pub last_value: Option<serde_json::Value>,
    /// Row changes ingested since the last reset.
    pub rows: u64,
    /// When the last pass finished, in ms since the Unix epoch.
    pub last_sync_ms: Option<u64>,
    /// The error the source is retrying, if any.
    pub last_error: Option<String>,
    /// Rows changed in the table after the last position read (see
    /// `lag.rs`), counted when asked; `None` when the source database
    /// could not be asked or the source is not configured here.
    pub rows_pending: Option<u64>,
}

/// The status of every source with state in `log`, and of every configured
/// one (those not yet synced show zeros). The configured ones' databases
/// are asked for their rows pending.
pub async fn source_status(log: &dyn SyncLog, configured: &[SourceConfig]) -> Result<Vec<SourceStatus>, SyncError> {
    let mut out: HashMap<String, SourceStatus> = HashMap::new();
    let mut windows: HashMap<String, Window> = HashMap::new();
    for (name, s) in log.sync_list().await? {
        let window: Window = serde_json::from_str(&s.state).unwrap_or_default();
        out.insert(
            name.clone(),
            SourceStatus {
                name: name.clone(),
                table: None,
                last_value: window.last_value.clone(),
                rows: s.rows,
                last_sync_ms: s.last_sync_ms,
                last_error: s.last_error,
                rows_pending: None,
            },
        );
        windows.insert(name, window);
    }
    for c in configured {
        let window = windows.remove(&c.name).unwrap_or_default();
        let rows_pending = super::lag::rows_pending(c, &window).await;
        let s = out.entry(c.name.clone()).or_insert_with(|| SourceStatus {
            name: c.name.clone(),
            table: None,
            last_value: None,
            rows: 0,
            last_sync_ms: None,
            last_error: None,
            rows_pending: None,
        });
        s.table = Some(c.table.clone());
        s.rows_pending = rows_pending;
    }
    let mut list: Vec<SourceStatus> = out.into_values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}
