//! Admin over HTTP (`admin` scope): retry, drop, pause, resume and reset a
//! projection. Each does what the CLI command of the same name does, through
//! the registry, so the host serving the request and any other host sharing
//! the store act on it alike.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::on;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::api::auth::{Access, Scope};
use crate::api::error::ApiError;
use crate::api::openapi::{In, Method, NAME, Operation, Param, json_reply};
use crate::api::params::{number, pairs, unknown};
use crate::api::routes::Route;
use crate::projection::admin::{self, STOP_TIMEOUT};

/// `POST /projections/{name}/pause`.
pub(crate) const PAUSE: Route = Route {
    method: Method::Post,
    path: "/projections/{name}/pause",
    access: Access::Scoped(Scope::Admin),
    handler: |m| on(m, pause),
    doc: Operation {
        summary: "Pause a projection: no host runs it until it is resumed, across restarts",
        description: Some(
            "Answers once every host running it has committed what it projected and stopped (up to 30 s; 409 if one has not). Appends go on; the projection's lag grows. `GET /projections/{name}` shows `paused: true`.",
        ),
        params: &[NAME],
        body: None,
        ok: json_reply("Paused.", paused_schema),
        errors: &[400, 404, 409, 500],
    },
};

/// `POST /projections/{name}/resume`.
pub(crate) const RESUME: Route = Route {
    method: Method::Post,
    path: "/projections/{name}/resume",
    access: Access::Scoped(Scope::Admin),
    handler: |m| on(m, resume),
    doc: Operation {
        summary: "Resume a paused projection from its checkpoint",
        description: Some("Hosts with its module start it again within a second and catch up."),
        params: &[NAME],
        body: None,
        ok: json_reply("Resumed.", paused_schema),
        errors: &[400, 404, 500],
    },
};

/// `POST /projections/{name}/reset`.
pub(crate) const RESET: Route = Route {
    method: Method::Post,
    path: "/projections/{name}/reset",
    access: Access::Scoped(Scope::Admin),
    handler: |m| on(m, reset),
    doc: Operation {
        summary: "Move a projection's checkpoint to a position and project again from there",
        description: Some(
            "For a projection whose module did not change (409 while a new generation is being built). The documents stay as they are and the events after `to` are projected again on top of them (or, forward, skipped); `to=0` empties the read model first. A running projection is paused for the reset and resumed after it; a paused one stays paused. Clears a fault; dead letters after `to` are forgotten.",
        ),
        params: &[
            NAME,
            Param {
                name: "to",
                location: In::Query,
                description: "The new checkpoint: a global position from 0 to the head.",
                schema: || json!({ "type": "integer", "minimum": 0 }),
            },
        ],
        body: None,
        ok: json_reply("Reset.", || {
            json!({ "type": "object", "properties": {
                "projection": { "type": "string" }, "from": { "type": "integer" }, "to": { "type": "integer" },
                "paused": { "type": "boolean", "description": "Whether it stays paused (it was before)." }
            }})
        }),
        errors: &[400, 404, 409, 500],
    },
};

/// `POST /projections/{name}/retry`.
pub(crate) const RETRY: Route = Route {
    method: Method::Post,
    path: "/projections/{name}/retry",
    access: Access::Scoped(Scope::Admin),
    handler: |m| on(m, retry),
    doc: Operation {
        summary: "Clear a fault and replay the dead letters",
        description: Some(
            "As `refract retry`: a faulted projection resumes from its checkpoint, and its dead letters are replayed before new events, within a second on a running host.",
        ),
        params: &[NAME],
        body: None,
        ok: json_reply("What was cleared.", || {
            json!({ "type": "object", "properties": {
                "projection": { "type": "string" }, "cleared_fault": { "type": "boolean" }, "replays": { "type": "integer" }
            }})
        }),
        errors: &[400, 404, 500],
    },
};

/// `POST /projections/{name}/drop`.
pub(crate) const DROP: Route = Route {
    method: Method::Post,
    path: "/projections/{name}/drop",
    access: Access::Scoped(Scope::Admin),
    handler: |m| on(m, drop_projection),
    doc: Operation {
        summary: "Forget a projection: drop every generation's tables and registry entries",
        description: Some(
            "As `refract drop`. A host whose plugins folder still has the module registers it again from position 0 when the file changes or the host restarts.",
        ),
        params: &[NAME],
        body: None,
        ok: json_reply(
            "Dropped.",
            || json!({ "type": "object", "properties": { "projection": { "type": "string" }, "dropped": { "const": true } } }),
        ),
        errors: &[400, 404, 500],
    },
};

fn paused_schema() -> Value {
    json!({ "type": "object", "properties": {
        "projection": { "type": "string" }, "paused": { "type": "boolean" },
        "changed": { "type": "boolean", "description": "False when it already was." },
        "checkpoint": { "type": "integer" }
    }})
}

type Reply = Result<Json<Value>, ApiError>;

/// The projection name, and no query string (these actions take none but `reset`'s `to`).
fn name_only(name: Result<Path<String>, PathRejection>, raw: Option<String>) -> Result<String, ApiError> {
    if let Some((key, _)) = pairs(raw.as_deref())?.into_iter().next() {
        return Err(unknown(&key, "none"));
    }
    crate::api::routes::path(name)
}

async fn pause(State(s): State<ApiState>, name: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Reply {
    let name = name_only(name, raw)?;
    let done = admin::pause(s.models().as_ref(), &name, STOP_TIMEOUT).await?;
    Ok(Json(json!(done)))
}

async fn resume(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let name = name_only(name, raw)?;
    Ok(Json(json!(admin::resume(s.models().as_ref(), &name).await?)))
}

async fn reset(State(s): State<ApiState>, name: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Reply {
    let name = crate::api::routes::path(name)?;
    let mut to = None;
    for (key, value) in pairs(raw.as_deref())? {
        match key.as_str() {
            "to" => to = Some(number::<u64>(&key, &value)?),
            _ => return Err(unknown(&key, "to")),
        }
    }
    let to = to.ok_or_else(|| ApiError::BadRequest("`to` is required: the position to reset to".into()))?;
    let done = admin::reset(s.source().as_ref(), s.models().as_ref(), &name, to, STOP_TIMEOUT).await?;
    Ok(Json(json!(done)))
}

async fn retry(State(s): State<ApiState>, name: Result<Path<String>, PathRejection>, RawQuery(raw): RawQuery) -> Reply {
    let name = name_only(name, raw)?;
    let r = s.models().request_retry(&name).await?;
    Ok(Json(json!({ "projection": name, "cleared_fault": r.cleared_fault, "replays": r.replays })))
}

async fn drop_projection(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Reply {
    let name = name_only(name, raw)?;
    s.models().drop_projection(&name).await?;
    Ok(Json(json!({ "projection": name, "dropped": true })))
}
