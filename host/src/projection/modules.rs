//! Where a generation's module comes from when this host did not load its
//! file: the modules it has loaded already, else its module cache, else the
//! store, where every node that registered a module put it. One place, so
//! the host's runners and the verifier find modules the same way.

use std::path::PathBuf;
use std::sync::Arc;

use crate::projection::verify::Plugins;
use crate::runtime::plugin::{Plugin, PluginError, PluginRuntime};
use crate::store::{Modules, StoreError};

/// Why a module could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ModuleUnavailable {
    /// Neither the module cache nor the store has these bytes.
    #[error("module {hash} is neither in the module cache nor in the store (deploy it again)")]
    Missing {
        /// The module's hash.
        hash: String,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bytes did not load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// The module with `hash` (`source` names it in messages), loaded, and
/// remembered in `plugins` for the next caller.
pub(crate) async fn module_by_hash(
    runtime: &PluginRuntime,
    plugins: &Plugins,
    store: &dyn Modules,
    hash: &str,
    source: &str,
) -> Result<Arc<Plugin>, ModuleUnavailable> {
    if let Some(p) = plugins.lock().unwrap_or_else(|e| e.into_inner()).get(hash) {
        return Ok(p.clone());
    }
    // The cache and the compile are file and CPU work: off the async threads.
    let (rt, h) = (runtime.clone(), hash.to_owned());
    let cached = tokio::task::spawn_blocking(move || rt.cache().and_then(|c| c.source(&h).ok())).await.ok().flatten();
    let (bytes, fetched) = match cached {
        Some(bytes) => (bytes, false),
        None => {
            let missing = || ModuleUnavailable::Missing { hash: hash.to_owned() };
            (store.module(hash).await?.ok_or_else(missing)?, true)
        }
    };
    let (runtime, path, hash) = (runtime.clone(), PathBuf::from(source), hash.to_owned());
    let loaded = tokio::task::spawn_blocking(move || {
        if fetched
            && let Some(cache) = runtime.cache()
            && let Err(e) = cache.save_source(&hash, &bytes)
        {
            tracing::warn!(error = %e, "could not keep the module bytes");
        }
        runtime.load_bytes(&path, &bytes)
    })
    .await
    .unwrap_or_else(|e| Err(PluginError::LoadPanicked { path: PathBuf::from(source), message: e.to_string() }));
    let plugin = Arc::new(loaded?);
    plugins.lock().unwrap_or_else(|e| e.into_inner()).insert(plugin.hash().to_owned(), plugin.clone());
    Ok(plugin)
}
