//! `refract verify`: rebuild a projection's active module into a shadow
//! model up to the active checkpoint and compare it with the store.

use anyhow::{Result, bail};
use refract::{DifferenceKind, Host, SyncConfig};

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Projection name.
    projection: String,
    /// List at most this many differing documents.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Verifies a projection; exits non-zero if any document differs.
pub async fn verify(data: &Stores, VerifyArgs { projection, limit, json }: VerifyArgs) -> Result<()> {
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let mut host = Host::new(events, models, SyncConfig::default())?.with_module_cache(data.module_cache());
    let report = host.verify(&projection, limit).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        outln!(
            "{projection} generation {} at checkpoint {}: {} documents compared in {} ms, {} differ",
            report.generation,
            report.checkpoint,
            report.documents,
            report.elapsed_ms,
            report.different
        )?;
        for d in &report.differences {
            let what = match d.kind {
                DifferenceKind::Differs => "differs",
                DifferenceKind::MissingInStore => "missing in the store",
                DifferenceKind::NotRebuilt => "in the store only",
            };
            let show = |v: &Option<serde_json::Value>| v.as_ref().map_or("-".to_owned(), |v| v.to_string());
            outln!(
                "  {}/{}: {what}\n    stored:  {}\n    rebuilt: {}",
                d.collection,
                d.id,
                show(&d.stored),
                show(&d.rebuilt)
            )?;
        }
    }
    if !report.clean() {
        bail!("{projection}: {} document(s) differ from a rebuild of the active module", report.different);
    }
    Ok(())
}
