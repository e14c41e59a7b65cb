//! The endpoints: append, projection status, documents, change feed, metrics, health.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::consistency::wait_for;
use crate::api::error::ApiError;
use crate::api::params::{Consistency, QueryParams};
use crate::api::{ApiState, openapi, sse};
use crate::model::event::{AppendRequest, ExpectedVersion, NewEvent};
use crate::projection::host::ProjectionStatus;
use crate::store::ProjectionRecord;
use crate::store::query::Page;

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/streams/{stream}/events", post(append))
        .route("/projections", get(list_projections))
        .route("/projections/{name}", get(one_projection))
        .route("/projections/{name}/changes", get(changes))
        .route("/projections/{name}/{collection}", get(query))
        .route("/projections/{name}/{collection}/{id}", get(document))
        .fallback(|uri: Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

type Reply<T = Json<Value>> = Result<T, ApiError>;

/// Turns a path that did not decode (bad percent-encoding) into a 400.
fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t).map_err(|e| ApiError::BadRequest(format!("bad path: {}", e.body_text())))
}

/// A JSON response from text built by hand: documents are stored as JSON
/// text, so splicing them in avoids parsing and re-printing every one.
fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn health(State(s): State<ApiState>) -> Reply {
    let head = s.events().head().await?;
    Ok(Json(json!({ "status": "ok", "head": head })))
}

async fn metrics(State(s): State<ApiState>) -> Reply<Response> {
    let status = s.status().await?;
    let text = s.metrics().render(&status);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn openapi_json() -> Json<Value> {
    Json(openapi::document())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    #[serde(default)]
    expected_version: Value,
    events: Vec<EventBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    #[serde(rename = "type")]
    event_type: String,
    payload: Value,
    #[serde(default)]
    metadata: Option<Value>,
}

fn expected_version(v: &Value) -> Result<ExpectedVersion, ApiError> {
    match v {
        Value::Null => Ok(ExpectedVersion::Any),
        Value::Number(n) => n
            .as_u64()
            .map(ExpectedVersion::Exact)
            .ok_or_else(|| ApiError::BadRequest(format!("`expected_version` must be a non-negative integer, not {n}"))),
        Value::String(s) => s.parse().map_err(ApiError::BadRequest),
        other => Err(ApiError::BadRequest(format!(
            "`expected_version` must be a number, \"any\" or \"no-stream\", not {other}"
        ))),
    }
}

async fn append(
    State(s): State<ApiState>,
    stream: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let stream = path(stream)?;
    let body = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge { limit: BODY_LIMIT },
        _ => ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text())),
    })?;
    let body: AppendBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "bad append body ({e}); send {{\"events\": [{{\"type\": \"...\", \"payload\": {{...}}}}], \"expected_version\": N}}"
        ))
    })?;
    let request = AppendRequest {
        stream_id: stream,
        expected: expected_version(&body.expected_version)?,
        events: body
            .events
            .into_iter()
            .map(|e| NewEvent {
                event_type: e.event_type,
                payload: e.payload.to_string(),
                metadata: e.metadata.map_or_else(|| "{}".to_owned(), |m| m.to_string()),
            })
            .collect(),
    };
    let appended = s.events().append(&[request]).await?;
    let a = appended[0];
    Ok(Json(json!({
        "position": a.last_position,
        "first_position": a.first_position,
        "stream_version": a.stream_version,
    })))
}

fn status_json(s: &ApiState, status: ProjectionStatus) -> Value {
    let rate = s.metrics().events_per_second(&status.name);
    let mut v = serde_json::to_value(status).unwrap_or_default();
    v["events_per_second"] = json!(rate);
    v
}

fn no_check(_: &ProjectionRecord) -> Result<(), ApiError> {
    Ok(())
}

async fn list_projections(State(s): State<ApiState>, RawQuery(raw): RawQuery) -> Reply {
    let c = Consistency::parse(raw.as_deref())?;
    if c.min_position.is_some() {
        for record in s.models().projections().await? {
            wait_for(&s, &record.key.projection, c, no_check).await?;
        }
    }
    let status = s.status().await?;
    Ok(Json(Value::Array(status.into_iter().map(|p| status_json(&s, p)).collect())))
}

async fn one_projection(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let name = path(name)?;
    let c = Consistency::parse(raw.as_deref())?;
    let record = wait_for(&s, &name, c, no_check).await?;
    let head = s.events().head().await?;
    Ok(Json(status_json(&s, ProjectionStatus::new(record, head))))
}

async fn changes(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply<Response> {
    let name = path(name)?;
    if let Some(raw) = raw.filter(|r| !r.is_empty()) {
        return Err(ApiError::BadRequest(format!("the change feed takes no parameters, got `{raw}`")));
    }
    // Subscribe before reading the checkpoint so `ready` and the first
    // `commit` leave no gap between them.
    let notices = s.subscribe();
    let record = s.models().projection(&name).await?;
    Ok(sse::feed(name, record.checkpoint, notices, s.closing()).into_response())
}

async fn query(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply<Response> {
    let (name, collection) = path(p)?;
    let params = QueryParams::parse(raw.as_deref())?;
    wait_for(&s, &name, params.consistency, |r| Ok(r.collection(&collection).map(drop)?)).await?;
    let models = s.models();
    if params.count {
        let count = models.count_documents(&name, &collection, &params.query.filters).await?;
        return Ok(Json(json!({ "count": count })).into_response());
    }
    let page = models.query_documents(&name, &collection, &params.query).await?;
    Ok(json_text(page_json(&page)))
}

/// `{"documents": [{"id": ..., "document": {...}}, ...], "next_cursor": ...}`
fn page_json(page: &Page) -> String {
    let mut out =
        String::with_capacity(64 + page.documents.iter().map(|d| d.body.len() + d.id.len() + 32).sum::<usize>());
    out.push_str("{\"documents\":[");
    for (i, d) in page.documents.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&document_json(&d.id, &d.body));
    }
    out.push_str("],\"next_cursor\":");
    out.push_str(&Value::from(page.next_cursor.clone()).to_string());
    out.push('}');
    out
}

fn document_json(id: &str, body: &str) -> String {
    format!("{{\"id\":{},\"document\":{body}}}", Value::from(id))
}

async fn document(
    State(s): State<ApiState>,
    p: Result<Path<(String, String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply<Response> {
    let (name, collection, id) = path(p)?;
    let c = Consistency::parse(raw.as_deref())?;
    wait_for(&s, &name, c, |r| Ok(r.collection(&collection).map(drop)?)).await?;
    match s.models().get_document(&name, &collection, &id).await? {
        Some(body) => Ok(json_text(document_json(&id, &body))),
        None => Err(ApiError::DocumentNotFound { projection: name, collection, id }),
    }
}
