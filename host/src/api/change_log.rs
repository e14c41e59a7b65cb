//! The durable change feed over a projection's change log: JSON pages,
//! a resumable Server-Sent Events stream, and named consumers' acks.
//!
//! `GET /projections/{name}/changes` decides what it serves from the request:
//! with no parameters and no `Last-Event-ID` it is today's live feed of
//! commit notices (`sse::feed`); with `Accept: text/event-stream` (or a
//! `Last-Event-ID` of the form `generation:sequence`) it streams the log
//! from the requested position; otherwise it answers one JSON page.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::api::error::ApiError;
use crate::api::{ApiState, sse};
use crate::projection::runner::CommitNotice;
use crate::store::{ChangeEntry, ChangePage, ConsumerPosition, StoreError};

/// Entries per page or per read of the stream, unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 1000;
/// Largest `limit`.
pub const MAX_LIMIT: u32 = 10_000;
/// How often a waiting stream looks again without a commit notice: a swap
/// to a rebuilt generation sends none, and its `reset` must still come.
const RECHECK: Duration = Duration::from_secs(1);

/// The query parameters of the feed.
#[derive(Debug, Default, PartialEq, Eq)]
struct FeedParams {
    after: Option<u64>,
    generation: Option<u32>,
    limit: Option<u32>,
    consumer: Option<String>,
}

const KNOWN: &str = "after, generation, limit, consumer";

impl FeedParams {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (key, value) in crate::api::params::pairs(raw)? {
            let number = |max: u64| -> Result<u64, ApiError> {
                value.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    ApiError::BadRequest(format!("`{key}` must be an integer from 0 to {max}, not `{value}`"))
                })
            };
            match &*key {
                "after" => p.after = Some(number(i64::MAX as u64)?),
                "generation" => p.generation = Some(number(u32::MAX as u64)? as u32),
                "limit" => {
                    let n = number(MAX_LIMIT as u64)? as u32;
                    if n == 0 {
                        return Err(ApiError::BadRequest(format!("`limit` must be 1 to {MAX_LIMIT}, not 0")));
                    }
                    p.limit = Some(n);
                }
                "consumer" => {
                    crate::store::change_log::check_consumer(&value)?;
                    p.consumer = Some(value);
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter `{other}` (the change feed takes: {KNOWN})"
                    )));
                }
            }
        }
        Ok(p)
    }
}

/// A position in some generation's log; `generation: None` means "the
/// active one, whichever it is".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    generation: Option<u32>,
    after: u64,
}

/// `Last-Event-ID` as the stream writes it: `generation:sequence`. Any other
/// value (the live feed's ids are checkpoints) is not a log position.
fn parse_event_id(id: &str) -> Option<Position> {
    let (g, s) = id.split_once(':')?;
    Some(Position { generation: Some(g.parse().ok()?), after: s.parse().ok()? })
}

fn event_id(generation: u32, sequence: u64) -> String {
    format!("{generation}:{sequence}")
}

/// `GET /projections/{name}/changes`.
pub async fn changes(s: ApiState, name: String, headers: HeaderMap, raw: Option<String>) -> Result<Response, ApiError> {
    let params = FeedParams::parse(raw.as_deref())?;
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(parse_event_id);
    let streaming = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"))
        || resumed.is_some();
    // Subscribe before reading, so no commit falls between the read and the wait.
    let notices = s.subscribe();
    if params == FeedParams::default() && resumed.is_none() {
        let record = s.models().projection(&name).await?;
        return Ok(sse::feed(name, record.checkpoint, notices, s.closing()).into_response());
    }
    let position = match (resumed, params.after) {
        (Some(p), _) => p,
        (None, Some(after)) => Position { generation: params.generation, after },
        (None, None) => match &params.consumer {
            Some(c) => match s.models().consumer(&name, c).await? {
                Some(p) => Position { generation: Some(p.generation), after: p.sequence },
                None => Position { generation: params.generation, after: 0 },
            },
            None => Position { generation: params.generation, after: 0 },
        },
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let first = read(&s, &name, position, limit).await?;
    if streaming {
        return Ok(stream(s, name, position, first, limit, notices).into_response());
    }
    Ok(page_json(&name, params.consumer.as_deref(), position, &first).into_response())
}

/// What reading from a position found.
#[derive(Debug)]
enum Read {
    /// The position is in the active generation's log: its next entries.
    Page(ChangePage),
    /// The position is not in the active generation's log: the reader must
    /// read the whole model again, then follow the new log from its start.
    Reset {
        /// The active generation.
        generation: u32,
    },
}

async fn read(s: &ApiState, name: &str, at: Position, limit: u32) -> Result<Read, ApiError> {
    match s.models().read_changes(name, at.after, limit).await {
        Ok(page) if at.generation.is_some_and(|g| g != page.generation) || at.after > page.head => {
            Ok(Read::Reset { generation: page.generation })
        }
        Ok(page) => Ok(Read::Page(page)),
        Err(StoreError::ChangesPruned { generation, .. }) if at.generation.is_some_and(|g| g != generation) => {
            Ok(Read::Reset { generation })
        }
        Err(e) => Err(e.into()),
    }
}

/// One entry as JSON text; the document is spliced in as stored.
fn entry_json(generation: u32, e: &ChangeEntry) -> String {
    let mut out = format!(
        "{{\"generation\":{generation},\"sequence\":{},\"checkpoint\":{},\"collection\":{},\"id\":{},\"kind\":\"{}\",\"recorded_at\":{}",
        e.sequence,
        e.checkpoint,
        Value::from(e.collection.as_str()),
        Value::from(e.id.as_str()),
        e.kind.as_str(),
        e.recorded_at,
    );
    if let Some(doc) = &e.document {
        out.push_str(",\"document\":");
        out.push_str(doc);
    }
    out.push('}');
    out
}

/// `{projection, generation, reset, entries, next_after, head}`: pass
/// `next_after` (and `generation`) as the next request's `after`.
fn page_json(name: &str, consumer: Option<&str>, at: Position, read: &Read) -> Response {
    let (generation, reset, entries, next_after, head) = match read {
        Read::Page(p) => {
            let next = p.entries.last().map_or(at.after, |e| e.sequence);
            (p.generation, false, p.entries.as_slice(), next, p.head)
        }
        Read::Reset { generation } => (*generation, true, &[][..], 0, 0),
    };
    let mut out = format!(
        "{{\"projection\":{},\"consumer\":{},\"generation\":{generation},\"reset\":{reset},\"next_after\":{next_after},",
        Value::from(name),
        Value::from(consumer),
    );
    if !reset {
        out.push_str(&format!("\"head\":{head},"));
    }
    out.push_str("\"entries\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&entry_json(generation, e));
    }
    out.push_str("]}");
    ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// What the stream keeps between events.
struct LogStream {
    state: ApiState,
    projection: String,
    generation: Option<u32>,
    after: u64,
    limit: u32,
    notices: broadcast::Receiver<CommitNotice>,
    closing: watch::Receiver<bool>,
    pending: VecDeque<Event>,
    /// Set once a `gone` event is queued: the stream ends after it.
    ending: bool,
    /// The last read filled its page: read again at once.
    more: bool,
}

/// The log from `at` as events: `ready` with {projection, generation,
/// after, head} first; a `change` per entry (id `generation:sequence`);
/// `reset` with {projection, generation} when the position is not in the
/// active generation's log (a rebuild was swapped in), after which the new
/// generation's log follows from its start; `gone` with {first, after} if
/// retention overtook the reader, and the stream ends.
fn stream(
    state: ApiState,
    projection: String,
    at: Position,
    first: Read,
    limit: u32,
    notices: broadcast::Receiver<CommitNotice>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let closing = state.closing();
    let mut s = LogStream {
        state,
        projection,
        generation: at.generation,
        after: at.after,
        limit,
        notices,
        closing,
        pending: VecDeque::new(),
        ending: false,
        more: false,
    };
    let (generation, head) = match &first {
        Read::Page(p) => (p.generation, p.head),
        Read::Reset { generation } => (*generation, 0),
    };
    let ready = json!({ "projection": s.projection, "generation": generation, "after": s.after, "head": head });
    s.pending.push_back(Event::default().event("ready").data(ready.to_string()));
    s.take(first);
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.ending {
                return None;
            }
            if !std::mem::take(&mut s.more) {
                let received = tokio::select! {
                    r = tokio::time::timeout(RECHECK, s.notices.recv()) => r,
                    _ = s.closing.wait_for(|c| *c) => return None,
                };
                match received {
                    Ok(Ok(n)) if n.projection != s.projection => continue,
                    Ok(Err(RecvError::Closed)) => return None,
                    // A commit, a missed notice or the recheck: read again.
                    _ => {}
                }
            }
            let at = Position { generation: s.generation, after: s.after };
            match read(&s.state, &s.projection, at, s.limit).await {
                Ok(r) => s.take(r),
                Err(ApiError::Store(StoreError::ChangesPruned { first, after, .. })) => {
                    let data = json!({ "projection": s.projection, "first": first, "after": after });
                    s.pending.push_back(Event::default().event("gone").data(data.to_string()));
                    s.ending = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, projection = %s.projection, "change feed: could not read the log");
                    return None;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl LogStream {
    /// Queues what a read found and moves the position past it.
    fn take(&mut self, read: Read) {
        match read {
            Read::Page(page) => {
                self.generation = Some(page.generation);
                let full = page.entries.len() as u32 >= self.limit;
                for e in &page.entries {
                    let event = Event::default()
                        .event("change")
                        .id(event_id(page.generation, e.sequence))
                        .data(entry_json(page.generation, e));
                    self.pending.push_back(event);
                    self.after = e.sequence;
                }
                // A full page may have more behind it: read on without waiting.
                self.more = full;
            }
            Read::Reset { generation } => {
                let data = json!({ "projection": self.projection, "generation": generation });
                self.pending
                    .push_back(Event::default().event("reset").id(event_id(generation, 0)).data(data.to_string()));
                self.generation = Some(generation);
                self.after = 0;
            }
        }
    }
}

/// The body of an acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    generation: u32,
    sequence: u64,
}

/// `POST /projections/{name}/changes/consumers/{consumer}/ack`.
pub async fn acknowledge(s: ApiState, name: String, consumer: String, body: &[u8]) -> Result<Value, ApiError> {
    let ack: AckBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body must be {{\"generation\": N, \"sequence\": N}}: {e}")))?;
    let stored = s
        .models()
        .acknowledge(&name, &consumer, ConsumerPosition { generation: ack.generation, sequence: ack.sequence })
        .await?;
    Ok(json!({
        "projection": name,
        "consumer": consumer,
        "generation": stored.generation,
        "sequence": stored.sequence,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked() {
        assert_eq!(FeedParams::parse(None).unwrap(), FeedParams::default());
        let p = FeedParams::parse(Some("after=5&generation=2&limit=10&consumer=billing")).unwrap();
        assert_eq!(
            p,
            FeedParams { after: Some(5), generation: Some(2), limit: Some(10), consumer: Some("billing".into()) }
        );
        for bad in ["from=3", "limit=0", "limit=10001", "after=-1", "after=x", "consumer=a%20b"] {
            let status = FeedParams::parse(Some(bad)).map(drop).map_err(|e| e.status());
            assert_eq!(status, Err(axum::http::StatusCode::BAD_REQUEST), "{bad}");
        }
    }

    #[test]
    fn event_ids_are_generation_and_sequence() {
        assert_eq!(parse_event_id(&event_id(3, 41)), Some(Position { generation: Some(3), after: 41 }));
        assert_eq!(parse_event_id("41"), None, "the live feed's checkpoint ids are not log positions");
        assert_eq!(parse_event_id("a:1"), None);
    }
}
