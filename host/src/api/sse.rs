//! Server-Sent Events feeds of committed batches: one projection's
//! (`GET /projections/{name}/changes`) and the host's (`GET /changes`).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use crate::api::ApiState;
use crate::api::ready::Active;
use crate::projection::runner::CommitNotice;
use crate::ready::Readiness;

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

/// What the host-wide feed keeps between events.
struct HostFeed {
    state: ApiState,
    notices: broadcast::Receiver<CommitNotice>,
    closing: watch::Receiver<bool>,
    /// The active generations' checkpoints, followed from the notices.
    active: Active,
    /// Events to send before waiting for the next notice.
    pending: VecDeque<Event>,
    /// The checkpoint the last `ready` announced: each is announced once.
    announced: Option<u64>,
}

/// The feed of every projection's commits. The caller subscribes to
/// `notices` before it reads `active` and `head`. The first event,
/// `subscribed`, has the head and each active projection's checkpoint;
/// then every `commit` of every projection and generation (building ones
/// too), as on a projection's feed; and `ready` each time every active
/// projection has reached one checkpoint that is the head of the log,
/// right at subscription too if they are there. `lagged` as on a
/// projection's feed. Ends when the server shuts down.
pub fn host_feed(
    state: ApiState,
    notices: broadcast::Receiver<CommitNotice>,
    active: Active,
    head: u64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let subscribed = json!({ "head": head, "projections": active.checkpoints() });
    let closing = state.closing();
    let mut feed = HostFeed {
        state,
        notices,
        closing,
        active,
        pending: VecDeque::from([Event::default().event("subscribed").data(subscribed.to_string())]),
        announced: None,
    };
    feed.announce_at(head);
    let stream = futures_util::stream::unfold(feed, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            let received = tokio::select! {
                r = s.notices.recv() => r,
                _ = s.closing.wait_for(|c| *c) => return None,
            };
            match received {
                Ok(n) => {
                    s.pending.push_back(commit_event(&n));
                    if !s.active.apply(&n) {
                        s.reread().await;
                    }
                    s.announce().await;
                }
                Err(RecvError::Lagged(missed)) => {
                    let data = json!({ "missed_notices": missed }).to_string();
                    s.pending.push_back(Event::default().event("lagged").data(data));
                    s.reread().await;
                    s.announce().await;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl HostFeed {
    /// Reads the registry again. On failure the feed goes on with what it
    /// had: a missed `ready` is better than a feed that ends on a blip.
    async fn reread(&mut self) {
        match Active::read(&self.state).await {
            Ok(active) => self.active = active,
            Err(e) => tracing::warn!(error = %e, "change feed: could not read the registry"),
        }
    }

    /// Queues `ready` if every active projection is at one checkpoint not
    /// announced yet, and that checkpoint is the head. The head is asked
    /// for only then, not on every commit.
    async fn announce(&mut self) {
        let Some(common) = self.active.common_checkpoint().filter(|c| Some(*c) != self.announced) else {
            return;
        };
        match self.state.source().head().await {
            Ok(head) => self.announce_at(head),
            Err(e) => tracing::warn!(error = %e, checkpoint = common, "change feed: could not read the head"),
        }
    }

    fn announce_at(&mut self, head: u64) {
        if self.active.common_checkpoint() != Some(head) || self.announced == Some(head) {
            return;
        }
        if let Readiness::Ready(projections) = self.active.readiness(head) {
            let data = json!({ "checkpoint": head, "projections": projections });
            self.pending.push_back(Event::default().event("ready").data(data.to_string()));
            self.announced = Some(head);
        }
    }
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
