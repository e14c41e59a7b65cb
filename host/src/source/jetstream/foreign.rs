//! A JetStream stream other services publish to, read as refract's event
//! source through the mapping under `[events]` in `refract.toml`:
//!
//! ```toml
//! [events]
//! url = "nats://127.0.0.1:4222/ORDERS"   # the stream ORDERS
//! subject = "orders.>"                    # optional: only these subjects
//! stream_id = { subject_token = 1 }       # orders.<id>.<type>: token 1 ...
//! event_type = { subject_token = 2 }      # ... and token 2 (0-based)
//! # or: event_type = { header = "Event-Type" }
//! ```
//!
//! The payload is the event's JSON; the message headers are its metadata
//! (a JSON object, name to value, or to a list of values when repeated).
//! Refract only reads such a stream: appends are refused.

use std::sync::Arc;

use async_nats::jetstream::message::StreamMessage;
use async_trait::async_trait;
use serde::Deserialize;

use super::log::{Log, connect, identity_of, millis, stream_info};
use super::{follow, parse_url};
use crate::model::event::{AppendRequest, Event, Subscription};
use crate::source::wake::Wake;
use crate::source::{Appended, EventSource, EventStore, SourceError};

/// Where a part of an event is found in a message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MappedField {
    /// The subject's token at this 0-based index (`orders.42.Placed`: 1 is `42`).
    SubjectToken(usize),
    /// The value of this header.
    Header(String),
}

/// The `[events]` table of `refract.toml`: a foreign stream and how its
/// messages map to events.
///
/// ```
/// let config = refract::Config::parse(r#"
///     [events]
///     url = "nats://127.0.0.1:4222/ORDERS"
///     stream_id = { subject_token = 1 }
///     event_type = { header = "Event-Type" }
/// "#).unwrap();
/// let events = config.events().unwrap();
/// assert_eq!(events.stream_id, refract::MappedField::SubjectToken(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignMapping {
    /// `nats://HOST:PORT/STREAM`: the server and the existing stream.
    pub url: String,
    /// Only messages on these subjects (a NATS subject filter); all when absent.
    #[serde(default)]
    pub subject: Option<String>,
    /// Where the stream id is.
    pub stream_id: MappedField,
    /// Where the event type is.
    pub event_type: MappedField,
}

impl ForeignMapping {
    /// The part of a message `field` names, if the message has it.
    fn pick<'m>(field: &MappedField, m: &'m StreamMessage) -> Option<&'m str> {
        match field {
            MappedField::SubjectToken(i) => m.subject.as_str().split('.').nth(*i),
            MappedField::Header(name) => m.headers.get(name.as_str()).map(|v| v.as_str()),
        }
        .filter(|v| !v.is_empty())
    }

    /// The event a message maps to, or the reason it is a poison event.
    pub(crate) fn decode(&self, m: &StreamMessage) -> Result<Event, SourceError> {
        let stream_id = Self::pick(&self.stream_id, m);
        let event_type = Self::pick(&self.event_type, m);
        let bad = |reason: String| SourceError::BadEvent {
            position: m.sequence,
            stream_id: stream_id.unwrap_or("?").to_owned(),
            event_type: event_type.unwrap_or("?").to_owned(),
            reason,
        };
        let (Some(stream_id), Some(event_type)) = (stream_id, event_type) else {
            return Err(bad(format!(
                "message on `{}` has no stream id or event type where the mapping says",
                m.subject
            )));
        };
        let payload = std::str::from_utf8(&m.payload).map_err(|e| bad(format!("payload is not UTF-8: {e}")))?;
        serde_json::from_str::<serde::de::IgnoredAny>(payload).map_err(|e| bad(format!("payload is not JSON: {e}")))?;
        let mut metadata = serde_json::Map::new();
        for (name, values) in m.headers.iter() {
            let values: Vec<serde_json::Value> = values.iter().map(|v| v.as_str().into()).collect();
            let value = match <[_; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(many) => many.into(),
            };
            metadata.insert(name.to_string(), value);
        }
        Ok(Event {
            position: m.sequence,
            stream_id: stream_id.to_owned(),
            // A foreign stream counts no versions: its sequence grows with
            // every event of a stream id, which is what ordering needs.
            stream_version: m.sequence,
            event_type: event_type.to_owned(),
            payload: payload.to_owned(),
            metadata: serde_json::Value::Object(metadata).to_string(),
            timestamp: millis(m),
        })
    }
}

/// A foreign JetStream stream as a read-only event source.
///
/// The position is the stream sequence; runners read from their checkpoint
/// with an ordered consumer (no durable consumer, no acks), so the
/// checkpoint committed with the read model is the only state.
#[derive(Debug, Clone)]
pub struct ForeignStream {
    log: Log,
    mapping: Arc<ForeignMapping>,
    wake: Arc<Wake>,
}

impl ForeignStream {
    /// Connects to the stream the mapping names, which must exist.
    pub async fn open(mapping: &ForeignMapping) -> Result<Self, SourceError> {
        let (server, name) = parse_url(&mapping.url).ok_or_else(|| {
            SourceError::Misconfigured(format!("[events] url `{}` is not nats://HOST:PORT/STREAM", mapping.url))
        })?;
        let (client, js) = connect(&server).await?;
        let info = stream_info(&js, &name).await?;
        let filter = mapping.subject.clone().unwrap_or_default();
        let log = Log { client, js, name, filter, identity: identity_of(&info), cursors: Default::default() };
        Ok(Self { log, mapping: Arc::new(mapping.clone()), wake: Arc::new(Wake::new()) })
    }

    fn refuse(&self) -> SourceError {
        SourceError::ReadOnly { stream: self.log.name.clone() }
    }
}

#[async_trait]
impl EventSource for ForeignStream {
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
        self.log.read(after, up_to, subscription, limit, &|m| self.mapping.decode(m)).await
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.wake.subscribe(|head| follow::follow(self.log.clone(), head)))
    }

    async fn identity(&self) -> Result<Option<String>, SourceError> {
        Ok(Some(self.log.identity.clone()))
    }
}

#[async_trait]
impl EventStore for ForeignStream {
    async fn append(&self, _requests: &[AppendRequest]) -> Result<Vec<Appended>, SourceError> {
        Err(self.refuse())
    }

    async fn stream_version(&self, _stream_id: &str) -> Result<u64, SourceError> {
        Err(self.refuse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, headers: &[(&str, &str)], payload: &[u8]) -> StreamMessage {
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, *v);
        }
        StreamMessage {
            subject: subject.into(),
            sequence: 7,
            headers: map,
            payload: bytes::Bytes::copy_from_slice(payload),
            time: async_nats::datetime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
        }
    }

    fn mapping(stream_id: MappedField, event_type: MappedField) -> ForeignMapping {
        ForeignMapping { url: "nats://h:1/S".into(), subject: None, stream_id, event_type }
    }

    #[test]
    fn tokens_and_headers_map_to_an_event() {
        let m = mapping(MappedField::SubjectToken(1), MappedField::Header("Type".into()));
        let e =
            m.decode(&message("orders.42.x", &[("Type", "Placed"), ("Tag", "a"), ("Tag", "b")], b"{\"n\":1}")).unwrap();
        assert_eq!((e.position, e.stream_id.as_str(), e.event_type.as_str()), (7, "42", "Placed"));
        assert_eq!(e.payload, "{\"n\":1}");
        let meta: serde_json::Value = serde_json::from_str(&e.metadata).unwrap();
        assert_eq!(meta, serde_json::json!({"Type": "Placed", "Tag": ["a", "b"]}));
    }

    #[test]
    fn unmappable_or_non_json_messages_are_poison() {
        let m = mapping(MappedField::SubjectToken(1), MappedField::SubjectToken(2));
        let err = m.decode(&message("orders.42.Placed", &[], b"not json")).unwrap_err();
        assert!(
            matches!(&err, SourceError::BadEvent { position: 7, stream_id, event_type, reason }
                if stream_id == "42" && event_type == "Placed" && reason.starts_with("payload is not JSON")),
            "{err}"
        );
        let err = m.decode(&message("orders.42", &[], b"{}")).unwrap_err();
        assert!(
            matches!(&err, SourceError::BadEvent { reason, .. } if reason.contains("no stream id or event type")),
            "{err}"
        );
        let err = m.decode(&message("orders.42.T", &[], b"\xff")).unwrap_err();
        assert!(matches!(&err, SourceError::BadEvent { reason, .. } if reason.contains("UTF-8")), "{err}");
    }
}
