//! Aggregates over a collection: `count`, `sum`, `min`, `max` and `avg`,
//! grouped by indexed fields, under the same filters as queries.
//!
//! Everything that decides what an answer means lives here, once: parsing,
//! validation, the group limit, and turning what a backend measured into
//! values (`sum` of integers stays an integer, `avg` is that sum divided by
//! the count of numbers, `sum` over strings is refused). A backend only
//! measures, per group and per aggregated field, the [`FieldStats`] below.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::model::manifest::CollectionSpec;
use crate::store::query::{Filter, Op, Query, QueryError};

/// Most groups one aggregate may return.
pub const MAX_GROUPS: usize = 10_000;
/// Most aggregates one request may ask for.
pub const MAX_AGGREGATES: usize = 16;
/// Most fields one request may group by.
pub const MAX_GROUP_BY: usize = 4;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggFn {
    /// Documents in the group (`count`), or those where the field is not null (`count(field)`).
    Count,
    /// Sum of the numbers; an integer when all of them are integers.
    Sum,
    /// Smallest value: numbers, or strings.
    Min,
    /// Largest value: numbers, or strings.
    Max,
    /// Mean of the numbers, as a floating-point number.
    Avg,
}

impl AggFn {
    const ALL: [AggFn; 5] = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg];

    /// Its name as written in `agg=`.
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Avg => "avg",
        }
    }
}

/// One aggregate: a function and, except for a bare `count`, a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The function.
    pub function: AggFn,
    /// The indexed field it reads; `None` only for `count` of documents.
    pub field: Option<String>,
}

const SYNTAX: &str = "write count, count(field), sum(field), min(field), max(field) or avg(field)";

impl Aggregate {
    /// Parses `count`, `count(field)`, `sum(field)`, `min(field)`, `max(field)` or `avg(field)`.
    ///
    /// ```
    /// use refract::{AggFn, Aggregate};
    /// assert_eq!(Aggregate::parse("sum(balance)").unwrap(), Aggregate::new(AggFn::Sum, "balance"));
    /// assert_eq!(Aggregate::parse("count").unwrap(), Aggregate::count());
    /// assert!(Aggregate::parse("median(balance)").unwrap_err().to_string().contains("unknown function `median`"));
    /// ```
    pub fn parse(expr: &str) -> Result<Self, QueryError> {
        let bad = |reason: String| QueryError::BadAggregate { expr: expr.to_owned(), reason };
        let text = expr.trim();
        let (name, field) = match text.split_once('(') {
            None => (text, None),
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| bad(format!("missing `)`; {SYNTAX}")))?;
                let inner = inner.trim();
                if inner.is_empty() || inner.contains(['(', ')', ',']) {
                    return Err(bad(format!("name one field between the parentheses; {SYNTAX}")));
                }
                (name.trim(), Some(inner.to_owned()))
            }
        };
        if name.is_empty() {
            return Err(bad(SYNTAX.to_owned()));
        }
        let function = AggFn::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| bad(format!("unknown function `{name}`; {SYNTAX}")))?;
        if field.is_none() && function != AggFn::Count {
            return Err(bad(format!("`{name}` needs a field, e.g. {name}(balance)")));
        }
        Ok(Self { function, field })
    }

    /// `count` of documents.
    pub fn count() -> Self {
        Self { function: AggFn::Count, field: None }
    }

    /// `function(field)`.
    pub fn new(function: AggFn, field: impl Into<String>) -> Self {
        Self { function, field: Some(field.into()) }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            None => f.write_str(self.function.name()),
            Some(field) => write!(f, "{}({field})", self.function.name()),
        }
    }
}

/// An aggregate request over one collection.
///
/// ```
/// use refract::{AggFn, Aggregate, AggregateQuery, Op};
/// let q = AggregateQuery::new()
///     .filter("balance", Op::Ge, 0)
///     .group_by("status")
///     .agg(Aggregate::new(AggFn::Sum, "balance"))
///     .agg(Aggregate::count());
/// assert_eq!(q.group_by, ["status"]);
/// assert_eq!(q.aggregates.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregateQuery {
    /// All must hold, as in [`Query`].
    pub filters: Vec<Filter>,
    /// Indexed fields to group by; none gives one group of all matches.
    pub group_by: Vec<String>,
    /// What to compute per group, in answer order.
    pub aggregates: Vec<Aggregate>,
}

impl AggregateQuery {
    /// No filters, no groups, no aggregates yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition, as [`Query::filter`].
    pub fn filter(mut self, field: impl Into<String>, op: Op, value: impl Into<Value>) -> Self {
        self.filters.push(Filter { field: field.into(), op, value: value.into() });
        self
    }

    /// Adds a parsed filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Groups by one more indexed field.
    pub fn group_by(mut self, field: impl Into<String>) -> Self {
        self.group_by.push(field.into());
        self
    }

    /// Computes one more aggregate.
    pub fn agg(mut self, aggregate: Aggregate) -> Self {
        self.aggregates.push(aggregate);
        self
    }

    /// Checks the filters as a query's, and that every grouped or
    /// aggregated field is indexed. Grouping on `id` is refused: it is one
    /// group per document, which is what a query is for.
    pub fn validate(&self, spec: &CollectionSpec) -> Result<(), QueryError> {
        Query { filters: self.filters.clone(), ..Query::default() }.validate(spec)?;
        if self.aggregates.is_empty() {
            return Err(QueryError::AggregateShape("ask for at least one aggregate, e.g. agg=count".into()));
        }
        if self.aggregates.len() > MAX_AGGREGATES {
            return Err(QueryError::AggregateShape(format!(
                "{} aggregates in one request; the limit is {MAX_AGGREGATES}",
                self.aggregates.len()
            )));
        }
        if self.group_by.len() > MAX_GROUP_BY {
            return Err(QueryError::AggregateShape(format!(
                "{} group_by fields in one request; the limit is {MAX_GROUP_BY}",
                self.group_by.len()
            )));
        }
        let fields = self.group_by.iter().chain(self.aggregates.iter().filter_map(|a| a.field.as_ref()));
        for field in fields {
            if !spec.indexes.iter().any(|f| f == field) {
                return Err(QueryError::AggregateNotIndexed {
                    collection: spec.name.clone(),
                    field: field.clone(),
                    indexes: spec.indexes.clone(),
                });
            }
        }
        Ok(())
    }

    /// The distinct fields the aggregates read, in first-use order: a
    /// backend measures each once, however many aggregates use it.
    pub(crate) fn measured_fields(&self) -> Vec<Measured<'_>> {
        let mut fields: Vec<Measured<'_>> = Vec::new();
        for a in &self.aggregates {
            let Some(field) = a.field.as_deref() else { continue };
            let at = match fields.iter().position(|m| m.field == field) {
                Some(at) => at,
                None => {
                    fields.push(Measured { field, sum: false, bounds: false });
                    fields.len() - 1
                }
            };
            fields[at].sum |= matches!(a.function, AggFn::Sum | AggFn::Avg);
            fields[at].bounds |= matches!(a.function, AggFn::Min | AggFn::Max);
        }
        fields
    }
}

/// A field a backend must measure, and which of the costlier measures it
/// needs: a sum is only computed when asked for (an integer sum can
/// overflow, and must not fail a `max`), and so are the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Measured<'a> {
    /// The field.
    pub field: &'a str,
    /// `sum` or `avg` asked for: measure the sum.
    pub sum: bool,
    /// `min` or `max` asked for: measure the bounds.
    pub bounds: bool,
}

/// What a backend measures of one field in one group. Nulls and missing
/// fields are not values.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldStats {
    /// Values that are not null.
    pub values: u64,
    /// Of those, numbers.
    pub numbers: u64,
    /// Of those, strings.
    pub strings: u64,
    /// Sum of the numbers: an integer when every number is one, else a float.
    pub sum: Option<Number>,
    /// Smallest and largest value (number or string).
    pub min: Option<Value>,
    /// See `min`.
    pub max: Option<Value>,
}

/// One group as a backend measured it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawGroup {
    /// The group-by values, in `group_by` order.
    pub key: Vec<Value>,
    /// Documents in the group.
    pub rows: u64,
    /// One per [`AggregateQuery::measured_fields`], in that order.
    pub fields: Vec<FieldStats>,
}

/// Reads a decimal a backend printed exactly (PostgreSQL's `numeric`): an
/// integer when it has no fraction or exponent, else a float.
pub(crate) fn exact_number(text: &str, field: &str) -> Result<Number, QueryError> {
    if text.contains(['.', 'e', 'E']) {
        let f: f64 = text.parse().map_err(|_| QueryError::SumOverflow { field: field.to_owned() })?;
        Number::from_f64(f).ok_or_else(|| QueryError::SumOverflow { field: field.to_owned() })
    } else {
        text.parse::<i64>().map(Number::from).map_err(|_| QueryError::SumOverflow { field: field.to_owned() })
    }
}

/// One group of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The group-by values, in `group_by` order (empty without grouping).
    pub key: Vec<Value>,
    /// One value per aggregate, in request order; `null` where there was
    /// nothing to aggregate (e.g. `sum` over no numbers).
    pub values: Vec<Value>,
}

/// The answer to an [`AggregateQuery`]: groups ordered by their key, as
/// the backend orders the group-by fields (nulls first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateResult {
    /// The fields grouped by.
    pub group_by: Vec<String>,
    /// The aggregates, in request order.
    pub aggregates: Vec<Aggregate>,
    /// The groups. Without grouping, exactly one, even over no documents.
    pub groups: Vec<Group>,
}

impl AggregateResult {
    /// Builds the answer from what a backend measured, refusing what has no
    /// meaning (`sum` over strings, `min` over mixed kinds), and the
    /// answer that has too many groups (the backend fetches one more than
    /// [`MAX_GROUPS`] so this can tell).
    pub(crate) fn assemble(query: &AggregateQuery, raw: Vec<RawGroup>) -> Result<Self, QueryError> {
        if raw.len() > MAX_GROUPS {
            return Err(QueryError::TooManyGroups { limit: MAX_GROUPS });
        }
        let measured = query.measured_fields();
        let groups = raw
            .into_iter()
            .map(|g| {
                let values = query
                    .aggregates
                    .iter()
                    .map(|a| {
                        let Some(field) = a.field.as_deref() else { return Ok(Value::from(g.rows)) };
                        let at =
                            measured.iter().position(|m| m.field == field).expect("measured_fields lists every field");
                        value_of(a.function, field, &g.fields[at])
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Group { key: g.key, values })
            })
            .collect::<Result<Vec<_>, QueryError>>()?;
        Ok(Self { group_by: query.group_by.clone(), aggregates: query.aggregates.clone(), groups })
    }

    /// `{"groups": [{"key": {"status": "open"}, "values": {"count": 3, "sum(balance)": 120}}]}`:
    /// named, for HTTP and the CLI.
    pub fn to_json(&self) -> Value {
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let key: Map<String, Value> = self.group_by.iter().cloned().zip(g.key.iter().cloned()).collect();
                let values: Map<String, Value> =
                    self.aggregates.iter().map(|a| a.to_string()).zip(g.values.iter().cloned()).collect();
                serde_json::json!({ "key": key, "values": values })
            })
            .collect::<Vec<_>>();
        serde_json::json!({ "groups": groups })
    }
}

fn value_of(function: AggFn, field: &str, s: &FieldStats) -> Result<Value, QueryError> {
    let others = s.values.saturating_sub(s.numbers + s.strings);
    match function {
        AggFn::Count => Ok(Value::from(s.values)),
        AggFn::Sum | AggFn::Avg => {
            if s.numbers < s.values {
                let found = kinds(0, s.strings, others);
                return Err(QueryError::NotNumeric { function: function.name().into(), field: field.into(), found });
            }
            let Some(sum) = &s.sum else { return Ok(Value::Null) };
            if function == AggFn::Sum {
                return Ok(Value::Number(sum.clone()));
            }
            // The mean of the exact sum: the same on every backend when
            // the numbers are integers.
            let total = sum.as_i64().map(|i| i as f64).or_else(|| sum.as_f64()).unwrap_or(f64::NAN);
            Ok(Number::from_f64(total / s.numbers as f64).map_or(Value::Null, Value::Number))
        }
        AggFn::Min | AggFn::Max => {
            if others > 0 || (s.numbers > 0 && s.strings > 0) {
                let found = kinds(s.numbers, s.strings, others);
                return Err(QueryError::NotComparable { function: function.name().into(), field: field.into(), found });
            }
            let v = if function == AggFn::Min { &s.min } else { &s.max };
            Ok(v.clone().unwrap_or(Value::Null))
        }
    }
}

fn kinds(numbers: u64, strings: u64, others: u64) -> String {
    let mut found = Vec::new();
    if numbers > 0 {
        found.push("numbers");
    }
    if strings > 0 {
        found.push("strings");
    }
    if others > 0 {
        found.push("booleans, arrays or objects");
    }
    found.join(" and ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_and_refuses_expressions_by_name() {
        assert_eq!(Aggregate::parse(" avg( balance ) ").unwrap(), Aggregate::new(AggFn::Avg, "balance"));
        assert_eq!(Aggregate::parse("count(owner)").unwrap(), Aggregate::new(AggFn::Count, "owner"));
        for (expr, needle) in [
            ("median(x)", "unknown function `median`"),
            ("sum(x", "missing `)`"),
            ("sum()", "name one field"),
            ("sum(a,b)", "name one field"),
            ("sum", "`sum` needs a field"),
            ("", "write count"),
            ("(x)", "write count"),
        ] {
            let err = Aggregate::parse(expr).unwrap_err();
            assert!(matches!(err, QueryError::BadAggregate { .. }), "{expr}: {err:?}");
            assert!(err.to_string().contains(needle), "{expr}: {err}");
        }
        assert_eq!(Aggregate::new(AggFn::Max, "a.b").to_string(), "max(a.b)");
    }

    #[test]
    fn validation_names_the_field_and_the_limits() {
        let spec =
            CollectionSpec { name: "c".into(), indexes: vec!["balance".into(), "status".into()], search: vec![] };
        let ok = AggregateQuery::new().group_by("status").agg(Aggregate::new(AggFn::Sum, "balance"));
        assert_eq!(ok.validate(&spec), Ok(()));
        let err = AggregateQuery::new().agg(Aggregate::new(AggFn::Sum, "secret")).validate(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot aggregate on `secret`: it is not indexed in collection `c` (aggregates and group_by take: balance, status)"
        );
        let err = AggregateQuery::new().group_by("id").agg(Aggregate::count()).validate(&spec).unwrap_err();
        assert!(matches!(err, QueryError::AggregateNotIndexed { field, .. } if field == "id"));
        assert!(matches!(AggregateQuery::new().validate(&spec), Err(QueryError::AggregateShape(_))));
        let many = (0..=MAX_AGGREGATES).fold(AggregateQuery::new(), |q, _| q.agg(Aggregate::count()));
        assert!(matches!(many.validate(&spec), Err(QueryError::AggregateShape(m)) if m.contains("limit is 16")));
    }

    #[test]
    fn assembles_values_and_refuses_meaningless_ones() {
        let q = AggregateQuery::new()
            .agg(Aggregate::count())
            .agg(Aggregate::new(AggFn::Sum, "n"))
            .agg(Aggregate::new(AggFn::Avg, "n"))
            .agg(Aggregate::new(AggFn::Max, "n"));
        let stats = FieldStats {
            values: 3,
            numbers: 3,
            strings: 0,
            sum: Some(Number::from(10)),
            min: Some(json!(1)),
            max: Some(json!(7)),
        };
        let raw = vec![RawGroup { key: vec![], rows: 4, fields: vec![stats.clone()] }];
        let r = AggregateResult::assemble(&q, raw).unwrap();
        assert_eq!(r.groups[0].values, vec![json!(4), json!(10), json!(10.0 / 3.0), json!(7)]);
        assert_eq!(r.to_json()["groups"][0]["values"]["sum(n)"], json!(10));

        let strings = FieldStats { numbers: 1, strings: 2, ..stats };
        let raw = vec![RawGroup { key: vec![], rows: 4, fields: vec![strings] }];
        let err = AggregateResult::assemble(&q, raw).unwrap_err();
        assert_eq!(err.to_string(), "`sum(n)` needs numbers, but `n` holds strings in the matching documents");
        let too_many = vec![RawGroup { key: vec![], rows: 1, fields: vec![FieldStats::default()] }; MAX_GROUPS + 1];
        assert_eq!(AggregateResult::assemble(&q, too_many), Err(QueryError::TooManyGroups { limit: MAX_GROUPS }));
    }

    #[test]
    fn exact_numbers_keep_integers() {
        assert_eq!(exact_number("12345678901234", "f").unwrap(), Number::from(12345678901234_i64));
        assert_eq!(exact_number("2.50", "f").unwrap().as_f64(), Some(2.5));
        assert!(matches!(exact_number("99999999999999999999", "f"), Err(QueryError::SumOverflow { .. })));
    }
}
