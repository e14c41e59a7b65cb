//! A plugin's stdout and stderr, sent line by line to the host's `tracing`
//! log, tagged with the projection name and rate-limited so a chatty or
//! hostile plugin cannot flood the log or grow host memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; the rest is cut (and counted as cut).
const MAX_LINE: usize = 1024;
/// Lines logged per window and stream; later ones are dropped and counted.
const LINES_PER_WINDOW: u32 = 100;
/// Length of a rate-limiting window.
const WINDOW: Duration = Duration::from_secs(1);

/// Which of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Stdout,
    Stderr,
}

/// Line assembly and the rate limit, shared by every handle the guest opens.
#[derive(Debug)]
struct LineLog {
    projection: Arc<str>,
    channel: Channel,
    partial: Vec<u8>,
    window_start: Instant,
    lines_in_window: u32,
    dropped: u64,
}

impl LineLog {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.push_partial(&bytes[..nl]);
            self.emit();
            bytes = &bytes[nl + 1..];
        }
        self.push_partial(bytes);
        if self.partial.len() >= MAX_LINE {
            self.emit();
        }
    }

    /// Keeps at most `MAX_LINE` bytes of the current line: the host's memory
    /// stays bounded whatever the guest writes without a newline.
    fn push_partial(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if !self.admit(Instant::now()) {
            return;
        }
        let (p, stream) = (&self.projection, self.channel.name());
        match self.channel {
            Channel::Stdout => tracing::info!(projection = %p, stream, "{line}"),
            Channel::Stderr => tracing::warn!(projection = %p, stream, "{line}"),
        }
    }

    /// Whether a line may be logged now; reports lines dropped in the last window.
    fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            if self.dropped > 0 {
                tracing::warn!(
                    projection = %self.projection,
                    stream = self.channel.name(),
                    dropped = self.dropped,
                    "plugin output rate-limited: lines dropped"
                );
            }
            self.window_start = now;
            self.lines_in_window = 0;
            self.dropped = 0;
        }
        if self.lines_in_window >= LINES_PER_WINDOW {
            self.dropped += 1;
            return false;
        }
        self.lines_in_window += 1;
        true
    }
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A guest stdout or stderr that writes to the host log.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput(Arc<Mutex<LineLog>>);

impl GuestOutput {
    pub(crate) fn new(projection: &str, channel: Channel) -> Self {
        Self(Arc::new(Mutex::new(LineLog {
            projection: projection.into(),
            channel,
            partial: Vec::new(),
            window_start: Instant::now(),
            lines_in_window: 0,
            dropped: 0,
        })))
    }

    fn write_bytes(&self, bytes: &[u8]) {
        // A poisoned lock only means a previous write panicked; the log state is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(bytes);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> LineLog {
        LineLog {
            projection: "p".into(),
            channel: Channel::Stdout,
            partial: Vec::new(),
            window_start: Instant::now(),
            lines_in_window: 0,
            dropped: 0,
        }
    }

    #[test]
    fn lines_are_cut_and_memory_stays_bounded() {
        let mut l = log();
        l.write(&vec![b'x'; MAX_LINE * 10]);
        assert!(l.partial.is_empty(), "a full line is emitted at once");
        l.write(b"abc");
        assert_eq!(l.partial, b"abc");
        l.write(b"def\nghi");
        assert_eq!(l.partial, b"ghi");
    }

    #[test]
    fn rate_limit_drops_and_resets() {
        let mut l = log();
        let start = l.window_start;
        for _ in 0..LINES_PER_WINDOW {
            assert!(l.admit(start));
        }
        assert!(!l.admit(start));
        assert_eq!(l.dropped, 1);
        assert!(l.admit(start + WINDOW));
        assert_eq!((l.dropped, l.lines_in_window), (0, 1));
    }
}
