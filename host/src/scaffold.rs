//! `refract new <name> --lang rust|python|js`: a working projection to start
//! from, laid out so that `refract dev` builds it unchanged.
//!
//! Every language gets the same small projection (a counter per `counter-*`
//! stream, from `Incremented {"by": N}` events) and an `events.jsonl` to
//! feed it with `refract import`. Python and JS projects go under
//! `<plugins>/python/<name>` and `<plugins>/js/<name>`, next to their shared
//! helper (`sdk/`), which is written too if missing.

use std::path::{Path, PathBuf};

use crate::dev::Lang;

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
const PYTHON_SDK: &str = include_str!("../../plugins/python/sdk/refract.py");
const JS_SDK: &str = include_str!("../../plugins/js/sdk/refract.js");
const JS_BUILD: &str = include_str!("../../plugins/js/build.mjs");
const JS_TOOLS: &str = include_str!("../../plugins/js/package.json");

/// Creates the project; returns its folder and the files written.
pub fn new_project(plugins_dir: &Path, name: &str, lang: Lang) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name != "sdk",
        "invalid projection name `{name}`: use lowercase ASCII letters, digits, `-` and `_`"
    );
    let dir = match lang {
        Lang::Rust => plugins_dir.join(name),
        Lang::Python => plugins_dir.join("python").join(name),
        Lang::Js => plugins_dir.join("js").join(name),
    };
    anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
    let fill = |template: &str| template.replace("{{name}}", name);
    let mut files: Vec<(PathBuf, String)> = vec![(dir.join("events.jsonl"), EVENTS.to_owned())];
    match lang {
        Lang::Rust => {
            let sdk = std::path::absolute(plugins_dir.join("../sdk"))?;
            anyhow::ensure!(
                sdk.join("Cargo.toml").is_file(),
                "a Rust projection needs refract-sdk, looked for it at {}",
                sdk.display()
            );
            let cargo = format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
refract-sdk = {{ path = "../../sdk" }}
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
        }
        Lang::Js => {
            files.push((dir.join("app.js"), fill(JS_APP)));
            let package = format!(
                "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"scripts\": {{\n    \"build\": \"node ../build.mjs {name}\"\n  }}\n}}\n"
            );
            files.push((dir.join("package.json"), package));
            files.push((plugins_dir.join("js/sdk/refract.js"), JS_SDK.to_owned()));
            files.push((plugins_dir.join("js/build.mjs"), JS_BUILD.to_owned()));
            files.push((plugins_dir.join("js/package.json"), JS_TOOLS.to_owned()));
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
