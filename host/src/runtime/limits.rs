//! What one plugin call may use: time, memory, fuel and output size, and
//! the host memory its `get` reads may keep cached.
//!
//! Every `handle` call runs under these limits, so a plugin cannot hang the
//! host (epoch deadline), exhaust its memory (a `ResourceLimiter` on linear
//! memory), or flood the store (output and document caps checked before
//! anything is written).

use std::time::Duration;

use wasmtime::ResourceLimiter;

use crate::model::changes::Change;

/// How often the background thread advances the engine's epoch. A deadline
/// is rounded up to whole ticks, so it is honoured within one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

const MIB: u64 = 1024 * 1024;

/// Limits for each `handle` call of a projection.
///
/// ```
/// let limits = refract::Limits::default();
/// assert_eq!(limits.deadline, std::time::Duration::from_secs(5));
/// assert_eq!(limits.memory_bytes, 256 * 1024 * 1024);
/// assert_eq!(limits.fuel, None);
/// assert_eq!(limits.document_cache_bytes, 64 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time a batch may take inside the plugin.
    pub deadline: Duration,
    /// Largest size of the plugin's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Fuel (roughly, wasm instructions) per batch; `None` = unmetered.
    pub fuel: Option<u64>,
    /// Most changes one batch may return.
    pub max_changes: usize,
    /// Most bytes (ids and bodies) one batch may return.
    pub max_batch_bytes: u64,
    /// Largest document body, in bytes.
    pub max_document_bytes: u64,
    /// Most bytes of committed documents (ids and bodies, plus a fixed cost
    /// per entry) the host keeps in memory for the projection's `get`
    /// reads; past it the cache starts over. Host memory a plugin's reads
    /// can use, on top of its own `memory_bytes`.
    pub document_cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            memory_bytes: 256 * MIB,
            fuel: None,
            max_changes: 100_000,
            max_batch_bytes: 64 * MIB,
            max_document_bytes: MIB,
            document_cache_bytes: 64 * MIB,
        }
    }
}

impl Limits {
    /// The deadline in epoch ticks, at least one.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_millis().max(1);
        (self.deadline.as_millis().div_ceil(tick) as u64).max(1)
    }

    /// Checks a batch's output against the size limits.
    pub(crate) fn check_output(&self, changes: &[Change]) -> Result<(), String> {
        if changes.len() > self.max_changes {
            return Err(format!("{} changes in one batch; the limit is {}", changes.len(), self.max_changes));
        }
        let mut total: u64 = 0;
        for change in changes {
            let (collection, id, body) = match change {
                Change::Upsert { collection, id, body } => (collection, id, body.as_str()),
                Change::Delete { collection, id } => (collection, id, ""),
            };
            if body.len() as u64 > self.max_document_bytes {
                return Err(format!(
                    "document `{}` in `{collection}` is {} bytes; the limit is {}",
                    truncate(id, 64),
                    body.len(),
                    self.max_document_bytes
                ));
            }
            total += (id.len() + body.len()) as u64;
        }
        if total > self.max_batch_bytes {
            return Err(format!("{total} bytes in one batch; the limit is {}", self.max_batch_bytes));
        }
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Raised (as a trap) when a plugin asks for more memory than its limit.
/// Trapping at once, rather than failing `memory.grow`, names the cause:
/// a Rust guest would otherwise abort with a bare `unreachable`.
#[derive(Debug, thiserror::Error)]
#[error("linear memory would grow to {desired} bytes; the limit is {limit}")]
pub(crate) struct MemoryLimitHit {
    pub limit: u64,
    pub desired: u64,
}

/// Caps each linear memory of an instance, and its tables.
pub(crate) struct MemoryLimiter {
    pub memory_bytes: u64,
}

/// Table elements an instance may have; generous for any real plugin.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_bytes {
            return Err(MemoryLimitHit { limit: self.memory_bytes, desired: desired as u64 }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(id: &str, body: &str) -> Change {
        Change::Upsert { collection: "c".into(), id: id.into(), body: body.into() }
    }

    #[test]
    fn deadline_rounds_up_to_ticks() {
        let l = |ms| Limits { deadline: Duration::from_millis(ms), ..Limits::default() };
        assert_eq!(l(0).deadline_ticks(), 1);
        assert_eq!(l(10).deadline_ticks(), 1);
        assert_eq!(l(11).deadline_ticks(), 2);
        assert_eq!(l(5000).deadline_ticks(), 500);
    }

    #[test]
    fn output_limits() {
        let limits = Limits { max_changes: 2, max_batch_bytes: 20, max_document_bytes: 8, ..Limits::default() };
        assert!(limits.check_output(&[upsert("a", "{}"), upsert("b", "{}")]).is_ok());
        let e = limits.check_output(&[upsert("a", "{}"), upsert("b", "{}"), upsert("c", "{}")]).unwrap_err();
        assert!(e.contains("3 changes"), "{e}");
        let e = limits.check_output(&[upsert("a", r#"{"x":123}"#)]).unwrap_err();
        assert!(e.contains("document `a` in `c` is 9 bytes; the limit is 8"), "{e}");
        let e = limits.check_output(&[upsert("aaaaaaaaaaaa", "{123456}"), upsert("b", "{}")]).unwrap_err();
        assert!(e.contains("bytes in one batch"), "{e}");
    }

    #[test]
    fn memory_limiter_traps_past_the_cap() {
        let mut limiter = MemoryLimiter { memory_bytes: 1024 };
        assert!(limiter.memory_growing(0, 1024, None).unwrap());
        let err = limiter.memory_growing(1024, 2048, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitHit>().is_some());
        assert!(!limiter.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
