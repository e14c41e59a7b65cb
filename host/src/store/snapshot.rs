//! A whole read model read in one snapshot, with the checkpoint it is at:
//! what `refract verify` compares a rebuilt model with.

use async_trait::async_trait;

use super::lifecycle::{Backend, Tx};
use super::{ProjectionRecord, Role, StoreError};

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// Its collection.
    pub collection: String,
    /// Its id.
    pub id: String,
    /// JSON object text, as the store returns it.
    pub body: String,
}

/// Reads a projection's whole active model at one instant.
#[async_trait]
pub trait ModelSnapshot: Send + Sync + 'static {
    /// The active generation's record and every one of its documents, by
    /// collection then id, read in one snapshot: the documents are exactly
    /// those at the record's checkpoint.
    async fn snapshot(&self, projection: &str) -> Result<(ProjectionRecord, Vec<StoredDocument>), StoreError>;
}

#[async_trait]
impl<B: Backend> ModelSnapshot for B {
    async fn snapshot(&self, projection: &str) -> Result<(ProjectionRecord, Vec<StoredDocument>), StoreError> {
        let mut tx = self.read_tx().await?;
        let record = tx
            .live_generations(Some(projection))
            .await?
            .into_iter()
            .find(|g| g.role == Role::Active)
            .ok_or_else(|| StoreError::UnknownProjection(projection.to_owned()))?;
        let mut out = Vec::new();
        for c in &record.manifest.collections {
            for (id, body) in tx.all_documents(&record.key, &c.name).await? {
                out.push(StoredDocument { collection: c.name.clone(), id, body });
            }
        }
        tx.commit().await?;
        Ok((record, out))
    }
}
