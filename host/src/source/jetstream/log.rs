//! One JetStream stream read as an ordered log: its head, its identity,
//! and pages of messages after a position. Shared by refract's own store
//! and foreign streams, which differ only in how a message becomes an event.

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
    pub async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
        decode: &Decode<'_>,
    ) -> Result<Vec<Event>, SourceError> {
        let info = self.info().await?;
        let state = &info.state;
        // From 0, a reader (a new generation, a rebuild) starts wherever the
        // stream now starts: it had read nothing that could go missing.
        if after > 0 && state.first_sequence > after.saturating_add(1) {
            return Err(SourceError::Truncated {
                stream: self.name.clone(),
                checkpoint: after,
                first: state.first_sequence,
            });
        }
        let end = up_to.min(state.last_sequence);
        if after >= end || state.messages == 0 || limit == 0 {
            return Ok(Vec::new());
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
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer.messages().await.map_err(nats)?;
        let mut events = Vec::new();
        loop {
            let next = tokio::time::timeout(READ_STALL, messages.next())
                .await
                .map_err(|_| SourceError::Nats(format!("stream `{}` sent no message for {READ_STALL:?}", self.name)))?;
            let Some(message) = next else { break };
            let message = message.map_err(nats)?;
            let meta = message.info().map_err(nats)?;
            let (sequence, pending, published) = (meta.stream_sequence, meta.pending, meta.published);
            if sequence > end {
                break;
            }
            let raw = jetstream::message::StreamMessage {
                subject: message.message.subject.clone(),
                sequence,
                headers: message.message.headers.clone().unwrap_or_default(),
                payload: message.message.payload.clone(),
                time: published,
            };
            match decode(&raw) {
                Ok(event) if subscription.matches(&event.event_type, &event.stream_id) => {
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
            if sequence >= end || pending == 0 {
                break;
            }
        }
        Ok(events)
    }
}
