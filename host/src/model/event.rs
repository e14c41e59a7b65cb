//! Events as the host stores and delivers them.

use serde::{Deserialize, Serialize};

/// An event read from the event store, in global order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Gapless global position, starting at 1.
    pub position: u64,
    /// Stream the event belongs to.
    pub stream_id: String,
    /// Version of the stream after this event, starting at 1.
    pub stream_version: u64,
    /// Event type name.
    pub event_type: String,
    /// JSON text of the event body.
    pub payload: String,
    /// JSON text of the event metadata (`{}` when none was given).
    pub metadata: String,
    /// Append time in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// An event to append to a stream.
///
/// ```
/// let e = refract::NewEvent::new("MoneyDeposited", r#"{"amount": 100}"#);
/// assert_eq!(e.metadata, "{}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event type name.
    pub event_type: String,
    /// JSON text of the event body; checked on append.
    pub payload: String,
    /// JSON text of the metadata; checked on append.
    pub metadata: String,
}

impl NewEvent {
    /// An event with empty metadata.
    pub fn new(event_type: impl Into<String>, payload: impl Into<String>) -> Self {
        Self { event_type: event_type.into(), payload: payload.into(), metadata: "{}".to_owned() }
    }

    /// Sets the metadata JSON text.
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// What the writer expects the stream's version to be before an append.
///
/// This is optimistic concurrency: read a stream, decide, then append with
/// the version you read; if someone else appended in between, the append is
/// refused as a whole and nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    #[default]
    Any,
    /// The stream must be at exactly this version; `Exact(0)` means it must not exist yet.
    Exact(u64),
}

impl std::str::FromStr for ExpectedVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Self::Any),
            "no-stream" => Ok(Self::Exact(0)),
            n => n
                .parse()
                .map(Self::Exact)
                .map_err(|_| format!("expected version must be a number, `any` or `no-stream`, not `{s}`")),
        }
    }
}

/// One stream append inside a possibly larger atomic append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// Target stream.
    pub stream_id: String,
    /// Version check done before writing.
    pub expected: ExpectedVersion,
    /// Events appended in order.
    pub events: Vec<NewEvent>,
}

/// Which events a projection receives.
///
/// An event is delivered when its type is in `event_types` (or that list is
/// empty) and its stream id starts with one of `stream_prefixes` (or that list
/// is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Event types to receive; empty means all.
    pub event_types: Vec<String>,
    /// Stream-id prefixes to receive; empty means all.
    pub stream_prefixes: Vec<String>,
}

impl Subscription {
    /// Whether the event is one the projection subscribed to.
    pub fn matches(&self, event_type: &str, stream_id: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.stream_prefixes.is_empty()
                || self.stream_prefixes.iter().any(|p| stream_id.starts_with(p.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_needs_both_filters_to_match() {
        let s = Subscription { event_types: vec!["A".into()], stream_prefixes: vec!["acc-".into()] };
        assert!(s.matches("A", "acc-1"));
        assert!(!s.matches("B", "acc-1"));
        assert!(!s.matches("A", "ord-1"));
        assert!(Subscription::default().matches("anything", "anywhere"));
    }

    #[test]
    fn expected_version_parses() {
        assert_eq!("any".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Any));
        assert_eq!("no-stream".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Exact(0)));
        assert_eq!("7".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Exact(7)));
        assert!("-1".parse::<ExpectedVersion>().unwrap_err().contains("`-1`"));
    }
}
