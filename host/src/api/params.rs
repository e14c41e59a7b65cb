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

/// The consistency part every read accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consistency {
    /// Wait until the projection's checkpoint is at least this.
    pub min_position: Option<u64>,
    /// How long to wait for it.
    pub timeout: Duration,
}

impl Default for Consistency {
    fn default() -> Self {
        Self { min_position: None, timeout: DEFAULT_TIMEOUT }
    }
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

fn pairs(raw: Option<&str>) -> impl Iterator<Item = (String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::BadRequest(format!("`{key}` must be a non-negative integer, not `{value}`")))
}

fn unknown(key: &str, known: &str) -> ApiError {
    ApiError::BadRequest(format!("unknown query parameter `{key}` (this endpoint takes: {known})"))
}

impl Consistency {
    /// Takes `min_position` or `timeout_ms`; returns false for any other key.
    fn accept(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        match key {
            "min_position" => self.min_position = Some(number(key, value)?),
            "timeout_ms" => {
                let ms: u64 = number(key, value)?;
                if ms > MAX_TIMEOUT.as_millis() as u64 {
                    return Err(ApiError::BadRequest(format!(
                        "`timeout_ms` must be at most {}, not {ms}",
                        MAX_TIMEOUT.as_millis()
                    )));
                }
                self.timeout = Duration::from_millis(ms);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Parses the query string of a read that takes nothing else.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut c = Self::default();
        for (k, v) in pairs(raw) {
            if !c.accept(&k, &v)? {
                return Err(unknown(&k, "min_position, timeout_ms"));
            }
        }
        Ok(c)
    }
}

impl QueryParams {
    /// Parses `filter` (repeatable), `order`, `limit`, `cursor`, `count`,
    /// `min_position` and `timeout_ms`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self { query: Query::default(), count: false, consistency: Consistency::default() };
        for (k, v) in pairs(raw) {
            if p.consistency.accept(&k, &v)? {
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
                "count" => {
                    p.count = match v.as_str() {
                        "" | "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(ApiError::BadRequest(format!("`count` must be true or false, not `{v}`"))),
                    }
                }
                _ => {
                    return Err(unknown(&k, "filter, order, limit, cursor, count, min_position, timeout_ms"));
                }
            }
        }
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
    /// `filter` (repeatable), `min_position` and `timeout_ms`: the names of
    /// `refract query --agg --group-by --where`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut p = Self { query: AggregateQuery::default(), consistency: Consistency::default() };
        for (k, v) in pairs(raw) {
            if p.consistency.accept(&k, &v)? {
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
                _ => return Err(unknown(&k, "agg, group_by, filter, min_position, timeout_ms")),
            }
        }
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
        assert_eq!(p.consistency, Consistency { min_position: Some(9), timeout: Duration::from_millis(10) });
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
}
