//! Reading events back: one stream by version (`GET /streams/{stream}`), or
//! the whole log by position (`GET /events`), a page at a time, so a user
//! can see what a projection saw.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::on;
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::api::auth::{Access, Scope};
use crate::api::error::ApiError;
use crate::api::openapi::{In, Method, Operation, Param, json_reply, schema_ref, string_schema};
use crate::api::params::{number, pairs, unknown};
use crate::api::routes::Route;
use crate::model::event::{Event, Subscription};

/// Events per page unless `limit` says otherwise.
pub const DEFAULT_EVENTS_LIMIT: usize = 100;
/// The largest page.
pub const MAX_EVENTS_LIMIT: usize = 1000;

const AFTER: Param = Param {
    name: "after",
    location: In::Query,
    description: "Start after this one (exclusive); default 0. Pass the previous page's `next_after`.",
    schema: || json!({ "type": "integer", "minimum": 0 }),
};
const FROM: Param = Param {
    name: "from",
    location: In::Query,
    description: "Start at this one (inclusive), instead of `after`.",
    schema: || json!({ "type": "integer", "minimum": 1 }),
};
const LIMIT: Param = Param {
    name: "limit",
    location: In::Query,
    description: "Page size, 1 to 1000 (default 100).",
    schema: || json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
};

/// `GET /streams/{stream}`.
pub(crate) const STREAM_ROUTE: Route = Route {
    method: Method::Get,
    path: "/streams/{stream}",
    access: Access::Scoped(Scope::Read),
    handler: |m| on(m, stream),
    doc: Operation {
        summary: "A stream's events, by stream version, a page at a time",
        description: Some(
            "`after` and `from` count stream versions (1 is the stream's first event). 404 when the stream has no events.",
        ),
        params: &[
            Param { name: "stream", location: In::Path, description: "Stream id.", schema: string_schema },
            AFTER,
            FROM,
            LIMIT,
        ],
        body: None,
        ok: json_reply("A page of the stream.", || schema_ref("EventPage")),
        errors: &[400, 404, 500],
    },
};

/// `GET /events`.
pub(crate) const LOG_ROUTE: Route = Route {
    method: Method::Get,
    path: "/events",
    access: Access::Scoped(Scope::Read),
    handler: |m| on(m, log),
    doc: Operation {
        summary: "Every stream's events, by global position, a page at a time",
        description: Some("`after` and `from` count global positions (1 is the first event of the log)."),
        params: &[AFTER, FROM, LIMIT],
        body: None,
        ok: json_reply("A page of the log.", || schema_ref("EventPage")),
        errors: &[400, 500],
    },
};

/// Where a page starts and how long it is.
#[derive(Debug, PartialEq, Eq)]
struct PageParams {
    after: u64,
    limit: usize,
}

impl PageParams {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let (mut after, mut from, mut limit) = (None, None, DEFAULT_EVENTS_LIMIT);
        for (key, value) in pairs(raw)? {
            match key.as_str() {
                "after" => after = Some(number::<u64>(&key, &value)?),
                "from" => from = Some(number::<u64>(&key, &value)?),
                "limit" => limit = number(&key, &value)?,
                _ => return Err(unknown(&key, "after, from, limit")),
            }
        }
        if !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(format!("`limit` must be from 1 to {MAX_EVENTS_LIMIT}, not {limit}")));
        }
        let after = match (after, from) {
            (Some(_), Some(_)) => return Err(ApiError::BadRequest("give `after` or `from`, not both".into())),
            (_, Some(0)) => {
                return Err(ApiError::BadRequest("`from` counts from 1; use `after=0` for the start".into()));
            }
            (_, Some(from)) => from - 1,
            (after, None) => after.unwrap_or(0),
        };
        Ok(Self { after, limit })
    }
}

/// An event as the API shows it; payload and metadata as JSON.
fn event_json(e: &Event) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    json!({
        "position": e.position,
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "type": e.event_type,
        "payload": parse(&e.payload),
        "metadata": parse(&e.metadata),
        "timestamp": e.timestamp,
    })
}

/// `{"events": [...], "next_after": N|null}`: `next_after` is null on the last page.
fn page(events: &[Event], limit: usize, key: impl Fn(&Event) -> u64) -> Value {
    let next = (events.len() == limit).then(|| events.last().map(&key)).flatten();
    json!({ "events": events.iter().map(event_json).collect::<Vec<_>>(), "next_after": next })
}

async fn stream(
    State(s): State<ApiState>,
    stream: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let stream = crate::api::routes::path(stream)?;
    let p = PageParams::parse(raw.as_deref())?;
    let store = s.appender().map_err(|_| {
        ApiError::BadRequest(
            "this host reads a foreign event source without streams to read by id: use GET /events".into(),
        )
    })?;
    let version = store.stream_version(&stream).await?;
    if version == 0 {
        return Err(ApiError::NoStream(stream));
    }
    let events = store.read_stream(&stream, p.after, p.limit).await?;
    let mut body = page(&events, p.limit, |e| e.stream_version);
    body["stream_id"] = json!(stream);
    body["version"] = json!(version);
    Ok(Json(body))
}

async fn log(State(s): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let p = PageParams::parse(raw.as_deref())?;
    let head = s.source().head().await?;
    let events = s.source().read(p.after, head, &Subscription::default(), p.limit).await?;
    let mut body = page(&events, p.limit, |e| e.position);
    body["head"] = json!(head);
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_parameters() {
        assert_eq!(PageParams::parse(None).unwrap(), PageParams { after: 0, limit: 100 });
        assert_eq!(PageParams::parse(Some("from=5&limit=2")).unwrap(), PageParams { after: 4, limit: 2 });
        assert_eq!(PageParams::parse(Some("after=5")).unwrap(), PageParams { after: 5, limit: 100 });
        for (raw, needle) in [
            ("limit=0", "`limit` must be from 1 to 1000"),
            ("limit=1001", "`limit` must be from 1 to 1000"),
            ("after=-1", "`after` must be a non-negative integer"),
            ("from=0", "`from` counts from 1"),
            ("after=1&from=2", "not both"),
            ("cursor=x", "unknown query parameter `cursor`"),
        ] {
            let e = PageParams::parse(Some(raw)).unwrap_err().to_string();
            assert!(e.contains(needle), "{raw}: {e}");
        }
    }
}
