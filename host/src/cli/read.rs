//! `refract get` and `refract query`: reading read models.

use anyhow::{Result, bail};
use refract::{Aggregate, AggregateQuery, Filter, Order, Query, query_warnings};

use super::Stores;
use super::output::{errln, outln};

#[derive(clap::Args)]
pub struct GetArgs {
    /// Projection name.
    projection: String,
    /// Collection name.
    collection: String,
    /// Document id.
    id: String,
}

#[derive(clap::Args)]
pub struct QueryArgs {
    /// Projection name.
    projection: String,
    /// Collection name.
    collection: String,
    /// Filter: field=value, field!=value, field>value, field>=value, field<value, field<=value, field=in:[a,b]. Repeatable.
    #[arg(long = "where", value_name = "FILTER")]
    filters: Vec<String>,
    /// Full-text search in the collection's search fields: every word must match, the last as a prefix. Without --order, best matches come first.
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// Order by a field; prefix with `-` for descending.
    #[arg(long)]
    order: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = refract::DEFAULT_LIMIT)]
    limit: u32,
    /// `next_cursor` of the previous page of the same query: the same --order, --where and --search (--limit may change).
    #[arg(long)]
    cursor: Option<String>,
    /// Print only the number of matching documents.
    #[arg(long)]
    count: bool,
    /// Print one line per document (`id<TAB>json`) instead of a JSON page; the next cursor goes to stderr.
    #[arg(long)]
    lines: bool,
    /// Aggregate instead of listing: count, count(field), sum(field), min(field), max(field) or avg(field). Repeatable.
    #[arg(long = "agg", value_name = "AGGREGATE")]
    aggregates: Vec<String>,
    /// Group the aggregates by an indexed field. Repeatable.
    #[arg(long = "group-by", value_name = "FIELD", requires = "aggregates")]
    group_by: Vec<String>,
}

/// Prints one document, pretty.
pub async fn get(data: &Stores, GetArgs { projection, collection, id }: GetArgs) -> Result<()> {
    let models = data.open_models().await?;
    match models.get_document(&projection, &collection, &id).await? {
        Some(doc) => {
            let value: serde_json::Value = serde_json::from_str(&doc)?;
            outln!("{}", serde_json::to_string_pretty(&value)?)?;
            Ok(())
        }
        None => bail!("no document `{id}` in {projection}/{collection}"),
    }
}

/// Prints a page of a query, its lines, or its count.
pub async fn query(data: &Stores, args: QueryArgs) -> Result<()> {
    let QueryArgs { projection, collection, filters, search, order, limit, cursor, count, lines, aggregates, group_by } =
        args;
    let models = data.open_models().await?;
    let filters = filters.iter().map(|f| Filter::parse(f)).collect::<Result<Vec<_>, _>>()?;
    if !aggregates.is_empty() {
        if count || lines || order.is_some() || cursor.is_some() || search.is_some() {
            bail!("--agg takes --where and --group-by only, not --count, --lines, --order, --cursor or --search");
        }
        let aggregates = aggregates.iter().map(|a| Aggregate::parse(a)).collect::<Result<Vec<_>, _>>()?;
        let query = AggregateQuery { filters, group_by, aggregates };
        let result = models.aggregate_documents(&projection, &collection, &query).await?;
        outln!("{}", serde_json::to_string_pretty(&result.to_json())?)?;
        return Ok(());
    }
    let query = Query { filters, order: order.as_deref().map(Order::parse), limit, cursor, search };
    if count {
        outln!("{}", models.count_documents(&projection, &collection, &query).await?)?;
        warn(&query_warnings(models.as_ref(), &projection, &collection, &query).await?);
        return Ok(());
    }
    let page = models.query_documents(&projection, &collection, &query).await?;
    warn(&query_warnings(models.as_ref(), &projection, &collection, &query).await?);
    if lines {
        for d in &page.documents {
            outln!("{}\t{}", d.id, d.body)?;
        }
        if let Some(next) = page.next_cursor {
            errln!("next cursor: {next}");
        }
        return Ok(());
    }
    let documents = page
        .documents
        .iter()
        .map(|d| Ok(serde_json::json!({ "id": d.id, "document": serde_json::from_str::<serde_json::Value>(&d.body)? })))
        .collect::<Result<Vec<_>>>()?;
    let out = serde_json::json!({ "documents": documents, "next_cursor": page.next_cursor });
    outln!("{}", serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

/// Warnings go to standard error, so the JSON on standard output stays
/// what a script parses.
fn warn(warnings: &[String]) {
    for w in warnings {
        errln!("warning: {w}");
    }
}
