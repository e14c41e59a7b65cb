//! A `refract run` process serving HTTP on a fresh data dir, with bank
//! events appended before it starts: for tests that watch a host from the
//! outside (the console in a browser, `/metrics`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use super::BankEvent;

/// A child process killed when dropped (a test that fails midway leaves none behind).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host, its address, its folders and the events appended before it started.
pub struct RunningHost {
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub plugins: PathBuf,
    pub events: Vec<BankEvent>,
    pub child: Killed,
    _dir: tempfile::TempDir,
}

/// Appends `preload` bank events (over 200 accounts) to a fresh data dir,
/// then starts `refract run --http 127.0.0.1:0` on it with copies of the
/// named plugins and the `extra` arguments.
pub async fn start(preload: usize, plugins: &[&str], extra: &[&str]) -> RunningHost {
    start_with(super::bank_events(200, preload, 7), plugins, extra).await
}

/// As [`start`], with these events appended before the host starts.
pub async fn start_with(events: Vec<BankEvent>, plugins: &[&str], extra: &[&str]) -> RunningHost {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let stores = super::Stores::open(&data).await;
        super::append_all(stores.events.as_ref(), &events).await;
    }
    let plugins = super::plugins_dir(dir.path(), plugins);
    let (child, addr) = run(&data, &plugins, extra);
    RunningHost { addr, data, plugins, events, child, _dir: dir }
}

fn run(data: &std::path::Path, plugins: &std::path::Path, extra: &[&str]) -> (Killed, SocketAddr) {
    let mut child = super::cli::refract(data)
        .args(["run", "--http", "127.0.0.1:0", "--plugins"])
        .arg(plugins)
        .args(extra)
        .env("RUST_LOG", "refract=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = super::http::listening_addr(&mut child);
    (Killed(child), addr)
}

impl RunningHost {
    /// Stops the host as an operator does (SIGTERM, then waits for it to
    /// exit) and starts it again on the same data dir and plugins with
    /// `extra` arguments, on a new port.
    pub fn restart(&mut self, extra: &[&str]) {
        let pid = self.child.0.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.child.0.wait().unwrap();
        (self.child, self.addr) = run(&self.data, &self.plugins, extra);
    }
}
