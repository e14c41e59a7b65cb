//! What every answer goes through: a JSON body on every error.

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::json;

use crate::api::error::server_error;

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
    use axum::response::IntoResponse;

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
