//! `refract dev`: rebuild plugins when their sources change, so that editing
//! a projection's source is enough to see its read model rebuilt.
//!
//! A plugin project is a folder directly under the plugins folder, or one
//! level deeper (`plugins/python/<name>`, `plugins/js/<name>`), recognised by
//! a marker file:
//!
//! - `Cargo.toml`: a Rust crate, built for `wasm32-wasip2`; its `.wasm` is
//!   copied into the plugins folder.
//! - `package.json` with a `build` script: JavaScript, built with
//!   `npm run build -- <out.wasm>`, into `<plugins>/<folder>-js.wasm`.
//! - `app.py`: Python, built with `componentize-py` (from `.tools/venv` next
//!   to the plugins folder, or `PATH`) against the nearest `wit/` folder above
//!   it, with `../sdk` (the `refract` helper) on the Python path, into
//!   `<plugins>/<folder>-py.wasm`.
//!
//! A change under a project (outside build and dependency folders) rebuilds
//! it; the new `.wasm` lands in the plugins folder by rename, where the plugin
//! watcher picks it up like any other replaced file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use notify::{RecursiveMode, Watcher};
use refract::{debounce, is_write};
use tokio::sync::mpsc;

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
    /// The build failed; the build tool (cargo, componentize-py, npm) printed why.
    #[error("build of {0} failed (see the build tool's messages above)")]
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
    /// A Python or JS build tool could not be started.
    #[error("cannot run {tool} for {dir}: {source} ({hint})")]
    Tool {
        /// The tool.
        tool: String,
        /// The project folder.
        dir: PathBuf,
        /// What to do about it.
        hint: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// No `wit/projection.wit` in the project folder or above it.
    #[error("no wit/projection.wit found in {0} or any folder above it")]
    NoWit(PathBuf),
    /// The crate folders could not be watched.
    #[error("cannot watch plugin sources: {0}")]
    Watch(#[from] notify::Error),
}

/// The language of a plugin project, from its marker file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lang {
    /// `Cargo.toml`.
    Rust,
    /// `app.py`.
    Python,
    /// `package.json` with a `build` script.
    Js,
}

impl Lang {
    /// The project language of `dir`, if it is a plugin project.
    pub fn detect(dir: &Path) -> Option<Lang> {
        if dir.join("Cargo.toml").is_file() {
            Some(Lang::Rust)
        } else if dir.join("app.py").is_file() {
            Some(Lang::Python)
        } else if std::fs::read_to_string(dir.join("package.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|pkg| pkg["scripts"]["build"].is_string())
        {
            Some(Lang::Js)
        } else {
            None
        }
    }
}

/// Folders that hold dependencies, build output or shared helpers, never a
/// project; changes under them do not trigger builds.
fn skipped(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || matches!(name.as_ref(), "target" | "node_modules" | "__pycache__" | "sdk")
}

fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(skipped))
}

/// Plugin projects (any language) directly under `plugins_dir` or one level
/// deeper, in path order.
pub fn plugin_projects(plugins_dir: &Path) -> Vec<(PathBuf, Lang)> {
    let mut projects = Vec::new();
    for dir in subdirs(plugins_dir) {
        match Lang::detect(&dir) {
            Some(lang) => projects.push((dir, lang)),
            None => projects.extend(subdirs(&dir).filter_map(|d| Lang::detect(&d).map(|lang| (d, lang)))),
        }
    }
    projects.sort();
    projects
}

/// Builds one plugin project of any language into `out_dir`. Returns the
/// written files.
pub fn build_project(dir: &Path, lang: Lang, out_dir: &Path) -> Result<Vec<PathBuf>, DevError> {
    let suffix = match lang {
        Lang::Rust => return build_crate(dir, out_dir),
        Lang::Python => "py",
        Lang::Js => "js",
    };
    let folder = dir.file_name().expect("a project is a folder").to_string_lossy().into_owned();
    let to = out_dir.join(format!("{folder}-{suffix}.wasm"));
    let tmp = std::path::absolute(out_dir.join(format!(".{folder}-{suffix}.wasm.building")))
        .map_err(|source| DevError::Copy { from: dir.to_owned(), to: to.clone(), source })?;
    let mut command = match lang {
        Lang::Js => {
            let mut c = Command::new("npm");
            c.args(["run", "--silent", "build", "--"]).arg(&tmp);
            c
        }
        _ => {
            let wit = dir
                .ancestors()
                .map(|a| a.join("wit"))
                .find(|w| w.join("projection.wit").is_file())
                .ok_or_else(|| DevError::NoWit(dir.to_owned()))?;
            let venv = std::path::absolute(out_dir.join("../.tools/venv/bin/componentize-py")).unwrap_or_default();
            let mut c = Command::new(if venv.is_file() { venv.into_os_string() } else { "componentize-py".into() });
            c.arg("-q").arg("-d").arg(std::path::absolute(&wit).unwrap_or(wit));
            c.args(["-w", "projector", "componentize", "app", "-p", "."]);
            if dir.join("../sdk/refract.py").is_file() {
                c.args(["-p", "../sdk"]);
            }
            c.arg("-o").arg(&tmp);
            c
        }
    };
    let tool = command.get_program().to_string_lossy().into_owned();
    let status = command.current_dir(dir).stdin(Stdio::null()).status().map_err(|source| DevError::Tool {
        tool,
        dir: dir.to_owned(),
        hint: match lang {
            Lang::Js => "install Node.js 20+, then `npm install` in plugins/js",
            _ => "run scripts/build-polyglot, or `pip install componentize-py`",
        },
        source,
    })?;
    if !status.success() {
        return Err(DevError::BuildFailed(dir.to_owned()));
    }
    if !tmp.is_file() {
        return Err(DevError::NoArtifact(dir.to_owned()));
    }
    std::fs::rename(&tmp, &to).map_err(|source| DevError::Copy { from: tmp.clone(), to: to.clone(), source })?;
    Ok(vec![to])
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
    let projects = plugin_projects(plugins_dir);
    let crates: Vec<PathBuf> = projects.iter().map(|(dir, _)| dir.clone()).collect();
    let langs: HashMap<PathBuf, Lang> = projects.into_iter().collect();
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    // Events may name paths absolutely whatever form was watched: compare absolute paths.
    let watched: Vec<(PathBuf, PathBuf)> =
        crates.iter().map(|d| (std::path::absolute(d).unwrap_or_else(|_| d.clone()), d.clone())).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Only writes count: builds open and read the sources, and reacting to
        // those accesses would rebuild forever.
        if !is_write(&event.kind) {
            return;
        }
        for path in &event.paths {
            // Builds write under target/ (and tools under node_modules/,
            // __pycache__/, .*.building): reacting to them would loop.
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let Some((abs, dir)) = watched.iter().find(|(abs, _)| path.starts_with(abs)) else { continue };
            let inside = path.strip_prefix(abs).expect("path is under dir");
            if !inside.components().any(|c| skipped(c.as_os_str())) {
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
            rebuild(dir, langs[dir], &out_dir).await;
        }
        debounce(rx, |dir| {
            let (lang, out_dir) = (langs[&dir], out_dir.clone());
            async move {
                rebuild(&dir, lang, &out_dir).await;
                true
            }
        })
        .await;
    }))
}

async fn rebuild(dir: &Path, lang: Lang, out_dir: &Path) {
    tracing::info!(project = %dir.display(), ?lang, "building plugin");
    let (d, o) = (dir.to_owned(), out_dir.to_owned());
    match tokio::task::spawn_blocking(move || build_project(&d, lang, &o)).await {
        Ok(Ok(files)) => {
            for f in files {
                tracing::info!(plugin = %f.display(), "plugin built");
            }
        }
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("plugin build task failed: {e}"),
    }
}
