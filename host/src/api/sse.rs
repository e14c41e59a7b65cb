//! `GET /projections/{name}/changes`: a Server-Sent Events feed of committed batches.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::projection::runner::CommitNotice;

/// What the feed yields next.
struct Feed {
    projection: String,
    notices: broadcast::Receiver<CommitNotice>,
    closing: watch::Receiver<bool>,
    /// The `ready` event, sent first so a client knows it is subscribed.
    ready: Option<Event>,
}

/// The feed of one projection. The subscription is taken by the caller
/// before it reads `checkpoint`, so no commit falls between the two; the
/// first event, `ready`, carries that checkpoint. Each `commit` event
/// carries a batch's checkpoint and changed documents; `lagged` says the
/// client fell behind and missed some (read the state again). The feed ends
/// when the server shuts down.
pub fn feed(
    projection: String,
    checkpoint: u64,
    notices: broadcast::Receiver<CommitNotice>,
    closing: watch::Receiver<bool>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ready =
        Event::default().event("ready").data(json!({ "projection": projection, "checkpoint": checkpoint }).to_string());
    let state = Feed { projection, notices, closing, ready: Some(ready) };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(ready) = s.ready.take() {
            return Some((Ok(ready), s));
        }
        loop {
            let received = tokio::select! {
                r = s.notices.recv() => r,
                _ = s.closing.wait_for(|c| *c) => return None,
            };
            let event = match received {
                Ok(n) if n.projection == s.projection => commit_event(&n),
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(json!({ "missed_notices": missed }).to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(event), s));
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn commit_event(n: &CommitNotice) -> Event {
    let changed: Vec<_> = n.changed.iter().map(|(c, id)| json!({ "collection": c, "id": id })).collect();
    let data = json!({
        "projection": n.projection,
        "generation": n.generation,
        "checkpoint": n.checkpoint,
        "events": n.events,
        "changed": changed,
    });
    Event::default().event("commit").id(n.checkpoint.to_string()).data(data.to_string())
}
