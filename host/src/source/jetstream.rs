//! Events in a NATS JetStream stream: refract's own log
//! ([`JetStreamEventStore`]), or a stream other services publish to, read
//! through a mapping ([`ForeignStream`]).

mod follow;
mod foreign;
mod log;
mod subject;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_trait::async_trait;

pub use foreign::{ForeignMapping, ForeignStream, MappedField};

use self::log::{Log, connect, identity_of, millis, nats, stream_info};
use super::wake::Wake;
use super::{Appended, EventSource, EventStore, SourceError, check_version, validate_append};
use crate::model::event::{AppendRequest, Event, ExpectedVersion, Subscription};

/// Header holding the stream version after the event.
const VERSION: &str = "Refract-Stream-Version";
/// Header holding the event type, as a JSON string (keeps every character).
const EVENT_TYPE: &str = "Refract-Event-Type";
/// Header holding the metadata JSON text as a JSON string; absent means `{}`.
const METADATA: &str = "Refract-Metadata";

/// Appends that lose a race under `ExpectedVersion::Any` are tried again
/// with the new version; this bounds it under pathological contention.
const ANY_ATTEMPTS: usize = 100;
/// Publishes whose acknowledgement is lost are sent again with the same
/// message id, which JetStream deduplicates.
const PUBLISH_ATTEMPTS: usize = 3;

/// `nats://HOST:PORT/STREAM` split into the server and the stream name.
pub(crate) fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("nats://")?;
    let (server, stream) = rest.split_once('/')?;
    let valid = !server.is_empty()
        && !stream.is_empty()
        && !stream.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    valid.then(|| (format!("nats://{server}"), stream.to_owned()))
}

/// Refract's events in a JetStream stream (`--events nats://HOST:PORT/STREAM`).
///
/// - The global position is the stream sequence. Each refract stream is
///   the subject `refract.STREAM.TOKEN`, TOKEN its id encoded so that no two
///   ids share one (see `subject.rs`); its version, event type and metadata
///   are headers, the payload is the message body.
/// - Optimistic concurrency is JetStream's own: a publish carries the
///   sequence of the stream's last message it read
///   (`Nats-Expected-Last-Subject-Sequence`), and the server refuses it if
///   another landed in between.
/// - Each publish carries a `Nats-Msg-Id`, so a publish sent again after a
///   lost acknowledgement is stored once (within the stream's duplicate
///   window, two minutes by default).
/// - An append holds one event: NATS server 2.9 has no atomic batch
///   publish, so several events could land in part; they are refused
///   ([`SourceError::NotAtomic`]) instead.
/// - Positions have no gaps while only refract writes the stream; deleted
///   messages leave gaps, which readers step over.
#[derive(Debug, Clone)]
pub struct JetStreamEventStore {
    log: Log,
    prefix: String,
    wake: Arc<Wake>,
}

/// Message ids unique to this process and append.
static APPENDS: AtomicU64 = AtomicU64::new(0);

fn message_id() -> String {
    use std::hash::BuildHasher;
    // A random seed per process (the std hasher's), so ids of two processes differ.
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    let n = APPENDS.fetch_add(1, Ordering::Relaxed);
    format!("refract-{seed:016x}-{}-{n}", std::process::id())
}

impl JetStreamEventStore {
    /// Connects to `url` (`nats://HOST:PORT/STREAM`) and creates the stream
    /// if it does not exist.
    pub async fn connect(url: &str) -> Result<Self, SourceError> {
        let (server, name) = parse_url(url)
            .ok_or_else(|| SourceError::Misconfigured(format!("`{url}` is not nats://HOST:PORT/STREAM")))?;
        let (client, js) = connect(&server).await?;
        let prefix = format!("refract.{name}");
        let filter = format!("{prefix}.>");
        let info = match stream_info(&js, &name).await {
            Ok(info) => info,
            Err(SourceError::Misconfigured(_)) => js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![filter.clone()],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| SourceError::Misconfigured(format!("cannot create the JetStream stream `{name}`: {e}")))?
                .cached_info()
                .clone(),
            Err(e) => return Err(e),
        };
        if !info.config.subjects.contains(&filter) {
            return Err(SourceError::Misconfigured(format!(
                "the JetStream stream `{name}` exists but does not capture `{filter}`: it is not a refract event store \
                 (to project a stream other services publish to, map it under [events] in refract.toml)"
            )));
        }
        let log = Log { client, js, name, filter, identity: identity_of(&info), cursors: Default::default() };
        Ok(Self { log, prefix, wake: Arc::new(Wake::new()) })
    }

    /// Closes the connection (after pending publishes are flushed).
    pub async fn close(&self) {
        self.wake.stop();
        let _ = self.log.client.drain().await;
    }

    fn subject(&self, stream_id: &str) -> String {
        format!("{}.{}", self.prefix, subject::encode(stream_id))
    }

    /// The sequence and version of a stream's last event: `(0, 0)` for none.
    async fn last_of(&self, subject: &str) -> Result<(u64, u64), SourceError> {
        let stream = self.log.js.get_stream_no_info(&self.log.name).await.map_err(nats)?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok((m.sequence, version_of(&m)?)),
            Err(e) if matches!(e.kind(), jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => Ok((0, 0)),
            Err(e) => Err(nats(e)),
        }
    }

    /// Turns a stored message back into the event refract appended.
    fn decode(&self, m: &jetstream::message::StreamMessage) -> Result<Event, SourceError> {
        let bad = |stream_id: &str, event_type: &str, reason: String| SourceError::BadEvent {
            position: m.sequence,
            stream_id: stream_id.to_owned(),
            event_type: event_type.to_owned(),
            reason,
        };
        let token = m.subject.as_str().strip_prefix(&self.prefix).and_then(|t| t.strip_prefix('.'));
        let Some(stream_id) = token.and_then(subject::decode) else {
            return Err(bad("?", "?", format!("subject `{}` is not a refract stream's", m.subject)));
        };
        let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
        let json_string = |name: &str| -> Result<Option<String>, String> {
            header(name)
                .map(|v| {
                    serde_json::from_str::<String>(&v).map_err(|e| format!("header {name} is not a JSON string: {e}"))
                })
                .transpose()
        };
        let event_type = json_string(EVENT_TYPE)
            .map_err(|r| bad(&stream_id, "?", r))?
            .ok_or_else(|| bad(&stream_id, "?", format!("no {EVENT_TYPE} header")))?;
        let metadata =
            json_string(METADATA).map_err(|r| bad(&stream_id, &event_type, r))?.unwrap_or_else(|| "{}".into());
        let stream_version = version_of(m).map_err(|e| bad(&stream_id, &event_type, e.to_string()))?;
        let payload = std::str::from_utf8(&m.payload)
            .map_err(|e| bad(&stream_id, &event_type, format!("payload is not UTF-8: {e}")))?
            .to_owned();
        Ok(Event {
            position: m.sequence,
            stream_id,
            stream_version,
            event_type,
            payload,
            metadata,
            timestamp: millis(m),
        })
    }
}

/// The version header of a refract message.
fn version_of(m: &jetstream::message::StreamMessage) -> Result<u64, SourceError> {
    m.headers
        .get(VERSION)
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| SourceError::Corrupt(format!("message {} has no valid {VERSION} header", m.sequence)))
}

#[async_trait]
impl EventSource for JetStreamEventStore {
    async fn head(&self) -> Result<u64, SourceError> {
        self.log.head().await
    }

    async fn read(
        &self,
        after: u64,
        up_to: u64,
        subscription: &Subscription,
        limit: usize,
    ) -> Result<Vec<Event>, SourceError> {
        self.log.read(after, up_to, subscription, limit, &|m| self.decode(m)).await
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.wake.subscribe(|head| follow::follow(self.log.clone(), head)))
    }

    async fn identity(&self) -> Result<Option<String>, SourceError> {
        Ok(Some(self.log.identity.clone()))
    }
}

#[async_trait]
impl EventStore for JetStreamEventStore {
    async fn append(&self, requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        validate_append(requests)?;
        let events: usize = requests.iter().map(|r| r.events.len()).sum();
        let [request] = requests else {
            return Err(SourceError::NotAtomic { events });
        };
        let [event] = request.events.as_slice() else {
            return Err(SourceError::NotAtomic { events });
        };
        let subject = self.subject(&request.stream_id);
        let id = message_id();
        for _ in 0..ANY_ATTEMPTS {
            let (last, version) = self.last_of(&subject).await?;
            check_version(&request.stream_id, request.expected, version)?;
            let mut headers = HeaderMap::new();
            headers.insert(VERSION, (version + 1).to_string().as_str());
            headers.insert(EVENT_TYPE, serde_json::to_string(&event.event_type).expect("a string").as_str());
            if event.metadata != "{}" {
                headers.insert(METADATA, serde_json::to_string(&event.metadata).expect("a string").as_str());
            }
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, last.to_string().as_str());
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            match self.publish(&subject, headers, event.payload.clone()).await {
                Ok(sequence) => {
                    self.wake.advance(sequence);
                    let appended =
                        Appended { first_position: sequence, last_position: sequence, stream_version: version + 1 };
                    return Ok(vec![appended]);
                }
                Err(Lost::Race) => {
                    if let ExpectedVersion::Exact(expected) = request.expected {
                        let (_, actual) = self.last_of(&subject).await?;
                        return Err(SourceError::Conflict { stream_id: request.stream_id.clone(), expected, actual });
                    }
                }
                Err(Lost::TooLarge) => {
                    return Err(SourceError::InvalidEvent {
                        stream_id: request.stream_id.clone(),
                        index: 0,
                        reason: "the event is larger than the NATS server's max_payload".into(),
                    });
                }
                Err(Lost::Error(e)) => return Err(e),
            }
        }
        Err(SourceError::Nats(format!(
            "stream `{}` kept changing: {ANY_ATTEMPTS} appends lost the race to other writers",
            request.stream_id
        )))
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, SourceError> {
        Ok(self.last_of(&self.subject(stream_id)).await?.1)
    }
}

/// Why a publish did not land.
enum Lost {
    /// Another message reached the subject first.
    Race,
    /// The message exceeds the server's `max_payload`.
    TooLarge,
    Error(SourceError),
}

impl JetStreamEventStore {
    /// Publishes and waits for the acknowledgement, sending again (same
    /// headers, so the same message id) when it is lost. Returns the sequence.
    async fn publish(&self, subject: &str, headers: HeaderMap, payload: String) -> Result<u64, Lost> {
        let payload = bytes::Bytes::from(payload);
        let mut last_error = String::new();
        for _ in 0..PUBLISH_ATTEMPTS {
            let sent = self.log.js.publish_with_headers(subject.to_owned(), headers.clone(), payload.clone()).await;
            let outcome = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => match e.kind() {
                    PublishErrorKind::WrongLastSequence => return Err(Lost::Race),
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => last_error = e.to_string(),
                    PublishErrorKind::MaxPayloadExceeded => return Err(Lost::TooLarge),
                    _ => return Err(Lost::Error(nats(e))),
                },
            }
        }
        Err(Lost::Error(SourceError::Nats(format!(
            "no acknowledgement after {PUBLISH_ATTEMPTS} attempts: {last_error}"
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_and_a_stream() {
        assert_eq!(parse_url("nats://127.0.0.1:4222/EVENTS"), Some(("nats://127.0.0.1:4222".into(), "EVENTS".into())));
        assert_eq!(parse_url("nats://u:p@h:1/S-1_x"), Some(("nats://u:p@h:1".into(), "S-1_x".into())));
        for bad in
            ["nats://h:1", "nats://h:1/", "nats:///S", "nats://h/a.b", "nats://h/a b", "nats://h/a/b", "sqlite://x"]
        {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn message_ids_are_unique() {
        let ids: std::collections::BTreeSet<_> = (0..1000).map(|_| message_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
