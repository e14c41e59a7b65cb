//! New-event notifications of one event store: the newest position it knows
//! to be appended, in a `watch` channel that runners wait on between polls.
//!
//! Two things move it: an append through the store itself (at once, after
//! its commit), and a *follower* that notices appends made elsewhere (another
//! process on the same SQLite file, another node on PostgreSQL). The
//! follower is started by the first subscriber, so a short-lived store (a
//! CLI `append`) never starts one, and stopped when the store is closed or
//! dropped.

use std::sync::Mutex;

use tokio::sync::watch;

/// What keeps a follower running; dropping it stops the follower.
pub(crate) type Follower = Box<dyn Send>;

/// The head watch of one store, shared by its clones.
#[derive(Debug)]
pub(crate) struct Wake {
    head: watch::Sender<u64>,
    follower: Mutex<FollowerState>,
}

enum FollowerState {
    /// Nobody subscribed yet.
    NotStarted,
    /// Started (or could not be: `None`, then runners poll).
    Running(Option<Follower>),
    /// The store was closed: no new follower.
    Stopped,
}

impl std::fmt::Debug for FollowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotStarted => "not started",
            Self::Running(Some(_)) => "running",
            Self::Running(None) => "unavailable",
            Self::Stopped => "stopped",
        })
    }
}

impl Wake {
    pub fn new() -> Self {
        Self { head: watch::Sender::new(0), follower: Mutex::new(FollowerState::NotStarted) }
    }

    /// Tells subscribers that events up to `position` were appended.
    pub fn advance(&self, position: u64) {
        advance(&self.head, position);
    }

    /// A receiver of head notifications, starting the follower with `start`
    /// if it is the first. `start` gets a sender it advances with what it
    /// notices, and returns `None` when it cannot follow (no runtime, no
    /// file watch): appends elsewhere are then found by polling.
    pub fn subscribe(&self, start: impl FnOnce(watch::Sender<u64>) -> Option<Follower>) -> watch::Receiver<u64> {
        let mut state = self.follower.lock().expect("wake follower lock");
        if matches!(*state, FollowerState::NotStarted) {
            *state = FollowerState::Running(start(self.head.clone()));
        }
        self.head.subscribe()
    }

    /// Stops following appends made elsewhere (the store is being closed).
    pub fn stop(&self) {
        *self.follower.lock().expect("wake follower lock") = FollowerState::Stopped;
    }
}

/// Raises the head to `position` if that is newer, waking every receiver;
/// an older or equal position (a late or repeated notice) wakes nobody.
pub(crate) fn advance(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|known| {
        let newer = position > *known;
        if newer {
            *known = position;
        }
        newer
    });
}

/// Aborts a follower task when dropped, with the store's last clone.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_newer_position_wakes_and_the_follower_starts_once() {
        let wake = Wake::new();
        let mut starts = 0;
        let mut rx = wake.subscribe(|_| {
            starts += 1;
            None
        });
        let _rx2 = wake.subscribe(|_| {
            starts += 1;
            None
        });
        assert_eq!(starts, 1);
        wake.advance(5);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 5);
        wake.advance(3);
        wake.advance(5);
        assert!(!rx.has_changed().unwrap(), "an older or equal head wakes nobody");
    }

    #[tokio::test]
    async fn a_stopped_wake_drops_its_follower() {
        let wake = Wake::new();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        // The follower is the oneshot's sender: dropped when stopped.
        let _sub = wake.subscribe(move |_| Some(Box::new(tx) as Follower));
        assert!(rx.try_recv().is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Empty));
        wake.stop();
        assert_eq!(rx.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Closed));
    }
}
