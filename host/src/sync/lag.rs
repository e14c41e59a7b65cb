//! How far behind its table a source is: the rows after the position the
//! last page read ended at (its watermark), counted by the source database
//! when asked, with the same keyset condition the pages use, so it is one
//! index range scan. Every insert and update moves a row past the watermark
//! (a timestamp or version column takes a larger value; a sequence column
//! numbers new rows), so with the syncer stopped the count grows by one per
//! changed row, and a finished pass brings it back to 0. Not counted: hard
//! deletes (only a key scan finds them) and a transaction still open.

use std::time::Duration;

use super::config::SourceConfig;
use super::schema::Plan;
use super::table;
use super::window::Window;

/// How long a status request waits for a source database to count: a
/// source that is down shows no figure rather than holding up the status.
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// The rows pending for `config` given its stored `window`; `None` when the
/// source database cannot be asked (down, or the table no longer fits).
pub async fn rows_pending(config: &SourceConfig, window: &Window) -> Option<u64> {
    let count = async {
        let table = table::connect(config).await?;
        let plan = Plan::check(config, table.columns().await?)?;
        table.pending(&plan, window.watermark.as_ref()).await
    };
    match tokio::time::timeout(COUNT_TIMEOUT, count).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) => {
            tracing::debug!(source = %config.name, error = %e, "cannot count the rows pending");
            None
        }
        Err(_) => None,
    }
}
