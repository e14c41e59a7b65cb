//! Row values: what each backend reads a column as ([`Cell`]), how a row
//! becomes the JSON payload of its event, and the comparable values
//! ([`Val`]) that keyset positions are made of.
//!
//! Conversions (the same on every backend):
//! - integers: JSON numbers; floats: JSON numbers (NaN and infinities: `null`);
//! - decimals (`NUMERIC`, `DECIMAL`): strings holding the exact digits, so no
//!   precision is lost on the way through JSON;
//! - timestamps: RFC 3339 strings in UTC with microseconds
//!   (`2024-01-15T10:30:00.000000Z`); a timestamp without time zone is taken
//!   to be UTC; dates `YYYY-MM-DD`, times `HH:MM:SS[.ffffff]`;
//! - booleans: `true`/`false` (MySQL's `TINYINT(1)` is an integer);
//! - binary: standard base64 with padding;
//! - JSON columns (PostgreSQL `json`/`jsonb`): the JSON value itself;
//! - text and anything else: strings (PostgreSQL's text form of the value);
//! - NULL: `null`.
//!
//! SQLite has no column types: each value is converted by what it holds
//! (integer, real, text, blob).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One column value of a row, as a backend read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer beyond `i64` (MySQL `BIGINT UNSIGNED`).
    UInt(u64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text (also decimals, timestamps and anything kept as its text form).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// JSON text, embedded as JSON (text that does not parse stays a string).
    Json(String),
}

impl Cell {
    /// The JSON form of the value (see the module docs).
    pub fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(*i),
            Cell::UInt(u) => Value::from(*u),
            Cell::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Text(t) => Value::String(t.clone()),
            Cell::Bytes(b) => Value::String(base64(b)),
            Cell::Json(j) => serde_json::from_str(j).unwrap_or_else(|_| Value::String(j.clone())),
        }
    }
}

/// A comparable value of a keyset position: the tracking value or a key
/// column, as bound back into the next page's query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Val {
    /// Integers, and timestamps as microseconds since the Unix epoch.
    Int(i64),
    /// A float (SQLite REAL values).
    Float(f64),
    /// Text.
    Text(String),
}

impl Val {
    /// The value as a [`Cell`], for key encoding.
    pub fn text(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Text(t) => t.clone(),
        }
    }
}

/// A row read from a source: its keyset position, key, payload and whether
/// it is soft-deleted.
#[derive(Debug, Clone)]
pub struct SourceRow {
    /// Where the row is in keyset order.
    pub position: Position,
    /// The tracking value as shown to users (metadata, status).
    pub tracking: Value,
    /// Whether the soft-delete column is set.
    pub deleted: bool,
    /// The row: column name to JSON value.
    pub payload: Map<String, Value>,
}

/// A place in keyset order: `(tracking value, key...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The tracking value.
    pub value: Val,
    /// The key columns' values, in key order.
    pub key: Vec<Val>,
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A timestamp in microseconds since the Unix epoch as RFC 3339 UTC
/// (`1970-01-01T00:00:00.000000Z`), for showing a tracking value.
pub fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xff, 0x00, 0xfe]), "/wD+");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(1_705_314_600_123_456), "2024-01-15T10:30:00.123456Z");
        assert_eq!(rfc3339_micros(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn cells_become_json() {
        assert_eq!(Cell::Float(f64::NAN).to_json(), Value::Null);
        assert_eq!(Cell::UInt(u64::MAX).to_json(), serde_json::json!(u64::MAX));
        assert_eq!(Cell::Json("{\"a\":[1]}".into()).to_json(), serde_json::json!({"a": [1]}));
        assert_eq!(Cell::Bytes(b"hi".to_vec()).to_json(), serde_json::json!("aGk="));
        assert_eq!(Cell::Text("12.50".into()).to_json(), serde_json::json!("12.50"));
    }
}
