//! A plugin's stdout and stderr, sent line by line to the host's `tracing`
//! log, tagged with the projection name and rate-limited so a chatty or
//! hostile plugin cannot flood the log or grow host memory. Messages of the
//! `log` import get the same cut and rate limit, counted as a third stream.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::Level;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; the rest is cut (and counted as cut).
const MAX_LINE: usize = 1024;
/// Lines logged per window and stream; later ones are dropped and counted.
const LINES_PER_WINDOW: u32 = 100;
/// Length of a rate-limiting window.
const WINDOW: Duration = Duration::from_secs(1);

/// Which of the three streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Stdout,
    Stderr,
    /// The `log` import.
    Log,
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
            Channel::Stdout | Channel::Log => tracing::info!(projection = %p, stream, "{line}"),
            Channel::Stderr => tracing::warn!(projection = %p, stream, "{line}"),
        }
    }

    /// A message of the `log` import: its first `MAX_LINE` bytes, under the
    /// stream's rate limit, at the level the plugin asked for.
    fn message(&mut self, level: Level, message: &str) {
        if !level_enabled(level) || !self.admit(Instant::now()) {
            return;
        }
        let mut end = message.len().min(MAX_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let (p, line) = (&self.projection, &message[..end]);
        // `tracing`'s macros need the level as a constant.
        if level == Level::ERROR {
            tracing::error!(projection = %p, "{line}")
        } else if level == Level::WARN {
            tracing::warn!(projection = %p, "{line}")
        } else if level == Level::INFO {
            tracing::info!(projection = %p, "{line}")
        } else if level == Level::DEBUG {
            tracing::debug!(projection = %p, "{line}")
        } else {
            tracing::trace!(projection = %p, "{line}")
        }
    }

    /// Reports lines dropped in the current window and not reported yet.
    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                projection = %self.projection,
                stream = self.channel.name(),
                dropped = self.dropped,
                "plugin output rate-limited: lines dropped"
            );
        }
        self.dropped = 0;
    }

    /// Whether a line may be logged now; reports lines dropped in the last window.
    fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= WINDOW {
            self.report_dropped();
            self.window_start = now;
            self.lines_in_window = 0;
        }
        if self.lines_in_window >= LINES_PER_WINDOW {
            self.dropped += 1;
            return false;
        }
        self.lines_in_window += 1;
        true
    }
}

impl Drop for LineLog {
    /// The last window's count, which no later line would report.
    fn drop(&mut self) {
        self.report_dropped();
    }
}

/// Whether the host logs `level` at all: messages it would not log do not
/// count against the plugin's rate limit.
fn level_enabled(level: Level) -> bool {
    if level == Level::ERROR {
        tracing::enabled!(Level::ERROR)
    } else if level == Level::WARN {
        tracing::enabled!(Level::WARN)
    } else if level == Level::INFO {
        tracing::enabled!(Level::INFO)
    } else if level == Level::DEBUG {
        tracing::enabled!(Level::DEBUG)
    } else {
        tracing::enabled!(Level::TRACE)
    }
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Log => "log",
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

    /// Logs a message of the `log` import (made for [`Channel::Log`]).
    pub(crate) fn log(&self, level: Level, message: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).message(level, message);
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
