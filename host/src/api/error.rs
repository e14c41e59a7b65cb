//! The API's error type and how each kind maps to an HTTP status and a JSON body.

use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::db::DbErrorKind;
use crate::projection::admin::AdminError;
use crate::projection::host::HostError;
use crate::projection::verify::VerifyError;
use crate::ready::{ProjectionCheckpoint, list};
use crate::source::SourceError;
use crate::store::StoreError;
use crate::store::query::QueryError;

/// Why an API request failed. Every variant becomes `{"error": "..."}` with
/// a status that says whose fault it was: user mistakes are 4xx, and only a
/// failing store is a 500. A 500's body says only that the server failed,
/// with an `error_id` under which the log has the whole error: backend text
/// (SQL, file paths) never reaches the client.
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
    /// No events were ever appended to the stream.
    #[error("no stream `{0}`: no events were appended to it")]
    NoStream(String),
    /// No route matches the path.
    #[error("no such endpoint: {0} (see /openapi.json)")]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method not allowed on this endpoint (see /openapi.json)")]
    MethodNotAllowed,
    /// The host reads a source it cannot append to.
    #[error("this host reads a read-only event source: append where the events come from")]
    ReadOnlySource,
    /// The body is over the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Limit in bytes.
        limit: usize,
    },
    /// The body did not arrive in time (a client sending it slowly, or not at all).
    #[error("request body not received within {timeout_ms} ms")]
    BodyTimeout {
        /// How long the server waited for the whole body.
        timeout_ms: u64,
    },
    /// The request line or a header is not valid HTTP, as the HTTP parser
    /// found before any handler ran; most often a URL character left
    /// unencoded. See `server::JsonParseErrors`.
    #[error(
        "the request is not valid HTTP: most often a URL holds a character that must be percent-encoded (a space, \", <, >, \\, ^, `, {{, | or }}), e.g. filter=balance%3E%3D100 for balance>=100; else the request line or a header is malformed"
    )]
    Unparsable,
    /// The URL is longer than the HTTP parser takes.
    #[error("the URL is too long: send fewer or shorter parameters")]
    UriTooLong,
    /// The request's headers are larger than the HTTP parser takes.
    #[error("the request's headers are too large")]
    HeadersTooLarge,
    /// A server-side failure that is not the client's doing.
    #[error("internal error: {0}")]
    Internal(String),
    /// The projection's present state does not allow the action; the
    /// message says why and what to do.
    #[error("{0}")]
    Conflict(String),
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
    /// Some active projections did not reach `min_position` in time (`/ready`).
    #[error("not every projection reached position {min_position} within {timeout_ms} ms; behind: {}", list(behind))]
    NotReady {
        /// Position asked for.
        min_position: u64,
        /// How long the wait lasted.
        timeout_ms: u64,
        /// The projections still behind, with their checkpoints.
        behind: Vec<ProjectionCheckpoint>,
    },
    /// Some active projections are faulted, so waiting cannot make them
    /// ready (`/ready`).
    #[error("faulted projections will not become ready until retried: {}", list(faulted))]
    Faulted {
        /// The faulted projections, with their checkpoints and errors.
        faulted: Vec<ProjectionCheckpoint>,
    },
}

impl ApiError {
    /// The status this error is answered with. Only what the server alone
    /// can cause is a 5xx; any other refusal of what the client sent,
    /// including kinds of store or event errors added later, and a value
    /// from the request that the database refuses to hold, is a 400.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Query(_) | Self::Unparsable => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Store(e) => match e {
                StoreError::UnknownProjection(_) | StoreError::UnknownCollection { .. } => StatusCode::NOT_FOUND,
                StoreError::AdminRefused { .. } => StatusCode::CONFLICT,
                StoreError::ChangesPruned { .. } => StatusCode::GONE,
                StoreError::NotActiveGeneration { .. } => StatusCode::CONFLICT,
                StoreError::Database(db) if db.kind() == DbErrorKind::Refused => StatusCode::BAD_REQUEST,
                // Depends on the data and the load, not only on the request.
                StoreError::TimeLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Database(_)
                | StoreError::Corrupt { .. }
                | StoreError::CheckpointMoved { .. }
                | StoreError::Retired { .. }
                | StoreError::NameTooLong { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::Source(e) => match e {
                SourceError::Conflict { .. } => StatusCode::CONFLICT,
                SourceError::Database(db) if db.kind() == DbErrorKind::Refused => StatusCode::BAD_REQUEST,
                SourceError::Database(_)
                | SourceError::Sqlite { .. }
                | SourceError::Corrupt(_)
                | SourceError::Misconfigured(_)
                | SourceError::Truncated { .. }
                | SourceError::Recreated { .. }
                | SourceError::BadEvent { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                SourceError::Nats(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::DocumentNotFound { .. } | Self::NoRoute(_) | Self::NoStream(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed | Self::ReadOnlySource => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::ConsistencyTimeout { .. } | Self::NotReady { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Faulted { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the HTTP parser's own answer with `status` (hyper answers a
    /// request it cannot parse by itself, with an empty body) stands for.
    pub(crate) fn of_parse_error(status: u16) -> Option<Self> {
        match status {
            400 => Some(Self::Unparsable),
            414 => Some(Self::UriTooLong),
            431 => Some(Self::HeadersTooLarge),
            _ => None,
        }
    }

    /// The JSON body: the message, plus the facts a client acts on.
    pub(crate) fn body(&self) -> Value {
        let mut body = json!({ "error": self.to_string() });
        match self {
            Self::ConsistencyTimeout { checkpoint, min_position, .. } => {
                body["checkpoint"] = json!(checkpoint);
                body["min_position"] = json!(min_position);
            }
            Self::Store(StoreError::TimeLimit { limit_ms }) => body["limit_ms"] = json!(limit_ms),
            Self::NotReady { min_position, behind, .. } => {
                body["min_position"] = json!(min_position);
                body["behind"] = json!(behind);
            }
            Self::Faulted { faulted } => body["faulted"] = json!(faulted),
            Self::Store(StoreError::ChangesPruned { generation, first, .. }) => {
                body["generation"] = json!(generation);
                body["first"] = json!(first);
            }
            Self::Store(StoreError::NotActiveGeneration { active, .. }) => body["generation"] = json!(active),
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

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Store(e) => Self::Store(e),
            VerifyError::Source(e) => Self::Source(e),
            e @ (VerifyError::DeadLetters { .. }
            | VerifyError::Faulted { .. }
            | VerifyError::Rebuilding { .. }
            | VerifyError::AlreadyRunning { .. }) => Self::Conflict(e.to_string()),
            // The module or the host failed: logged under an error id,
            // since the message may name host paths.
            e @ (VerifyError::Plugin(_) | VerifyError::Refused(_) | VerifyError::ModuleUnavailable { .. }) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Store(e) => Self::Store(e),
            AdminError::Source(e) => Self::Source(e),
            e @ AdminError::BeyondHead { .. } => Self::BadRequest(e.to_string()),
            AdminError::StillRunning { projection, waited } => Self::Store(StoreError::AdminRefused {
                projection,
                reason: format!("a host still ran it {} s after the pause; try again", waited.as_secs()),
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A 504 is the client's own deadline, and its body holds only
        // positions; a faulted projection's 503 holds what `GET /projections`
        // shows anyway; a read stopped by the time limit names only the limit.
        // None of them is a failure to hide behind an error id.
        let reported = matches!(
            self,
            Self::ConsistencyTimeout { .. }
                | Self::NotReady { .. }
                | Self::Faulted { .. }
                | Self::Store(StoreError::TimeLimit { .. })
        );
        if status.is_server_error() && !reported {
            return server_error(status, &self);
        }
        (status, Json(self.body())).into_response()
    }
}

/// A 5xx answer: the error is logged in full under a fresh id, and the
/// client gets the id alone.
pub(crate) fn server_error(status: StatusCode, error: &dyn std::fmt::Display) -> Response {
    let id = error_id();
    tracing::error!(error_id = %id, error = %error, "API request failed");
    let body = json!({
        "error": format!("internal server error; the server log has the details under error id {id}"),
        "error_id": id,
    });
    (status, Json(body)).into_response()
}

/// An id unique within the process and unlikely to repeat across restarts:
/// a counter, scrambled by a per-process random key.
fn error_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static KEY: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);
    format!("{:016x}", KEY.hash_one(NEXT.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DatabaseError;

    async fn json_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_server_error_hides_backend_text_behind_an_id() {
        let backend = DatabaseError::new(DbErrorKind::Other, "near \"SELECT\": syntax error in rm_secret_g1__accounts");
        let response = ApiError::Store(StoreError::Database(backend)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let first = json_of(response).await;
        let (text, id) = (first["error"].as_str().unwrap(), first["error_id"].as_str().unwrap());
        assert!(!text.contains("SELECT") && !text.contains("rm_secret"), "{text}");
        assert!(text.contains(id) && id.len() == 16, "{first}");

        let second = json_of(ApiError::Internal("disk I/O error in /var/lib/refract".into()).into_response()).await;
        assert!(!second["error"].as_str().unwrap().contains("/var/lib"), "{second}");
        assert_ne!(second["error_id"], first["error_id"], "each failure gets its own id");
    }

    #[tokio::test]
    async fn client_errors_keep_their_message() {
        let response = ApiError::Query(QueryError::BadCursor).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(json_of(response).await["error"].as_str().unwrap().contains("bad cursor"));
        let invalid = SourceError::InvalidEvent { stream_id: "s".into(), index: 0, reason: "empty".into() };
        assert_eq!(ApiError::Source(invalid).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Store(StoreError::Query(QueryError::BadLimit(0))).status(), StatusCode::BAD_REQUEST);
        // PostgreSQL refusing a NUL in an id or a payload: the request's value, not the server.
        let refused = || DatabaseError::new(DbErrorKind::Refused, "invalid byte sequence for encoding \"UTF8\": 0x00");
        assert_eq!(ApiError::Store(StoreError::Database(refused())).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Source(SourceError::Database(refused())).status(), StatusCode::BAD_REQUEST);
        let full = DatabaseError::new(DbErrorKind::Full, "database or disk is full");
        assert_eq!(ApiError::Source(SourceError::Database(full)).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
