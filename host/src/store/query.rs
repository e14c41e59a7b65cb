//! Read-model queries: filters, order, limit and cursor pagination.
//!
//! The types here are backend-neutral; each `ReadModelStore` turns them into
//! its own SQL.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::manifest::CollectionSpec;
use crate::store::search::Search;
use crate::store::{ReadModelStore, StoreError};

/// Largest page a query may ask for.
pub const MAX_LIMIT: u32 = 10_000;
/// Page size when the caller gives none.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most filters one query may have. Each is one condition of the SQL
/// statement's `WHERE`; unbounded, a long enough list failed in the store
/// (SQLite: "Expression tree is too large") instead of being refused.
pub const MAX_FILTERS: usize = 32;
/// Most values of one `in:` filter. Each is a bound SQL parameter: even
/// [`MAX_FILTERS`] such filters stay under SQLite's 32,766 parameters.
pub const MAX_IN_VALUES: usize = 1_000;

/// A query that cannot be run as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// A filter expression could not be parsed.
    #[error(
        "bad filter `{0}`: write field=value, field!=value, field>value, field>=value, field<value, field<=value or field=in:[v1,v2]"
    )]
    BadFilter(String),
    /// A filter's operator is none of the operators, e.g. `>>` or `=>`:
    /// read as an operator and a value starting with `>`, it compared with
    /// a string and silently matched nothing.
    #[error(
        "bad filter `{filter}`: `{operator}` is not an operator; use =, !=, <, <=, >, >= or =in:[...] (to compare with a value that starts with = ! < or >, write it as a JSON string, e.g. {field}=\"=x\")"
    )]
    BadOperator {
        /// The filter as given.
        filter: String,
        /// Field of the filter.
        field: String,
        /// The run of operator characters as given.
        operator: String,
    },
    /// A filter or order uses a field that is not indexed.
    #[error("field `{field}` is not indexed in collection `{collection}` (queryable: id{})", list_fields(.indexes))]
    NotIndexed {
        /// Collection queried.
        collection: String,
        /// Field asked for.
        field: String,
        /// Indexed fields of the collection.
        indexes: Vec<String>,
    },
    /// The value cannot be compared with that operator.
    #[error("bad value for `{field}`: {reason}")]
    BadValue {
        /// Field of the filter.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The limit is out of range.
    #[error("limit must be between 1 and {MAX_LIMIT}, not {0}")]
    BadLimit(u32),
    /// The text is not a cursor this version of refract made.
    #[error("bad cursor: pass the `next_cursor` of a previous page of the same query")]
    BadCursor,
    /// A well-formed cursor made by a page of another query: continuing
    /// it with a different order, filters or search would return a page
    /// of neither query, so it is refused instead.
    #[error(
        "this cursor belongs to another query ({differs}): pass a cursor only with the order, filters and search of the query whose page returned it, or leave the cursor out to start from the first page"
    )]
    CursorMismatch {
        /// What differs, e.g. "it was made for order `-balance`, not `balance`".
        differs: String,
    },
    /// The query has more than [`MAX_FILTERS`] filters.
    #[error("{0} filters in one query; the limit is {MAX_FILTERS}")]
    TooManyFilters(usize),
    /// An `in:` filter has more than [`MAX_IN_VALUES`] values.
    #[error("`in` filter on `{field}` has {count} values; the limit is {MAX_IN_VALUES}")]
    TooManyValues {
        /// Field of the filter.
        field: String,
        /// How many values it has.
        count: usize,
    },
    /// A document id or filter value holds a NUL character, which
    /// PostgreSQL cannot hold in text: refused up front on every backend.
    #[error("{what} contains a NUL character (U+0000), which is not allowed")]
    NulCharacter {
        /// What held it: `document id`, or the filter's field.
        what: String,
    },
    /// An `agg` expression is not `count`, `count(field)`, `sum(field)`,
    /// `min(field)`, `max(field)` or `avg(field)`.
    #[error("bad aggregate `{expr}`: {reason}")]
    BadAggregate {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An aggregate or group-by names a field that is not indexed.
    #[error(
        "cannot aggregate on `{field}`: it is not indexed in collection `{collection}` (aggregates and group_by take: {})",
        indexed_list(.indexes)
    )]
    AggregateNotIndexed {
        /// Collection queried.
        collection: String,
        /// Field asked for.
        field: String,
        /// Indexed fields of the collection.
        indexes: Vec<String>,
    },
    /// `sum` or `avg` over a field holding something other than numbers.
    #[error("`{function}({field})` needs numbers, but `{field}` holds {found} in the matching documents")]
    NotNumeric {
        /// `sum` or `avg`.
        function: String,
        /// Field aggregated.
        field: String,
        /// What was found instead, e.g. `strings`.
        found: String,
    },
    /// `min` or `max` over a field that mixes kinds of values, or holds
    /// booleans, arrays or objects: no order is the same on every backend.
    #[error(
        "`{function}({field})` needs all numbers or all strings, but `{field}` holds {found} in the matching documents"
    )]
    NotComparable {
        /// `min` or `max`.
        function: String,
        /// Field aggregated.
        field: String,
        /// What was found, e.g. `numbers and strings`.
        found: String,
    },
    /// An integer sum left the 64-bit range.
    #[error("`sum({field})` does not fit in a 64-bit integer")]
    SumOverflow {
        /// Field summed.
        field: String,
    },
    /// More groups than one answer may hold.
    #[error("the aggregate has more than {limit} groups: group by fewer fields, or filter first")]
    TooManyGroups {
        /// Most groups allowed.
        limit: usize,
    },
    /// Too many aggregates or group-by fields, or none at all.
    #[error("{0}")]
    AggregateShape(String),
    /// A search of a collection whose manifest lists no search fields.
    #[error(
        "collection `{collection}` declares no search fields: list text fields in its manifest's `search` to search it"
    )]
    SearchNotDeclared {
        /// Collection searched.
        collection: String,
    },
    /// The search text holds a quote, an operator character or an operator
    /// word of the databases' search syntax.
    #[error(
        "the search text contains `{operator}`, which is search syntax: search takes plain words (all must match, the last as a prefix)"
    )]
    SearchOperator {
        /// The character or word, as given.
        operator: String,
    },
    /// The search text has no letter or digit.
    #[error("the search text has no words: give letters or digits (all words must match, the last as a prefix)")]
    EmptySearch,
    /// The search text is too long, has too many words or too long a word.
    #[error("search too long: {0}")]
    SearchTooLong(String),
}

fn indexed_list(fields: &[String]) -> String {
    if fields.is_empty() { "no indexed fields".to_owned() } else { fields.join(", ") }
}

/// Checks a document id asked for by a caller (a `get` of one document),
/// as filter values are checked, before any store sees it.
///
/// ```
/// assert!(refract::check_document_id("account-1").is_ok());
/// assert_eq!(
///     refract::check_document_id("a\0b").unwrap_err().to_string(),
///     "document id contains a NUL character (U+0000), which is not allowed"
/// );
/// ```
pub fn check_document_id(id: &str) -> Result<(), QueryError> {
    if id.contains('\0') {
        return Err(QueryError::NulCharacter { what: "document id".into() });
    }
    Ok(())
}

fn list_fields(fields: &[String]) -> String {
    fields.iter().map(|f| format!(", {f}")).collect()
}

/// Comparison operator of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=in:[...]`: equal to one of a list.
    In,
}

impl Op {
    /// The SQL operator for scalar comparisons (not for `In`).
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Op::Eq | Op::In => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

impl std::fmt::Display for Op {
    /// The operator as a filter is written, `=in:` for `In`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "=in:",
        })
    }
}

/// One condition on a JSON field (or `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Field path, e.g. `balance` or `owner.name`, or `id`.
    pub field: String,
    /// Operator.
    pub op: Op,
    /// Scalar value, or an array for `In`.
    pub value: Value,
}

impl Filter {
    /// Parses `field<op>value`. The value is read as JSON when it is valid
    /// JSON (`100`, `true`, `"x"`, `null`) and as a plain string otherwise.
    ///
    /// ```
    /// use refract::{Filter, Op};
    /// let f = Filter::parse("balance>=100").unwrap();
    /// assert_eq!((f.field.as_str(), f.op, f.value), ("balance", Op::Ge, serde_json::json!(100)));
    /// let f = Filter::parse("owner=ada").unwrap();
    /// assert_eq!(f.value, serde_json::json!("ada"));
    /// ```
    pub fn parse(expr: &str) -> Result<Self, QueryError> {
        let bad = || QueryError::BadFilter(expr.to_owned());
        let at = expr.find(['=', '!', '<', '>']).ok_or_else(bad)?;
        let (field, rest) = expr.split_at(at);
        // The whole run of operator characters must be one operator: else
        // `a>>1` would be `a > ">1"`, a string comparison matching nothing.
        let run = rest.find(|c| !matches!(c, '=' | '!' | '<' | '>')).map_or(rest, |end| &rest[..end]);
        if !["=", "!=", "<", "<=", ">", ">="].contains(&run) {
            return Err(QueryError::BadOperator {
                filter: expr.to_owned(),
                field: field.trim().to_owned(),
                operator: run.to_owned(),
            });
        }
        let (op, raw) = [
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=in:", Op::In),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(token, op)| rest.strip_prefix(token).map(|raw| (op, raw)))
        .ok_or_else(bad)?;
        let field = field.trim();
        if field.is_empty() {
            return Err(bad());
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let filter = Filter { field: field.to_owned(), op, value };
        filter.check_value()?;
        Ok(filter)
    }

    fn check_value(&self) -> Result<(), QueryError> {
        let bad = |reason: &str| QueryError::BadValue { field: self.field.clone(), reason: reason.to_owned() };
        let values = match &self.value {
            Value::Array(items) => items.as_slice(),
            v => std::slice::from_ref(v),
        };
        if self.op == Op::In && values.len() > MAX_IN_VALUES {
            return Err(QueryError::TooManyValues { field: self.field.clone(), count: values.len() });
        }
        if values.iter().any(|v| v.as_str().is_some_and(|s| s.contains('\0'))) {
            return Err(QueryError::NulCharacter { what: format!("the value of filter `{}`", self.field) });
        }
        match (&self.op, &self.value) {
            (Op::In, Value::Array(items)) if items.iter().all(is_scalar) => Ok(()),
            (Op::In, _) => Err(bad("`in` takes a JSON array of scalars, e.g. in:[\"a\",\"b\"]")),
            (_, v) if !is_scalar(v) => Err(bad("compare with a number, string, boolean or null")),
            (Op::Eq | Op::Ne, _) => Ok(()),
            (_, Value::Null | Value::Bool(_)) => Err(bad("order comparisons take a number or a string")),
            _ => Ok(()),
        }
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Sort order of a query. Ties are broken by document id, so pages are stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Field path or `id`.
    pub field: String,
    /// Largest first.
    pub descending: bool,
}

impl Order {
    /// Parses `field` (ascending) or `-field` (descending).
    pub fn parse(expr: &str) -> Self {
        match expr.strip_prefix('-') {
            Some(field) => Order { field: field.to_owned(), descending: true },
            None => Order { field: expr.to_owned(), descending: false },
        }
    }
}

/// A query over one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// All must hold.
    pub filters: Vec<Filter>,
    /// Sort order; by id when absent.
    pub order: Option<Order>,
    /// Page size.
    pub limit: u32,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Full-text search: only documents holding every word of it (the last
    /// as a prefix) in the collection's search fields. Without an `order`
    /// they come best match first (ties by id).
    #[serde(default)]
    pub search: Option<String>,
}

impl Default for Query {
    fn default() -> Self {
        Self { filters: Vec::new(), order: None, limit: DEFAULT_LIMIT, cursor: None, search: None }
    }
}

/// What a page is sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sort {
    /// A field or `id`, ties by id.
    Field(Order),
    /// Search relevance, best first, ties by id ascending. Each backend
    /// scores in its own way (SQLite: FTS5's bm25, lower is better;
    /// PostgreSQL: `ts_rank`, higher is better), so rank order may differ
    /// between backends; the matching set does not.
    Rank,
}

/// The typed builder: every method takes and returns the query, so a
/// query reads as one expression. Nothing is checked until the store runs
/// it (`validate`), which is where the collection's indexes are known.
///
/// ```
/// use refract::{Op, Query};
/// let q = Query::new().filter("balance", Op::Ge, 100).filter("status", Op::Eq, "open").order_by_desc("balance").limit(20);
/// assert_eq!(q.filters.len(), 2);
/// assert_eq!(q.filters[0].value, serde_json::json!(100));
/// assert_eq!(q.order, Some(refract::Order::parse("-balance")));
/// assert_eq!(q.limit, 20);
/// // The CLI and HTTP parse into the same type:
/// assert_eq!(q.filters[0], refract::Filter::parse("balance>=100").unwrap());
/// ```
impl Query {
    /// A query of every document, by id, in pages of [`DEFAULT_LIMIT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition: `field op value`. For [`Op::In`] pass an array,
    /// e.g. `serde_json::json!(["a", "b"])`.
    pub fn filter(mut self, field: impl Into<String>, op: Op, value: impl Into<Value>) -> Self {
        self.filters.push(Filter { field: field.into(), op, value: value.into() });
        self
    }

    /// Adds a parsed filter (`balance>=100`, as `--where` and `filter=` take it).
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Sorts by `field`, smallest first (ties by id).
    pub fn order_by(mut self, field: impl Into<String>) -> Self {
        self.order = Some(Order { field: field.into(), descending: false });
        self
    }

    /// Sorts by `field`, largest first (ties by id).
    pub fn order_by_desc(mut self, field: impl Into<String>) -> Self {
        self.order = Some(Order { field: field.into(), descending: true });
        self
    }

    /// Page size, 1 to [`MAX_LIMIT`].
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after a previous page's `next_cursor`.
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Only documents matching `text` in the collection's search fields:
    /// every word, the last as a prefix (`"ada lov"` finds "Ada Lovelace").
    /// Best match first unless an order is given.
    ///
    /// ```
    /// let q = refract::Query::new().search("ada lov").filter("balance", refract::Op::Ge, 0);
    /// assert_eq!(q.search.as_deref(), Some("ada lov"));
    /// ```
    pub fn search(mut self, text: impl Into<String>) -> Self {
        self.search = Some(text.into());
        self
    }

    /// Checks fields against the collection's indexes, the values, the
    /// limit and the search text.
    pub fn validate(&self, spec: &CollectionSpec) -> Result<(), QueryError> {
        self.checked_search(spec)?;
        if self.filters.len() > MAX_FILTERS {
            return Err(QueryError::TooManyFilters(self.filters.len()));
        }
        for field in self.filters.iter().map(|f| &f.field).chain(self.order.iter().map(|o| &o.field)) {
            if !spec.is_queryable(field) {
                return Err(QueryError::NotIndexed {
                    collection: spec.name.clone(),
                    field: field.clone(),
                    indexes: spec.indexes.clone(),
                });
            }
        }
        for f in &self.filters {
            f.check_value()?;
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(QueryError::BadLimit(self.limit));
        }
        Ok(())
    }

    /// The effective order: by the given field, or by id.
    pub fn order_or_id(&self) -> Order {
        self.order.clone().unwrap_or(Order { field: "id".into(), descending: false })
    }

    /// The checked search, if the query has one.
    pub(crate) fn checked_search(&self, spec: &CollectionSpec) -> Result<Option<Search>, QueryError> {
        self.search.as_deref().map(|text| Search::parse(spec, text)).transpose()
    }

    /// What a cursor of this query is bound to: its sort, its filters and
    /// its search. The limit is not part of it: a next page of another
    /// size is still the same sequence of documents.
    fn binding(&self, search: Option<&Search>) -> Binding {
        let sort = match self.sort() {
            Sort::Rank => "rank".to_owned(),
            Sort::Field(o) => format!("{}{}", if o.descending { "-" } else { "" }, o.field),
        };
        Binding { sort, filters: filters_digest(&self.filters), search: search.map(Search::key) }
    }

    /// What the page is sorted by: the order given, else rank for a
    /// search, else id.
    pub(crate) fn sort(&self) -> Sort {
        match (&self.order, &self.search) {
            (None, Some(_)) => Sort::Rank,
            _ => Sort::Field(self.order_or_id()),
        }
    }

    /// The cursor to continue after, checked against this query: a cursor
    /// continues only the query whose page made it (same sort, filters and
    /// search), and a rank cursor only a rank order.
    pub(crate) fn checked_cursor(&self, search: Option<&Search>) -> Result<Option<Cursor>, QueryError> {
        let Some(text) = &self.cursor else { return Ok(None) };
        let cursor = Cursor::decode(text)?;
        cursor.binding.check(&self.binding(search))?;
        if self.sort() == Sort::Rank && cursor.rank().is_none() {
            return Err(QueryError::BadCursor);
        }
        Ok(Some(cursor))
    }
}

/// The query a cursor was made by. The sort and the search words are kept
/// as they are, so a mismatch can say what differs; the filters as a
/// digest, since an `in:` list may hold a thousand values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    /// `field`, `-field`, or `rank`.
    sort: String,
    /// [`filters_digest`] of the filters; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filters: Option<String>,
    /// The search's words; absent without a search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    search: Option<String>,
}

impl Binding {
    /// `Ok` when `query` (the binding of the query now asked) is the
    /// query this cursor was made by; else the first part that differs.
    fn check(&self, query: &Binding) -> Result<(), QueryError> {
        let differs = if self.sort != query.sort {
            let name =
                |sort: &str| if sort == "rank" { "best match first".to_owned() } else { format!("order `{sort}`") };
            // "order `-balance`, not `balance`": the word once when both are orders.
            let now = if self.sort != "rank" && query.sort != "rank" {
                format!("`{}`", query.sort)
            } else {
                name(&query.sort)
            };
            format!("it was made for {}, not {now}", name(&self.sort))
        } else if self.filters != query.filters {
            "it was made for other filters".to_owned()
        } else if self.search != query.search {
            match (&self.search, &query.search) {
                (Some(made), Some(now)) => format!("it was made for the search `{made}`, not `{now}`"),
                (Some(made), None) => format!("it was made for the search `{made}`, and this query has none"),
                (None, _) => "it was made for a query without a search".to_owned(),
            }
        } else {
            return Ok(());
        };
        Err(QueryError::CursorMismatch { differs })
    }
}

/// A digest of a set of filters, the same whatever order they are given in
/// and however often one is repeated (they are all ANDed), or `None` for no
/// filters. 64 bits of SHA-256:
/// enough to tell an honest caller's queries apart, and short in a URL.
fn filters_digest(filters: &[Filter]) -> Option<String> {
    use sha2::{Digest, Sha256};
    if filters.is_empty() {
        return None;
    }
    let mut each: Vec<String> = filters
        .iter()
        .map(|f| serde_json::to_string(&(&f.field, f.op, &f.value)).expect("a filter always serializes"))
        .collect();
    each.sort();
    each.dedup();
    let digest = Sha256::digest(each.join("\n").as_bytes());
    Some(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// What may be wrong with a query that runs: one sentence per filter that
/// compares a field holding numbers with a string by order (`<`, `<=`, `>`,
/// `>=`), e.g. `balance>=abc`. Numbers and strings do not compare by value,
/// and the backends order them apart (SQLite puts every number before every
/// string, PostgreSQL after), so such a filter matches all numbers or none.
///
/// Manifests declare no index types, so whether a field holds numbers is
/// read from the data: some document of the collection has a number there.
/// A warning, not a refusal: a field may hold numbers in some documents and
/// strings in others, and then a string comparison can be what is meant.
/// One small read per such filter (an index range, at most one row); none
/// for any other query.
pub async fn query_warnings(
    store: &dyn ReadModelStore,
    projection: &str,
    collection: &str,
    query: &Query,
) -> Result<Vec<String>, StoreError> {
    let mut warnings = Vec::new();
    for f in &query.filters {
        let Value::String(text) = &f.value else { continue };
        if f.field == "id" || !matches!(f.op, Op::Lt | Op::Le | Op::Gt | Op::Ge) {
            continue;
        }
        // Every number, and nothing else, lies between -MAX and MAX on both
        // backends (in SQLite a string is above every number, in PostgreSQL
        // below; null matches neither comparison).
        let numbers =
            Query::new().filter(f.field.clone(), Op::Ge, -f64::MAX).filter(f.field.clone(), Op::Le, f64::MAX).limit(1);
        if store.query_documents(projection, collection, &numbers).await?.documents.is_empty() {
            continue;
        }
        warnings.push(format!(
            "filter `{field}{op}{value}` compares `{field}` with the string {value}, but `{field}` holds numbers: \
             numbers and strings do not compare by value, so it matches every number or none; compare with a number, \
             e.g. `{field}{op}100`",
            field = f.field,
            op = f.op,
            value = Value::String(text.clone()),
        ));
    }
    Ok(warnings)
}

/// One row a backend read: the document and, in a rank order, its score.
pub(crate) struct Row {
    pub document: Document,
    pub rank: Option<f64>,
}

/// A page from the `limit + 1` rows a backend read in the query's sort:
/// the extra row only tells that a next page exists.
pub(crate) fn page_of(query: &Query, search: Option<&Search>, mut rows: Vec<Row>) -> Page {
    let limit = query.limit as usize;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            let key = match (query.sort(), last.rank) {
                (Sort::Rank, Some(rank)) => Value::from(rank.to_bits()),
                (Sort::Field(order), _) => order_key(&last.document.body, &order),
                (Sort::Rank, None) => Value::Null,
            };
            Cursor { key, id: last.document.id.clone(), binding: query.binding(search) }.encode()
        })
    } else {
        None
    };
    Page { documents: rows.into_iter().map(|r| r.document).collect(), next_cursor }
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Document id.
    pub id: String,
    /// JSON text.
    pub body: String,
}

/// One page of a query's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Documents in order.
    pub documents: Vec<Document>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Position after the last row of a page: the order key and the id, and
/// the query the page belongs to. In a rank order the key is the score's
/// bits (`f64::to_bits`): a float through JSON text may come back a hair
/// off, and the next page would then skip or repeat a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    pub key: Value,
    pub id: String,
    pub binding: Binding,
}

impl Cursor {
    /// Opaque text form (hex of a JSON triple), safe in URLs and shells.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&(&self.key, &self.id, &self.binding)).expect("a JSON value always serializes");
        json.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The score of a rank cursor.
    pub fn rank(&self) -> Option<f64> {
        self.key.as_u64().map(f64::from_bits).filter(|r| r.is_finite())
    }

    /// Reads a cursor back. The forms of earlier versions (without a
    /// binding to the query) are not cursors any more: they could not be
    /// checked against the query they continue.
    pub fn decode(text: &str) -> Result<Self, QueryError> {
        if text.len() % 2 != 0 || !text.is_ascii() {
            return Err(QueryError::BadCursor);
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| QueryError::BadCursor)?;
        let (key, id, binding): (Value, String, Binding) =
            serde_json::from_slice(&bytes).map_err(|_| QueryError::BadCursor)?;
        if !is_scalar(&key) {
            return Err(QueryError::BadCursor);
        }
        Ok(Cursor { key, id, binding })
    }
}

/// ` WHERE a AND b ...` for the conditions a backend built, or nothing.
pub(crate) fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
}

/// The order key of a document, as a cursor records it: both backends
/// sort arrays and objects by their JSON text, and missing fields as null.
pub(crate) fn order_key(body: &str, order: &Order) -> Value {
    let doc: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match field_value(&doc, &order.field) {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::Array(_) | Value::Object(_))) => Value::String(v.to_string()),
        Some(v) => v.clone(),
    }
}

/// Reads a dotted field path out of a JSON document.
pub(crate) fn field_value<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, part| v.get(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_operator() {
        let cases = [
            ("a=1", Op::Eq, json!(1)),
            ("a!=x", Op::Ne, json!("x")),
            ("a<2.5", Op::Lt, json!(2.5)),
            ("a<=2", Op::Le, json!(2)),
            ("a>\"2\"", Op::Gt, json!("2")),
            ("a>=0", Op::Ge, json!(0)),
            ("a=in:[1,\"b\"]", Op::In, json!([1, "b"])),
            ("a=true", Op::Eq, json!(true)),
            ("a=", Op::Eq, json!("")),
        ];
        for (expr, op, value) in cases {
            let f = Filter::parse(expr).unwrap();
            assert_eq!((f.field.as_str(), f.op, f.value), ("a", op, value), "{expr}");
        }
    }

    #[test]
    fn rejects_bad_filters() {
        assert!(matches!(Filter::parse("balance"), Err(QueryError::BadFilter(_))));
        assert!(matches!(Filter::parse("=3"), Err(QueryError::BadFilter(_))));
        assert!(matches!(Filter::parse("a=in:3"), Err(QueryError::BadValue { .. })));
        assert!(matches!(Filter::parse("a>true"), Err(QueryError::BadValue { .. })));
        assert!(matches!(Filter::parse("a={\"x\":1}"), Err(QueryError::BadValue { .. })));
    }

    /// A run of operator characters that is not one operator is refused
    /// by name, where it was once read as an operator and a value.
    #[test]
    fn operator_typos_are_refused() {
        for (expr, field, operator) in [
            ("balance>>100", "balance", ">>"),
            ("balance=>100", "balance", "=>"),
            ("balance=<100", "balance", "=<"),
            ("balance<<100", "balance", "<<"),
            ("balance!==1", "balance", "!=="),
            ("balance==1", "balance", "=="),
            ("balance<>1", "balance", "<>"),
            ("balance!1", "balance", "!"),
            ("owner =!ada", "owner", "=!"),
            ("a>=>1", "a", ">=>"),
        ] {
            let err = Filter::parse(expr).unwrap_err();
            let want = QueryError::BadOperator { filter: expr.into(), field: field.into(), operator: operator.into() };
            assert_eq!(err, want, "{expr}");
        }
        assert_eq!(
            Filter::parse("balance>>100").unwrap_err().to_string(),
            "bad filter `balance>>100`: `>>` is not an operator; use =, !=, <, <=, >, >= or =in:[...] (to compare \
             with a value that starts with = ! < or >, write it as a JSON string, e.g. balance=\"=x\")"
        );
        // The way out the message gives: a quoted value is a value.
        let f = Filter::parse("note=\"=x\"").unwrap();
        assert_eq!((f.op, f.value), (Op::Eq, json!("=x")));
        let f = Filter::parse("note>\">1\"").unwrap();
        assert_eq!((f.op, f.value), (Op::Gt, json!(">1")));
    }

    #[test]
    fn only_indexed_fields_are_queryable() {
        let spec = CollectionSpec::new("c", ["balance"]);
        let q = |f: &str| Query { filters: vec![Filter::parse(f).unwrap()], ..Query::default() };
        assert_eq!(q("balance>1").validate(&spec), Ok(()));
        assert_eq!(q("id=x").validate(&spec), Ok(()));
        let err = q("owner=x").validate(&spec).unwrap_err();
        assert_eq!(err.to_string(), "field `owner` is not indexed in collection `c` (queryable: id, balance)");
        let q = Query { limit: 0, ..Query::default() };
        assert_eq!(q.validate(&spec), Err(QueryError::BadLimit(0)));
    }

    #[test]
    fn filters_and_in_values_are_limited_by_name() {
        let spec = CollectionSpec::new("c", ["balance"]);
        let filters = |n: usize| vec![Filter::parse("balance>1").unwrap(); n];
        let at_limit = Query { filters: filters(MAX_FILTERS), ..Query::default() };
        assert_eq!(at_limit.validate(&spec), Ok(()));
        let over = Query { filters: filters(999), ..Query::default() };
        assert_eq!(over.validate(&spec), Err(QueryError::TooManyFilters(999)));
        assert_eq!(over.validate(&spec).unwrap_err().to_string(), "999 filters in one query; the limit is 32");

        let list = |n: usize| format!("balance=in:[{}]", (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        assert_eq!(Filter::parse(&list(MAX_IN_VALUES)).unwrap().value.as_array().map(Vec::len), Some(MAX_IN_VALUES));
        let err = Filter::parse(&list(MAX_IN_VALUES + 1)).unwrap_err();
        assert_eq!(err, QueryError::TooManyValues { field: "balance".into(), count: MAX_IN_VALUES + 1 });
        assert_eq!(err.to_string(), "`in` filter on `balance` has 1001 values; the limit is 1000");
        // A filter built by hand, not parsed, is checked by `validate`.
        let values: Vec<Value> = (0..2_000).map(Value::from).collect();
        let built = Filter { field: "balance".into(), op: Op::In, value: Value::Array(values) };
        let q = Query { filters: vec![built], ..Query::default() };
        assert_eq!(q.validate(&spec), Err(QueryError::TooManyValues { field: "balance".into(), count: 2_000 }));
    }

    #[test]
    fn nul_in_ids_and_filter_values_is_refused() {
        let nul = |field: &str| QueryError::NulCharacter { what: format!("the value of filter `{field}`") };
        assert_eq!(Filter::parse("id=a\0b"), Err(nul("id")));
        assert_eq!(Filter::parse("owner=in:[\"x\",\"\\u0000\"]"), Err(nul("owner")));
        assert_eq!(Filter::parse("owner>\"\\u0000\""), Err(nul("owner")));
        assert_eq!(
            Filter::parse("id=a\0b").unwrap_err().to_string(),
            "the value of filter `id` contains a NUL character (U+0000), which is not allowed"
        );
        let spec = CollectionSpec { name: "c".into(), ..Default::default() };
        let built = Filter { field: "id".into(), op: Op::Eq, value: json!("\u{0}") };
        assert_eq!(Query { filters: vec![built], ..Query::default() }.validate(&spec), Err(nul("id")));
        assert!(Filter::parse("id=a\u{1}b").is_ok(), "only NUL: other control characters are valid ids");
        assert_eq!(check_document_id("doc\0"), Err(QueryError::NulCharacter { what: "document id".into() }));
        assert_eq!(check_document_id("doc-1"), Ok(()));
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let plain = Binding { sort: "balance".into(), filters: None, search: None };
        let c = Cursor { key: json!(12.5), id: "a\"b".into(), binding: plain.clone() };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        let rank = -0.1f64 - 1e-17;
        let bound = Binding { sort: "rank".into(), filters: Some("00ff".into()), search: Some("ada lov".into()) };
        let c = Cursor { key: json!(rank.to_bits()), id: "x".into(), binding: bound };
        let back = Cursor::decode(&c.encode()).unwrap();
        assert_eq!(back.rank().map(f64::to_bits), Some(rank.to_bits()), "a score comes back to the bit");
        assert_eq!(back, c);
        // "5b5d" is `[]`; the last two are the unbound forms of earlier
        // versions, `[3,"d1"]` and `[3,"d1","rank\nada"]`.
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        for bad in ["", "zz", "abc", "5b5d", &hex(r#"[3,"d1"]"#), &hex(r#"[3,"d1","rank\nada"]"#)] {
            assert_eq!(Cursor::decode(bad), Err(QueryError::BadCursor), "{bad}");
        }
    }

    /// A cursor made by a page of `made`, as `page_of` makes it.
    fn cursor_of(made: &Query, search: Option<&Search>, key: Value) -> String {
        Cursor { key, id: "d1".into(), binding: made.binding(search) }.encode()
    }

    fn mismatch(differs: &str) -> Result<Option<Cursor>, QueryError> {
        Err(QueryError::CursorMismatch { differs: differs.into() })
    }

    /// A cursor continues only the query it came from: the same search,
    /// and a rank order only from a rank cursor.
    #[test]
    fn cursors_are_bound_to_their_search() {
        let spec = CollectionSpec::new("c", ["balance"]).with_search(["name"]);
        let search = |t: &str| Search::parse(&spec, t).unwrap();
        let rank = json!(0.5f64.to_bits());
        let q = Query::new().search("Ada lov");
        let s = search("Ada lov");
        // The search is bound by its words, not its spelling.
        let ok = q.clone().after(cursor_of(&Query::new().search("ada LOV"), Some(&search("ada LOV")), rank.clone()));
        assert_eq!(ok.checked_cursor(Some(&s)).unwrap().unwrap().rank(), Some(0.5));

        let other = Query::new().search("ada");
        let bad = q.clone().after(cursor_of(&other, Some(&search("ada")), rank.clone()));
        assert_eq!(bad.checked_cursor(Some(&s)), mismatch("it was made for the search `ada`, not `ada lov`"));
        let bad = q.clone().after(cursor_of(&Query::new(), None, rank.clone()));
        assert_eq!(bad.checked_cursor(Some(&s)), mismatch("it was made for order `id`, not best match first"));
        let by_balance = Query::new().search("ada lov").order_by("balance");
        let bad = q.clone().after(cursor_of(&by_balance, Some(&s), rank.clone()));
        assert_eq!(bad.checked_cursor(Some(&s)), mismatch("it was made for order `balance`, not best match first"));
        let not_a_rank = q.clone().after(cursor_of(&q, Some(&s), json!("x")));
        assert_eq!(not_a_rank.checked_cursor(Some(&s)), Err(QueryError::BadCursor), "a rank cursor holds a score");

        let plain = Query::new().after(cursor_of(&Query::new().search("ada lov").order_by("id"), Some(&s), json!(3)));
        assert_eq!(
            plain.checked_cursor(None),
            mismatch("it was made for the search `ada lov`, and this query has none"),
            "a search cursor on a plain query"
        );
        let ranked = by_balance.clone().after(cursor_of(&q, Some(&s), rank.clone()));
        assert_eq!(ranked.checked_cursor(Some(&s)), mismatch("it was made for best match first, not order `balance`"));
        let page = by_balance.clone().after(cursor_of(&by_balance, Some(&s), json!(3)));
        assert_eq!(page.checked_cursor(Some(&s)).unwrap().unwrap().key, json!(3));
        let searched = by_balance.clone().after(cursor_of(&Query::new().order_by("balance"), None, json!(3)));
        assert_eq!(searched.checked_cursor(Some(&s)), mismatch("it was made for a query without a search"));
        assert_eq!(by_balance.sort(), Sort::Field(Order::parse("balance")));
        assert_eq!(q.sort(), Sort::Rank);
        assert_eq!(Query::new().sort(), Sort::Field(Order::parse("id")));
    }

    /// A cursor of a plain query continues only the same order and the
    /// same filters, given in any order; the page size may change.
    #[test]
    fn cursors_are_bound_to_their_order_and_filters() {
        let filter = |f: &str| Filter::parse(f).unwrap();
        let made =
            Query::new().order_by_desc("balance").with_filter(filter("balance>=0")).with_filter(filter("owner=ada"));
        let cursor = cursor_of(&made, None, json!(40));

        let same =
            Query::new().with_filter(filter("owner=ada")).with_filter(filter("balance>=0")).order_by_desc("balance");
        let next = same.limit(7).after(cursor.clone()).checked_cursor(None).unwrap().unwrap();
        assert_eq!((next.key, next.id.as_str()), (json!(40), "d1"));
        let repeated = made.clone().with_filter(filter("owner=ada")).after(cursor.clone());
        assert!(repeated.checked_cursor(None).is_ok(), "a repeated condition is the same query");

        let reversed = made.clone().order_by("balance").after(cursor.clone());
        assert_eq!(reversed.checked_cursor(None), mismatch("it was made for order `-balance`, not `balance`"));
        let by_id = Query { order: None, ..made.clone() }.after(cursor.clone());
        assert_eq!(by_id.checked_cursor(None), mismatch("it was made for order `-balance`, not `id`"));
        let other_filters = [
            vec![filter("balance>=0")],
            vec![filter("balance>=0"), filter("owner=bob")],
            vec![filter("balance>0"), filter("owner=ada")],
            vec![],
        ];
        for filters in other_filters {
            let q = Query { filters: filters.clone(), ..made.clone() }.after(cursor.clone());
            assert_eq!(q.checked_cursor(None), mismatch("it was made for other filters"), "{filters:?}");
        }
        let unfiltered = cursor_of(&Query::new().order_by_desc("balance"), None, json!(40));
        let q = made.clone().after(unfiltered);
        assert_eq!(q.checked_cursor(None), mismatch("it was made for other filters"));

        assert_eq!(
            QueryError::CursorMismatch { differs: "it was made for order `-balance`, not `balance`".into() }
                .to_string(),
            "this cursor belongs to another query (it was made for order `-balance`, not `balance`): pass a cursor \
             only with the order, filters and search of the query whose page returned it, or leave the cursor out \
             to start from the first page"
        );
    }

    #[test]
    fn searches_are_validated_with_the_query() {
        let spec = CollectionSpec::new("c", ["balance"]).with_search(["name"]);
        assert_eq!(Query::new().search("ada").validate(&spec), Ok(()));
        assert_eq!(Query::new().search("a*").validate(&spec), Err(QueryError::SearchOperator { operator: "*".into() }));
        let plain = CollectionSpec::new("plain", ["balance"]);
        assert_eq!(
            Query::new().search("ada").validate(&plain),
            Err(QueryError::SearchNotDeclared { collection: "plain".into() })
        );
    }

    #[test]
    fn order_parses_direction() {
        assert_eq!(Order::parse("-balance"), Order { field: "balance".into(), descending: true });
        assert_eq!(Order::parse("id"), Order { field: "id".into(), descending: false });
    }
}
