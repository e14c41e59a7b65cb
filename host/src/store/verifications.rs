//! The last verification of each projection, kept with the read models so
//! that `refract status`, the HTTP status and `/metrics` show it whichever
//! process ran it (the host's schedule, `POST …/verify`, `refract verify`),
//! and so that it survives restarts.
//!
//! It is registry metadata rather than a table: one small JSON value per
//! projection, written by both backends through the same verbs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::lifecycle::{Backend, Tx};

/// How a verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyResult {
    /// The stored model is the rebuilt one.
    Clean,
    /// Some documents differ.
    Differences,
    /// It could not run (see `error`).
    Error,
}

impl VerifyResult {
    /// The name in JSON and in the `result` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Differences => "differences",
            Self::Error => "error",
        }
    }
}

/// How many verifications of one generation ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRuns {
    /// Clean ones.
    pub clean: u64,
    /// Ones that found differences.
    pub differences: u64,
    /// Ones that could not run.
    pub error: u64,
}

/// The last verification of a projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    /// When it ended, ms since the Unix epoch.
    pub at: u64,
    /// The generation that was verified (the active one when it started).
    pub generation: u32,
    /// How it ended.
    pub result: VerifyResult,
    /// The checkpoint both models were compared at (not for an error).
    pub checkpoint: Option<u64>,
    /// Documents compared (not for an error).
    pub documents: Option<u64>,
    /// Documents that differ (not for an error).
    pub different: Option<u64>,
    /// Why it could not run.
    pub error: Option<String>,
    /// How long it took, in ms.
    pub elapsed_ms: u64,
    /// The generation a `verify_policy = "rebuild"` started on a difference.
    pub rebuild: Option<u32>,
    /// Runs of this generation so far, this one included, by result.
    pub runs: VerifyRuns,
}

/// Keeps the last verification of each projection.
#[async_trait]
pub trait Verifications: Send + Sync + 'static {
    /// Records `outcome` as the projection's last verification. Its `runs`
    /// are ignored: the store counts them, per generation, in the same
    /// transaction, so two hosts verifying at once lose no run.
    async fn record_verification(&self, projection: &str, outcome: &VerifyOutcome) -> Result<(), StoreError>;

    /// The projection's last verification, if it was ever verified.
    async fn last_verification(&self, projection: &str) -> Result<Option<VerifyOutcome>, StoreError>;
}

/// The metadata entry of a projection's last verification.
pub(crate) fn verify_key(name: &str) -> String {
    format!("verified/{name}")
}

/// An entry that a dropped projection left empty reads as none; one that
/// does not parse (written by another version) too, rather than failing
/// a status.
fn parse(value: Option<String>) -> Option<VerifyOutcome> {
    value.and_then(|v| serde_json::from_str(&v).ok())
}

#[async_trait]
impl<B: Backend> Verifications for B {
    async fn record_verification(&self, projection: &str, outcome: &VerifyOutcome) -> Result<(), StoreError> {
        let mut tx = self.registry_tx().await?;
        let key = verify_key(projection);
        let mut runs = parse(tx.meta(&key).await?)
            .filter(|last| last.generation == outcome.generation)
            .map_or_else(VerifyRuns::default, |last| last.runs);
        match outcome.result {
            VerifyResult::Clean => runs.clean += 1,
            VerifyResult::Differences => runs.differences += 1,
            VerifyResult::Error => runs.error += 1,
        }
        let value = serde_json::to_string(&VerifyOutcome { runs, ..outcome.clone() })
            .map_err(|e| StoreError::Corrupt { projection: projection.to_owned(), reason: e.to_string() })?;
        tx.set_meta(&key, &value).await?;
        tx.commit().await
    }

    async fn last_verification(&self, projection: &str) -> Result<Option<VerifyOutcome>, StoreError> {
        let mut tx = self.read_tx().await?;
        let value = tx.meta(&verify_key(projection)).await?;
        tx.commit().await?;
        Ok(parse(value))
    }
}
