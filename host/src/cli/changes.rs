//! `refract changes`: page a projection's change log, as the HTTP feed does.

use anyhow::Result;

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct ChangesArgs {
    /// Projection name.
    projection: String,
    /// Print the entries after this sequence.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Print at most this many entries.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

/// Prints one JSON object per change-log entry.
pub async fn changes(data: &Stores, ChangesArgs { projection, after, limit }: ChangesArgs) -> Result<()> {
    let models = data.open_models().await?;
    let page = models.read_changes(&projection, after, limit).await?;
    for e in &page.entries {
        let document = e.document.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose()?;
        let line = serde_json::json!({
            "generation": page.generation,
            "sequence": e.sequence,
            "checkpoint": e.checkpoint,
            "collection": e.collection,
            "id": e.id,
            "kind": e.kind,
            "document": document,
        });
        outln!("{line}")?;
    }
    Ok(())
}
