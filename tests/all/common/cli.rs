//! Running the `refract` binary as a user does: one-shot commands, and a
//! `refract run` in the background whose log the test can wait on and which
//! it can signal.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `refract --data-dir DATA`, ready for more arguments.
pub fn refract(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_refract"));
    cmd.arg("--data-dir").arg(data);
    cmd
}

/// Runs a command to the end.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("starting refract")
}

/// Runs a command that must succeed; its standard output.
pub fn succeed(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A `refract` process in the background, its standard error collected
/// line by line as it comes.
pub struct Background {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Background {
    /// Starts `cmd` with info logs on standard error.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "refract=info,warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting refract");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; panics after `timeout` or if the process ends first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("refract ended ({status}) before logging `{needle}`:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no `{needle}` logged within {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGINT`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait on it.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to end; kills it and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("refract did not end within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A failed test must not leave a host running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
