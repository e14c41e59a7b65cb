//! A `refract run` child serving the HTTP API on a port the OS picked, and
//! the tokens it is started with.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::cli::{Background, refract};

/// Starts `refract run --http ADDR ARGS...` on `data` and waits until the API
/// listens; returns the child and a loopback address to reach it at.
pub fn serve(data: &Path, http: &str, args: &[&str]) -> (Background, SocketAddr) {
    let mut cmd: Command = refract(data);
    cmd.args(["run", "--poll-ms", "5", "--http", http]).args(args);
    let mut host = Background::spawn(&mut cmd);
    host.wait_for_log("HTTP API listening", Duration::from_secs(120));
    let log = host.log();
    let line = log.lines().find(|l| l.contains("HTTP API listening")).unwrap();
    let addr: SocketAddr = line.rsplit("addr=").next().unwrap().trim().parse().unwrap();
    (host, SocketAddr::from(([127, 0, 0, 1], addr.port())))
}

/// A token made by `refract token NAME --scope ...`: its `[[tokens]]` entry and its secret.
pub struct MadeToken {
    pub entry: String,
    pub secret: String,
}

/// Runs `refract token` as a user would.
pub fn make_token(data: &Path, name: &str, scopes: &[&str]) -> MadeToken {
    let mut cmd = refract(data);
    cmd.args(["token", name]);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stderr).unwrap().trim().to_owned();
    MadeToken { entry: String::from_utf8(out.stdout).unwrap(), secret }
}

/// `Authorization: Bearer SECRET`.
pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}
