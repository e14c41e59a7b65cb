//! `refract rebuild` and `refract drop`: a projection's generations, for
//! every node that shares the store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use refract::{Config, EventStore, Host, ModelKey, ReadModelStore, Role, SyncConfig};

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

/// Who builds a generation the registry asks for.
pub enum Builders {
    /// The host running on this data dir (its pid).
    Local(u32),
    /// The nodes sharing a PostgreSQL registry, by id.
    Cluster(Vec<String>),
    /// Nobody: this command builds it.
    None,
}

impl Builders {
    /// A host on the data dir, else the live nodes of a shared registry.
    pub async fn find(data: &Stores, models: &dyn ReadModelStore) -> Result<Self> {
        if let Some(pid) = data.running_host() {
            return Ok(Self::Local(pid));
        }
        if data.registry_is_local() {
            return Ok(Self::None);
        }
        let nodes = models.live_nodes().await?;
        Ok(if nodes.is_empty() { Self::None } else { Self::Cluster(nodes) })
    }

    /// Whoever builds is still there (a cluster is assumed to stay).
    fn gone(&self, data: &Stores) -> bool {
        matches!(self, Self::Local(_)) && data.running_host().is_none()
    }
}

/// Starts a rebuild and shows its progress until the new generation is swapped in.
pub async fn rebuild(data: &Stores, RebuildArgs { projection }: RebuildArgs, config: Config) -> Result<()> {
    let projection = projection.as_str();
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let builders = Builders::find(data, models.as_ref()).await?;
    let lock = if matches!(builders, Builders::None) && data.registry_is_local() { Some(data.lock()?) } else { None };
    let record = models.request_rebuild(projection).await?;
    let key = record.key.clone();
    let mut offline = None;
    match &builders {
        Builders::Local(pid) => {
            errln!("host {pid} is running on this data dir: it builds generation {} and swaps it in", key.generation)
        }
        Builders::Cluster(nodes) => errln!(
            "{} node(s) share this store ({}): the one that takes the lease builds generation {} and every node swaps it in",
            nodes.len(),
            nodes.join(", "),
            key.generation
        ),
        Builders::None => {
            let mut host = Host::with_config(events.clone(), models.clone(), SyncConfig::default(), config)?
                .with_module_cache(data.module_cache());
            if !host.run_generation(&record).await {
                models.fail_generation(&key, "module in neither the module cache nor the store").await?;
                bail!(
                    "the module of `{projection}` is in neither {} nor the store: deploy its .wasm again",
                    data.0.join("cache").display()
                );
            }
            offline = Some(host);
        }
    }
    let outcome = follow_generation(data, &events, &models, &key, &builders).await;
    if let Some(host) = offline {
        host.shutdown().await;
    }
    drop(lock);
    outcome?;
    outln!("{projection}: generation {} is active", key.generation)?;
    Ok(())
}

/// Shows a generation's progress until it is active; fails if it failed,
/// was superseded, or the host building it stopped.
pub async fn follow_generation(
    data: &Stores,
    events: &Arc<dyn EventStore>,
    models: &Arc<dyn ReadModelStore>,
    key: &ModelKey,
    builders: &Builders,
) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{} generation {}", key.projection, key.generation));
    let outcome = loop {
        let g = models.generation(key).await?;
        bar.set_length(events.head().await?);
        bar.set_position(g.checkpoint);
        match g.role {
            Role::Building if builders.gone(data) => {
                break Err(anyhow::anyhow!(
                    "the host stopped before the rebuild finished; run `refract run` to resume it"
                ));
            }
            Role::Building => tokio::time::sleep(Duration::from_millis(100)).await,
            Role::Active => break Ok(()),
            Role::Failed => break Err(anyhow::anyhow!("the build failed: {}", g.last_error.unwrap_or_default())),
            Role::Retired => break Err(anyhow::anyhow!("superseded by a newer generation")),
        }
    };
    bar.finish();
    outcome
}

/// Forgets a projection on every node: drops all its generations' tables,
/// registry entries and stored modules. Hosts running it stop it within a second.
pub async fn drop_projection(data: &Stores, DropArgs { projection }: DropArgs) -> Result<()> {
    let models = data.open_models().await?;
    models.drop_projection(&projection).await?;
    outln!("dropped {projection}")?;
    if !matches!(Builders::find(data, models.as_ref()).await?, Builders::None) {
        errln!(
            "note: hosts are running on this store; they stop {projection} within a second. A host whose plugins folder still has its .wasm registers it again from position 0 when the file changes or the host restarts"
        );
    }
    Ok(())
}
