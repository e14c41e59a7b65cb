//! Query-string parameters, parsed by hand so that `filter=` can repeat and
//! every mistake gets a 400 that names the parameter.

use std::time::Duration;

use crate::api::error::ApiError;
use crate::store::aggregate::{Aggregate, AggregateQuery};
use crate::store::query::{DEFAULT_LIMIT, Filter, Order, Query};

/// How long a read waits for `min_position` when the request does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait a request may ask for: a client that wants longer should retry.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// How fresh a read must be: the `consistency` parameter, with
/// `min_position` for `causal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Answer at once from what is committed; may be stale.
    Eventual,
    /// Wait until the projection's checkpoint is at least this position
    /// (a consistency token from an append).
    Causal(u64),
    /// Wait until the projection reaches the head of the log as it was when
    /// the request arrived: everything written before the read is seen.
    Strong,
}

/// The consistency part every read accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consistency {
    /// What to wait for before reading.
    pub level: Level,
    /// How long to wait for it.
    pub timeout: Duration,
}

impl Default for Consistency {
    fn default() -> Self {
        Self { level: Level::Eventual, timeout: DEFAULT_TIMEOUT }
    }
}

/// The consistency parameters as given, judged together by [`Given::finish`].
#[derive(Debug, Default)]
struct Given {
    min_position: Option<u64>,
    level: Option<String>,
    timeout: Option<Duration>,
}

/// Parameters of a collection query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryParams {
    /// Filters, order, limit and cursor.
    pub query: Query,
    /// Only count the matches.
    pub count: bool,
    /// Read-your-writes wait.
    pub consistency: Consistency,
}

/// The parameters that may be given more than once; any other given twice
/// is refused, where it was once silently the last one.
const REPEATABLE: [&str; 3] = ["filter", "agg", "group_by"];

/// The query string's `key=value` pairs, decoded: the one place every
/// endpoint reads its parameters through. Refused with a 400 naming the
/// parameter: a `%` not followed by two hex digits, text that is not UTF-8
/// once decoded, and a parameter that does not repeat given twice. (A `<`,
/// `>` or space left unencoded never reaches here: the HTTP parser refuses
/// the request line, and `server::JsonParseErrors` answers for it.)
pub(crate) fn pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let raw = raw.unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = decoded(key, None)?;
        let value = decoded(value, Some(&key))?;
        if !REPEATABLE.contains(&key.as_str()) && out.iter().any(|(k, _)| *k == key) {
            return Err(ApiError::BadRequest(format!(
                "`{key}` is given more than once; give it once (only {} repeat)",
                REPEATABLE.join(", ")
            )));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// One key or value of the query string, percent- and `+`-decoded, or a
/// 400 saying what is wrong with it: `key` names the parameter of a value.
fn decoded(text: &str, key: Option<&str>) -> Result<String, ApiError> {
    let what = || match key {
        Some(key) => format!("the value of `{key}`"),
        None => format!("the parameter name `{text}`"),
    };
    let bytes = text.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        if !bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err(ApiError::BadRequest(format!(
                "bad percent-encoding in {}: `%` must be followed by two hex digits (write a literal % as %25)",
                what()
            )));
        }
    }
    let plus_as_space = text.replace('+', " ");
    let bytes: Vec<u8> = percent_decoded(plus_as_space.as_bytes());
    String::from_utf8(bytes).map_err(|_| ApiError::BadRequest(format!("{} is not UTF-8 once percent-decoded", what())))
}

/// `%XX` sequences to their bytes; the caller checked that each `%` has two hex digits.
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("checked: two ASCII hex digits");
            out.push(u8::from_str_radix(hex, 16).expect("checked: two hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

pub(crate) fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::BadRequest(format!("`{key}` must be a non-negative integer, not `{value}`")))
}

pub(crate) fn unknown(key: &str, known: &str) -> ApiError {
    ApiError::BadRequest(format!("unknown query parameter `{key}` (this endpoint takes: {known})"))
}

impl Given {
    /// Takes `min_position`, `consistency` or `timeout_ms`; returns false for any other key.
    fn accept(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "min_position" => self.min_position = Some(number(key, value)?),
            "consistency" => self.level = Some(value.to_owned()),
            "timeout_ms" => {
                let ms: u64 = number(key, value)?;
                if ms > MAX_TIMEOUT.as_millis() as u64 {
                    return Err(ApiError::BadRequest(format!(
                        "`timeout_ms` must be at most {}, not {ms}",
                        MAX_TIMEOUT.as_millis()
                    )));
                }
                self.timeout = Some(Duration::from_millis(ms));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The level the parameters ask for. Without `consistency`, a read with
    /// `min_position` is causal and one without is eventual, as before
    /// levels existed. A combination that contradicts itself is refused
    /// rather than guessed at: eventual or strong with a token, causal without.
    fn finish(self) -> Result<Consistency, ApiError> {
        let level = match (self.level.as_deref(), self.min_position) {
            (None, None) | (Some("eventual"), None) => Level::Eventual,
            (None, Some(p)) | (Some("causal"), Some(p)) => Level::Causal(p),
            (Some("strong"), None) => Level::Strong,
            (Some("causal"), None) => {
                return Err(ApiError::BadRequest(
                    "`consistency=causal` needs `min_position` (the `position` an append returned)".into(),
                ));
            }
            (Some(level @ ("eventual" | "strong")), Some(_)) => {
                return Err(ApiError::BadRequest(format!(
                    "`consistency={level}` does not take `min_position`; use `consistency=causal` to wait for a position"
                )));
            }
            (Some(other), _) => {
                return Err(ApiError::BadRequest(format!(
                    "`consistency` must be eventual, causal or strong, not `{other}`"
                )));
            }
        };
        if level == Level::Eventual && self.level.is_some() && self.timeout.is_some() {
            return Err(ApiError::BadRequest(
                "`consistency=eventual` does not wait, so it takes no `timeout_ms`".into(),
            ));
        }
        Ok(Consistency { level, timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT) })
    }
}

impl Consistency {
    /// Parses the query string of a read that takes nothing else.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut given = Given::default();
        for (k, v) in pairs(raw)? {
            if !given.accept(&k, &v)? {
                return Err(unknown(&k, "consistency, min_position, timeout_ms"));
            }
        }
        given.finish()
    }
}

/// Parameters of `GET /ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyParams {
    /// The position every active projection must reach; `None`: the head
    /// of the log when the request arrives.
    pub min_position: Option<u64>,
    /// How long to wait for it.
    pub timeout: Duration,
}

impl ReadyParams {
    /// Parses `min_position` and `timeout_ms`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut given = Given::default();
        for (k, v) in pairs(raw)? {
            // `consistency` is a read's choice; readiness is always about positions.
            if k == "consistency" || !given.accept(&k, &v)? {
                return Err(unknown(&k, "min_position, timeout_ms"));
            }
        }
        Ok(Self { min_position: given.min_position, timeout: given.timeout.unwrap_or(DEFAULT_TIMEOUT) })
    }
}

impl QueryParams {
    /// Parses `filter` (repeatable), `search`, `order`, `limit`, `cursor`,
    /// `count`, `consistency`, `min_position` and `timeout_ms`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self { query: Query::default(), count: false, consistency: Consistency::default() };
        let mut given = Given::default();
        for (k, v) in pairs(raw)? {
            if given.accept(&k, &v)? {
                continue;
            }
            match k.as_str() {
                "filter" => p.query.filters.push(Filter::parse(&v)?),
                "order" if v.is_empty() || v == "-" => {
                    return Err(ApiError::BadRequest("`order` needs a field name, e.g. order=-balance".into()));
                }
                "order" => p.query.order = Some(Order::parse(&v)),
                "limit" => p.query.limit = number(&k, &v)?,
                "cursor" => p.query.cursor = Some(v),
                "search" => p.query.search = Some(v),
                "count" => {
                    p.count = match v.as_str() {
                        "" | "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(ApiError::BadRequest(format!("`count` must be true or false, not `{v}`"))),
                    }
                }
                _ => {
                    return Err(unknown(
                        &k,
                        "filter, search, order, limit, cursor, count, consistency, min_position, timeout_ms",
                    ));
                }
            }
        }
        p.consistency = given.finish()?;
        if p.query.limit == 0 {
            // Validated again by the store; checked here so the message names the default.
            return Err(ApiError::BadRequest(format!("`limit` must be at least 1 (default {DEFAULT_LIMIT})")));
        }
        Ok(p)
    }
}

/// Parameters of an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateParams {
    /// Filters, group-by fields and aggregates.
    pub query: AggregateQuery,
    /// Read-your-writes wait.
    pub consistency: Consistency,
}

impl AggregateParams {
    /// Parses `agg` (repeatable), `group_by` (repeatable, or comma-separated),
    /// `filter` (repeatable), `consistency`, `min_position` and `timeout_ms`:
    /// the names of `refract query --agg --group-by --where`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self { query: AggregateQuery::default(), consistency: Consistency::default() };
        let mut given = Given::default();
        for (k, v) in pairs(raw)? {
            if given.accept(&k, &v)? {
                continue;
            }
            match k.as_str() {
                "filter" => p.query.filters.push(Filter::parse(&v)?),
                "agg" => p.query.aggregates.push(Aggregate::parse(&v)?),
                "group_by" => {
                    for field in v.split(',').map(str::trim) {
                        if field.is_empty() {
                            return Err(ApiError::BadRequest(format!(
                                "`group_by` needs field names, e.g. group_by=status, not `{v}`"
                            )));
                        }
                        p.query.group_by.push(field.to_owned());
                    }
                }
                _ => return Err(unknown(&k, "agg, group_by, filter, consistency, min_position, timeout_ms")),
            }
        }
        p.consistency = given.finish()?;
        if p.query.aggregates.is_empty() {
            return Err(ApiError::BadRequest("name at least one aggregate, e.g. agg=count or agg=sum(balance)".into()));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::query::Op;

    #[test]
    fn repeated_filters_and_paging() {
        let p = QueryParams::parse(Some(
            "filter=balance%3E%3D100&filter=status%3Dopen&order=-balance&limit=7&cursor=ab&min_position=9&timeout_ms=10",
        ))
        .unwrap();
        assert_eq!(p.query.filters.len(), 2);
        assert_eq!(p.query.filters[0].op, Op::Ge);
        assert_eq!(p.query.order, Some(Order::parse("-balance")));
        assert_eq!((p.query.limit, p.query.cursor.as_deref()), (7, Some("ab")));
        assert_eq!(p.consistency, Consistency { level: Level::Causal(9), timeout: Duration::from_millis(10) });
    }

    #[test]
    fn search_parses_into_the_library_type() {
        let p = QueryParams::parse(Some("search=Ada+lov&filter=balance%3E%3D0&limit=5")).unwrap();
        let expected = Query::new().search("Ada lov").with_filter(Filter::parse("balance>=0").unwrap()).limit(5);
        assert_eq!(p.query, expected);
        let p = QueryParams::parse(Some("search=ada&count=true")).unwrap();
        assert!(p.count && p.query.search.as_deref() == Some("ada"));
    }

    #[test]
    fn aggregates_parse_into_the_library_type() {
        let p = AggregateParams::parse(Some("group_by=status,owner&agg=sum(balance)&agg=count&filter=balance%3E0"))
            .unwrap();
        let expected = AggregateQuery::new()
            .with_filter(Filter::parse("balance>0").unwrap())
            .group_by("status")
            .group_by("owner")
            .agg(Aggregate::parse("sum(balance)").unwrap())
            .agg(Aggregate::count());
        assert_eq!(p.query, expected);
        for (raw, needle) in [
            ("agg=median(x)", "unknown function `median`"),
            ("agg=sum(x", "missing `)`"),
            ("group_by=status", "at least one aggregate"),
            ("agg=count&group_by=", "`group_by`"),
            ("agg=count&order=x", "`order`"),
        ] {
            let err = AggregateParams::parse(Some(raw)).unwrap_err();
            assert!(err.to_string().contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn mistakes_are_bad_requests_naming_the_parameter() {
        for (raw, needle) in [
            ("limit=x", "`limit`"),
            ("min_position=-1", "`min_position`"),
            ("timeout_ms=999999", "`timeout_ms`"),
            ("colour=red", "`colour`"),
            ("order=", "`order`"),
            ("count=maybe", "`count`"),
        ] {
            let err = QueryParams::parse(Some(raw)).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{raw}: {err:?}");
            assert!(err.to_string().contains(needle), "{raw}: {err}");
        }
        assert!(matches!(QueryParams::parse(Some("filter=nonsense")), Err(ApiError::Query(_))));
        assert!(Consistency::parse(Some("limit=3")).is_err());
    }

    #[test]
    fn ready_takes_a_position_and_a_timeout_only() {
        let p = ReadyParams::parse(Some("min_position=7&timeout_ms=20")).unwrap();
        assert_eq!(p, ReadyParams { min_position: Some(7), timeout: Duration::from_millis(20) });
        assert_eq!(ReadyParams::parse(None).unwrap().min_position, None);
        for raw in ["consistency=strong", "min_position=x", "timeout_ms=70000", "limit=3"] {
            assert!(matches!(ReadyParams::parse(Some(raw)), Err(ApiError::BadRequest(_))), "{raw}");
        }
    }

    #[test]
    fn levels_and_the_combinations_they_refuse() {
        let level = |raw| Consistency::parse(Some(raw)).map(|c| c.level);
        assert_eq!(level("").unwrap(), Level::Eventual);
        assert_eq!(level("timeout_ms=5").unwrap(), Level::Eventual, "accepted before levels existed");
        assert_eq!(level("consistency=eventual").unwrap(), Level::Eventual);
        assert_eq!(level("min_position=4").unwrap(), Level::Causal(4));
        assert_eq!(level("consistency=causal&min_position=4").unwrap(), Level::Causal(4));
        assert_eq!(level("consistency=strong&timeout_ms=9").unwrap(), Level::Strong);
        for (raw, needle) in [
            ("consistency=causal", "needs `min_position`"),
            ("consistency=strong&min_position=3", "does not take `min_position`"),
            ("consistency=eventual&min_position=3", "does not take `min_position`"),
            ("consistency=eventual&timeout_ms=3", "no `timeout_ms`"),
            ("consistency=linearizable", "eventual, causal or strong"),
        ] {
            let err = level(raw).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)) && err.to_string().contains(needle), "{raw}: {err}");
            let err = QueryParams::parse(Some(raw)).unwrap_err();
            assert!(err.to_string().contains(needle), "query {raw}: {err}");
        }
    }
}
