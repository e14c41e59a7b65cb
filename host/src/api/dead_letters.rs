//! `GET /projections/{name}/dead-letters`: the events a projection skipped
//! (its `skip` policy), with their errors and whether a replay is pending,
//! as `refract dead-letters` lists them.

use crate::api::auth::{Access, Scope};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::on;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::openapi::{Method, NAME, Operation, json_reply};
use crate::api::routes::Route;

/// The route-table entry.
pub(crate) const ROUTE: Route = Route {
    method: Method::Get,
    path: "/projections/{name}/dead-letters",
    handler: |m| on(m, dead_letters),
    access: Access::Scoped(Scope::Read),
    doc: Operation {
        summary: "Dead letters of a projection's active generation, by position",
        description: Some(
            "`replay` is true once a retry marked the letter: the runner replays it and removes it if it then succeeds. A collection named `dead-letters` is not listed through /projections/{name}/{collection}.",
        ),
        params: &[NAME],
        body: None,
        ok: json_reply("The dead letters.", || {
            json!({ "type": "array", "items": { "type": "object", "properties": {
                "position": { "type": "integer" },
                "stream_id": { "type": "string" },
                "event_type": { "type": "string" },
                "error": { "type": "string" },
                "module_hash": { "type": "string" },
                "recorded_at": { "type": "integer", "description": "ms since the Unix epoch" },
                "replay": { "type": "boolean" }
            }}})
        }),
        errors: &[400, 404, 500],
    },
};

async fn dead_letters(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let name = crate::api::routes::path(name)?;
    if let Some(raw) = raw.filter(|r| !r.is_empty()) {
        return Err(ApiError::BadRequest(format!("the dead letters take no parameters, got `{raw}`")));
    }
    let letters = s.models().dead_letters(&name).await?;
    Ok(Json(serde_json::to_value(letters).map_err(|e| ApiError::Internal(e.to_string()))?))
}
