//! `refract deploy`: registers a module once for every node sharing the
//! store, from any machine that can reach it, without a plugins folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use refract::{Config, PluginRuntime, Role};

use super::Stores;
use super::output::{errln, outln};
use super::rebuild::{Builders, follow_generation};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The projection component (.wasm) to deploy.
    file: PathBuf,
    /// Wait until the deployed generation serves (a new module is built
    /// from position 0 by a running host first), showing its progress.
    #[arg(long)]
    wait: bool,
}

/// Checks the module (it must load as a projection), keeps it in the store
/// and registers it: a new projection starts at once, a new module of an
/// existing one builds as a new generation while the old one serves.
pub async fn deploy(data: &Stores, DeployArgs { file, wait }: DeployArgs, config: Config) -> Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    // Optimized code at once: a process that ends next would lose a
    // background compile, and on a local data dir the host then finds it cached.
    let mut runtime = PluginRuntime::with_fuel(config.uses_fuel())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?
        .with_tiering(refract::Tiering::Off);
    if data.registry_is_local() {
        // The host on this data dir then finds the module compiled.
        runtime = runtime.with_cache(data.module_cache());
    }
    let path = file.clone();
    let plugin = tokio::task::spawn_blocking(move || runtime.load_bytes(&path, &bytes).map(|p| (p, bytes)))
        .await
        .context("loading the module")?;
    let (plugin, bytes) = plugin?;
    let manifest = plugin.manifest();
    let name = &manifest.name;
    let models = data.open_models().await?;
    let was = models.projection(name).await.ok();
    let hash = models.store_module(&bytes).await?;
    let source = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let reg = models.register(manifest, &hash, &source).await?;
    let target = &reg.target;
    let g = target.key.generation;
    match (&was, target.role) {
        (Some(active), Role::Active) if active.module_hash == hash => {
            outln!("{name}: this module already serves as generation {g}; nothing to build")?
        }
        (_, Role::Active) => outln!("{name}: deployed as generation {g}, a new projection")?,
        _ => outln!(
            "{name}: deployed as generation {g}; it builds from position 0 while generation {} serves",
            reg.active.as_ref().map_or(0, |a| a.key.generation)
        )?,
    }
    let builders = Builders::find(data, models.as_ref()).await?;
    if matches!(builders, Builders::None) {
        errln!("note: no host is running on this store; the next `refract run` runs it");
        return Ok(());
    }
    if wait && target.role == Role::Building {
        let events = data.open_events().await?;
        follow_generation(data, &events, &models, &target.key, &builders).await?;
        outln!("{name}: generation {g} is active")?;
    }
    Ok(())
}
