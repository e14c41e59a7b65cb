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
//! When a Python or JS helper folder has the interpreter
//! (`refract_interpreter.py`, `refract_interpreter.js`, written by `refract
//! new`), a save of a project of that language is not built at all: the
//! project's source files are appended to a prebuilt interpreter component,
//! which the host hands them to (`refract:source`, see the library's
//! `with_source`). The interpreter is built once, into
//! `.tools/interpreters/`. `--componentize` builds every save instead.
//!
//! A change under a project (outside build and dependency folders) rebuilds
//! it; the new `.wasm` lands in the plugins folder by rename, where the plugin
//! watcher picks it up like any other replaced file.

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
    /// A JS project whose build tools were never installed: node would
    /// fail with a raw `ERR_MODULE_NOT_FOUND` naming a package.
    #[error("the JS build tools are not installed for {project}: run `npm install` in {install_in}")]
    NpmInstall {
        /// The project folder.
        project: PathBuf,
        /// Where `npm install` installs them: the folder of the tools' `package.json`.
        install_in: PathBuf,
    },
    /// A project's source file could not be handed to the interpreter.
    #[error("{path}: {reason}")]
    Source {
        /// The file (or the project folder).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
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
/// written files. With `interpret`, a Python or JS project whose helper
/// folder has the interpreter is not built: its source goes into a copy of
/// the interpreter (see [`Interpreter::bundle`]).
pub fn build_project(dir: &Path, lang: Lang, out_dir: &Path, interpret: bool) -> Result<Vec<PathBuf>, DevError> {
    let suffix = match lang {
        Lang::Rust => return build_crate(dir, out_dir),
        Lang::Python => "py",
        Lang::Js => "js",
    };
    let folder = dir.file_name().expect("a project is a folder").to_string_lossy().into_owned();
    let to = out_dir.join(format!("{folder}-{suffix}.wasm"));
    let tmp = std::path::absolute(out_dir.join(format!(".{folder}-{suffix}.wasm.building")))
        .map_err(|source| DevError::Copy { from: dir.to_owned(), to: to.clone(), source })?;
    if let Some(interpreter) = Interpreter::of(lang, dir).filter(|_| interpret) {
        let bytes = interpreter.bundle(dir, out_dir)?;
        return write_then_rename(&bytes, &tmp, &to).map(|()| vec![to]);
    }
    let mut command = match lang {
        Lang::Js => {
            check_js_tools(dir)?;
            let mut c = Command::new("npm");
            c.args(["run", "--silent", "build", "--"]).arg(&tmp);
            c
        }
        _ => {
            let mut c = Command::new(componentize_py(out_dir));
            c.arg("-q").arg("-d").arg(wit_dir(dir)?);
            c.args(["-w", "projector", "componentize", "app", "-p", "."]);
            if dir.join("../sdk/refract.py").is_file() {
                c.args(["-p", "../sdk"]);
            }
            c.arg("-o").arg(&tmp);
            c
        }
    };
    run_tool(command.current_dir(dir), dir, lang)?;
    if !tmp.is_file() {
        return Err(DevError::NoArtifact(dir.to_owned()));
    }
    std::fs::rename(&tmp, &to).map_err(|source| DevError::Copy { from: tmp.clone(), to: to.clone(), source })?;
    Ok(vec![to])
}

/// Runs a Python or JS build tool for the project in `dir`.
fn run_tool(command: &mut Command, dir: &Path, lang: Lang) -> Result<(), DevError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let status = command.stdin(Stdio::null()).status().map_err(|source| DevError::Tool {
        tool,
        dir: dir.to_owned(),
        hint: match lang {
            Lang::Js => "install Node.js 20+, then `npm install` in plugins/js",
            _ => "run scripts/build-polyglot, or `pip install componentize-py`",
        },
        source,
    })?;
    if status.success() { Ok(()) } else { Err(DevError::BuildFailed(dir.to_owned())) }
}

/// componentize-py: from `.tools/venv` next to the plugins folder, else `PATH`.
fn componentize_py(out_dir: &Path) -> std::ffi::OsString {
    let venv = std::path::absolute(out_dir.join("../.tools/venv/bin/componentize-py")).unwrap_or_default();
    if venv.is_file() { venv.into_os_string() } else { "componentize-py".into() }
}

/// The nearest `wit/` folder with the contract, in `dir` or above it.
fn wit_dir(dir: &Path) -> Result<PathBuf, DevError> {
    let wit = dir
        .ancestors()
        .map(|a| a.join("wit"))
        .find(|w| w.join("projection.wit").is_file())
        .ok_or_else(|| DevError::NoWit(dir.to_owned()))?;
    Ok(std::path::absolute(&wit).unwrap_or(wit))
}

/// Writes `bytes` beside `to`, then renames: the plugin watcher must never
/// see half a module.
fn write_then_rename(bytes: &[u8], tmp: &Path, to: &Path) -> Result<(), DevError> {
    std::fs::write(tmp, bytes).and_then(|()| std::fs::rename(tmp, to)).map_err(|source| DevError::Copy {
        from: tmp.to_owned(),
        to: to.to_owned(),
        source,
    })
}

/// An interpreter `refract dev` runs the projects of one language with: a
/// component of the `interpreted` world, built once from a module in the
/// language's helper folder, that runs the project files the host hands it.
struct Interpreter {
    lang: Lang,
    /// Names the built interpreter in `.tools/interpreters/`.
    name: &'static str,
    /// The interpreter's module, in the helper folder (`refract new` writes it).
    module: &'static str,
    /// The helper it is built with, beside it.
    helper: &'static str,
    /// Extensions of the project files handed to it.
    extensions: &'static [&'static str],
    /// The project file it starts from.
    entry: &'static str,
}

const INTERPRETERS: [Interpreter; 2] = [
    Interpreter {
        lang: Lang::Python,
        name: "python",
        module: "refract_interpreter.py",
        helper: "refract.py",
        extensions: &["py"],
        entry: "app.py",
    },
    Interpreter {
        lang: Lang::Js,
        name: "js",
        module: "refract_interpreter.js",
        helper: "refract.js",
        extensions: &["js", "mjs"],
        entry: "app.js",
    },
];

impl Interpreter {
    /// The interpreter for projects of `lang` in `dir`, if its module is in
    /// the helper folder beside the project.
    fn of(lang: Lang, dir: &Path) -> Option<&'static Interpreter> {
        INTERPRETERS.iter().find(|i| i.lang == lang && dir.join("../sdk").join(i.module).is_file())
    }

    /// The project in `dir` as a plugin, without a build: the interpreter
    /// (see [`Self::component`]) with the project's source files appended.
    /// The host hands the files to the interpreter, which runs the entry
    /// file; a save is a file write, and the load reuses the interpreter's
    /// compiled code from the module cache.
    fn bundle(&self, dir: &Path, out_dir: &Path) -> Result<Vec<u8>, DevError> {
        let interpreter = self.component(dir, out_dir)?;
        let mut files = Vec::new();
        self.collect(dir, dir, &mut files)?;
        if !files.iter().any(|(path, _)| path == self.entry) {
            return Err(DevError::Source { path: dir.join(self.entry), reason: "missing".into() });
        }
        Ok(refract::with_source(&interpreter, &files))
    }

    /// The source files under `dir`, as paths relative to `root` with `/`
    /// separators, skipping build and dependency folders.
    fn collect(&self, root: &Path, dir: &Path, files: &mut Vec<(String, String)>) -> Result<(), DevError> {
        let unreadable =
            |path: &Path, e: std::io::Error| DevError::Source { path: path.to_owned(), reason: e.to_string() };
        let entries = std::fs::read_dir(dir).map_err(|e| unreadable(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| unreadable(dir, e))?.path();
            if path.file_name().is_some_and(skipped) {
                continue;
            }
            if path.is_dir() {
                self.collect(root, &path, files)?;
            } else if path.extension().is_some_and(|e| self.extensions.iter().any(|x| e == *x)) {
                let bytes = std::fs::read(&path).map_err(|e| unreadable(&path, e))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| DevError::Source { path: path.clone(), reason: "not UTF-8 text".into() })?;
                let relative = path.strip_prefix(root).expect("walked from root");
                let parts: Vec<_> = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect();
                files.push((parts.join("/"), text));
                if files.len() > refract::MAX_SOURCE_FILES {
                    let reason = format!("more than {} source files in the project", refract::MAX_SOURCE_FILES);
                    return Err(DevError::Source { path: root.to_owned(), reason });
                }
            }
        }
        Ok(())
    }

    /// The interpreter component, built the first time and kept in
    /// `.tools/interpreters/` next to the plugins folder, named by a hash
    /// of what it is built from (the interpreter, the helper, the contract
    /// and the build tool), so an edit of any of them builds a new one.
    fn component(&self, dir: &Path, out_dir: &Path) -> Result<Vec<u8>, DevError> {
        let sdk = std::path::absolute(dir.join("../sdk")).unwrap_or_else(|_| dir.join("../sdk"));
        let wit = wit_dir(dir)?;
        let mut command = match self.lang {
            Lang::Js => {
                check_js_tools(dir)?;
                let mut c = Command::new("node");
                c.args(["build.mjs", "--interpreter"]).current_dir(sdk.join(".."));
                c
            }
            _ => {
                let mut c = Command::new(componentize_py(out_dir));
                c.arg("-q").arg("-d").arg(&wit);
                c.args(["-w", "interpreted", "componentize", "refract_interpreter", "-p", "."]).current_dir(&sdk);
                c
            }
        };
        let mut inputs = Vec::new();
        let mut read = |file: PathBuf| match std::fs::read(&file) {
            Ok(bytes) => Ok(inputs.extend(bytes)),
            Err(e) => Err(DevError::Source { path: file, reason: e.to_string() }),
        };
        read(sdk.join(self.module))?;
        read(sdk.join(self.helper))?;
        read(wit.join("projection.wit"))?;
        match self.lang {
            Lang::Js => {
                read(sdk.join("../build.mjs"))?;
                let tools = sdk.ancestors().map(|a| a.join(JS_COMPILER)).find(|p| p.is_file());
                read(tools.unwrap_or_default()).ok();
            }
            _ => {
                let tool = command.get_program().to_owned();
                let installed = std::fs::metadata(&tool).and_then(|m| m.modified()).ok();
                inputs.extend(tool.as_encoded_bytes());
                inputs.extend(format!("{installed:?}").as_bytes());
            }
        }
        let name = format!("{}-{}", self.name, &refract::module_hash(&inputs)[..16]);
        let folder = std::path::absolute(out_dir.join("../.tools/interpreters")).unwrap_or_default();
        let path = folder.join(format!("{name}.wasm"));
        if let Ok(bytes) = std::fs::read(&path) {
            return Ok(bytes);
        }
        tracing::info!(interpreter = %path.display(), "building the {} interpreter (once for these helpers)", self.name);
        std::fs::create_dir_all(&folder).map_err(|source| DevError::Copy {
            from: sdk.clone(),
            to: folder.clone(),
            source,
        })?;
        let tmp = folder.join(format!(".{name}.wasm.building"));
        match self.lang {
            Lang::Js => command.arg(&tmp),
            _ => command.arg("-o").arg(&tmp),
        };
        run_tool(&mut command, &sdk, self.lang)?;
        let bytes = std::fs::read(&tmp).map_err(|_| DevError::NoArtifact(sdk.clone()))?;
        std::fs::rename(&tmp, &path).map_err(|source| DevError::Copy { from: tmp, to: path, source })?;
        Ok(bytes)
    }
}

/// The package every JS build imports (`plugins/js/build.mjs`).
const JS_COMPILER: &str = "node_modules/@bytecodealliance/componentize-js/package.json";

/// Refuses a JS build whose tools node cannot find: it resolves packages
/// only through `node_modules` folders in the project's folder or above.
/// `npm install` belongs in the nearest folder above the project with a
/// `package.json` (`plugins/js`, where `refract new` puts the tools' one).
fn check_js_tools(dir: &Path) -> Result<(), DevError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if dir.ancestors().any(|a| a.join(JS_COMPILER).is_file()) {
        return Ok(());
    }
    let install_in = dir.ancestors().skip(1).find(|a| a.join("package.json").is_file()).unwrap_or(&dir).to_owned();
    Err(DevError::NpmInstall { project: dir.clone(), install_in })
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

/// What a changed path asks `refract dev` to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Rebuild this project.
    Project(PathBuf),
    /// A shared helper changed: rebuild every project of the language
    /// (`None`: every project, for the contract in `wit/`).
    Helpers(Option<Lang>),
    /// Something changed in the plugins folder or a folder just below it:
    /// look for projects that appeared (`refract new` while `dev` runs).
    Rescan,
    /// A build's own output, a dependency folder, or nothing of ours.
    Ignore,
}

/// Where the watched things are, all absolute (notify names paths
/// absolutely whatever form was watched).
struct Layout {
    plugins: PathBuf,
    /// Each project's folder and its language.
    projects: Vec<(PathBuf, Lang)>,
    /// The shared helpers: `<plugins>/python/sdk`, `<plugins>/js/sdk` and
    /// `<root>/sdk` (refract-sdk, which Rust projects use by path), and the
    /// contract `<root>/wit`.
    helpers: Vec<(PathBuf, Option<Lang>)>,
}

impl Layout {
    fn new(plugins: &Path) -> Self {
        let plugins = std::path::absolute(plugins).unwrap_or_else(|_| plugins.to_owned());
        let root = plugins.parent().map(Path::to_path_buf).unwrap_or_else(|| plugins.clone());
        let helpers = vec![
            (plugins.join("python/sdk"), Some(Lang::Python)),
            (plugins.join("js/sdk"), Some(Lang::Js)),
            (root.join("sdk"), Some(Lang::Rust)),
            (root.join("wit"), None),
        ];
        let mut layout = Self { plugins, projects: Vec::new(), helpers };
        layout.projects = plugin_projects(&layout.plugins);
        layout
    }

    /// What a write to `path` asks for.
    fn classify(&self, path: &Path) -> Target {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let own_output = |inside: &Path| {
            inside.components().any(|c| skipped(c.as_os_str()))
                // cargo writes the lock on a crate's first build: that is no edit.
                || inside == Path::new("Cargo.lock")
        };
        if let Some((dir, _)) = self.projects.iter().find(|(dir, _)| path.starts_with(dir)) {
            let inside = path.strip_prefix(dir).expect("path is under dir");
            return if own_output(inside) { Target::Ignore } else { Target::Project(dir.clone()) };
        }
        if let Some((dir, lang)) = self.helpers.iter().find(|(dir, _)| path.starts_with(dir)) {
            let inside = path.strip_prefix(dir).expect("path is under dir");
            return if own_output(inside) { Target::Ignore } else { Target::Helpers(*lang) };
        }
        match path.strip_prefix(&self.plugins) {
            // A folder made one or two levels down, or a marker file written in one.
            Ok(inside) if inside.components().count() <= 3 && !own_output(inside) => Target::Rescan,
            _ => Target::Ignore,
        }
    }

    /// The projects a change to a target rebuilds.
    fn projects_for(&self, target: &Target) -> Vec<(PathBuf, Lang)> {
        match target {
            Target::Project(dir) => self.projects.iter().filter(|(d, _)| d == dir).cloned().collect(),
            Target::Helpers(lang) => {
                self.projects.iter().filter(|(_, l)| lang.is_none_or(|lang| *l == lang)).cloned().collect()
            }
            Target::Rescan | Target::Ignore => Vec::new(),
        }
    }

    /// Looks for projects again; returns the ones that are new.
    fn rescan(&mut self) -> Vec<(PathBuf, Lang)> {
        let now = plugin_projects(&self.plugins);
        let new = now.iter().filter(|p| !self.projects.contains(p)).cloned().collect();
        self.projects = now;
        new
    }

    /// What to watch: the plugins folder and the folders one and two levels
    /// below it without their subfolders (a new project appears there), and
    /// each project and helper folder with them. Dependency folders such as
    /// `plugins/js/node_modules` are not watched at all.
    fn watches(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut out = vec![(self.plugins.clone(), RecursiveMode::NonRecursive)];
        let is_project = |d: &PathBuf| self.projects.iter().any(|(p, _)| p == d);
        for dir in subdirs(&self.plugins).filter(|d| !is_project(d)) {
            out.extend(subdirs(&dir).filter(|d| !is_project(d)).map(|d| (d, RecursiveMode::NonRecursive)));
            out.push((dir, RecursiveMode::NonRecursive));
        }
        out.extend(self.projects.iter().map(|(d, _)| (d.clone(), RecursiveMode::Recursive)));
        out.extend(self.helpers.iter().filter(|(d, _)| d.is_dir()).map(|(d, _)| (d.clone(), RecursiveMode::Recursive)));
        out
    }
}

/// What the debouncer is keyed by: one key per thing to do, so a burst of
/// writes to one project is one build.
fn key(target: &Target, layout: &Layout) -> Option<PathBuf> {
    match target {
        Target::Project(dir) => Some(dir.clone()),
        Target::Helpers(lang) => layout.helpers.iter().find(|(_, l)| l == lang).map(|(d, _)| d.clone()),
        Target::Rescan => Some(layout.plugins.clone()),
        Target::Ignore => None,
    }
}

/// Builds every plugin project once, then rebuilds a project whenever a
/// file under it changes, every project of a language when its shared
/// helper changes, and a project created meanwhile as soon as it appears,
/// until the returned task is aborted. Build errors are logged; the previous
/// `.wasm` (and its read model) stays in place.
pub fn spawn_rebuilder(plugins_dir: &Path, interpret: bool) -> Result<tokio::task::JoinHandle<()>, DevError> {
    let layout = std::sync::Arc::new(std::sync::RwLock::new(Layout::new(plugins_dir)));
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let seen = layout.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Only writes count: builds open and read the sources, and reacting to
        // those accesses would rebuild forever.
        if !is_write(&event.kind) {
            return;
        }
        let layout = seen.read().expect("layout lock");
        for path in &event.paths {
            if let Some(key) = key(&layout.classify(path), &layout) {
                let _ = tx.send(key);
            }
        }
    })?;
    // Each folder is watched once: watching a project again would walk its
    // whole tree (target/ included) after every build.
    let mut watched = std::collections::HashSet::new();
    let watch = |watcher: &mut notify::RecommendedWatcher,
                 watched: &mut std::collections::HashSet<(PathBuf, bool)>,
                 layout: &Layout| {
        for (dir, mode) in layout.watches() {
            if !watched.insert((dir.clone(), mode == RecursiveMode::Recursive)) {
                continue;
            }
            // A folder removed meanwhile is no error: the next rescan forgets it.
            if let Err(e) = watcher.watch(&dir, mode) {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch");
            }
        }
    };
    watch(&mut watcher, &mut watched, &layout.read().expect("layout lock"));
    let out_dir = plugins_dir.to_owned();
    Ok(tokio::spawn(async move {
        let mut watcher = watcher; // Lives as long as the task.
        let first = layout.read().expect("layout lock").projects.clone();
        for (dir, lang) in &first {
            rebuild(dir, *lang, &out_dir, interpret).await;
        }
        debounce(rx, |key| {
            let (layout, out_dir) = (layout.clone(), out_dir.clone());
            let todo = {
                let mut layout = layout.write().expect("layout lock");
                if key == layout.plugins {
                    let new = layout.rescan();
                    watch(&mut watcher, &mut watched, &layout);
                    for (dir, _) in &new {
                        tracing::info!(project = %dir.display(), "new plugin project");
                    }
                    new
                } else if let Some((_, lang)) = layout.helpers.iter().find(|(d, _)| *d == key) {
                    layout.projects_for(&Target::Helpers(*lang))
                } else {
                    layout.projects_for(&Target::Project(key))
                }
            };
            async move {
                for (dir, lang) in todo {
                    rebuild(&dir, lang, &out_dir, interpret).await;
                }
                true
            }
        })
        .await;
    }))
}

async fn rebuild(dir: &Path, lang: Lang, out_dir: &Path, interpret: bool) {
    tracing::info!(project = %dir.display(), ?lang, "building plugin");
    let (d, o) = (dir.to_owned(), out_dir.to_owned());
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || build_project(&d, lang, &o, interpret)).await {
        Ok(Ok(files)) => {
            let seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
            for f in files {
                tracing::info!(plugin = %f.display(), seconds, "plugin built");
            }
        }
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("plugin build task failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_classified_by_where_they_are() {
        let root = tempfile::tempdir().unwrap();
        let plugins = root.path().join("plugins");
        for (file, text) in [
            ("plugins/counters/Cargo.toml", "[package]"),
            ("plugins/python/totals/app.py", ""),
            ("plugins/python/sdk/refract.py", ""),
            ("sdk/src/lib.rs", ""),
            ("wit/projection.wit", ""),
        ] {
            let path = root.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let layout = Layout::new(&plugins);
        let counters = plugins.join("counters");
        let totals = plugins.join("python/totals");
        let at = |p: &str| layout.classify(&root.path().join(p));
        assert_eq!(at("plugins/counters/src/lib.rs"), Target::Project(counters.clone()));
        assert_eq!(at("plugins/python/totals/app.py"), Target::Project(totals.clone()));
        // A build's own writes.
        assert_eq!(at("plugins/counters/Cargo.lock"), Target::Ignore);
        assert_eq!(at("plugins/counters/target/release/x.wasm"), Target::Ignore);
        assert_eq!(at("plugins/python/totals/__pycache__/app.pyc"), Target::Ignore);
        // Shared helpers and the contract.
        assert_eq!(at("plugins/python/sdk/refract.py"), Target::Helpers(Some(Lang::Python)));
        assert_eq!(at("sdk/src/lib.rs"), Target::Helpers(Some(Lang::Rust)));
        assert_eq!(at("sdk/target/debug/foo"), Target::Ignore);
        assert_eq!(at("wit/projection.wit"), Target::Helpers(None));
        // New folders and marker files where projects appear.
        assert_eq!(at("plugins/fresh"), Target::Rescan);
        assert_eq!(at("plugins/fresh/Cargo.toml"), Target::Rescan);
        assert_eq!(at("plugins/js/fresh/package.json"), Target::Rescan);
        assert_eq!(at("plugins/js/fresh/src/deep.js"), Target::Ignore);
        assert_eq!(at("plugins/js/node_modules/x/package.json"), Target::Ignore);
        assert_eq!(at("elsewhere/file"), Target::Ignore);

        assert_eq!(layout.projects_for(&Target::Helpers(Some(Lang::Python))), vec![(totals.clone(), Lang::Python)]);
        assert_eq!(layout.projects_for(&Target::Helpers(None)).len(), 2);
        // The watches: the folders where projects appear, without their
        // subfolders; the projects and helpers with theirs.
        let watches = layout.watches();
        for (dir, mode) in [
            (plugins.clone(), RecursiveMode::NonRecursive),
            (plugins.join("python"), RecursiveMode::NonRecursive),
            (counters, RecursiveMode::Recursive),
            (totals, RecursiveMode::Recursive),
            (plugins.join("python/sdk"), RecursiveMode::Recursive),
            (root.path().join("sdk"), RecursiveMode::Recursive),
        ] {
            assert!(watches.contains(&(dir.clone(), mode)), "{dir:?} {mode:?} in {watches:?}");
        }
    }

    #[test]
    fn a_rescan_finds_new_projects_only() {
        let root = tempfile::tempdir().unwrap();
        let plugins = root.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let mut layout = Layout::new(&plugins);
        assert!(layout.rescan().is_empty());
        std::fs::create_dir_all(plugins.join("js/fresh")).unwrap();
        std::fs::write(plugins.join("js/fresh/package.json"), r#"{"scripts":{"build":"x"}}"#).unwrap();
        assert_eq!(layout.rescan(), vec![(plugins.join("js/fresh"), Lang::Js)]);
        assert!(layout.rescan().is_empty());
    }
}
