//! The accept loop: hyper's HTTP/1 connection builder, driven by hand
//! instead of `axum::serve`, because only the builder has a deadline on a
//! request's headers. Without one, a client trickling its headers a byte a
//! second holds a connection (and a task) forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::api::error::ApiError;

/// How long a client has to send a request's headers, counted from when
/// the connection is ready for them: from the accept, or on a kept-alive
/// connection from the previous response. So it is also how long an idle
/// keep-alive connection is kept; clients open a new one, as pools do.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting, calls `closing` (which ends open change feeds), and waits for
/// the connections' in-flight requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    closing: impl FnOnce(),
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, a connection reset before it was
                // accepted: the listener itself is fine; try again shortly.
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small responses (a token, a document) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(JsonParseErrors::new(stream)), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    closing();
    graceful.shutdown().await;
    Ok(())
}

/// A connection whose HTTP parser's own error answers get a JSON body.
///
/// hyper answers a request it cannot parse (a `<`, `>`, `"` or space left
/// unencoded in the URL, a malformed header, a URL or headers over its
/// limits) by itself, before any handler or layer runs: a bare 400, 414 or
/// 431 head with `content-length: 0`, then it closes the connection. It has
/// no hook to change that answer, so it is changed here, on its way out:
/// such a head, which no handler writes (every error of theirs has a JSON
/// body), is replaced by the same status with the JSON body of the
/// matching [`ApiError`].
pub(crate) struct JsonParseErrors<T> {
    inner: T,
    /// The replacement being written, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self { inner, replacing: None }
    }
}

/// The answer to write instead of `head` when `head` is hyper's own
/// bodiless answer to a request it could not parse.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&head[..end + 2]).ok()?;
    if !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let status_line = head.lines().next()?;
    let error = ApiError::of_parse_error(status_line.get(9..12)?.parse().ok()?)?;
    let body = error.body().to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes the replacement for `original` whole, then reports `original`
    /// written (so hyper goes on to close the connection).
    fn poll_replace(&mut self, cx: &mut Context<'_>, original: usize) -> Poll<io::Result<usize>> {
        let (bytes, done) = self.replacing.as_mut().expect("a replacement is being written");
        while *done < bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        self.replacing = None;
        Poll::Ready(Ok(original))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match replacement(buf) {
                Some(bytes) => this.replacing = Some((bytes, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replace(cx, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A head is hyper's first slice; a bodiless one is its only one.
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if this.replacing.is_none() {
            match replacement(first) {
                Some(bytes) => this.replacing = Some((bytes, 0)),
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_replace(cx, first.len())
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_parsers_bodiless_error_heads_are_replaced() {
        let hyper_head =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 19:00:00 GMT\r\n\r\n";
        let body = ApiError::Unparsable.body().to_string();
        let want = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(replacement(hyper_head).map(String::from_utf8), Some(Ok(want)));
        let long = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        let text = String::from_utf8(replacement(long).unwrap()).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
        assert!(text.ends_with(r#"{"error":"the URL is too long: send fewer or shorter parameters"}"#), "{text}");
        for kept in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"error\":\"x\"}"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"documents\":[]}",
        ] {
            assert_eq!(replacement(kept), None, "{}", String::from_utf8_lossy(kept));
        }
    }
}
