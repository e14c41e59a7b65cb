//! Modules kept in the store by content hash, and which projections are
//! deployed: what lets every node sharing a store run every generation,
//! whichever node or `refract deploy` registered it.
//!
//! The bytes live beside the registry, so a node that never saw a `.wasm`
//! loads a generation's module by its hash, the same bytes every other node
//! runs. A module is kept while any generation of a projection refers to it
//! and forgotten with the last one (`refract drop`).

use async_trait::async_trait;

use super::StoreError;
use super::lifecycle::{Backend, Tx};
use crate::runtime::plugin::module_hash;

/// Module bytes by content hash, and whether a projection is deployed.
#[async_trait]
pub trait Modules: Send + Sync + 'static {
    /// Keeps a module's bytes under their SHA-256 (hex), which it returns;
    /// keeping the same bytes again changes nothing.
    async fn store_module(&self, bytes: &[u8]) -> Result<String, StoreError>;

    /// The bytes kept under `hash`, if any.
    async fn module(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Withdraws a projection (its `.wasm` was removed from a plugins
    /// folder): no node runs its generations until a module of it is
    /// registered again. Its read model stays and keeps answering queries.
    /// Returns whether this changed anything.
    async fn withdraw(&self, name: &str) -> Result<bool, StoreError>;

    /// Whether the projection is withdrawn.
    async fn is_withdrawn(&self, name: &str) -> Result<bool, StoreError>;
}

/// The metadata entry that holds whether a projection is withdrawn.
pub(crate) fn withdrawn_key(name: &str) -> String {
    format!("withdrawn/{name}")
}
pub(crate) const WITHDRAWN: &str = "1";
pub(crate) const DEPLOYED: &str = "0";

/// Deploys `name` again, in a registration's transaction: a withdrawn
/// projection runs once a module of it is registered.
pub(crate) async fn redeploy<T: Tx>(tx: &mut T, name: &str) -> Result<(), StoreError> {
    if tx.meta(&withdrawn_key(name)).await?.as_deref() == Some(WITHDRAWN) {
        tx.set_meta(&withdrawn_key(name), DEPLOYED).await?;
    }
    Ok(())
}

/// Forgets the modules of a dropped projection's generations that no
/// other projection's generation uses, in the drop's transaction.
pub(crate) async fn forget_modules<T: Tx>(tx: &mut T, hashes: &[String]) -> Result<(), StoreError> {
    for hash in hashes {
        tx.delete_unused_module(hash).await?;
    }
    Ok(())
}

#[async_trait]
impl<B: Backend> Modules for B {
    async fn store_module(&self, bytes: &[u8]) -> Result<String, StoreError> {
        // The store names the bytes itself, so a module can never be kept
        // under another module's hash.
        let hash = module_hash(bytes);
        let mut tx = self.write_tx().await?;
        tx.put_module(&hash, bytes).await?;
        tx.commit().await?;
        Ok(hash)
    }

    async fn module(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut tx = self.read_tx().await?;
        let bytes = tx.module(hash).await?;
        tx.commit().await?;
        Ok(bytes)
    }

    async fn withdraw(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.registry_tx().await?;
        if tx.all_generations(name).await?.is_empty() {
            return Err(StoreError::UnknownProjection(name.to_owned()));
        }
        let was = tx.meta(&withdrawn_key(name)).await?.as_deref() == Some(WITHDRAWN);
        if !was {
            tx.set_meta(&withdrawn_key(name), WITHDRAWN).await?;
        }
        tx.commit().await?;
        Ok(!was)
    }

    async fn is_withdrawn(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.read_tx().await?;
        let withdrawn = tx.meta(&withdrawn_key(name)).await?.as_deref() == Some(WITHDRAWN);
        tx.commit().await?;
        Ok(withdrawn)
    }
}
