//! `refract rebuild` and `refract drop`: a projection's generations.

use std::time::Duration;

use anyhow::{Result, bail};
use refract::{Config, Host, Role, SyncConfig};

use super::Stores;
use super::output::{errln, outln};

#[derive(clap::Args)]
pub struct RebuildArgs {
    /// Projection name.
    projection: String,
}

#[derive(clap::Args)]
pub struct DropArgs {
    /// Projection name.
    projection: String,
}

/// Starts a rebuild and shows its progress until the new generation is swapped in.
pub async fn rebuild(data: &Stores, RebuildArgs { projection }: RebuildArgs, config: Config) -> Result<()> {
    let projection = projection.as_str();
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let mut offline = None;
    let running = data.running_host();
    let lock = if running.is_none() { Some(data.lock()?) } else { None };
    let record = models.request_rebuild(projection).await?;
    let key = record.key.clone();
    match running {
        Some(pid) => {
            errln!("host {pid} is running on this data dir: it builds generation {} and swaps it in", key.generation)
        }
        None => {
            let mut host = Host::with_config(events.clone(), models.clone(), SyncConfig::default(), config)?
                .with_module_cache(data.module_cache());
            if !host.run_generation(&record).await {
                models.fail_generation(&key, "module not in the module cache").await?;
                bail!(
                    "the module of `{projection}` is not in {}: start the host with its .wasm instead",
                    data.0.join("cache").display()
                );
            }
            offline = Some(host);
        }
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{projection} generation {}", key.generation));
    let outcome = loop {
        let g = models.generation(&key).await?;
        bar.set_length(events.head().await?);
        bar.set_position(g.checkpoint);
        match g.role {
            Role::Building if running.is_some() && data.running_host().is_none() => {
                break Err(anyhow::anyhow!(
                    "the host stopped before the rebuild finished; run `refract run` to resume it"
                ));
            }
            Role::Building => tokio::time::sleep(Duration::from_millis(100)).await,
            Role::Active => break Ok(()),
            Role::Failed => break Err(anyhow::anyhow!("rebuild failed: {}", g.last_error.unwrap_or_default())),
            Role::Retired => break Err(anyhow::anyhow!("rebuild superseded by a newer generation")),
        }
    };
    bar.finish();
    if let Some(host) = offline {
        host.shutdown().await;
    }
    drop(lock);
    outcome?;
    outln!("{projection}: generation {} is active", key.generation)?;
    Ok(())
}

/// Forgets a projection: drops all its generations' tables and registry entries.
pub async fn drop_projection(data: &Stores, DropArgs { projection }: DropArgs) -> Result<()> {
    let models = data.open_models().await?;
    models.drop_projection(&projection).await?;
    outln!("dropped {projection}")?;
    if let Some(pid) = data.running_host() {
        errln!(
            "note: host {pid} is running; if its plugins folder still has {projection}'s .wasm, replacing or re-adding that file registers it again from position 0"
        );
    }
    Ok(())
}
