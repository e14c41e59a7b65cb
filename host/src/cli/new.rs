//! `refract new`: scaffold a projection and say how to run it.

use std::path::PathBuf;

use anyhow::Result;

use super::dev::Lang;
use super::output::outln;

#[derive(clap::Args)]
pub struct NewArgs {
    /// Projection name (lowercase ASCII letters, digits, `-`, `_`).
    name: String,
    /// Language of the projection.
    #[arg(long, value_enum, default_value = "rust")]
    lang: NewLang,
    /// Folder of projection components and projects.
    #[arg(long, env = "REFRACT_PLUGINS_DIR", default_value = "plugins")]
    plugins: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NewLang {
    Rust,
    Python,
    Js,
}

pub fn new(NewArgs { name, lang, plugins }: NewArgs) -> Result<()> {
    let lang = match lang {
        NewLang::Rust => Lang::Rust,
        NewLang::Python => Lang::Python,
        NewLang::Js => Lang::Js,
    };
    let (dir, written) = super::scaffold::new_project(&plugins, &name, lang)?;
    for file in written {
        outln!("created {}", file.display())?;
    }
    let tool = match lang {
        Lang::Rust => "the wasm32-wasip2 Rust target".to_owned(),
        Lang::Python => "componentize-py 0.25.1 on PATH or in .tools/venv next to the plugins folder".to_owned(),
        // `npm install`, not `npm ci`: npm 11's ci refuses a lock without other platforms' binaries.
        Lang::Js => format!("Node.js 20+ and `npm install` in {}", plugins.join("js").display()),
    };
    outln!(
        "\nnext: refract dev --plugins {} (needs {tool}), then in another terminal:\n      refract import {}",
        plugins.display(),
        dir.join("events.jsonl").display()
    )?;
    Ok(())
}
