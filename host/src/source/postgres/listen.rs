//! Noticing appends made through other connections: other hosts, or a CLI,
//! appending to the same PostgreSQL database.
//!
//! Every append sends `pg_notify('refract_events', '<last position> <schema>')`
//! inside its transaction: PostgreSQL delivers it to every listening session
//! when the append commits, and never for an append that rolled back. One
//! listener per store, on a connection of its own, turns those into head
//! notifications. The schema in the payload keeps stores in other schemas of
//! the same database from waking this one (a channel per schema could
//! exceed PostgreSQL's 63-byte channel names).
//!
//! A lost connection loses the notifications sent while it was down: after
//! every (re)connection the listener reads the head once, and the runners'
//! poll remains the fallback while it cannot connect.

use std::convert::Infallible;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;

use crate::source::wake::{AbortOnDrop, Follower, advance};

/// The channel appends notify.
pub(super) const CHANNEL: &str = "refract_events";

/// First pause before listening again after a failure; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts listening for appends to the store `options` connects to,
/// advancing `head`; `None` outside a tokio runtime. Dropping the returned
/// follower stops the listener and closes its connection.
pub(super) fn follow(options: PgConnectOptions, head: watch::Sender<u64>) -> Option<Follower> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some(Box::new(AbortOnDrop(runtime.spawn(run(options, head)))))
}

/// Listens until aborted, connecting again with backoff after each failure.
async fn run(options: PgConnectOptions, head: watch::Sender<u64>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Err(e) = listen(&options, &head, &mut backoff).await;
        tracing::warn!(error = %e, retry_in = ?backoff, "not listening for appends; runners poll until it is back");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening session; returns only on an error it cannot recover from.
async fn listen(
    options: &PgConnectOptions,
    head: &watch::Sender<u64>,
    backoff: &mut Duration,
) -> Result<Infallible, sqlx::Error> {
    // A pool of one connection, which PgListener uses to reconnect (and
    // LISTEN again) by itself after a dropped connection.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    let schema: String =
        sqlx::query_scalar("SELECT COALESCE(current_schema()::text, '')").fetch_one(&mut listener).await?;
    *backoff = MIN_BACKOFF;
    // Appends that committed before LISTEN took effect notified nobody.
    advance(head, super::head_of(&mut listener).await?);
    loop {
        match listener.try_recv().await? {
            Some(notice) => {
                if let Some(position) = notified_position(notice.payload(), &schema) {
                    advance(head, position);
                }
            }
            // The connection was lost and made again: what was sent
            // meanwhile is gone, but the head has it.
            None => advance(head, super::head_of(&mut listener).await?),
        }
    }
}

/// The position a notification reports, if it is for `schema`.
fn notified_position(payload: &str, schema: &str) -> Option<u64> {
    let (position, from) = payload.split_once(' ')?;
    if from != schema {
        return None;
    }
    position.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_of_other_schemas_or_garbled_ones_are_ignored() {
        assert_eq!(notified_position("42 public", "public"), Some(42));
        assert_eq!(notified_position("42 my schema", "my schema"), Some(42), "a schema name may hold spaces");
        assert_eq!(notified_position("42 other", "public"), None);
        assert_eq!(notified_position("42", "public"), None);
        assert_eq!(notified_position("x public", "public"), None);
        assert_eq!(notified_position("", ""), None);
    }
}
