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

/// Longest stream id or event type, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Which name of an append [`InvalidName`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    /// The stream id.
    StreamId,
    /// The event type of the append's event at this zero-based index.
    EventType(usize),
}

impl NameField {
    /// Where the name is, to follow a message: nothing for the stream id.
    fn place(&self) -> String {
        match self {
            Self::StreamId => String::new(),
            Self::EventType(i) => format!(" (event #{i})"),
        }
    }
}

impl std::fmt::Display for NameField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::StreamId => "stream id",
            Self::EventType(_) => "event type",
        })
    }
}

/// A stream id or event type that no event store accepts: stream ids and
/// event types are 1 to [`MAX_NAME_LEN`] bytes without control characters
/// (U+0000 to U+001F, U+007F to U+009F), so that every backend refuses alike
/// (PostgreSQL cannot store NUL at all) and names print safely in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// The name is empty.
    #[error("{field} is empty{}", field.place())]
    Empty {
        /// Which name.
        field: NameField,
    },
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("{field} must be 1 to {MAX_NAME_LEN} bytes, not {len}{}", field.place())]
    TooLong {
        /// Which name.
        field: NameField,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a control character.
    #[error("{field} contains control character U+{code:04X} at byte {at}{}", field.place())]
    ControlCharacter {
        /// Which name.
        field: NameField,
        /// The character's code point.
        code: u32,
        /// Its byte offset in the name.
        at: usize,
    },
}

impl AppendRequest {
    /// Checks the stream id and every event type against the rules of
    /// [`InvalidName`]. Every event store calls it before it touches its
    /// database.
    ///
    /// ```
    /// use refract::{AppendRequest, ExpectedVersion, InvalidName, NameField, NewEvent};
    /// let r = AppendRequest { stream_id: "a\0b".into(), expected: ExpectedVersion::Any, events: vec![NewEvent::new("T", "{}")] };
    /// assert_eq!(r.validate_names(), Err(InvalidName::ControlCharacter { field: NameField::StreamId, code: 0, at: 1 }));
    /// ```
    pub fn validate_names(&self) -> Result<(), InvalidName> {
        check_name(NameField::StreamId, &self.stream_id)?;
        for (i, e) in self.events.iter().enumerate() {
            check_name(NameField::EventType(i), &e.event_type)?;
        }
        Ok(())
    }
}

fn check_name(field: NameField, name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty { field });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong { field, len: name.len() });
    }
    match name.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(InvalidName::ControlCharacter { field, code: c as u32, at }),
        None => Ok(()),
    }
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
    fn names_are_non_empty_bounded_and_free_of_control_characters() {
        let request = |stream: &str, types: &[&str]| AppendRequest {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events: types.iter().map(|t| NewEvent::new(*t, "{}")).collect(),
        };
        let ok = "s".repeat(MAX_NAME_LEN);
        assert_eq!(request(&ok, &["Opened", "zürich-✓ x"]).validate_names(), Ok(()));
        let stream = NameField::StreamId;
        assert_eq!(request("", &["T"]).validate_names(), Err(InvalidName::Empty { field: stream }));
        assert_eq!(
            request(&format!("{ok}x"), &["T"]).validate_names(),
            Err(InvalidName::TooLong { field: stream, len: MAX_NAME_LEN + 1 })
        );
        for (name, code, at) in [("\0", 0, 0), ("a\nb", 10, 1), ("ab\x7f", 0x7f, 2), ("é\u{85}", 0x85, 2)] {
            assert_eq!(
                request(name, &["T"]).validate_names(),
                Err(InvalidName::ControlCharacter { field: stream, code, at }),
                "{name:?}"
            );
        }
        let err = request("s", &["T", "", "U"]).validate_names().unwrap_err();
        assert_eq!(err, InvalidName::Empty { field: NameField::EventType(1) });
        assert_eq!(err.to_string(), "event type is empty (event #1)");
        let err = request("s", &["T\0"]).validate_names().unwrap_err();
        assert_eq!(err.to_string(), "event type contains control character U+0000 at byte 1 (event #0)");
        let err = request(&format!("{ok}x"), &["T"]).validate_names().unwrap_err();
        assert_eq!(err.to_string(), format!("stream id must be 1 to {MAX_NAME_LEN} bytes, not {}", MAX_NAME_LEN + 1));
    }

    #[test]
    fn expected_version_parses() {
        assert_eq!("any".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Any));
        assert_eq!("no-stream".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Exact(0)));
        assert_eq!("7".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Exact(7)));
        assert!("-1".parse::<ExpectedVersion>().unwrap_err().contains("`-1`"));
    }
}
