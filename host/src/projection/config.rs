//! `refract.toml`: sandbox limits, retries and failure policy, with defaults
//! for every projection and overrides per projection.
//!
//! ```toml
//! [defaults]
//! deadline_ms = 5000
//! on_failure = "halt"
//!
//! [projections.account-summary]
//! memory_mib = 64
//! on_failure = "skip"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::projection::policy::{FailurePolicy, RetryPolicy, VerifyPolicy};
use crate::runtime::limits::Limits;
use crate::store::Retention;

/// Errors reading the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Config file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or bad values.
    #[error("{path}: {reason}")]
    Invalid {
        /// Config file.
        path: PathBuf,
        /// What is wrong, as the TOML parser says.
        reason: String,
    },
}

/// Everything the host applies to one projection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectionConfig {
    /// Limits per `handle` call.
    pub limits: Limits,
    /// Retries before the poison event is isolated.
    pub retry: RetryPolicy,
    /// What happens to an event that keeps failing.
    pub on_failure: FailurePolicy,
    /// How much of the change log is kept.
    pub changes: Retention,
    /// How often a running host verifies the projection (none: never).
    pub verify_every: Option<Duration>,
    /// What a scheduled verification does on a difference.
    pub verify_policy: VerifyPolicy,
}

/// One table of the file: `[defaults]` or `[projections.NAME]`. Every key is
/// optional; a missing one falls back to the defaults table, then to the
/// built-in default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    deadline_ms: Option<u64>,
    memory_mib: Option<u64>,
    /// 0 turns fuel metering off.
    fuel: Option<u64>,
    max_changes: Option<usize>,
    max_batch_mib: Option<u64>,
    max_document_kib: Option<u64>,
    document_cache_mib: Option<u64>,
    retries: Option<u32>,
    backoff_ms: Option<u64>,
    on_failure: Option<FailurePolicy>,
    /// Change-log entries kept per generation; 0 keeps only the newest.
    changes_max_entries: Option<u64>,
    /// Seconds a change-log entry is kept; with `changes_max_entries`, whichever removes more.
    changes_max_age_s: Option<u64>,
    /// A duration such as "10m": how often a running host verifies the projection.
    #[serde(default, deserialize_with = "interval")]
    verify_every: Option<Duration>,
    verify_policy: Option<VerifyPolicy>,
}

/// Parses `verify_every`: a positive whole number with a unit, `ms`, `s`,
/// `m`, `h` or `d` ("500ms", "1s", "10m", "24h").
fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration `{text}`: write a whole number and a unit, ms, s, m, h or d, as in \"10m\"");
    let digits = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = text[..digits].parse().map_err(|_| bad())?;
    let unit = match &text[digits..] {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return Err(bad()),
    };
    match unit.checked_mul(u32::try_from(n).map_err(|_| bad())?) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("bad duration `{text}`: it must be more than 0 (leave the key out to never verify)")),
        None => Err(bad()),
    }
}

fn interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_interval(&text).map(Some).map_err(serde::de::Error::custom)
}

impl Settings {
    fn apply(&self, c: &mut ProjectionConfig) {
        let l = &mut c.limits;
        if let Some(v) = self.deadline_ms {
            l.deadline = Duration::from_millis(v);
        }
        if let Some(v) = self.memory_mib {
            l.memory_bytes = v.saturating_mul(1024 * 1024);
        }
        if let Some(v) = self.fuel {
            l.fuel = (v > 0).then_some(v);
        }
        if let Some(v) = self.max_changes {
            l.max_changes = v;
        }
        if let Some(v) = self.max_batch_mib {
            l.max_batch_bytes = v.saturating_mul(1024 * 1024);
        }
        if let Some(v) = self.max_document_kib {
            l.max_document_bytes = v.saturating_mul(1024);
        }
        if let Some(v) = self.document_cache_mib {
            l.document_cache_bytes = v.saturating_mul(1024 * 1024);
        }
        if let Some(v) = self.retries {
            c.retry.retries = v;
        }
        if let Some(v) = self.backoff_ms {
            c.retry.backoff = Duration::from_millis(v);
        }
        if let Some(v) = self.on_failure {
            c.on_failure = v;
        }
        if let Some(v) = self.changes_max_entries {
            c.changes.max_entries = Some(v);
        }
        if let Some(v) = self.changes_max_age_s {
            c.changes.max_age = Some(Duration::from_secs(v));
        }
        if let Some(v) = self.verify_every {
            c.verify_every = Some(v);
        }
        if let Some(v) = self.verify_policy {
            c.verify_policy = v;
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    projections: BTreeMap<String, Settings>,
    /// The `refract` binary's flags (`refract config` lists them); the
    /// binary reads and checks this table itself.
    #[serde(default, rename = "host")]
    _host: serde::de::IgnoredAny,
    /// `[[tokens]]`: the API tokens (see `api/auth.rs`).
    #[serde(default)]
    tokens: crate::api::Tokens,
    /// `[sources.NAME]`: tables to sync (see `crate::sync`).
    #[serde(default)]
    sources: BTreeMap<String, crate::sync::SourceSettings>,
    /// A foreign event source (`source/jetstream/foreign.rs`).
    #[serde(default)]
    events: Option<crate::source::ForeignMapping>,
}

/// The parsed config: defaults plus per-projection overrides.
///
/// ```
/// let config = refract::Config::parse(r#"
///     [defaults]
///     deadline_ms = 300
///     [projections.orders]
///     on_failure = "skip"
/// "#).unwrap();
/// let orders = config.for_projection("orders");
/// assert_eq!(orders.limits.deadline, std::time::Duration::from_millis(300));
/// assert_eq!(orders.on_failure, refract::FailurePolicy::Skip);
/// assert_eq!(config.for_projection("other").on_failure, refract::FailurePolicy::Halt);
/// ```
#[derive(Debug, Default)]
pub struct Config {
    file: File,
}

impl Config {
    /// Parses the text of a `refract.toml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map(|file| Self { file }).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|reason| ConfigError::Invalid { path: path.to_owned(), reason })
    }

    /// What applies to the projection `name`.
    pub fn for_projection(&self, name: &str) -> ProjectionConfig {
        let mut c = ProjectionConfig::default();
        self.file.defaults.apply(&mut c);
        if let Some(own) = self.file.projections.get(name) {
            own.apply(&mut c);
        }
        c
    }

    /// The API tokens the file lists (`[[tokens]]`).
    pub fn tokens(&self) -> &crate::api::Tokens {
        &self.file.tokens
    }

    /// The `[sources.NAME]` tables, checked (not yet against their databases).
    pub fn sources(&self) -> Result<Vec<crate::sync::SourceConfig>, crate::sync::SyncError> {
        self.file.sources.iter().map(|(name, s)| s.check(name)).collect()
    }

    /// The foreign JetStream stream the `[events]` table maps, if any: the
    /// host then reads its events from there.
    pub fn events(&self) -> Option<&crate::source::ForeignMapping> {
        self.file.events.as_ref()
    }

    /// Whether any projection has `verify_every` (the host then runs the schedule).
    pub fn verifies(&self) -> bool {
        std::iter::once(&self.file.defaults).chain(self.file.projections.values()).any(|s| s.verify_every.is_some())
    }

    /// Whether any projection meters fuel (the engine must then be built with it).
    pub fn uses_fuel(&self) -> bool {
        std::iter::once(&self.file.defaults)
            .chain(self.file.projections.values())
            .any(|s| s.fuel.is_some_and(|f| f > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.for_projection("x"), ProjectionConfig::default());
        assert!(!c.uses_fuel());
    }

    #[test]
    fn overrides_layer_on_defaults() {
        let c = Config::parse(
            "[defaults]\nmemory_mib = 32\nretries = 1\n\
             [projections.p]\nfuel = 1000\nmax_document_kib = 2\nbackoff_ms = 5\nmax_batch_mib = 1\nmax_changes = 7\n\
             document_cache_mib = 8\n",
        )
        .unwrap();
        let p = c.for_projection("p");
        assert_eq!(p.limits.memory_bytes, 32 << 20);
        assert_eq!(p.limits.fuel, Some(1000));
        assert_eq!(p.limits.max_document_bytes, 2048);
        assert_eq!(p.limits.max_batch_bytes, 1 << 20);
        assert_eq!(p.limits.max_changes, 7);
        assert_eq!(p.limits.document_cache_bytes, 8 << 20);
        assert_eq!(p.retry, RetryPolicy { retries: 1, backoff: Duration::from_millis(5) });
        assert_eq!(c.for_projection("q").limits.fuel, None);
        assert!(c.uses_fuel());
    }

    #[test]
    fn verify_every_takes_a_duration_with_a_unit() {
        let c = Config::parse(
            "[defaults]\nverify_every = \"10m\"\n[projections.p]\nverify_every = \"1s\"\nverify_policy = \"rebuild\"\n",
        )
        .unwrap();
        assert_eq!(c.for_projection("p").verify_every, Some(Duration::from_secs(1)));
        assert_eq!(c.for_projection("p").verify_policy, VerifyPolicy::Rebuild);
        assert_eq!(c.for_projection("q").verify_every, Some(Duration::from_secs(600)));
        assert_eq!(c.for_projection("q").verify_policy, VerifyPolicy::Report);
        assert_eq!(Config::parse("").unwrap().for_projection("q").verify_every, None);
        for (text, want) in [("250ms", 250), ("2h", 7_200_000), ("1d", 86_400_000)] {
            assert_eq!(parse_interval(text), Ok(Duration::from_millis(want)), "{text}");
        }
        for bad in ["10", "m", "10 m", "-1s", "1.5s", "10min", "0s", "99999999999d"] {
            let e = Config::parse(&format!("[defaults]\nverify_every = \"{bad}\"")).unwrap_err();
            assert!(e.contains(&format!("bad duration `{bad}`")) && e.contains("verify_every"), "{bad}: {e}");
        }
        let e = Config::parse("[defaults]\nverify_policy = \"fix\"").unwrap_err();
        assert!(e.contains("unknown variant `fix`"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = Config::parse("[defaults]\ndeadline = 5").unwrap_err();
        assert!(e.contains("unknown field `deadline`"), "{e}");
        let e = Config::parse("[defaults]\non_failure = \"ignore\"").unwrap_err();
        assert!(e.contains("unknown variant `ignore`"), "{e}");
        let e = Config::parse("[defaults]\ndeadline_ms = -1").unwrap_err();
        assert!(e.contains("deadline_ms"), "{e}");
    }
}
