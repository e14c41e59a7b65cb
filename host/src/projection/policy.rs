//! What the runner does when a batch keeps failing: retry with backoff, then
//! halt the projection or skip the poison event into the dead-letter table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What to do with an event that still fails after the retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Stop the projection at the event before (state `faulted`) until
    /// `refract retry` or a new module. Nothing is lost or reordered.
    #[default]
    Halt,
    /// Record the event in the dead-letter table and go on with the next one.
    Skip,
}

/// What the host does when a scheduled verification (`verify_every`) finds
/// documents that differ from a rebuild of the active module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyPolicy {
    /// Record the result (status, metrics, log) and change nothing.
    #[default]
    Report,
    /// Record it and start a new generation of the active module, as
    /// `POST /projections/{name}/rebuild` does; it is swapped in at the head.
    Rebuild,
}

/// How often and how patiently a failing batch is retried before the
/// poison event is isolated.
///
/// ```
/// use std::time::Duration;
/// let retry = refract::RetryPolicy::default();
/// assert_eq!(retry.retries, 3);
/// assert_eq!(retry.delay(0), Duration::from_millis(100));
/// assert_eq!(retry.delay(2), Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first failure (0 = isolate at once).
    pub retries: u32,
    /// Pause before the first retry; each later one doubles it.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { retries: 3, backoff: Duration::from_millis(100) }
    }
}

/// Longest pause between two retries, however many there are.
const MAX_DELAY: Duration = Duration::from_secs(30);

impl RetryPolicy {
    /// Pause before retry number `attempt` (0-based): exponential, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_is_capped() {
        let r = RetryPolicy { retries: 40, backoff: Duration::from_millis(10) };
        assert_eq!(r.delay(1), Duration::from_millis(20));
        assert_eq!(r.delay(3), Duration::from_millis(80));
        assert_eq!(r.delay(39), MAX_DELAY);
    }
}
