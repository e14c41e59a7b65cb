//! The commands of the `refract` binary, one module per command or per small
//! group of related ones, and what they share: where the stores are and how
//! output is written.

pub mod allocator;
pub mod append;
pub mod dead_letters;
pub mod dev;
pub mod new;
pub mod output;
pub mod read;
pub mod rebuild;
pub mod run;
pub mod scaffold;
pub mod status;
pub mod wait;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use refract::{DataDir, EventStore, ReadModelStore};

/// Where the stores are: URLs for events and read models, and the data dir,
/// which keeps the host's pid lock and module cache whatever the backends.
pub struct Stores {
    dir: DataDir,
    events: String,
    models: String,
}

impl Stores {
    pub fn new(dir: DataDir, events: Option<String>, models: Option<String>) -> Self {
        let sqlite = |path: PathBuf| format!("sqlite://{}", path.display());
        let events = events.unwrap_or_else(|| sqlite(dir.events()));
        let models = models.unwrap_or_else(|| sqlite(dir.models()));
        Self { dir, events, models }
    }

    pub async fn open_events(&self) -> Result<Arc<dyn EventStore>> {
        refract::open_events(&self.events).await.context("opening the event store")
    }

    /// Whether the registry is the data dir's own `models.db`, the one a
    /// host on this data dir holds the data-dir lock for. A PostgreSQL
    /// registry may be served by hosts elsewhere, which no local lock shows.
    pub fn registry_is_local(&self) -> bool {
        self.models == format!("sqlite://{}", self.dir.models().display())
    }

    pub async fn open_models(&self) -> Result<Arc<dyn ReadModelStore>> {
        refract::open_models(&self.models).await.context("opening the read-model store")
    }
}

impl std::ops::Deref for Stores {
    type Target = DataDir;

    fn deref(&self) -> &DataDir {
        &self.dir
    }
}
