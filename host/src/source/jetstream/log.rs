//! One JetStream stream read as an ordered log: its head, its identity,
//! and pages of messages after a position. Shared by refract's own store
//! and foreign streams, which differ only in how a message becomes an event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::model::event::{Event, Subscription};
use crate::source::SourceError;

/// How long a read waits for a message the stream said it holds.
const READ_STALL: Duration = Duration::from_secs(10);

/// A connected stream.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// The stream's name.
    pub name: String,
    /// Subjects a read delivers (empty: all of the stream's).
    pub filter: String,
    /// The stream's creation time when it was opened: positions count in
    /// this incarnation of it.
    pub identity: String,
    /// Consumers of earlier reads, kept for the reads that go on from them.
    pub cursors: Cursors,
}

/// A NATS error, as the transient kind: the server may be back soon.
pub(crate) fn nats(e: impl std::fmt::Display) -> SourceError {
    SourceError::Nats(e.to_string())
}

/// Connects to `server` (`nats://HOST:PORT`, credentials allowed).
pub(crate) async fn connect(server: &str) -> Result<(async_nats::Client, jetstream::Context), SourceError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(server)
        .await
        .map_err(|e| SourceError::Nats(format!("cannot connect to {server}: {e}")))?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

/// A stream's identity: its name and creation time, to the nanosecond.
pub(crate) fn identity_of(info: &stream::Info) -> String {
    format!("JetStream stream `{}` created {}", info.config.name, info.created)
}

/// Milliseconds since the Unix epoch of a NATS time.
pub(crate) fn millis(t: &jetstream::message::StreamMessage) -> u64 {
    u64::try_from(t.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The stream's info, or a clear error when it does not exist.
pub(crate) async fn stream_info(js: &jetstream::Context, name: &str) -> Result<stream::Info, SourceError> {
    match js.get_stream(name).await {
        Ok(s) => Ok(s.cached_info().clone()),
        Err(e) => match e.kind() {
            stream_kind @ (async_nats::jetstream::context::GetStreamErrorKind::InvalidStreamName
            | async_nats::jetstream::context::GetStreamErrorKind::EmptyName) => {
                Err(SourceError::Misconfigured(format!("`{name}` is not a JetStream stream name: {stream_kind}")))
            }
            async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Err(SourceError::Misconfigured(format!("the JetStream stream `{name}` does not exist")))
            }
            _ => Err(nats(e)),
        },
    }
}

/// What a message is, for a reader: an event, or a poison one.
pub(crate) type Decode<'a> =
    dyn Fn(&jetstream::message::StreamMessage) -> Result<Event, SourceError> + Send + Sync + 'a;

impl Log {
    /// The stream's info now, checked against the identity it was opened with.
    pub async fn info(&self) -> Result<stream::Info, SourceError> {
        let info = stream_info(&self.js, &self.name).await?;
        let now = identity_of(&info);
        if now != self.identity {
            return Err(SourceError::Recreated { was: self.identity.clone(), now });
        }
        Ok(info)
    }

    /// The stream's last sequence.
    pub async fn head(&self) -> Result<u64, SourceError> {
        Ok(self.info().await?.state.last_sequence)
    }

    /// Up to `limit` subscribed events with `after < sequence <= up_to`.
    ///
    /// Sequences have gaps (deleted messages, other subjects), so a read
    /// counts messages, not sequences: it follows an ordered consumer from
    /// `after + 1` until it has `limit` events or passed `up_to`. A
    /// stream whose first sequence is beyond `after + 1` (for `after > 0`)
    /// lost messages the reader never saw: that is an error, never a
    /// silent skip.
    ///
    /// Creating a consumer costs several round trips, so a read that goes on
    /// where an earlier one ended takes that one's consumer over (see
    /// [`Cursor`]); only a seek, an error or a caught-up reader makes a new one.
    pub async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
        decode: &Decode<'_>,
    ) -> Result<Vec<Event>, SourceError> {
        if after >= up_to || limit == 0 {
            return Ok(Vec::new());
        }
        let (mut cursor, mut gap_checked) = match self.cursors.take(after, subscription) {
            Some(cursor) => (cursor, false),
            None => match self.open_cursor(after, after, up_to, subscription).await? {
                Some(cursor) => (cursor, true),
                None => return Ok(Vec::new()),
            },
        };
        let mut events = Vec::new();
        loop {
            let message = match cursor.peeked.take() {
                Some(message) => message,
                // Its `pending` was counted when the server sent it, maybe
                // before messages up to `up_to` were stored: only a new
                // consumer tells whether any of them pass the filter.
                None if cursor.drained => {
                    if cursor.taken >= up_to {
                        break;
                    }
                    match self.open_cursor(cursor.taken, after, up_to, subscription).await? {
                        Some(fresh) => {
                            let returned = cursor.returned;
                            cursor = fresh;
                            cursor.returned = returned;
                            continue;
                        }
                        None => break,
                    }
                }
                None => {
                    let next = tokio::time::timeout(READ_STALL, cursor.messages.next()).await.map_err(|_| {
                        SourceError::Nats(format!("stream `{}` sent no message for {READ_STALL:?}", self.name))
                    })?;
                    let Some(message) = next else { break };
                    message.map_err(nats)?
                }
            };
            let meta = message.info().map_err(nats)?;
            let (sequence, pending, published) = (meta.stream_sequence, meta.pending, meta.published);
            if sequence <= cursor.taken {
                // Only a stream deleted and created again goes back.
                self.info().await?;
                return Err(SourceError::Nats(format!("stream `{}` went back to sequence {sequence}", self.name)));
            }
            if sequence > up_to {
                cursor.covered = sequence - 1;
                cursor.peeked = Some(message);
                break;
            }
            // A gap is deleted messages or other subjects, or a purge the
            // reader must not step over: the stream's first sequence tells.
            // Once per read, as a fresh consumer checks once when created.
            if cursor.taken > 0 && sequence > cursor.taken + 1 && !gap_checked {
                gap_checked = true;
                let first = self.info().await?.state.first_sequence;
                if first > cursor.taken + 1 {
                    return Err(SourceError::Truncated { stream: self.name.clone(), checkpoint: after, first });
                }
            }
            (cursor.taken, cursor.covered, cursor.drained) = (sequence, sequence, pending == 0);
            let raw = jetstream::message::StreamMessage {
                subject: message.message.subject.clone(),
                sequence,
                headers: message.message.headers.clone().unwrap_or_default(),
                payload: message.message.payload.clone(),
                time: published,
            };
            match decode(&raw) {
                Ok(event) if subscription.matches(&event.event_type, &event.stream_id) => {
                    cursor.returned = sequence;
                    events.push(event);
                    if events.len() >= limit {
                        break;
                    }
                }
                Ok(_) => {}
                // A bad message the reader did not subscribe to is none of its business.
                Err(SourceError::BadEvent { stream_id, event_type, .. })
                    if stream_id != "?" && event_type != "?" && !subscription.matches(&event_type, &stream_id) => {}
                Err(e) => return Err(e),
            }
            if sequence >= up_to {
                break;
            }
        }
        self.cursors.put(cursor);
        Ok(events)
    }

    /// A new consumer from `after + 1`, once the stream is checked for
    /// re-creation and truncation (named after the reader's `checkpoint`);
    /// `None` when it has nothing to deliver.
    async fn open_cursor(
        &self,
        after: u64,
        checkpoint: u64,
        up_to: u64,
        subscription: &Subscription,
    ) -> Result<Option<Cursor>, SourceError> {
        let info = self.info().await?;
        let state = &info.state;
        // From 0, a reader (a new generation, a rebuild) starts wherever the
        // stream now starts: it had read nothing that could go missing.
        if after > 0 && state.first_sequence > after.saturating_add(1) {
            return Err(SourceError::Truncated { stream: self.name.clone(), checkpoint, first: state.first_sequence });
        }
        if after >= up_to.min(state.last_sequence) || state.messages == 0 {
            return Ok(None);
        }
        let consumer = self
            .js
            .create_consumer_on_stream(
                consumer::pull::OrderedConfig {
                    filter_subject: self.filter.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
                    ..Default::default()
                },
                &self.name,
            )
            .await
            .map_err(nats)?;
        let cleanup = DeleteOnDrop(Some((self.js.clone(), self.name.clone(), consumer.cached_info().name.clone())));
        if consumer.cached_info().num_pending == 0 {
            return Ok(None);
        }
        let messages = consumer.messages().await.map_err(nats)?;
        Ok(Some(Cursor {
            messages,
            subscription: subscription.clone(),
            taken: after,
            returned: after,
            covered: after,
            peeked: None,
            drained: false,
            _cleanup: cleanup,
        }))
    }
}

/// An ordered consumer kept between reads, and how far it got.
struct Cursor {
    messages: consumer::pull::Ordered,
    /// The subscription of the read that left it.
    subscription: Subscription,
    /// The sequence of the last message taken from `messages`.
    taken: u64,
    /// The sequence of the last event that read returned: the messages after
    /// it up to `taken` were none of its subscription's.
    returned: u64,
    /// Every message up to here was taken; the next one, if any, is `peeked`.
    covered: u64,
    /// A message taken beyond the read's end, for the next read.
    peeked: Option<jetstream::Message>,
    /// The last message taken had none pending after it: whether new
    /// messages will come through the filter is unknown, so a reader that
    /// wants more opens a new consumer rather than waiting.
    drained: bool,
    _cleanup: DeleteOnDrop,
}

/// Consumers of finished reads, waiting for the read that goes on from
/// where one ended. Runners share a source, so there may be several.
#[derive(Default, Clone)]
pub(crate) struct Cursors(Arc<Mutex<Vec<Cursor>>>);

/// More idle consumers than runners that read at once are stale.
const IDLE_CURSORS: usize = 16;

impl Cursors {
    /// The cursor a read from `after` goes on with: one at `after` with no
    /// message in between left untaken, or one whose last read had the same
    /// subscription and returned up to `after`.
    fn take(&self, after: u64, subscription: &Subscription) -> Option<Cursor> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = idle.iter().position(|c| {
            let continues = c.taken <= after || (c.returned <= after && c.subscription == *subscription);
            continues && after <= c.covered
        })?;
        Some(idle.swap_remove(at))
    }

    fn put(&self, cursor: Cursor) {
        if cursor.drained && cursor.peeked.is_none() {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= IDLE_CURSORS {
            idle.remove(0);
        }
        idle.push(cursor);
    }
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.0.lock().map(|c| c.len()).unwrap_or(0);
        f.debug_struct("Cursors").field("idle", &idle).finish()
    }
}

/// Deletes a reader's consumer when the reader lets it go, however that
/// happened: the server would keep it 30 s after its last use otherwise.
struct DeleteOnDrop(Option<(jetstream::Context, String, String)>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let (Some((js, stream, consumer)), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = js.delete_consumer_from_stream(consumer, stream).await;
            });
        }
    }
}
