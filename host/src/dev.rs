//! `refract dev`: rebuild plugin crates when their sources change, so that
//! editing a projection's Rust source is enough to see its read model rebuilt.
//!
//! Every folder under the plugins folder with a `Cargo.toml` is a plugin
//! crate. A change under it (outside `target/`) rebuilds it for
//! `wasm32-wasip2` and copies the `.wasm` into the plugins folder, where
//! the plugin watcher picks it up like any other replaced file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::watch::debounce;

/// Errors building a plugin crate.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// cargo could not be started.
    #[error("cannot run cargo for {dir}: {source}")]
    Cargo {
        /// The crate folder.
        dir: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The build failed; cargo printed why.
    #[error("build of {0} failed (see cargo's messages above)")]
    BuildFailed(PathBuf),
    /// The build produced no `.wasm`: not a `cdylib` crate.
    #[error("{0} built no .wasm: is it a `cdylib` crate?")]
    NoArtifact(PathBuf),
    /// Copying the artifact failed.
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        /// Built artifact.
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The crate folders could not be watched.
    #[error("cannot watch plugin sources: {0}")]
    Watch(#[from] notify::Error),
}

/// Plugin crates directly under `plugins_dir`.
pub fn plugin_crates(plugins_dir: &Path) -> Vec<PathBuf> {
    // Canonical, because the file watcher reports absolute paths.
    let dir = plugins_dir.canonicalize().unwrap_or_else(|_| plugins_dir.to_owned());
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    crates
}

/// Builds one plugin crate for `wasm32-wasip2` (release) and copies its
/// `.wasm` into `out_dir`. Returns the copied files.
pub fn build_crate(dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, DevError> {
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| DevError::Cargo { dir: dir.to_owned(), source })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] == "compiler-artifact" {
            let files = msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
            artifacts.extend(files.filter(|f| f.ends_with(".wasm")).map(PathBuf::from));
        } else if let Some(rendered) = msg["message"]["rendered"].as_str() {
            eprint!("{rendered}");
        }
    }
    let status = child.wait().map_err(|source| DevError::Cargo { dir: dir.to_owned(), source })?;
    if !status.success() {
        return Err(DevError::BuildFailed(dir.to_owned()));
    }
    // Only the crate's own artifact: dependencies are rlibs, never .wasm.
    if artifacts.is_empty() {
        return Err(DevError::NoArtifact(dir.to_owned()));
    }
    artifacts
        .iter()
        .map(|from| {
            let to = out_dir.join(from.file_name().expect("artifacts are files"));
            // Copy then rename: the plugin watcher must never see half a module.
            let tmp = out_dir.join(format!(".{}.building", from.file_name().unwrap().to_string_lossy()));
            std::fs::copy(from, &tmp)
                .and_then(|_| std::fs::rename(&tmp, &to))
                .map(|_| to.clone())
                .map_err(|source| DevError::Copy { from: from.clone(), to, source })
        })
        .collect()
}

/// Builds every plugin crate once, then rebuilds a crate whenever a file
/// under it changes, until the returned task is aborted. Build errors are
/// logged; the previous `.wasm` (and its read model) stays in place.
pub fn spawn_rebuilder(plugins_dir: &Path) -> Result<tokio::task::JoinHandle<()>, DevError> {
    let crates = plugin_crates(plugins_dir);
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let watched = crates.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // cargo reading the sources raises access events: only writes count.
        if !crate::watch::is_write(&event.kind) {
            return;
        }
        for path in &event.paths {
            // Builds write under target/: reacting to them would loop.
            if path.components().any(|c| c.as_os_str() == "target") {
                continue;
            }
            if let Some(dir) = watched.iter().find(|d| path.starts_with(d)) {
                let _ = tx.send(dir.clone());
            }
        }
    })?;
    for dir in &crates {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    let out_dir = plugins_dir.to_owned();
    Ok(tokio::spawn(async move {
        let _watcher = watcher; // Lives as long as the task.
        for dir in &crates {
            rebuild(dir, &out_dir).await;
        }
        debounce(rx, |dir| {
            let out_dir = out_dir.clone();
            async move {
                rebuild(&dir, &out_dir).await;
                true
            }
        })
        .await;
    }))
}

async fn rebuild(dir: &Path, out_dir: &Path) {
    tracing::info!(crate_dir = %dir.display(), "building plugin");
    let (d, o) = (dir.to_owned(), out_dir.to_owned());
    match tokio::task::spawn_blocking(move || build_crate(&d, &o)).await {
        Ok(Ok(files)) => {
            for f in files {
                tracing::info!(plugin = %f.display(), "plugin built");
            }
        }
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("plugin build task failed: {e}"),
    }
}
