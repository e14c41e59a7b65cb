//! `GET /aggregate/{name}/{collection}`: count, sum, min, max and avg over a
//! collection, grouped by indexed fields. The path is its own rather than
//! `/projections/{name}/{collection}/aggregate`, which would hide a
//! document whose id is `aggregate`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::on;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::api::auth::{Access, Scope};
use crate::api::consistency::wait_for;
use crate::api::error::ApiError;
use crate::api::openapi::{COLLECTION, In, MIN_POSITION, Method, NAME, Operation, Param, TIMEOUT_MS, json_reply};
use crate::api::params::AggregateParams;
use crate::api::routes::Route;

/// The route-table entry.
pub(crate) const ROUTE: Route = Route {
    method: Method::Get,
    path: "/aggregate/{name}/{collection}",
    access: Access::Scoped(Scope::Read),
    handler: |m| on(m, aggregate),
    doc: Operation {
        summary: "Aggregates (count, sum, min, max, avg) over a collection, grouped by indexed fields",
        description: Some(
            "Takes the filters of the query endpoint. Groups come back ordered by their key, nulls first; without `group_by` there is exactly one group. A `sum` of integers is an integer; `avg` is a float. `sum` and `avg` over non-numbers, `min` and `max` over mixed kinds, and more than 10000 groups are refused with 400. A read past the store's time limit is stopped with 503.",
        ),
        params: &[
            NAME,
            COLLECTION,
            Param {
                name: "agg",
                location: In::Query,
                description: "Repeatable, at least one: `count`, `count(field)`, `sum(field)`, `min(field)`, `max(field)` or `avg(field)`, on indexed fields.",
                schema: || json!({ "type": "array", "items": { "type": "string" } }),
            },
            Param {
                name: "group_by",
                location: In::Query,
                description: "Repeatable or comma-separated: indexed fields to group by (at most 4).",
                schema: || json!({ "type": "array", "items": { "type": "string" } }),
            },
            Param {
                name: "filter",
                location: In::Query,
                description: "Repeatable; all must hold. The syntax of the query endpoint's `filter`.",
                schema: || json!({ "type": "array", "items": { "type": "string" } }),
            },
            MIN_POSITION,
            TIMEOUT_MS,
        ],
        body: None,
        ok: json_reply(
            "`{\"groups\": [{\"key\": {field: value}, \"values\": {\"sum(balance)\": 120, \"count\": 3}}]}`",
            || {
                json!({
                    "type": "object",
                    "properties": { "groups": { "type": "array", "items": {
                        "type": "object",
                        "properties": { "key": { "type": "object" }, "values": { "type": "object" } }
                    } } }
                })
            },
        ),
        errors: &[400, 404, 503, 504, 500],
    },
};

async fn aggregate(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (name, collection) = crate::api::routes::path(p)?;
    let params = AggregateParams::parse(raw.as_deref())?;
    wait_for(&s, &name, params.consistency, |r| Ok(r.collection(&collection).map(drop)?)).await?;
    let result = s.models().aggregate_documents(&name, &collection, &params.query).await?;
    Ok(Json(result.to_json()))
}
