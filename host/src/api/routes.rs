//! The endpoints: append, projection status, documents, change feed, metrics,
//! health, and the one table ([`ROUTES`]) that both the router and the
//! OpenAPI document are built from.

use std::sync::LazyLock;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{self, Access, Guard, Scope};
use crate::api::consistency::{target, wait_for};
use crate::api::cors;
use crate::api::error::ApiError;
use crate::api::openapi::{
    COLLECTION, CONSISTENCY, In, MIN_POSITION, Method, NAME, Operation, Param, Success, TIMEOUT_MS, json_reply,
    schema_ref, string_schema,
};
use crate::api::params::{Consistency, Level, QueryParams};
use crate::api::ready::{self, Active};
use crate::api::{ApiState, change_log, layers, openapi, sse};
use crate::model::event::{AppendRequest, ExpectedVersion, NewEvent};
use crate::projection::host::ProjectionStatus;
use crate::store::ProjectionRecord;
use crate::store::query::{Page, query_warnings};

/// Largest request body accepted; larger ones get 413.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// One endpoint: its method and path template, the handler the router
/// serves it with, and what the OpenAPI document says about it.
pub struct Route {
    /// The method it answers (any other gets 405).
    pub method: Method,
    /// The path template, `{param}` segments as axum and OpenAPI both write them.
    pub path: &'static str,
    /// Who may call it: anyone, or a token with a scope (when the host has tokens).
    pub access: Access,
    /// Builds the handler for the method filter of [`Route::method`], so the
    /// router cannot serve a method the table does not name.
    pub(crate) handler: fn(MethodFilter) -> MethodRouter<ApiState>,
    /// Its description in `/openapi.json`.
    pub doc: Operation,
}

/// Every endpoint of the API. The router and `/openapi.json` are both built
/// from this table and from nothing else.
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/streams/{stream}/events",
        access: Access::Scoped(Scope::Append),
        handler: |m| on(m, append),
        doc: Operation {
            summary: "Append events to a stream, atomically",
            description: None,
            params: &[Param {
                name: "stream",
                location: In::Path,
                description: "Stream id, 1 to 256 bytes.",
                schema: string_schema,
            }],
            body: Some("AppendBody"),
            ok: json_reply("Appended. `position` is the consistency token.", || schema_ref("Appended")),
            errors: &[400, 408, 409, 413, 500],
        },
    },
    Route {
        method: Method::Get,
        path: "/projections",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, list_projections),
        doc: Operation {
            summary: "Status of every projection",
            description: None,
            params: &[CONSISTENCY, MIN_POSITION, TIMEOUT_MS],
            body: None,
            ok: json_reply(
                "One entry per projection generation, then one per module being compiled (`state`: `compiling`).",
                || json!({ "type": "array", "items": { "oneOf": [schema_ref("ProjectionStatus"), schema_ref("Compiling")] } }),
            ),
            errors: &[400, 504, 500],
        },
    },
    Route {
        method: Method::Get,
        path: "/projections/{name}",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, one_projection),
        doc: Operation {
            summary: "Status of one projection",
            description: None,
            params: &[NAME, CONSISTENCY, MIN_POSITION, TIMEOUT_MS],
            body: None,
            ok: json_reply("Status.", || schema_ref("ProjectionStatus")),
            errors: &[400, 404, 504, 500],
        },
    },
    crate::api::rebuild::ROUTE,
    crate::api::verify::ROUTE,
    crate::api::dead_letters::ROUTE,
    Route {
        method: Method::Get,
        path: "/projections/{name}/changes",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, changes),
        doc: Operation {
            summary: "The change feed: live commits, or the durable change log as a stream or as JSON pages",
            description: Some(
                "Without parameters or `Last-Event-ID`: the live feed. First event `ready` with {projection, checkpoint}. Then `commit` per batch with {projection, generation, checkpoint, events, changed: [{collection, id}]} and the checkpoint as the event id. `lagged` with {missed_notices} if the client fell behind.\n\nWith `after`, `generation`, `limit` or `consumer`, or a `Last-Event-ID` of the form `generation:sequence`: the change log of the active generation, from the position asked for (`after`; else the consumer's acknowledged position; else the start). With `Accept: text/event-stream` (or `Last-Event-ID`) as events: `ready` with {projection, generation, after, head}, then `change` per entry with {generation, sequence, checkpoint, collection, id, kind (created, updated or deleted), recorded_at, document (not for deletes)} and id `generation:sequence`; `reset` with {projection, generation} when the position is not in the active generation's log (a rebuild was swapped in: read the whole model again), after which the new log follows from its start; `gone` if retention overtook the stream, which then ends. Otherwise one JSON page (schema ChangePage). A position whose entries were pruned gets 410. A collection named `changes` cannot be listed through /projections/{name}/{collection}.",
            ),
            params: &[
                NAME,
                Param {
                    name: "after",
                    location: In::Query,
                    description: "Entries after this sequence (default: the consumer's acknowledged sequence, else 0).",
                    schema: || json!({ "type": "integer", "minimum": 0 }),
                },
                Param {
                    name: "generation",
                    location: In::Query,
                    description: "The generation `after` belongs to; if it is not the active one, the answer is a reset.",
                    schema: || json!({ "type": "integer", "minimum": 1 }),
                },
                Param {
                    name: "limit",
                    location: In::Query,
                    description: "Entries per page, 1 to 10000 (default 1000).",
                    schema: || json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
                },
                Param {
                    name: "consumer",
                    location: In::Query,
                    description: "A named consumer: without `after`, start after what it acknowledged.",
                    schema: string_schema,
                },
            ],
            body: None,
            ok: Success {
                description: "An event stream, or a ChangePage as JSON.",
                media_type: "text/event-stream",
                schema: string_schema,
            },
            errors: &[400, 404, 410, 500],
        },
    },
    Route {
        method: Method::Post,
        path: "/projections/{name}/changes/consumers/{consumer}/ack",
        handler: |m| on(m, acknowledge),
        access: Access::Scoped(Scope::Read),
        doc: Operation {
            summary: "Acknowledge a named consumer's change-log position",
            description: Some(
                "Records that the consumer processed everything up to `sequence` of `generation` (which must be the active generation). Reading the feed with `consumer` then starts after it. An acknowledgement never moves a consumer back within a generation; the answer has the position stored.",
            ),
            params: &[
                NAME,
                Param {
                    name: "consumer",
                    location: In::Path,
                    description: "Consumer name: 1 to 128 letters, digits, `_`, `.` or `-`.",
                    schema: string_schema,
                },
            ],
            body: Some("AckBody"),
            ok: json_reply("The stored position.", || schema_ref("Ack")),
            errors: &[400, 404, 409, 500],
        },
    },
    Route {
        method: Method::Get,
        path: "/projections/{name}/{collection}",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, query),
        doc: Operation {
            summary: "Query a collection: filters, full-text search, order, cursor paging",
            description: None,
            params: &[
                NAME,
                COLLECTION,
                Param {
                    name: "filter",
                    location: In::Query,
                    description: "Repeatable; all must hold. `field=value`, `field!=value`, `field>value`, `field>=value`, `field<value`, `field<=value` or `field=in:[v1,v2]`, on an indexed field or `id`. A value that is valid JSON is compared as JSON, anything else as a string (quote a string starting with `=`, `!`, `<` or `>` as JSON: an operator typo such as `>>` or `=>` is a 400). Encode it: `filter=balance%3E%3D100`. A `<`, `<=`, `>` or `>=` with a string on a field that holds numbers answers with a `warnings` list.",
                    schema: || json!({ "type": "array", "items": { "type": "string" } }),
                },
                Param {
                    name: "search",
                    location: In::Query,
                    description: "Full-text search in the collection's search fields (the manifest's `search` list): documents holding every word, the last as a prefix (`ada lov` finds \"Ada Lovelace\"). Words are letters and digits; case is ignored. Combines with `filter`, `order` and paging; without `order`, best matches come first (ties by id). Quotes, `*`, `(`, `)`, `:`, `^`, `&`, `|`, `!`, `{`, `}`, `<`, `>` and the words `AND`, `OR`, `NOT`, `NEAR` in capitals are refused with a 400, as is a search of a collection with no search fields. With `count=true`, the number of matches.",
                    schema: string_schema,
                },
                Param {
                    name: "order",
                    location: In::Query,
                    description: "Indexed field or `id` to sort by; prefix `-` for descending. Ties are broken by id. Default: `id`, or best match first with `search`.",
                    schema: string_schema,
                },
                Param {
                    name: "limit",
                    location: In::Query,
                    description: "Page size, 1 to 10000 (default 100).",
                    schema: || json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
                },
                Param {
                    name: "cursor",
                    location: In::Query,
                    description: "`next_cursor` of the previous page of the same query: same `order`, `filter`s and `search` (`limit` may change). A cursor of another query is a 400 saying what differs.",
                    schema: string_schema,
                },
                Param {
                    name: "count",
                    location: In::Query,
                    description: "Return only `{\"count\": N}`, the number of matches.",
                    schema: || json!({ "type": "boolean" }),
                },
                CONSISTENCY,
                MIN_POSITION,
                TIMEOUT_MS,
            ],
            body: None,
            ok: json_reply(
                "A page, or a count when `count=true`.",
                || json!({ "oneOf": [schema_ref("Page"), { "type": "object", "properties": { "count": { "type": "integer" }, "warnings": schema_ref("Warnings") } }] }),
            ),
            errors: &[400, 404, 504, 500],
        },
    },
    Route {
        method: Method::Get,
        path: "/projections/{name}/{collection}/{id}",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, document),
        doc: Operation {
            summary: "One document",
            description: None,
            params: &[
                NAME,
                COLLECTION,
                Param { name: "id", location: In::Path, description: "Document id.", schema: string_schema },
                CONSISTENCY,
                MIN_POSITION,
                TIMEOUT_MS,
            ],
            body: None,
            ok: json_reply("The document.", || schema_ref("Document")),
            errors: &[400, 404, 504, 500],
        },
    },
    crate::api::aggregate::ROUTE,
    crate::api::admin::PAUSE,
    crate::api::admin::RESUME,
    crate::api::admin::RESET,
    crate::api::admin::RETRY,
    crate::api::admin::DROP,
    crate::api::events::STREAM_ROUTE,
    crate::api::events::LOG_ROUTE,
    crate::api::console::PAGE,
    crate::api::console::STYLE,
    crate::api::console::SCRIPT,
    Route {
        method: Method::Get,
        path: "/ready",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, ready::ready),
        doc: Operation {
            summary: "Wait until every active projection has committed the events up to a position",
            description: Some(
                "Counts projections that do not subscribe to the events too: a checkpoint moves past events a projection skips. 200 when all are there; 503 at once when an active projection is faulted (`faulted` names each with its error); 504 after `timeout_ms` with `behind`, the projections still behind and their checkpoints.",
            ),
            params: &[
                Param {
                    name: "min_position",
                    location: In::Query,
                    description: "The position to wait for (the `position` an append returned). Default: the head of the log when the request arrives.",
                    schema: || json!({ "type": "integer", "minimum": 0 }),
                },
                TIMEOUT_MS,
            ],
            body: None,
            ok: json_reply("Every active projection is at `min_position` or beyond.", || schema_ref("Ready")),
            errors: &[400, 503, 504, 500],
        },
    },
    Route {
        method: Method::Get,
        path: "/changes",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, host_changes),
        doc: Operation {
            summary: "Server-Sent Events: every projection's commits, and `ready` when all have reached the head",
            description: Some(
                "First event `subscribed` with {head, projections: [{projection, generation, checkpoint}]}. Then `commit` per committed batch of any projection, as on /projections/{name}/changes. `ready` with {checkpoint, projections} each time every active projection has reached one checkpoint that is the head of the log (also at once if they are there on subscribing). `lagged` with {missed_notices} if the client fell behind.",
            ),
            params: &[],
            body: None,
            ok: Success { description: "An event stream.", media_type: "text/event-stream", schema: string_schema },
            errors: &[400, 500],
        },
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        access: Access::Scoped(Scope::Read),
        handler: |m| on(m, metrics),
        doc: Operation {
            summary: "Prometheus metrics: events processed, batch latency histogram, checkpoint, head, lag and errors per projection generation (labels `projection`, `generation`, `role`), and the module compile-time histogram",
            description: None,
            params: &[],
            body: None,
            ok: Success {
                description: "Prometheus text format 0.0.4.",
                media_type: "text/plain",
                schema: string_schema,
            },
            errors: &[500],
        },
    },
    Route {
        method: Method::Get,
        path: "/sources",
        handler: |m| on(m, list_sources),
        access: Access::Scoped(Scope::Read),
        doc: Operation {
            summary: "Table sync sources: last tracking value, rows synced, last sync time, last error",
            description: None,
            params: &[],
            body: None,
            ok: json_reply("One entry per source.", crate::api::sources::schema),
            errors: &[500],
        },
    },
    Route {
        method: Method::Get,
        path: "/health",
        access: Access::Open,
        handler: |m| on(m, health),
        doc: Operation {
            summary: "Liveness: the event store answers",
            description: None,
            params: &[],
            body: None,
            ok: json_reply(
                "Healthy.",
                || json!({ "type": "object", "properties": { "status": { "const": "ok" }, "head": { "type": "integer" } } }),
            ),
            errors: &[500],
        },
    },
    Route {
        method: Method::Get,
        path: "/openapi.json",
        access: Access::Open,
        handler: |m| on(m, openapi_json),
        doc: Operation {
            summary: "This document",
            description: None,
            params: &[],
            body: None,
            ok: json_reply("OpenAPI 3.1.", || json!({ "type": "object" })),
            errors: &[],
        },
    },
];

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let body_timeout = state.body_timeout();
    let tokens = state.tokens();
    let cors = state.cors();
    let mut router = Router::new();
    for route in ROUTES {
        let guard = Guard { tokens: tokens.clone(), access: route.access };
        let handler = (route.handler)(route.method.filter())
            .route_layer(axum::middleware::from_fn_with_state(guard, auth::require));
        router = router.route(route.path, handler);
    }
    router
        .fallback(|uri: Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(body_timeout, layers::body_deadline))
        .layer(axum::middleware::map_response(layers::json_errors))
        // Outermost: a preflight is answered before anything else looks at it.
        .layer(axum::middleware::from_fn_with_state(cors, cors::layer))
        .with_state(state)
}

type Reply<T = Json<Value>> = Result<T, ApiError>;

/// Turns a path that did not decode (bad percent-encoding) into a 400.
pub(crate) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t).map_err(|e| ApiError::BadRequest(format!("bad path: {}", e.body_text())))
}

/// A JSON response from text built by hand: documents are stored as JSON
/// text, so splicing them in avoids parsing and re-printing every one.
fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// 200 when every projection can reach its stores; 503 ("degraded") while
/// any of them retries a store or source error, naming each one.
async fn health(State(s): State<ApiState>) -> Reply<Response> {
    let errors = s.store_errors().snapshot();
    if !errors.is_empty() {
        let failing: Vec<Value> = errors
            .into_iter()
            .map(|(k, error)| json!({ "projection": k.projection, "generation": k.generation, "error": error }))
            .collect();
        let body = json!({ "status": "degraded", "store_errors": failing });
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    }
    let head = s.source().head().await?;
    Ok(Json(json!({ "status": "ok", "head": head })).into_response())
}

async fn metrics(State(s): State<ApiState>) -> Reply<Response> {
    let status = s.status().await?;
    let mut text = s.metrics().render(&status, &s.compiles().times());
    text.push_str(&crate::api::sources::render(&s.source_status().await?));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn list_sources(State(s): State<ApiState>) -> Reply {
    Ok(Json(serde_json::to_value(s.source_status().await?).map_err(|e| ApiError::Internal(e.to_string()))?))
}

/// The document, built once from [`ROUTES`].
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| openapi::document(ROUTES.iter().map(|r| (r.method, r.path, r.access, &r.doc))).to_string());

async fn openapi_json() -> Response {
    json_text(DOCUMENT.clone())
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
    let appended = s.appender()?.append(&[request]).await?;
    let a = appended[0];
    Ok(Json(json!({
        "position": a.last_position,
        "first_position": a.first_position,
        "stream_version": a.stream_version,
    })))
}

fn status_json(s: &ApiState, status: ProjectionStatus) -> Value {
    let rate = s.metrics().events_per_second(&status.name, status.generation);
    let mut v = serde_json::to_value(status).unwrap_or_default();
    v["events_per_second"] = json!(rate);
    v
}

fn no_check(_: &ProjectionRecord) -> Result<(), ApiError> {
    Ok(())
}

async fn list_projections(State(s): State<ApiState>, RawQuery(raw): RawQuery) -> Reply {
    let mut c = Consistency::parse(raw.as_deref())?;
    // One head for the whole list, so a strong read waits for one position.
    if let Some(position) = target(&s, c.level).await? {
        c.level = Level::Causal(position);
        for record in s.models().projections().await? {
            wait_for(&s, &record.key.projection, c, no_check).await?;
        }
    }
    let status = s.status().await?;
    let mut rows: Vec<Value> = status.into_iter().map(|p| status_json(&s, p)).collect();
    // A module being compiled has no generation yet; it is listed all the same.
    rows.extend(s.compiles().now().into_iter().map(
        |c| json!({ "name": c.projection, "source": c.source, "state": "compiling", "started_at": c.started_at }),
    ));
    Ok(Json(Value::Array(rows)))
}

async fn one_projection(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let name = path(name)?;
    let c = Consistency::parse(raw.as_deref())?;
    let record = wait_for(&s, &name, c, no_check).await?;
    let head = s.source().head().await?;
    let leases = s.models().leases().await?;
    let lease = leases.iter().find(|l| l.key == record.key);
    let paused = s.models().is_paused(&name).await?;
    let verified = s.models().last_verification(&name).await?;
    let status =
        ProjectionStatus::new(record, head).with_lease(lease).with_paused(paused).with_verify(verified.as_ref());
    Ok(Json(status_json(&s, status)))
}

async fn changes(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Reply<Response> {
    change_log::changes(s, path(name)?, headers, raw).await
}

async fn acknowledge(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let (name, consumer) = path(p)?;
    let body = body.map_err(|e| ApiError::BadRequest(format!("bad body: {}", e.body_text())))?;
    Ok(Json(change_log::acknowledge(s, name, consumer, &body).await?))
}

async fn host_changes(State(s): State<ApiState>, RawQuery(raw): RawQuery) -> Reply<Response> {
    if let Some(raw) = raw.filter(|r| !r.is_empty()) {
        return Err(ApiError::BadRequest(format!("the change feed takes no parameters, got `{raw}`")));
    }
    // Subscribe before reading the registry and the head, as for one projection's feed.
    let notices = s.subscribe();
    let active = Active::read(&s).await?;
    let head = s.source().head().await?;
    Ok(sse::host_feed(s, notices, active, head).into_response())
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
        let count = models.count_documents(&name, &collection, &params.query).await?;
        let warnings = query_warnings(models.as_ref(), &name, &collection, &params.query).await?;
        let mut out = json!({ "count": count });
        if !warnings.is_empty() {
            out["warnings"] = json!(warnings);
        }
        return Ok(Json(out).into_response());
    }
    let page = models.query_documents(&name, &collection, &params.query).await?;
    let warnings = query_warnings(models.as_ref(), &name, &collection, &params.query).await?;
    Ok(json_text(page_json(&page, &warnings)))
}

/// `{"documents": [{"id": ..., "document": {...}}, ...], "next_cursor": ...}`,
/// with `"warnings": [...]` only when there are some.
fn page_json(page: &Page, warnings: &[String]) -> String {
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
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":");
        out.push_str(&json!(warnings).to_string());
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The `{param}` segments of a path template.
    fn template_params(path: &str) -> BTreeSet<&str> {
        path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect()
    }

    #[test]
    fn each_route_is_one_operation_with_its_path_parameters_declared() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.path, r.method)), "{:?} {} is in the table twice", r.method, r.path);
            let declared: BTreeSet<&str> =
                r.doc.params.iter().filter(|p| p.location == In::Path).map(|p| p.name).collect();
            assert_eq!(declared, template_params(r.path), "path parameters of {:?} {}", r.method, r.path);
            let query: Vec<&str> = r.doc.params.iter().filter(|p| p.location == In::Query).map(|p| p.name).collect();
            assert_eq!(query.len(), query.iter().collect::<BTreeSet<_>>().len(), "{} repeats a parameter", r.path);
        }
    }

    #[test]
    fn the_document_has_exactly_the_table_and_every_reference_resolves() {
        let doc: Value = serde_json::from_str(&DOCUMENT).unwrap();
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (path.clone(), m.clone())))
            .collect();
        let routed: BTreeSet<(String, String)> =
            ROUTES.iter().map(|r| (r.path.to_owned(), r.method.key().to_owned())).collect();
        assert_eq!(described, routed);

        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    out.extend(m.get("$ref").and_then(Value::as_str));
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
        }
    }
}
