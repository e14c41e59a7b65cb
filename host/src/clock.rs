//! Wall-clock time as refract stores it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as event timestamps and registry rows
/// store them; 0 if the clock reads before 1970.
///
/// ```ignore
/// assert!(crate::clock::now_ms() > 1_700_000_000_000);
/// ```
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
