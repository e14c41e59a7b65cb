//! The OpenAPI 3.1 description served at `/openapi.json`, written by hand so
//! it needs no code generator; a test checks it names every route.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn param(name: &str, location: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": location, "required": location == "path", "description": description, "schema": schema })
}

fn consistency_params() -> Vec<Value> {
    vec![
        param(
            "min_position",
            "query",
            "Consistency token: wait until the projection's checkpoint is at least this global position (the `position` an append returned).",
            json!({ "type": "integer", "minimum": 0 }),
        ),
        param(
            "timeout_ms",
            "query",
            "How long to wait for `min_position`, in ms (default 5000, at most 60000); then 504.",
            json!({ "type": "integer", "minimum": 0, "maximum": 60000 }),
        ),
    ]
}

fn name_param() -> Value {
    param("name", "path", "Projection name.", json!({ "type": "string" }))
}

fn collection_param() -> Value {
    param(
        "collection",
        "path",
        "Collection name, as the projection's manifest declares it.",
        json!({ "type": "string" }),
    )
}

/// The whole document.
pub fn document() -> Value {
    let bad = error_response("Bad parameter, filter, cursor, limit or body; the message says which.");
    let unknown = error_response("Unknown projection, collection or document.");
    let timeout =
        error_response("The projection did not reach `min_position` within the timeout; `checkpoint` is where it is.");
    let server = error_response("The store failed (not the client's fault).");
    let mut with_consistency = vec![name_param()];
    with_consistency.extend(consistency_params());
    let mut query_params = vec![
        name_param(),
        collection_param(),
        param(
            "filter",
            "query",
            "Repeatable; all must hold. `field=value`, `field!=value`, `field>value`, `field>=value`, `field<value`, `field<=value` or `field=in:[v1,v2]`, on an indexed field or `id`. A value that is valid JSON is compared as JSON, anything else as a string.",
            json!({ "type": "array", "items": { "type": "string" } }),
        ),
        param(
            "order",
            "query",
            "Indexed field or `id` to sort by; prefix `-` for descending. Ties are broken by id.",
            json!({ "type": "string" }),
        ),
        param(
            "limit",
            "query",
            "Page size, 1 to 10000 (default 100).",
            json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
        ),
        param("cursor", "query", "`next_cursor` of the previous page of the same query.", json!({ "type": "string" })),
        param("count", "query", "Return only `{\"count\": N}`, the number of matches.", json!({ "type": "boolean" })),
    ];
    query_params.extend(consistency_params());
    let mut document_params =
        vec![name_param(), collection_param(), param("id", "path", "Document id.", json!({ "type": "string" }))];
    document_params.extend(consistency_params());
    let status_ref = json!({ "$ref": "#/components/schemas/ProjectionStatus" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "refract HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Append events, read projection read models with read-your-writes consistency (`min_position`), follow commits live, scrape metrics. Every error is JSON: {\"error\": \"message\"}."
        },
        "paths": {
            "/streams/{stream}/events": { "post": {
                "summary": "Append events to a stream, atomically",
                "parameters": [ param("stream", "path", "Stream id, 1 to 256 bytes.", json!({ "type": "string" })) ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AppendBody" } } } },
                "responses": {
                    "200": ok_json("Appended. `position` is the consistency token.", json!({ "$ref": "#/components/schemas/Appended" })),
                    "400": bad.clone(),
                    "409": error_response("The stream is not at `expected_version`; nothing was appended. The body has `expected_version` and `actual_version`."),
                    "413": error_response("The body is over 16 MiB."),
                    "500": server.clone()
                }
            }},
            "/projections": { "get": {
                "summary": "Status of every projection",
                "parameters": consistency_params(),
                "responses": { "200": ok_json("One entry per projection.", json!({ "type": "array", "items": status_ref })), "400": bad.clone(), "504": timeout.clone(), "500": server.clone() }
            }},
            "/projections/{name}": { "get": {
                "summary": "Status of one projection",
                "parameters": with_consistency,
                "responses": { "200": ok_json("Status.", status_ref), "400": bad.clone(), "404": unknown.clone(), "504": timeout.clone(), "500": server.clone() }
            }},
            "/projections/{name}/changes": { "get": {
                "summary": "Server-Sent Events: one `commit` event per committed batch",
                "description": "First event `ready` with {projection, checkpoint}. Then `commit` per batch with {projection, generation, checkpoint, events, changed: [{collection, id}]} and the checkpoint as the event id. `lagged` with {missed_notices} if the client fell behind. A collection named `changes` cannot be listed through /projections/{name}/{collection}.",
                "parameters": [ name_param() ],
                "responses": { "200": { "description": "An event stream.", "content": { "text/event-stream": { "schema": { "type": "string" } } } }, "400": bad.clone(), "404": unknown.clone(), "500": server.clone() }
            }},
            "/projections/{name}/{collection}": { "get": {
                "summary": "Query a collection: filters, order, cursor paging",
                "parameters": query_params,
                "responses": { "200": ok_json("A page, or a count when `count=true`.", json!({ "oneOf": [ { "$ref": "#/components/schemas/Page" }, { "type": "object", "properties": { "count": { "type": "integer" } } } ] })), "400": bad.clone(), "404": unknown.clone(), "504": timeout.clone(), "500": server.clone() }
            }},
            "/projections/{name}/{collection}/{id}": { "get": {
                "summary": "One document",
                "parameters": document_params,
                "responses": { "200": ok_json("The document.", json!({ "$ref": "#/components/schemas/Document" })), "400": bad.clone(), "404": unknown, "504": timeout, "500": server.clone() }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics: events processed, batch latency histogram, checkpoint, head, lag and errors per projection",
                "responses": { "200": { "description": "Prometheus text format 0.0.4.", "content": { "text/plain": { "schema": { "type": "string" } } } }, "500": server.clone() }
            }},
            "/health": { "get": {
                "summary": "Liveness: the event store answers",
                "responses": { "200": ok_json("Healthy.", json!({ "type": "object", "properties": { "status": { "const": "ok" }, "head": { "type": "integer" } } })), "500": server }
            }},
            "/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": ok_json("OpenAPI 3.1.", json!({ "type": "object" })) }
            }}
        },
        "components": { "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": {
                "error": { "type": "string", "description": "What went wrong, for a person." },
                "checkpoint": { "type": "integer", "description": "504 only: the projection's checkpoint when the wait gave up." },
                "min_position": { "type": "integer", "description": "504 only: the position waited for." },
                "expected_version": { "type": "integer", "description": "409 only." },
                "actual_version": { "type": "integer", "description": "409 only." }
            }},
            "AppendBody": { "type": "object", "required": ["events"], "additionalProperties": false, "properties": {
                "expected_version": { "description": "Refuse the append unless the stream is at this version: a number, \"no-stream\" (= 0) or \"any\" (default).", "oneOf": [ { "type": "integer", "minimum": 0 }, { "enum": ["any", "no-stream"] } ] },
                "events": { "type": "array", "minItems": 1, "items": { "type": "object", "required": ["type", "payload"], "additionalProperties": false, "properties": {
                    "type": { "type": "string", "minLength": 1 },
                    "payload": { "description": "Any JSON." },
                    "metadata": { "description": "Any JSON (default {})." }
                }}}
            }},
            "Appended": { "type": "object", "properties": {
                "position": { "type": "integer", "description": "Global position of the last appended event: the consistency token for `min_position`." },
                "first_position": { "type": "integer" },
                "stream_version": { "type": "integer" }
            }},
            "ProjectionStatus": { "type": "object", "properties": {
                "name": { "type": "string" }, "version": { "type": "string" }, "generation": { "type": "integer" },
                "module_hash": { "type": "string" }, "checkpoint": { "type": "integer" }, "head": { "type": "integer" },
                "lag": { "type": "integer" }, "state": { "enum": ["running", "faulted", "stopped"] },
                "last_error": { "type": ["string", "null"] }, "events_per_second": { "type": "number", "description": "Over the last 10 s." }
            }},
            "Document": { "type": "object", "properties": { "id": { "type": "string" }, "document": { "type": "object" } } },
            "Page": { "type": "object", "properties": {
                "documents": { "type": "array", "items": { "$ref": "#/components/schemas/Document" } },
                "next_cursor": { "type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last." }
            }}
        }}
    })
}
