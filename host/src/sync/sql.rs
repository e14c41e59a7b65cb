//! The keyset query, built once for every backend: each backend says only
//! how to quote a name, how to read a column and how to bind a value.

use super::schema::Plan;
use super::table::Column;

/// What differs between backends' SQL.
pub trait Dialect {
    /// A quoted identifier.
    fn ident(&self, name: &str) -> String;
    /// The expression that reads a column's keyset value (tracking or key).
    fn position_expr(&self, column: &Column) -> String;
    /// The expression that reads a column for the payload.
    fn payload_expr(&self, column: &Column) -> String;
    /// The expression for bound parameter `index` (0-based, in position
    /// order: tracking value, then each key column) compared with `column`.
    fn param(&self, index: usize, column: &Column) -> String;
    /// The table name as written in FROM (possibly `schema.table`).
    fn table(&self, table: &str) -> String {
        table.split('.').map(|p| self.ident(p)).collect::<Vec<_>>().join(".")
    }
}

/// The page query: position columns first (tracking, then keys), then the
/// soft-delete flag (`1`/`0`) when there is a soft-delete column, then every
/// column for the payload. With `after`, only rows after the position.
/// Returns the SQL and the order in which the position's values are bound
/// (indexes into `[tracking, key...]`; a value may be bound more than once).
pub fn page(d: &dyn Dialect, plan: &Plan, after: bool, limit: usize) -> (String, Vec<usize>) {
    let cols: Vec<&Column> = std::iter::once(&plan.tracking).chain(plan.key.iter()).collect();
    let mut select: Vec<String> = cols.iter().map(|c| d.position_expr(c)).collect();
    if let Some(del) = &plan.deleted {
        select.push(format!("CASE WHEN {} IS NULL THEN 0 ELSE 1 END", d.ident(&del.name)));
    }
    select.extend(plan.columns.iter().map(|c| d.payload_expr(c)));
    let (condition, binds) = after_condition(d, plan, after);
    let order: Vec<String> = cols.iter().map(|c| d.ident(&c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {condition} ORDER BY {} LIMIT {limit}",
        select.join(", "),
        d.table(&plan.source.table),
        order.join(", ")
    );
    (sql, binds)
}

/// The rows-pending count: how many rows lie after a position (every row
/// with a tracking value when `after` is false). The same condition as
/// [`page`], so it answers from the same (tracking, key) index.
pub fn pending(d: &dyn Dialect, plan: &Plan, after: bool) -> (String, Vec<usize>) {
    let (condition, binds) = after_condition(d, plan, after);
    (format!("SELECT COUNT(*) FROM {} WHERE {condition}", d.table(&plan.source.table)), binds)
}

/// `t IS NOT NULL`, and with `after` the keyset test against the bound position.
fn after_condition(d: &dyn Dialect, plan: &Plan, after: bool) -> (String, Vec<usize>) {
    let cols: Vec<&Column> = std::iter::once(&plan.tracking).chain(plan.key.iter()).collect();
    let t = d.ident(&plan.tracking.name);
    let mut sql = format!("{t} IS NOT NULL");
    let mut binds = Vec::new();
    if after {
        // `t >= x0` first: a plain range the planner turns into an index
        // range scan on (tracking, key); the rest is the exact keyset test
        // (t, k1, k2) > (x0, x1, x2), spelled out because row-value
        // comparisons are not optimised alike everywhere.
        binds.push(0);
        sql.push_str(&format!(" AND {t} >= {} AND ", d.param(0, cols[0])));
        sql.push_str(&greater(d, &cols, 0, &mut binds));
    }
    (sql, binds)
}

/// `(cols[i..]) > (params[i..])`, recursively.
fn greater(d: &dyn Dialect, cols: &[&Column], i: usize, binds: &mut Vec<usize>) -> String {
    let c = d.ident(&cols[i].name);
    binds.push(i);
    let gt = format!("{c} > {}", d.param(i, cols[i]));
    if i + 1 == cols.len() {
        return gt;
    }
    binds.push(i);
    let eq = format!("{c} = {}", d.param(i, cols[i]));
    format!("({gt} OR ({eq} AND {}))", greater(d, cols, i + 1, binds))
}

/// The key scan: every key, as position values.
pub fn keys(d: &dyn Dialect, plan: &Plan) -> String {
    let select: Vec<String> = plan.key.iter().map(|c| d.position_expr(c)).collect();
    format!("SELECT {} FROM {}", select.join(", "), d.table(&plan.source.table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::table::Kind;

    struct Q;
    impl Dialect for Q {
        fn ident(&self, name: &str) -> String {
            format!("\"{name}\"")
        }
        fn position_expr(&self, c: &Column) -> String {
            self.ident(&c.name)
        }
        fn payload_expr(&self, c: &Column) -> String {
            self.ident(&c.name)
        }
        fn param(&self, _: usize, _: &Column) -> String {
            "?".into()
        }
    }

    #[test]
    fn keyset_condition_covers_ties_on_every_column() {
        let col = |n: &str| Column { name: n.into(), type_name: "int".into(), kind: Kind::Int };
        let plan = Plan::for_test("t", col("v"), vec![col("a"), col("b")], vec![col("a"), col("b"), col("v")]);
        let (sql, binds) = page(&Q, &plan, true, 10);
        assert_eq!(
            sql,
            "SELECT \"v\", \"a\", \"b\", \"a\", \"b\", \"v\" FROM \"t\" WHERE \"v\" IS NOT NULL AND \"v\" >= ? AND \
             (\"v\" > ? OR (\"v\" = ? AND (\"a\" > ? OR (\"a\" = ? AND \"b\" > ?)))) ORDER BY \"v\", \"a\", \"b\" LIMIT 10"
        );
        assert_eq!(binds, [0, 0, 0, 1, 1, 2]);
        let (sql, binds) = page(&Q, &plan, false, 3);
        assert!(sql.ends_with("FROM \"t\" WHERE \"v\" IS NOT NULL ORDER BY \"v\", \"a\", \"b\" LIMIT 3"), "{sql}");
        assert!(binds.is_empty());
        let (sql, binds) = pending(&Q, &plan, true);
        assert_eq!(
            sql,
            "SELECT COUNT(*) FROM \"t\" WHERE \"v\" IS NOT NULL AND \"v\" >= ? AND \
             (\"v\" > ? OR (\"v\" = ? AND (\"a\" > ? OR (\"a\" = ? AND \"b\" > ?))))"
        );
        assert_eq!(binds, [0, 0, 0, 1, 1, 2]);
    }
}
