//! `refract new <name> --lang rust|python|js`: a working projection to start
//! from, laid out so that `refract dev` builds it unchanged.
//!
//! Every language gets the same small projection (a counter per `counter-*`
//! stream, from `Incremented {"by": N}` events) and an `events.jsonl` to
//! feed it with `refract import`. Python and JS projects go under
//! `<plugins>/python/<name>` and `<plugins>/js/<name>`, next to their shared
//! helper (`sdk/`), which is written too if missing.
//!
//! The project root (the folder holding the plugins folder) is laid out like
//! this repository: `wit/projection.wit` is the contract every build reads,
//! and Rust projections depend on `sdk/` (refract-sdk) by path. Outside a
//! checkout both are missing, so they are written from copies built into
//! the binary; inside one, the checkout's own files are used.

use std::path::{Path, PathBuf};

use super::dev::Lang;

const EVENTS: &str = r#"{"stream": "counter-1", "type": "Incremented", "payload": {"by": 2}}
{"stream": "counter-1", "type": "Incremented", "payload": {"by": 3}}
{"stream": "counter-2", "type": "Incremented", "payload": {"by": 10}}
"#;

const RUST_LIB: &str = r#"//! Counts how much each `counter-*` stream was incremented.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Counters;

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[derive(Deserialize)]
struct Incremented {
    by: i64,
}

impl Projection for Counters {
    fn manifest() -> Manifest {
        Manifest::new("{{name}}", "1.0.0")
            .event_types(["Incremented"])
            .stream_prefix("counter-")
            .collection("counters", ["value"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let Incremented { by } = event.payload()?;
        ctx.update("counters", &event.stream_id, |c: &mut Counter| c.value += by)
    }
}

refract_sdk::export!(Counters);
"#;

const PYTHON_APP: &str = r#""""Counts how much each `counter-*` stream was incremented."""

import refract


class Counters:
    manifest = refract.Manifest(
        "{{name}}",
        "1.0.0",
        event_types=["Incremented"],
        stream_prefixes=["counter-"],
        collections={"counters": ["value"]},
    )

    def handle(self, event, ctx):
        by = event.payload()["by"]
        counter = ctx.get("counters", event.stream_id) or {"value": 0}
        counter["value"] += by
        ctx.upsert("counters", event.stream_id, counter)


Projection = refract.export(Counters)
"#;

const JS_APP: &str = r#"// Counts how much each `counter-*` stream was incremented.
import { exportProjection } from "../sdk/refract.js";

export const projection = exportProjection({
  manifest: {
    name: "{{name}}",
    version: "1.0.0",
    eventTypes: ["Incremented"],
    streamPrefixes: ["counter-"],
    collections: { counters: ["value"] },
  },
  handle(event, ctx) {
    const { by } = event.payload();
    const counter = ctx.get("counters", event.streamId) ?? { value: 0 };
    counter.value += by;
    ctx.upsert("counters", event.streamId, counter);
  },
});
"#;

/// Helpers shared by every Python / JS project, written when missing.
const PYTHON_SDK: &str = include_str!("../../../plugins/python/sdk/refract.py");
/// The interpreters `refract dev` runs Python and JS projects with (see `dev::Interpreter`).
const PYTHON_INTERPRETER: &str = include_str!("../../../plugins/python/sdk/refract_interpreter.py");
const JS_SDK: &str = include_str!("../../../plugins/js/sdk/refract.js");
const JS_INTERPRETER: &str = include_str!("../../../plugins/js/sdk/refract_interpreter.js");
const JS_BUILD: &str = include_str!("../../../plugins/js/build.mjs");
const JS_TOOLS: &str = include_str!("../../../plugins/js/package.json");
/// The lock pins componentize-js's whole dependency tree, as in this repository.
const JS_TOOLS_LOCK: &str = include_str!("../../../plugins/js/package-lock.json");
/// The contract: `wit_bindgen` (Rust), componentize-py and componentize-js all read it.
const WIT: &str = include_str!("../../../wit/projection.wit");
/// refract-sdk's source; its `generate!` reads its own copy of the contract, `sdk/wit/`.
const RUST_SDK_LIB: &str = include_str!("../../../sdk/src/lib.rs");
/// refract-sdk's manifest without the workspace inheritance of `sdk/Cargo.toml`,
/// which only resolves inside this repository. The versions must stay those of
/// the workspace (a unit test checks).
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "refract-sdk"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"
publish = false

[dependencies]
foldhash = "=0.2.0"
serde = { version = "1.0.228", features = ["derive"] }
serde_json = "1.0.145"
wit-bindgen = { version = "=0.61.1" }
"#;

/// Creates the project; returns its folder and the files written.
pub fn new_project(plugins_dir: &Path, name: &str, lang: Lang) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name != "sdk",
        "invalid projection name `{name}`: use lowercase ASCII letters, digits, `-` and `_`"
    );
    let folder = |lang: Lang| match lang {
        Lang::Rust => plugins_dir.join(name),
        Lang::Python => plugins_dir.join("python").join(name),
        Lang::Js => plugins_dir.join("js").join(name),
    };
    let dir = folder(lang);
    anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
    // The name is the projection's: two projects under one name would both
    // build a projection `name`, and the second to load would be refused.
    for other in [Lang::Rust, Lang::Python, Lang::Js] {
        let there = folder(other);
        anyhow::ensure!(
            Lang::detect(&there).is_none(),
            "`{name}` is already the name of a {other:?} project at {}: projection names must be unique; choose another",
            there.display()
        );
    }
    let fill = |template: &str| template.replace("{{name}}", name);
    let root = project_root(plugins_dir)?;
    let mut files: Vec<(PathBuf, String)> =
        vec![(dir.join("events.jsonl"), EVENTS.to_owned()), (root.join("wit/projection.wit"), WIT.to_owned())];
    match lang {
        Lang::Rust => {
            // `../../sdk` from `<plugins>/<name>` is `<root>/sdk`. Its manifest
            // and source go together: never a checkout's manifest with our source.
            if !root.join("sdk/Cargo.toml").exists() {
                files.push((root.join("sdk/Cargo.toml"), RUST_SDK_MANIFEST.to_owned()));
                files.push((root.join("sdk/src/lib.rs"), RUST_SDK_LIB.to_owned()));
                files.push((root.join("sdk/wit/projection.wit"), WIT.to_owned()));
            }
            // The SDK and the host share the workspace's version.
            let sdk_version = env!("CARGO_PKG_VERSION");
            let cargo = format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# By version, as published; the path serves this project folder's own sdk/.
refract-sdk = {{ version = "{sdk_version}", path = "../../sdk" }}
serde = {{ version = "1", features = ["derive"] }}

# A workspace of its own: `refract dev` builds it where it is.
[workspace]

[profile.release]
opt-level = "s"
"#
            );
            files.push((dir.join("Cargo.toml"), cargo));
            files.push((dir.join("src/lib.rs"), fill(RUST_LIB)));
        }
        Lang::Python => {
            files.push((dir.join("app.py"), fill(PYTHON_APP)));
            files.push((plugins_dir.join("python/sdk/refract.py"), PYTHON_SDK.to_owned()));
            files.push((plugins_dir.join("python/sdk/refract_interpreter.py"), PYTHON_INTERPRETER.to_owned()));
        }
        Lang::Js => {
            files.push((dir.join("app.js"), fill(JS_APP)));
            let package = format!(
                "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"scripts\": {{\n    \"build\": \"node ../build.mjs {name}\"\n  }}\n}}\n"
            );
            files.push((dir.join("package.json"), package));
            files.push((plugins_dir.join("js/sdk/refract.js"), JS_SDK.to_owned()));
            files.push((plugins_dir.join("js/sdk/refract_interpreter.js"), JS_INTERPRETER.to_owned()));
            files.push((plugins_dir.join("js/build.mjs"), JS_BUILD.to_owned()));
            // Lock and package.json together: a lock for someone else's package.json would mislead npm.
            if !plugins_dir.join("js/package.json").exists() {
                files.push((plugins_dir.join("js/package.json"), JS_TOOLS.to_owned()));
                files.push((plugins_dir.join("js/package-lock.json"), JS_TOOLS_LOCK.to_owned()));
            }
        }
    }
    let mut written = Vec::new();
    for (path, text) in files {
        if path.exists() {
            continue; // A shared helper the user already has (and may have changed).
        }
        std::fs::create_dir_all(path.parent().expect("files are in folders"))?;
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok((dir, written))
}

/// The folder holding the plugins folder, where `wit/` and `sdk/` belong.
fn project_root(plugins_dir: &Path) -> std::io::Result<PathBuf> {
    match (plugins_dir.file_name(), plugins_dir.parent()) {
        // `plugins` has the parent `` (the current folder): joins stay relative and short.
        (Some(_), Some(parent)) => Ok(parent.to_owned()),
        // `.`, `..`, `/`: only the real path says what the parent is.
        _ => {
            let real = plugins_dir.canonicalize()?;
            Ok(real.parent().map(Path::to_path_buf).unwrap_or(real))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dependency's spec in a manifest, with `workspace = true` resolved.
    fn dependency(manifest: &toml::Table, workspace: &toml::Table, name: &str) -> toml::Value {
        let spec = &manifest["dependencies"][name];
        if spec.get("workspace").and_then(toml::Value::as_bool) == Some(true) {
            let mut resolved = workspace["workspace"]["dependencies"][name].clone();
            if let (Some(table), Some(features)) = (resolved.as_table_mut(), spec.get("features")) {
                table.insert("features".into(), features.clone());
            }
            return resolved;
        }
        spec.clone()
    }

    #[test]
    fn standalone_sdk_manifest_matches_the_workspace() {
        let standalone: toml::Table = toml::from_str(RUST_SDK_MANIFEST).unwrap();
        let sdk: toml::Table = toml::from_str(include_str!("../../../sdk/Cargo.toml")).unwrap();
        let workspace: toml::Table = toml::from_str(include_str!("../../../Cargo.toml")).unwrap();
        let names: Vec<&String> = sdk["dependencies"].as_table().unwrap().keys().collect();
        assert_eq!(names, standalone["dependencies"].as_table().unwrap().keys().collect::<Vec<_>>());
        for name in names {
            let normalize = |v: toml::Value| match v {
                toml::Value::String(version) => {
                    toml::Value::Table([("version".to_owned(), version.into())].into_iter().collect())
                }
                other => other,
            };
            assert_eq!(
                normalize(dependency(&standalone, &workspace, name)),
                normalize(dependency(&sdk, &workspace, name)),
                "dependency {name}"
            );
        }
        for key in ["edition", "rust-version", "license", "version"] {
            assert_eq!(standalone["package"][key], workspace["workspace"]["package"][key], "package.{key}");
        }
    }

    #[test]
    fn outside_a_checkout_the_contract_and_the_sdk_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        let (project, _) = new_project(&plugins, "demo", Lang::Rust).unwrap();
        assert_eq!(project, plugins.join("demo"));
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("wit/projection.wit"), WIT);
        assert_eq!(read("sdk/src/lib.rs"), RUST_SDK_LIB);
        let dependency =
            format!(r#"refract-sdk = {{ version = "{}", path = "../../sdk" }}"#, env!("CARGO_PKG_VERSION"));
        assert!(read("plugins/demo/Cargo.toml").contains(&dependency));
        assert_eq!(read("sdk/wit/projection.wit"), WIT);
        // A second project reuses them, and leaves a changed contract alone.
        std::fs::write(dir.path().join("wit/projection.wit"), "changed").unwrap();
        let (_, written) = new_project(&plugins, "other", Lang::Js).unwrap();
        assert!(written.iter().all(|f| !f.ends_with("wit/projection.wit")), "{written:?}");
        assert_eq!(read("wit/projection.wit"), "changed");
        assert_eq!(read("plugins/js/package-lock.json"), JS_TOOLS_LOCK);
    }

    #[test]
    fn a_name_is_refused_when_another_language_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        new_project(&plugins, "demo", Lang::Python).unwrap();
        for lang in [Lang::Rust, Lang::Js] {
            let e = new_project(&plugins, "demo", lang).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "`demo` is already the name of a Python project at {}: projection names must be unique; choose another",
                    plugins.join("python/demo").display()
                )
            );
        }
        assert!(!plugins.join("demo").exists() && !plugins.join("js/demo").exists());
        // The same language says the folder exists.
        let e = new_project(&plugins, "demo", Lang::Python).unwrap_err().to_string();
        assert!(e.ends_with("python/demo already exists"), "{e}");
    }
}
