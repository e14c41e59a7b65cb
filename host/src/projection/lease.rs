//! How a runner holds its generation's lease: wait for it, keep it renewed,
//! give it up. What a lease is and how writes are fenced on it is the
//! store's decision (`store/lease.rs`); this is the node's side.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Lease, LeaseGrant, Leases, ModelKey, StoreError};

/// Who this host is among the hosts sharing a store, and how long its
/// leases last unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// This node's id, stored as the owner of its leases. A restarted
    /// node with the same id takes its leases back at once; two live hosts
    /// must have different ids.
    pub node: String,
    /// How long a lease lasts without renewal: how long the other nodes
    /// wait before taking over from a node that died without releasing.
    pub ttl: Duration,
}

/// Default lease lifetime; renewal runs three times per lifetime.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

impl Default for LeaseSettings {
    fn default() -> Self {
        Self { node: default_node_id(), ttl: DEFAULT_LEASE_TTL }
    }
}

impl LeaseSettings {
    /// How often a lease is renewed, and how often a waiting node asks again.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }
}

/// `{hostname}-{pid}`: readable, and distinct for every live process on a
/// machine. The CLI derives a stable one from the data dir instead, so a
/// restarted `refract run` takes its own leases back without waiting.
pub fn default_node_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// The machine's host name, or `node` where it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".to_owned())
}

/// Why waiting for a lease ended without one.
pub(crate) enum NoLease {
    /// The runner was asked to stop.
    Stopped,
    /// The generation is no longer active or building.
    Retired,
}

/// Asks for the lease until it is granted, the runner is stopped, or the
/// generation is retired. `waiting` is told who holds it meanwhile.
pub(crate) async fn wait_for_lease(
    leases: &dyn Leases,
    key: &ModelKey,
    book: &LeaseBook,
    stop: &mut watch::Receiver<bool>,
    mut waiting: impl FnMut(&str),
) -> Result<Lease, NoLease> {
    let settings = book.settings();
    let mut said = String::new();
    book.counted(stop).await;
    let mut share = book.share.subscribe();
    loop {
        if *stop.borrow() {
            return Err(NoLease::Stopped);
        }
        if !book.reserve(key) {
            if said != settings.node {
                tracing::info!(projection = %key.projection, generation = key.generation,
                    "this node runs its share of the projections; standing by");
                waiting("this node (it runs its share)");
                said = settings.node.clone();
                // The share may have been counted before this generation
                // existed: a new generation of a single node's projection
                // would otherwise wait up to a third of the lease lifetime.
                book.recount.notify_one();
            }
        } else {
            let asked = leases.acquire(key, &settings.node, settings.ttl).await;
            if !matches!(asked, Ok(LeaseGrant::Granted(_))) {
                book.gave_up(key);
            }
            match asked {
                Ok(LeaseGrant::Granted(lease)) => return Ok(lease),
                Ok(LeaseGrant::Held { owner, .. }) => {
                    if owner != said {
                        tracing::info!(projection = %key.projection, generation = key.generation, owner = %owner,
                            "another node holds the lease; standing by");
                        waiting(&owner);
                        said = owner;
                    }
                }
                Err(StoreError::Retired { .. } | StoreError::UnknownProjection(_)) => return Err(NoLease::Retired),
                Err(e) => {
                    tracing::warn!(projection = %key.projection, error = %e, "could not ask for the lease; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.renew_every()) => {}
            _ = stop.changed() => {}
            _ = share.changed() => {}
        }
    }
}

/// Renews a lease in the background for as long as it lives. A renewal
/// the store refuses means another node took the lease: the task ends,
/// and the runner learns it at its next write, which the store fences.
pub(crate) struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub(crate) fn start(leases: Arc<dyn Leases>, lease: Lease, settings: &LeaseSettings) -> Self {
        let (every, ttl) = (settings.renew_every(), settings.ttl);
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match leases.renew(&lease, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(projection = %lease.key.projection, generation = lease.key.generation,
                            epoch = lease.epoch, "lease taken over by another node");
                        return;
                    }
                    Err(e) => tracing::warn!(projection = %lease.key.projection, error = %e,
                        "could not renew the lease; retrying"),
                }
            }
        }))
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A host's view of its share of the work: which generations it holds, and
/// its fair share, ⌈units / live nodes⌉, kept fresh by [`LeaseBook::heartbeat`].
/// Runners ask it before taking a lease, and the runner holding the
/// highest-keyed extra lease gives it up at its next batch boundary, so a
/// joining node gets its share without anyone waiting for an expiry.
pub(crate) struct LeaseBook {
    settings: LeaseSettings,
    held: std::sync::Mutex<std::collections::BTreeSet<ModelKey>>,
    /// `None` until the first heartbeat has counted the nodes.
    share: watch::Sender<Option<usize>>,
    /// Asks the heartbeat to count again now rather than at its next beat.
    recount: tokio::sync::Notify,
}

impl LeaseBook {
    pub(crate) fn new(settings: LeaseSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            held: Default::default(),
            share: watch::channel(None).0,
            recount: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Waits until the nodes have been counted once (or the runner is stopped).
    async fn counted(&self, stop: &mut watch::Receiver<bool>) {
        let mut share = self.share.subscribe();
        tokio::select! {
            _ = share.wait_for(Option::is_some) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    /// Counts `key` among the leases this node holds if that keeps it
    /// within its share; `false` when it does not. Checked and counted
    /// under one lock: runners that checked first and counted after could
    /// all take the last place, and the one counted above the share then
    /// handed its lease over to a node with less work even when there was
    /// no other node, and stood by for two renewal periods.
    fn reserve(&self, key: &ModelKey) -> bool {
        let share = self.share.borrow().unwrap_or(usize::MAX);
        let mut held = self.held.lock().expect("lease book");
        if held.len() >= share && !held.contains(key) {
            return false;
        }
        held.insert(key.clone());
        true
    }

    /// Whether the runner of `key` should give its lease up: this node
    /// holds more than its share, and `key` is the highest it holds.
    pub(crate) fn should_release(&self, key: &ModelKey) -> bool {
        let share = self.share.borrow().unwrap_or(usize::MAX);
        let held = self.held.lock().expect("lease book");
        held.len() > share && held.last() == Some(key)
    }

    pub(crate) fn gave_up(&self, key: &ModelKey) {
        self.held.lock().expect("lease book").remove(key);
    }

    /// Announces the node and recounts its share, every third of the lease
    /// lifetime and whenever a runner standing by asks, until dropped;
    /// `units` counts the generations to share.
    pub(crate) fn heartbeat<F, Fut>(self: &Arc<Self>, leases: Arc<dyn Leases>, units: F) -> Heartbeat
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<usize, StoreError>> + Send,
    {
        let book = self.clone();
        Heartbeat(tokio::spawn(async move {
            let node = book.settings.node.clone();
            loop {
                let counted = async {
                    leases.announce(&node, book.settings.ttl).await?;
                    let nodes = leases.live_nodes().await?.len().max(1);
                    Ok::<_, StoreError>(units().await?.div_ceil(nodes).max(1))
                };
                match counted.await {
                    Ok(share) => {
                        book.share.send_if_modified(|s| std::mem::replace(s, Some(share)) != Some(share));
                    }
                    Err(e) => tracing::warn!(node = %node, error = %e, "could not announce this node; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(book.settings.renew_every()) => {}
                    _ = book.recount.notified() => {}
                }
            }
        }))
    }
}

/// The heartbeat task; ends when dropped.
pub(crate) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(projection: &str) -> ModelKey {
        ModelKey { projection: projection.into(), generation: 1 }
    }

    #[test]
    fn a_node_takes_no_more_than_its_share_and_never_hands_over_within_it() {
        let book = LeaseBook::new(LeaseSettings { node: "n".into(), ttl: DEFAULT_LEASE_TTL });
        book.share.send_replace(Some(2));
        assert!(book.reserve(&key("a")));
        assert!(book.reserve(&key("b")));
        assert!(!book.reserve(&key("c")), "the share is full");
        assert!(book.reserve(&key("b")), "a lease it holds is still its own");
        assert!(!book.should_release(&key("a")) && !book.should_release(&key("b")));
        book.gave_up(&key("a"));
        assert!(book.reserve(&key("c")), "the place given up is free again");
        // Only when the share shrinks (another node joined) is there a lease to hand over: the highest.
        book.share.send_replace(Some(1));
        assert!(book.should_release(&key("c")));
        assert!(!book.should_release(&key("b")));
    }

    #[test]
    fn runners_asking_at_once_cannot_overfill_the_share() {
        let book = LeaseBook::new(LeaseSettings { node: "n".into(), ttl: DEFAULT_LEASE_TTL });
        book.share.send_replace(Some(3));
        let granted = std::thread::scope(|s| {
            let asks: Vec<_> = (0..16)
                .map(|i| {
                    s.spawn({
                        let book = &book;
                        move || book.reserve(&key(&format!("p{i:02}")))
                    })
                })
                .collect();
            asks.into_iter().map(|a| a.join().unwrap()).filter(|&granted| granted).count()
        });
        assert_eq!(granted, 3);
        assert!((0..16).all(|i| !book.should_release(&key(&format!("p{i:02}")))));
    }
}
