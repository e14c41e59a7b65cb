//! The commands of the `refract` binary, one module per command or per small
//! group of related ones, and what they share: where the stores are and how
//! output is written.

pub mod admin;
pub mod allocator;
pub mod append;
pub mod caught_up;
pub mod changes;
pub mod compiling;
pub mod config;
pub mod dead_letters;
pub mod deploy;
pub mod dev;
pub mod docs;
pub mod events;
pub mod new;
pub mod output;
pub mod read;
pub mod rebuild;
pub mod report;
pub mod run;
pub mod scaffold;
pub mod settings;
pub mod signals;
pub mod sources;
pub mod status;
pub mod token;
pub mod verify;
pub mod wait;

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
        let events = events.unwrap_or_else(|| sqlite_url(&dir.events()));
        let models = models.unwrap_or_else(|| sqlite_url(&dir.models()));
        Self { dir, events, models }
    }

    pub async fn open_events(&self) -> Result<Arc<dyn EventStore>> {
        refract::open_events(&self.events).await.context("opening the event store")
    }

    /// The event store with its table-sync role, if it has one.
    pub async fn open_events_with_sync(&self) -> Result<(Arc<dyn EventStore>, Option<Arc<dyn refract::SyncLog>>)> {
        refract::open_events_with_sync(&self.events).await.context("opening the event store")
    }

    /// The event store URL, for messages.
    pub fn events_url(&self) -> &str {
        &self.events
    }

    /// Whether the registry is the data dir's own `models.db`, the one a
    /// host on this data dir holds the data-dir lock for. A PostgreSQL
    /// registry may be served by hosts elsewhere, which no local lock shows.
    pub fn registry_is_local(&self) -> bool {
        self.models == sqlite_url(&self.dir.models())
    }

    pub async fn open_models(&self) -> Result<Arc<dyn ReadModelStore>> {
        refract::open_models(&self.models).await.context("opening the read-model store")
    }

    /// Fails unless the stores are there to be read: the data dir, when a
    /// store lives in it, and any SQLite file named by URL elsewhere.
    ///
    /// Opening a SQLite store creates its file, so a mistyped `--data-dir`
    /// would quietly become a new, empty data dir and `status` would show
    /// nothing instead of saying the path is wrong. Only the commands that
    /// write events or run the host (`run`, `dev`, `import`, `append`)
    /// create a data dir; every other command calls this first. Inside an
    /// existing data dir a missing `models.db` is no typo (a host is about to
    /// create it), so it is left to be opened as usual.
    pub fn require_existing(&self) -> Result<()> {
        let own_events = self.events == sqlite_url(&self.dir.events());
        let own_models = self.registry_is_local();
        if (own_events || own_models) && !self.is_data_dir() {
            anyhow::bail!(
                "no data dir at {}: check --data-dir or REFRACT_DATA_DIR (`refract run`, `import` and `append` create one)",
                self.dir.0.display()
            );
        }
        for (url, own, flag) in [(&self.events, own_events, "--events"), (&self.models, own_models, "--store")] {
            if let Some(path) = url.strip_prefix("sqlite://").map(std::path::Path::new)
                && !own
                && !path.exists()
            {
                anyhow::bail!("no SQLite store at {}: check {flag}", path.display());
            }
        }
        Ok(())
    }

    /// Whether the data dir holds anything a host or an append made.
    fn is_data_dir(&self) -> bool {
        // The pid file: a host that has just claimed the dir and not yet opened its stores.
        [self.dir.events(), self.dir.models(), self.dir.0.join("refract.pid")].iter().any(|p| p.exists())
    }
}

fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

impl std::ops::Deref for Stores {
    type Target = DataDir;

    fn deref(&self) -> &DataDir {
        &self.dir
    }
}
