//! The API's error type and how each kind maps to an HTTP status and a JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::projection::host::HostError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::store::query::QueryError;

/// Why an API request failed. Every variant becomes `{"error": "..."}` with
/// a status that says whose fault it was: user mistakes are 4xx, and only a
/// failing store is a 500.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed parameter, body or JSON.
    #[error("{0}")]
    BadRequest(String),
    /// A query the collection cannot answer (bad filter, unindexed field, bad cursor or limit).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The read-model store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event store refused or failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The projection and collection exist but the document does not.
    #[error("no document `{id}` in {projection}/{collection}")]
    DocumentNotFound {
        /// Projection asked for.
        projection: String,
        /// Collection asked for.
        collection: String,
        /// Document id asked for.
        id: String,
    },
    /// No route matches the path.
    #[error("no such endpoint: {0} (see /openapi.json)")]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method not allowed on this endpoint (see /openapi.json)")]
    MethodNotAllowed,
    /// The body is over the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Limit in bytes.
        limit: usize,
    },
    /// A server-side failure that is not the client's doing.
    #[error("internal error: {0}")]
    Internal(String),
    /// The projection did not reach `min_position` in time.
    #[error(
        "projection `{projection}` did not reach position {min_position} within {timeout_ms} ms; its checkpoint is {checkpoint}"
    )]
    ConsistencyTimeout {
        /// Projection waited on.
        projection: String,
        /// Position asked for.
        min_position: u64,
        /// Checkpoint when the wait gave up.
        checkpoint: u64,
        /// How long the wait lasted.
        timeout_ms: u64,
    },
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Query(_) => StatusCode::BAD_REQUEST,
            Self::Store(StoreError::UnknownProjection(_) | StoreError::UnknownCollection { .. }) => {
                StatusCode::NOT_FOUND
            }
            Self::Store(StoreError::Query(_)) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Source(SourceError::Conflict { .. }) => StatusCode::CONFLICT,
            Self::Source(SourceError::InvalidEvent { .. }) => StatusCode::BAD_REQUEST,
            Self::Source(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DocumentNotFound { .. } | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ConsistencyTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON body: the message, plus the facts a client acts on.
    fn body(&self) -> Value {
        let mut body = json!({ "error": self.to_string() });
        match self {
            Self::ConsistencyTimeout { checkpoint, min_position, .. } => {
                body["checkpoint"] = json!(checkpoint);
                body["min_position"] = json!(min_position);
            }
            Self::Source(SourceError::Conflict { expected, actual, .. }) => {
                body["expected_version"] = json!(expected);
                body["actual_version"] = json!(actual);
            }
            _ => {}
        }
        body
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Source(e) => Self::Source(e),
            HostError::Store(e) => Self::Store(e),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::GATEWAY_TIMEOUT {
            tracing::error!(error = %self, "API request failed");
        }
        (status, Json(self.body())).into_response()
    }
}
