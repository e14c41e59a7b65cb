//! `POST /projections/{name}/rebuild`: the admin rebuild over HTTP. It asks
//! the registry for a new building generation of the active module, as
//! `refract rebuild` does against a running host; the host's registry poll
//! starts it, and it is swapped in once it reaches the head.

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
    method: Method::Post,
    path: "/projections/{name}/rebuild",
    handler: |m| on(m, rebuild),
    access: Access::Scoped(Scope::Admin),
    doc: Operation {
        summary: "Rebuild a projection: a new generation of its module builds from position 0 and is swapped in at the head",
        description: Some(
            "Takes no body. The active generation keeps serving until the new one has caught up; a rebuild already under way is superseded. Follow it on /changes or GET /projections (role `building`). A collection named `rebuild` is not listed through /projections/{name}/{collection}.",
        ),
        params: &[NAME],
        body: None,
        ok: json_reply("The generation that builds.", || {
            json!({ "type": "object", "properties": {
                "projection": { "type": "string" },
                "generation": { "type": "integer" },
                "role": { "const": "building" }
            }})
        }),
        errors: &[400, 404, 500],
    },
};

async fn rebuild(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let name = crate::api::routes::path(name)?;
    if let Some(raw) = raw.filter(|r| !r.is_empty()) {
        return Err(ApiError::BadRequest(format!("a rebuild takes no parameters, got `{raw}`")));
    }
    let record = s.models().request_rebuild(&name).await?;
    tracing::info!(projection = %name, generation = record.key.generation, "rebuild requested over HTTP");
    Ok(Json(json!({
        "projection": record.key.projection,
        "generation": record.key.generation,
        "role": record.role,
    })))
}
