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
    settings: &LeaseSettings,
    stop: &mut watch::Receiver<bool>,
    mut waiting: impl FnMut(&str),
) -> Result<Lease, NoLease> {
    let mut said = String::new();
    loop {
        if *stop.borrow() {
            return Err(NoLease::Stopped);
        }
        match leases.acquire(key, &settings.node, settings.ttl).await {
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
            Err(e) => tracing::warn!(projection = %key.projection, error = %e, "could not ask for the lease; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.renew_every()) => {}
            _ = stop.changed() => {}
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
