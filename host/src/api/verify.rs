//! `POST /projections/{name}/verify`: `refract verify` over HTTP, through the
//! host's one [`Verifier`](crate::Verifier).
//!
//! It answers when the comparison is done, with the whole report: a verify
//! takes about as long as rebuilding the model (BENCHMARKS.md), so a large
//! model holds the request that long. That is chosen over a 202 and a
//! status to poll because the answer — which documents differ — is only
//! useful whole, and because the outcome is recorded anyway: a client that
//! gives up waiting (or a proxy that times out) loses nothing but the list
//! of ids; the verification itself runs to its end only while the request
//! is open, and `GET /projections/{name}` shows the last outcome (`verify`).
//! For long models, `verify_every` in `refract.toml` verifies in the
//! background and records the same outcome.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::on;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::api::auth::{Access, Scope};
use crate::api::error::ApiError;
use crate::api::openapi::{In, Method, NAME, Operation, Param, json_reply, schema_ref};
use crate::api::params::{number, pairs, unknown};
use crate::api::routes::Route;

/// Differences listed when the request names no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most differences one answer lists (the count is always whole).
const MAX_LIMIT: usize = 10_000;

/// The route-table entry.
pub(crate) const ROUTE: Route = Route {
    method: Method::Post,
    path: "/projections/{name}/verify",
    handler: |m| on(m, verify),
    access: Access::Scoped(Scope::Admin),
    doc: Operation {
        summary: "Verify a projection: rebuild its active module into a shadow model and compare it with the store, document by document",
        description: Some(
            "Takes no body. Synchronous: answers when the comparison is done, which takes about as long as a rebuild of the model. 200 with the report whether or not documents differ (`clean`, `different`, and the first `limit` differences with their ids). The outcome becomes the projection's `verify` in GET /projections/{name} and the refract_verify_* series of /metrics. 409 while the projection is faulted, being rebuilt, has dead letters, or is being verified already; the message says which. A collection named `verify` is not listed through /projections/{name}/{collection}.",
        ),
        params: &[
            NAME,
            Param {
                name: "limit",
                location: In::Query,
                description: "Differences to list, 0 to 10000 (default 100); `different` counts them all.",
                schema: || json!({ "type": "integer", "minimum": 0, "maximum": 10000 }),
            },
        ],
        body: None,
        ok: json_reply("The report.", || schema_ref("VerifyReport")),
        errors: &[400, 404, 409, 500],
    },
};

async fn verify(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let name = crate::api::routes::path(name)?;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in pairs(raw.as_deref())? {
        match key.as_str() {
            "limit" => limit = number(&key, &value)?,
            _ => return Err(unknown(&key, "limit")),
        }
    }
    if limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!("`limit` is at most {MAX_LIMIT}, not {limit}")));
    }
    let report = s.verifier()?.verify(&name, limit).await?;
    let mut body = serde_json::to_value(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["clean"] = json!(report.clean());
    Ok(Json(body))
}
