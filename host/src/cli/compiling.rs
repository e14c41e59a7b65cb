//! The modules a running host is compiling, shown by `refract status`: the
//! host keeps `<data-dir>/compiling.json` current while it runs, and status
//! reads it while a host holds the data dir (a killed host's file is stale).

use std::path::{Path, PathBuf};
use std::time::Duration;

use refract::{Compiles, Compiling};

use super::Stores;

/// How often the host looks for compiles that started or ended.
const POLL: Duration = Duration::from_millis(100);

fn file(data: &Stores) -> PathBuf {
    data.0.join("compiling.json")
}

/// The file kept current; dropping it stops that and removes the file.
pub struct Published {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Published {
    fn drop(&mut self) {
        self.task.abort();
        let _ = write(&self.path, &[]);
    }
}

/// Keeps the file current until the guard drops; it is removed whenever
/// nothing compiles.
pub fn publish(data: &Stores, compiles: Compiles) -> Published {
    let path = file(data);
    let written = path.clone();
    let task = tokio::spawn(async move {
        let mut shown: Option<Vec<Compiling>> = None;
        loop {
            let now = compiles.now();
            if shown.as_ref() != Some(&now) {
                if let Err(e) = write(&written, &now) {
                    tracing::debug!(error = %e, "could not write the list of compiling modules");
                }
                shown = Some(now);
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Published { task, path }
}

fn write(path: &Path, now: &[Compiling]) -> std::io::Result<()> {
    if now.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    // Written aside and renamed, so status never reads half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(now)?)?;
    std::fs::rename(tmp, path)
}

/// What the running host is compiling; nothing when no host runs.
pub fn read(data: &Stores) -> Vec<Compiling> {
    if data.running_host().is_none() {
        return vec![];
    }
    std::fs::read(file(data)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}
