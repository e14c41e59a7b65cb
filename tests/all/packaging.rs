//! What ships: refract-sdk as a publishable crate with its own copy of the
//! contract, and the Dockerfile and systemd unit, checked against the
//! scripts and flags they use (no container runtime is needed: the image
//! build itself is `scripts/build-release` in a Rust image, and that script
//! is what these tests run the parts of).

use std::process::Command;

use crate::common::{cli::succeed, root};

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_sdk_carries_the_same_contract_and_packages_it() {
    assert_eq!(read("sdk/wit/projection.wit"), read("wit/projection.wit"), "sdk/wit/ must be a copy of wit/");
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root())
        .args(["package", "-p", "refract-sdk", "--list", "--allow-dirty", "--offline"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo package: {}", String::from_utf8_lossy(&out.stderr));
    let files = String::from_utf8(out.stdout).unwrap();
    for file in ["Cargo.toml", "src/lib.rs", "wit/projection.wit"] {
        assert!(files.lines().any(|l| l == file), "{file} not in the package:\n{files}");
    }
}

/// The instructions of the Dockerfile, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_owned(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_with_the_release_script_and_runs_settings_the_host_knows() {
    let steps = dockerfile();
    let runs: Vec<&str> = steps.iter().filter(|(op, _)| op == "RUN").map(|(_, a)| a.as_str()).collect();
    assert_eq!(runs[0], "scripts/build-release", "the build stage runs the release script");
    let script = read("scripts/build-release");
    assert!(script.contains("cargo build --release --locked -p refract --bin refract"), "{script}");
    // It copies what the script builds.
    assert!(
        steps
            .iter()
            .any(|(op, a)| op == "COPY" && a == "--from=build /src/target/release/refract /usr/local/bin/refract"),
        "{steps:?}"
    );
    // The toolchain is the workspace's.
    let manifest = read("Cargo.toml");
    let version = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"');
    assert!(steps[0].1.starts_with(&format!("rust:{version}-")), "{:?}", steps[0]);
    // Every variable it sets is one the host reads: `refract config` shows each as its origin.
    let env: Vec<(String, String)> = steps
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, a)| a.split_whitespace().map(|kv| kv.split_once('=').unwrap()))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(env.len() >= 3, "{env:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("refract.toml"), "").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
    cmd.current_dir(dir.path()).args(["config", "--json"]);
    for (k, v) in &env {
        // The image's config path does not exist here; the test's empty one stands in.
        let v = if k == "REFRACT_CONFIG" { "refract.toml" } else { v.as_str() };
        cmd.env(k, v);
    }
    let json: serde_json::Value = serde_json::from_str(&succeed(&mut cmd)).unwrap();
    for (k, _) in env.iter().filter(|(k, _)| k != "REFRACT_CONFIG") {
        let origin = format!("env {k}");
        assert!(
            json["settings"].as_array().unwrap().iter().any(|s| s["origin"] == origin),
            "{k} is read by no setting: {json}"
        );
    }
    assert!(steps.iter().any(|(op, a)| op == "ENTRYPOINT" && a == r#"["refract"]"#));
    assert!(steps.iter().any(|(op, a)| op == "CMD" && a == r#"["run"]"#));
}

#[test]
fn the_systemd_unit_runs_flags_the_host_accepts() {
    let unit = read("packaging/refract.service");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart line");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/refract"));
    assert_eq!(words.next(), Some("run"));
    // `refract config` takes the same flags as `refract run` and changes nothing.
    let flags: Vec<&str> = words.collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, "").unwrap();
    let flags: Vec<String> = flags
        .iter()
        .map(|f| if *f == "/etc/refract/refract.toml" { config.display().to_string() } else { (*f).to_owned() })
        .collect();
    let out = succeed(Command::new(env!("CARGO_BIN_EXE_refract")).current_dir(dir.path()).arg("config").args(&flags));
    assert!(out.contains("plugins = \"/var/lib/refract/plugins\""), "{out}");
    assert!(unit.contains("KillSignal=SIGTERM"), "the host shuts down cleanly on SIGTERM");
}
