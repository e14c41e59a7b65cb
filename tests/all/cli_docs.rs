//! `refract completions SHELL` and `refract man` come from the parser's own
//! definitions: every command is in them, they need no data dir and create
//! none, and an unknown shell is refused by name.

use std::process::Command;

const COMMANDS: &[&str] = &[
    "run",
    "dev",
    "new",
    "rebuild",
    "drop",
    "append",
    "import",
    "get",
    "query",
    "status",
    "nodes",
    "dead-letters",
    "retry",
    "wait",
    "verify",
    "changes",
    "completions",
    "man",
];

fn refract(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_refract")).current_dir(dir).args(args).output().unwrap()
}

#[test]
fn completions_and_the_man_page_name_every_command_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = refract(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        for command in COMMANDS {
            assert!(script.contains(command), "{shell} completions lack `{command}`");
        }
    }
    let out = refract(dir.path(), &["man"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // roff escapes hyphens.
    let page = String::from_utf8(out.stdout).unwrap().replace("\\-", "-");
    assert!(page.contains(".TH refract 1") && page.contains(".SH NAME"), "{page}");
    for command in COMMANDS {
        assert!(page.contains(command), "the man page lacks `{command}`");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a docs command created files");

    let out = refract(dir.path(), &["completions", "nosh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nosh'"));
}
