//! The OpenAPI 3.1 description served at `/openapi.json`. It is built from
//! the same route table as the router (`routes::ROUTES`), each route carrying
//! its [`Operation`], so a route cannot be served without being described or
//! described without being served. The shared schemas are written out below.

use serde_json::{Map, Value, json};

use crate::api::auth::Access;

/// An HTTP method the API routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// GET (and HEAD, which the router answers from it).
    Get,
    /// POST.
    Post,
}

impl Method {
    /// The operation's key in an OpenAPI path item.
    pub fn key(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
        }
    }
}

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A `{name}` segment of the path template.
    Path,
    /// The query string.
    Query,
}

/// One parameter of an operation.
pub struct Param {
    /// Its name: the `{name}` of the template or the query key.
    pub name: &'static str,
    /// Path or query.
    pub location: In,
    /// What it means, for a person.
    pub description: &'static str,
    /// Its JSON schema.
    pub schema: fn() -> Value,
}

/// The successful (200) answer of an operation.
pub struct Success {
    /// What it holds.
    pub description: &'static str,
    /// Its media type.
    pub media_type: &'static str,
    /// Its JSON schema.
    pub schema: fn() -> Value,
}

/// What the document says about one route.
pub struct Operation {
    /// One line.
    pub summary: &'static str,
    /// More, when one line is not enough.
    pub description: Option<&'static str>,
    /// Path and query parameters.
    pub params: &'static [Param],
    /// The component schema of the JSON request body, if the route takes one.
    pub body: Option<&'static str>,
    /// The 200 answer.
    pub ok: Success,
    /// The error statuses it can answer, each described by [`error_description`].
    pub errors: &'static [u16],
}

/// A JSON 200 answer.
pub const fn json_reply(description: &'static str, schema: fn() -> Value) -> Success {
    Success { description, media_type: "application/json", schema }
}

/// The projection name in the path.
pub const NAME: Param =
    Param { name: "name", location: In::Path, description: "Projection name.", schema: string_schema };
/// The collection name in the path.
pub const COLLECTION: Param = Param {
    name: "collection",
    location: In::Path,
    description: "Collection name, as the projection's manifest declares it.",
    schema: string_schema,
};
/// Read-your-writes: the position to wait for.
pub const MIN_POSITION: Param = Param {
    name: "min_position",
    location: In::Query,
    description: "Consistency token: wait until the projection's checkpoint is at least this global position (the `position` an append returned).",
    schema: || json!({ "type": "integer", "minimum": 0 }),
};
/// How fresh a read must be.
pub const CONSISTENCY: Param = Param {
    name: "consistency",
    location: In::Query,
    description: "`eventual`: answer at once, maybe stale. `causal`: wait for `min_position` (required). `strong`: wait until the projection reached the head of the log as it was when the request arrived. Default: `causal` with `min_position`, else `eventual`. `eventual` and `strong` take no `min_position`.",
    schema: || json!({ "type": "string", "enum": ["eventual", "causal", "strong"] }),
};
/// Read-your-writes: how long to wait.
pub const TIMEOUT_MS: Param = Param {
    name: "timeout_ms",
    location: In::Query,
    description: "How long to wait for `min_position`, in ms (default 5000, at most 60000); then 504.",
    schema: || json!({ "type": "integer", "minimum": 0, "maximum": 60000 }),
};

/// The schema of a string parameter.
pub fn string_schema() -> Value {
    json!({ "type": "string" })
}

/// A reference to one of the component schemas below.
pub fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// What an error status means, the same on every route that answers it.
pub fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Bad parameter, filter, cursor, limit or body; the message says which.",
        404 => "Unknown projection, collection or document.",
        408 => "The request body did not arrive within the server's body timeout; the connection is closed.",
        409 => {
            "Appends: the stream is not at `expected_version`; nothing was appended, and the body has `expected_version` and `actual_version`. Admin actions and verify: the projection's state does not allow it now (not paused, being rebuilt, faulted, still running); the message says why. Acknowledgements: the generation is not the active one; `generation` names the active one."
        }
        410 => {
            "Change-log entries after the requested sequence were pruned by retention; `first` is the oldest kept and `generation` the active generation. Read the whole model again, then follow the log from `first - 1`."
        }
        413 => "The body is over 16 MiB.",
        500 => {
            "The server failed (not the client's fault). The body says no more than that, with an `error_id` under which the server log has the details."
        }
        503 => {
            "A projection is faulted, so waiting cannot help (`faulted` names each one with its error), or a read was stopped at the store's read time limit (`limit_ms` in the body; narrow it with filters)."
        }
        504 => {
            "A projection did not reach the position within the timeout; `checkpoint` (one projection) or `behind` (`/ready`) says where they are."
        }
        _ => "An error; the message says what went wrong.",
    }
}

impl Param {
    fn to_json(&self) -> Value {
        let location = match self.location {
            In::Path => "path",
            In::Query => "query",
        };
        json!({
            "name": self.name,
            "in": location,
            "required": self.location == In::Path,
            "description": self.description,
            "schema": (self.schema)(),
        })
    }
}

impl Operation {
    fn to_json(&self, access: Access) -> Value {
        let mut responses = Map::new();
        responses.insert(
            "200".into(),
            json!({ "description": self.ok.description, "content": { self.ok.media_type: { "schema": (self.ok.schema)() } } }),
        );
        for status in self.errors {
            responses.insert(
                status.to_string(),
                json!({
                    "description": error_description(*status),
                    "content": { "application/json": { "schema": schema_ref("Error") } },
                }),
            );
        }
        if matches!(access, Access::Scoped(_)) {
            for (status, description) in [
                (401, "No token, or an unknown one (only when the host has tokens); `WWW-Authenticate` says which."),
                (403, "The token lacks the scope this endpoint needs; `scope` names it."),
            ] {
                responses.insert(
                    status.to_string(),
                    json!({ "description": description, "content": { "application/json": { "schema": schema_ref("Error") } } }),
                );
            }
        }
        let mut op = json!({ "summary": self.summary, "responses": responses });
        // The scope a token needs, as the bearer scheme's OpenAPI scopes.
        op["security"] = match access {
            Access::Open => json!([]),
            Access::Scoped(scope) => json!([{ "bearer": [scope.as_str()] }]),
        };
        if let Some(description) = self.description {
            op["description"] = json!(description);
        }
        if !self.params.is_empty() {
            op["parameters"] = self.params.iter().map(Param::to_json).collect();
        }
        if let Some(body) = self.body {
            op["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": schema_ref(body) } } });
        }
        op
    }
}

/// The whole document, from the routes' methods, path templates and operations.
pub fn document<'a>(routes: impl IntoIterator<Item = (Method, &'a str, Access, &'a Operation)>) -> Value {
    let mut paths = Map::new();
    for (method, path, access, operation) in routes {
        let item = paths.entry(path).or_insert_with(|| json!({}));
        item[method.key()] = operation.to_json(access);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "refract HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Append events, read projection read models with read-your-writes consistency (`min_position`), follow commits live, scrape metrics. Every error is JSON: {\"error\": \"message\"}."
        },
        "paths": paths,
        "components": {
          "securitySchemes": { "bearer": {
            "type": "http", "scheme": "bearer",
            "description": "`Authorization: Bearer SECRET` with a token from `refract token` (`refract run --tokens FILE` or `[[tokens]]` in refract.toml). Scopes: `read`, `append`, `admin`. A host without tokens, on a loopback address or with `--insecure-no-auth`, needs none."
          }},
          "schemas": {
            "Error": { "type": "object", "required": ["error"], "properties": {
                "error": { "type": "string", "description": "What went wrong, for a person. A 5xx says only that the server failed." },
                "error_id": { "type": "string", "description": "5xx only: the id under which the server log has the error." },
                "checkpoint": { "type": "integer", "description": "504 only: the projection's checkpoint when the wait gave up." },
                "min_position": { "type": "integer", "description": "504 only: the position waited for." },
                "behind": { "type": "array", "items": { "$ref": "#/components/schemas/Checkpoint" }, "description": "504 from `/ready` only: the active projections still behind." },
                "faulted": { "type": "array", "items": { "$ref": "#/components/schemas/Checkpoint" }, "description": "503 from `/ready` only: the faulted active projections, each with its `error`." },
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
                "role": { "enum": ["active", "building", "failed"], "description": "`building`: a rebuild in shadow tables, swapped in at the head." },
                "collections": { "type": "array", "items": { "type": "object", "properties": {
                    "name": { "type": "string" }, "indexes": { "type": "array", "items": { "type": "string" } }
                }}},
                "module_hash": { "type": "string" }, "checkpoint": { "type": "integer" }, "head": { "type": "integer" },
                "lag": { "type": "integer" }, "state": { "enum": ["running", "faulted", "stopped"] },
                "last_error": { "type": ["string", "null"] },
                "paused": { "type": "boolean", "description": "Paused by an operator: no host runs it until it is resumed." },
                "store_error": { "type": ["string", "null"], "description": "The store or source error the projection is retrying, until a step succeeds." },
                "events_per_second": { "type": "number", "description": "Over the last 10 s." },
                "verify": { "oneOf": [{ "$ref": "#/components/schemas/VerifyOutcome" }, { "type": "null" }], "description": "The last verification of this generation, if any." }
            }},
            "VerifyOutcome": { "type": "object", "properties": {
                "at": { "type": "integer", "description": "When it ended, ms since the Unix epoch." },
                "generation": { "type": "integer" },
                "result": { "enum": ["clean", "differences", "error"] },
                "checkpoint": { "type": ["integer", "null"] }, "documents": { "type": ["integer", "null"] },
                "different": { "type": ["integer", "null"], "description": "Documents that differ; null when it could not run." },
                "error": { "type": ["string", "null"], "description": "Why it could not run." },
                "elapsed_ms": { "type": "integer" },
                "rebuild": { "type": ["integer", "null"], "description": "The generation `verify_policy = \"rebuild\"` started on a difference." },
                "runs": { "type": "object", "description": "Verifications of this generation so far, by result.", "properties": {
                    "clean": { "type": "integer" }, "differences": { "type": "integer" }, "error": { "type": "integer" }
                }}
            }},
            "VerifyReport": { "type": "object", "properties": {
                "projection": { "type": "string" }, "generation": { "type": "integer" },
                "checkpoint": { "type": "integer", "description": "Both models were compared at this checkpoint." },
                "clean": { "type": "boolean" },
                "documents": { "type": "integer", "description": "Documents in either model." },
                "different": { "type": "integer", "description": "Documents that differ, all of them." },
                "differences": { "type": "array", "description": "The first `limit`, by collection then id.", "items": { "type": "object", "properties": {
                    "collection": { "type": "string" }, "id": { "type": "string" },
                    "kind": { "enum": ["differs", "missing_in_store", "not_rebuilt"], "description": "`missing_in_store`: only the rebuild has it; `not_rebuilt`: only the store has it." },
                    "stored": { "description": "The document in the store, or null." },
                    "rebuilt": { "description": "The document rebuilt from the log, or null." }
                }}},
                "elapsed_ms": { "type": "integer" }
            }},
            "Compiling": { "type": "object", "required": ["source", "state", "started_at"], "properties": {
                "name": { "type": ["string", "null"], "description": "The projection, when known before the compile (a reload, a restart)." },
                "source": { "type": "string", "description": "The plugin file." },
                "state": { "const": "compiling" },
                "started_at": { "type": "integer", "description": "ms since the Unix epoch" }
            }},
            "Checkpoint": { "type": "object", "required": ["projection", "generation", "checkpoint"], "properties": {
                "projection": { "type": "string" }, "generation": { "type": "integer" }, "checkpoint": { "type": "integer" },
                "error": { "type": "string", "description": "Faulted projections only: why." }
            }},
            "Ready": { "type": "object", "properties": {
                "ready": { "const": true },
                "min_position": { "type": "integer", "description": "The position waited for (the head when the request gave none)." },
                "projections": { "type": "array", "items": { "$ref": "#/components/schemas/Checkpoint" } }
            }},
            "Event": { "type": "object", "properties": {
                "position": { "type": "integer", "description": "Global position." },
                "stream_id": { "type": "string" }, "stream_version": { "type": "integer" },
                "type": { "type": "string" }, "payload": {}, "metadata": {},
                "timestamp": { "type": "integer", "description": "Append time, ms since the Unix epoch." }
            }},
            "EventPage": { "type": "object", "properties": {
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } },
                "next_after": { "type": ["integer", "null"], "description": "Pass as `after` for the next page; null on the last." },
                "head": { "type": "integer", "description": "`/events` only: the newest position." },
                "stream_id": { "type": "string", "description": "`/streams/{stream}` only." },
                "version": { "type": "integer", "description": "`/streams/{stream}` only: the stream's version." }
            }},
            "ChangeEntry": { "type": "object", "properties": {
                "generation": { "type": "integer" }, "sequence": { "type": "integer" }, "checkpoint": { "type": "integer" },
                "collection": { "type": "string" }, "id": { "type": "string" },
                "kind": { "enum": ["created", "updated", "deleted"] },
                "recorded_at": { "type": "integer", "description": "ms since the Unix epoch." },
                "document": { "type": "object", "description": "The document as written; absent for a delete." }
            }},
            "ChangePage": { "type": "object", "properties": {
                "projection": { "type": "string" }, "consumer": { "type": ["string", "null"] },
                "generation": { "type": "integer", "description": "The active generation the entries are from." },
                "reset": { "type": "boolean", "description": "The position asked for is not in the active generation's log: read the whole model again, then page from `after=0&generation=G`." },
                "next_after": { "type": "integer", "description": "Pass as `after` for the next page." },
                "head": { "type": "integer", "description": "The newest sequence in the log." },
                "entries": { "type": "array", "items": { "$ref": "#/components/schemas/ChangeEntry" } }
            }},
            "AckBody": { "type": "object", "required": ["generation", "sequence"], "additionalProperties": false, "properties": {
                "generation": { "type": "integer" }, "sequence": { "type": "integer", "minimum": 0 }
            }},
            "Ack": { "type": "object", "properties": {
                "projection": { "type": "string" }, "consumer": { "type": "string" },
                "generation": { "type": "integer" }, "sequence": { "type": "integer" }
            }},
            "Document": { "type": "object", "properties": { "id": { "type": "string" }, "document": { "type": "object" } } },
            "Page": { "type": "object", "properties": {
                "documents": { "type": "array", "items": { "$ref": "#/components/schemas/Document" } },
                "next_cursor": { "type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last." },
                "warnings": { "$ref": "#/components/schemas/Warnings" }
            }},
            "Warnings": { "type": "array", "items": { "type": "string" }, "description": "Present only when the query ran but likely not as it reads, e.g. a string compared by order with a field holding numbers." }
        }}
    })
}
