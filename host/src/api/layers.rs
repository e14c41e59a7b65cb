//! What every request goes through: a deadline on reading its body, and a
//! JSON body on every error answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use serde_json::json;

use crate::api::error::{ApiError, server_error};

/// How long a client has to send a request body, from the moment its
/// headers arrived: at 16 MiB, the largest body, that is about 0.5 MiB/s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Gives the request body a deadline. A client that has not sent the whole
/// body by then (a body trickled at 1 byte/s, or one that never comes) gets
/// 408, and the connection is closed. Requests without a body pass as they are.
pub async fn body_deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let deadline = Box::pin(tokio::time::sleep(timeout));
    let flag = timed_out.clone();
    let request = request.map(|body| Body::new(Deadline { body, deadline, timed_out: flag }));
    let response = next.run(request).await;
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    // Whatever the handler made of its failed read, the answer is 408.
    let mut response = ApiError::BodyTimeout { timeout_ms: timeout.as_millis() as u64 }.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline has passed.
struct Deadline {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a [`Deadline`] body fails with.
#[derive(Debug, thiserror::Error)]
#[error("request body timed out")]
struct BodyTimedOut;

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Largest error body read back to be wrapped in JSON; rejections are short.
const ERROR_TEXT_LIMIT: usize = 64 * 1024;

/// Makes every error answer JSON. The API's own errors already are; this
/// catches anything else that answers 4xx or 5xx in plain text (a framework
/// rejection no handler turned into an [`ApiError`](crate::ApiError)): a 4xx keeps its text
/// as `{"error": ...}`, and a 5xx gets the generic body and an error id.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_LIMIT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    if status.is_server_error() {
        return server_error(status, &text);
    }
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(json!({ "error": message }).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn plain_text_errors_become_json() {
        let plain = (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Expected request with `Content-Type: application/json`");
        let response = json_errors(plain.into_response()).await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "Expected request with `Content-Type: application/json`");

        let empty = json_errors(StatusCode::BAD_REQUEST.into_response()).await;
        let body = axum::body::to_bytes(empty.into_body(), 1 << 16).await.unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "Bad Request");

        let failed =
            json_errors((StatusCode::INTERNAL_SERVER_ERROR, "SQLITE_CORRUPT in models.db").into_response()).await;
        let body = axum::body::to_bytes(failed.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(!body["error"].as_str().unwrap().contains("SQLITE"), "{body}");
        assert!(body["error_id"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn successes_pass_untouched() {
        let ok = json_errors((StatusCode::OK, "text").into_response()).await;
        assert_eq!(ok.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    }
}
