//! Reading a page of a source table, the same for every backend: binding
//! the position the page starts after, and decoding its rows in the column
//! order `sql::page` selects them (tracking value, key columns, the deleted
//! flag if there is one, then the payload columns). What a cell holds is
//! the backend's to say ([`Cells`]).

use sqlx::{Database, Encode, Type};

use super::schema::Plan;
use super::table::Column;
use super::value::{Cell, Position, SourceRow, Val};

/// The cells of a backend's result row, decoded as the backend's types demand.
pub(super) trait Cells {
    /// A key or tracking value.
    fn position(&self, i: usize, column: &Column) -> Result<Val, sqlx::Error>;
    /// The soft-delete flag.
    fn flag(&self, i: usize) -> Result<bool, sqlx::Error>;
    /// A payload value.
    fn cell(&self, i: usize, column: &Column) -> Result<Cell, sqlx::Error>;
}

/// One row of a page.
pub(super) fn decode(plan: &Plan, r: &impl Cells) -> Result<SourceRow, sqlx::Error> {
    let value = r.position(0, &plan.tracking)?;
    let key = plan.key.iter().enumerate().map(|(i, c)| r.position(i + 1, c)).collect::<Result<Vec<_>, _>>()?;
    let mut at = 1 + plan.key.len();
    let deleted = if plan.deleted.is_some() {
        at += 1;
        r.flag(at - 1)?
    } else {
        false
    };
    let mut payload = serde_json::Map::with_capacity(plan.columns.len());
    for (i, c) in plan.columns.iter().enumerate() {
        payload.insert(c.name.clone(), r.cell(at + i, c)?.to_json());
    }
    Ok(SourceRow { tracking: plan.show_tracking(&value), position: Position { value, key }, deleted, payload })
}

/// Binds the values of `after` that `binds` names (0: the tracking value,
/// then the key columns), in that order: a `?` parameter takes one value
/// each time it occurs.
pub(super) fn bind_after<'q, DB: Database>(
    mut q: sqlx::query::Query<'q, DB, DB::Arguments>,
    binds: &[usize],
    after: Option<&Position>,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    if let Some(p) = after {
        let values: Vec<&Val> = std::iter::once(&p.value).chain(&p.key).collect();
        for &i in binds {
            q = match values[i] {
                Val::Int(v) => q.bind(*v),
                Val::Float(f) => q.bind(*f),
                Val::Text(t) => q.bind(t.clone()),
            };
        }
    }
    q
}
