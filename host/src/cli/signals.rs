//! Ctrl-C (SIGINT) and SIGTERM: the requests to stop a running host.
//!
//! The handlers are installed before anything slow happens, so a signal that
//! arrives while the host is starting (compiling a large component can take
//! many seconds) is seen at once instead of being queued until the host
//! reaches its main loop. A service manager sends SIGTERM, a terminal sends
//! SIGINT: both mean the same clean stop. A second signal while that stop is
//! under way ends the process at once, as a user pressing Ctrl-C twice
//! expects; committed work is safe either way, since every batch commits
//! with its checkpoint in one transaction.

use std::future::Future;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The exit status of a process ended by a second signal: 128 + SIGINT, as shells report Ctrl-C.
const FORCED_EXIT: i32 = 130;

/// Whether a stop has been requested; cheap to clone and to await many times.
#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Installs the SIGINT and SIGTERM handlers; from now on neither signal
    /// ends the process by its default action.
    pub fn listen() -> Result<Self> {
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let (tx, requested) = watch::channel(false);
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "stop requested; shutting down (send it again to exit at once)");
            tx.send_replace(true);
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            tracing::warn!("second signal: exiting without waiting for the shutdown");
            std::process::exit(FORCED_EXIT);
        });
        Ok(Self { requested })
    }

    /// Completes once a stop has been requested.
    pub async fn requested(&self) {
        // An error means the listener task is gone, which happens only when
        // the runtime itself is shutting down: treat it as a request too.
        let _ = self.requested.clone().wait_for(|stop| *stop).await;
    }

    /// Runs `work` unless a stop is requested first; `None` means it was
    /// abandoned (dropped at its current await point).
    pub async fn unless_requested<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            // A request that is already pending wins over work that is also ready.
            biased;
            _ = self.requested() => None,
            out = work => Some(out),
        }
    }
}
