//! The module cache: plugin bytes by content hash, and their compiled form.
//!
//! Compiling a component with Cranelift costs far more than loading it, so a
//! compiled component is kept on disk keyed by the module's SHA-256 and the
//! engine's compatibility hash (wasmtime version and settings): a restart with
//! unchanged plugins skips compilation. The raw bytes are kept too, so a
//! generation keeps running after its `.wasm` was replaced while the host was down.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// On-disk module cache under one folder (`<data-dir>/cache`).
#[derive(Debug, Clone)]
pub struct ModuleCache {
    root: PathBuf,
}

impl ModuleCache {
    /// A cache rooted at `root`; folders are created on first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn source_path(&self, hash: &str) -> PathBuf {
        self.root.join("modules").join(format!("{hash}.wasm"))
    }

    fn compiled_path(&self, engine: &Engine, hash: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.root.join("compiled").join(format!("{hash}-{:016x}.cwasm", h.finish()))
    }

    /// Keeps the module's bytes (once per hash).
    pub fn save_source(&self, hash: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.source_path(hash);
        if path.exists() { Ok(()) } else { write_atomically(&path, bytes) }
    }

    /// The bytes of a module saved earlier.
    pub fn source(&self, hash: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.source_path(hash))
    }

    /// The compiled component for `hash`, if cached and loadable by this engine.
    pub(crate) fn compiled(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let path = self.compiled_path(engine, hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store_compiled` from
        // `Component::serialize` of this engine configuration (the name
        // carries the engine's compatibility hash), inside the host's own
        // data directory; wasmtime also checks the header and refuses a
        // mismatched artifact, which we then recompile.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled module");
                None
            }
        }
    }

    /// Caches a freshly compiled component. Failure only costs a recompile later.
    pub(crate) fn store_compiled(&self, engine: &Engine, hash: &str, component: &Component) {
        let result = component
            .serialize()
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomically(&self.compiled_path(engine, hash), &bytes));
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not cache the compiled module");
        }
    }
}

/// Writes through a temporary file and a rename, so a reader (or a crash)
/// never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a file path: {}", path.display())));
    };
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
