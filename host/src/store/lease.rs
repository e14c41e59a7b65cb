//! Leases: which node may write a generation, decided once for every backend.
//!
//! Each generation a node runs has a lease row: owner node, epoch and
//! expiry. A node takes a free or expired lease (or its own, after a
//! restart) with one conditional statement that bumps the epoch, and
//! renews it well before it expires. Every write of a generation — commit,
//! skip, replay, swap — checks `(owner, epoch)` in the same transaction as
//! its changes ([`check_fence`]), so a node that was paused or partitioned
//! past its expiry cannot apply anything once another node took over, even
//! if its own clock or runner has not noticed yet.
//!
//! The backend handle remembers the leases it was granted ([`Fences`]), so
//! the writer's signatures stay what they are: a host writes through its
//! own handle, and that handle knows the epochs it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::lifecycle::{Backend, Tx};
use super::{ModelKey, Role, StoreError};

/// A lease this node holds on a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The generation it covers.
    pub key: ModelKey,
    /// The node holding it.
    pub node: String,
    /// Bumped by every take-over; writes are fenced on it.
    pub epoch: u64,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The lease is this node's now.
    Granted(Lease),
    /// Another node holds it and renewed it recently.
    Held {
        /// The node that holds it.
        owner: String,
        /// When it expires unless renewed, in ms since the Unix epoch (the store's clock).
        expires_at_ms: i64,
    },
}

/// A lease row, for status and `refract nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    /// The generation it covers.
    pub key: ModelKey,
    /// The node that holds or last held it.
    pub owner: String,
    /// Its epoch.
    pub epoch: u64,
    /// When it expires unless renewed, in ms since the Unix epoch (the store's clock).
    pub expires_at_ms: i64,
    /// Whether it had expired when it was read.
    pub expired: bool,
}

/// Who may write which generation: the lease role of a store.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Takes the generation's lease for `node` if nobody holds it, it
    /// expired, or `node` already held it (a restarted node takes its own
    /// lease back at once); the epoch goes up by one either way.
    async fn acquire(&self, key: &ModelKey, node: &str, ttl: Duration) -> Result<LeaseGrant, StoreError>;

    /// Extends the lease; `false` when it is no longer this node's and epoch.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the lease up at once, so another node can take it without
    /// waiting for expiry. Releasing a lease that moved on does nothing.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Every lease row of live generations, by projection then generation.
    async fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Records that `node` is alive for `ttl` more. Nodes count each other
    /// this way to share the work fairly; renewing this is part of the
    /// node's lease renewals, not a separate protocol.
    async fn announce(&self, node: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Marks `node` gone at once (a clean stop), so the others take its share now.
    async fn leave(&self, node: &str) -> Result<(), StoreError>;

    /// The nodes whose announcement has not expired, sorted.
    async fn live_nodes(&self) -> Result<Vec<String>, StoreError>;
}

/// The leases a backend handle was granted: generation → (node, epoch).
#[derive(Debug, Clone, Default)]
pub struct Fences(Arc<Mutex<HashMap<ModelKey, (String, u64)>>>);

impl Fences {
    fn hold(&self, lease: &Lease) {
        self.0.lock().expect("fence lock").insert(lease.key.clone(), (lease.node.clone(), lease.epoch));
    }

    fn forget(&self, lease: &Lease) {
        let mut map = self.0.lock().expect("fence lock");
        if map.get(&lease.key).is_some_and(|(n, e)| *n == lease.node && *e == lease.epoch) {
            map.remove(&lease.key);
        }
    }

    fn get(&self, key: &ModelKey) -> Option<(String, u64)> {
        self.0.lock().expect("fence lock").get(key).cloned()
    }
}

/// Fails, inside a write transaction, unless this handle may write `key`:
/// nobody leases the generation (an embedder that runs without leases), or
/// this handle holds its current `(owner, epoch)`. The row is read with a
/// lock where the backend has row locks, so a take-over waits for this
/// transaction and the write lands before it or not at all.
pub(crate) async fn check_fence<B: Backend>(backend: &B, tx: &mut B::Tx, key: &ModelKey) -> Result<(), StoreError> {
    let Some((owner, epoch)) = tx.lease_holder(key).await? else {
        return Ok(());
    };
    match backend.fences().get(key) {
        Some((node, held)) if node == owner && held == epoch => Ok(()),
        _ => {
            Err(StoreError::LeaseLost { projection: key.projection.clone(), generation: key.generation, owner, epoch })
        }
    }
}

/// A lease row as read by a backend.
pub(crate) fn lease_record(
    projection: String,
    generation: i64,
    owner: String,
    epoch: i64,
    expires_at_ms: i64,
    expired: bool,
) -> LeaseRecord {
    LeaseRecord {
        key: ModelKey { projection, generation: generation as u32 },
        owner,
        epoch: epoch as u64,
        expires_at_ms,
        expired,
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2).max(1)
}

#[async_trait]
impl<B: Backend> Leases for B {
    async fn acquire(&self, key: &ModelKey, node: &str, ttl: Duration) -> Result<LeaseGrant, StoreError> {
        let mut tx = self.write_tx().await?;
        // A retired generation gets no lease row back: its runner stops.
        match tx.record(key).await? {
            Some(r) if matches!(r.role, Role::Active | Role::Building) => {}
            _ => {
                return Err(StoreError::Retired { projection: key.projection.clone(), generation: key.generation });
            }
        }
        let grant = match tx.take_lease(key, node, ttl_ms(ttl)).await? {
            Some(epoch) => LeaseGrant::Granted(Lease { key: key.clone(), node: node.to_owned(), epoch }),
            None => {
                let held = tx.all_leases().await?.into_iter().find(|l| l.key == *key);
                let (owner, expires_at_ms) = held.map_or((String::new(), 0), |l| (l.owner, l.expires_at_ms));
                LeaseGrant::Held { owner, expires_at_ms }
            }
        };
        tx.commit().await?;
        if let LeaseGrant::Granted(lease) = &grant {
            self.fences().hold(lease);
        }
        Ok(grant)
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let renewed = tx.renew_lease(&lease.key, &lease.node, lease.epoch, ttl_ms(ttl)).await?;
        tx.commit().await?;
        if !renewed {
            self.fences().forget(lease);
        }
        Ok(renewed)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.fences().forget(lease);
        let mut tx = self.write_tx().await?;
        tx.release_lease(&lease.key, &lease.node, lease.epoch).await?;
        tx.commit().await
    }

    async fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        let mut tx = self.read_tx().await?;
        let all = tx.all_leases().await?;
        tx.commit().await?;
        Ok(all)
    }

    async fn announce(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        tx.announce_node(node, ttl_ms(ttl)).await?;
        tx.commit().await
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        tx.announce_node(node, i64::MIN / 2).await?;
        tx.commit().await
    }

    async fn live_nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut tx = self.read_tx().await?;
        let nodes = tx.live_nodes().await?;
        tx.commit().await?;
        Ok(nodes)
    }
}
