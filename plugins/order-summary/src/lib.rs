//! Projects order streams into `orders` documents and per-customer totals in
//! `customers`.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

const ORDERS: &str = "orders";
const CUSTOMERS: &str = "customers";

/// The projection; all of its state lives in the read model.
#[derive(Default)]
struct OrderSummary;

/// An `orders` document; its id is the order's stream id.
#[derive(Default, Serialize, Deserialize)]
struct Order {
    customer: String,
    lines: Vec<Line>,
    /// Sum of `qty * price` over `lines`.
    total: i64,
    status: Status,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    #[default]
    Placed,
    Shipped,
    Cancelled,
}

/// An order line; also the payload of `OrderLineAdded`.
#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    price: i64,
}

impl Line {
    fn amount(&self) -> i64 {
        i64::from(self.qty) * self.price
    }
}

/// A `customers` document; its id is the customer.
#[derive(Default, Serialize, Deserialize)]
struct Customer {
    /// Orders placed and not cancelled.
    order_count: u64,
    /// Total of the orders placed and not cancelled.
    total_spent: i64,
    /// Ids of every order the customer placed, cancelled ones included.
    orders: Vec<String>,
}

#[derive(Deserialize)]
struct OrderPlaced {
    customer: String,
    lines: Vec<Line>,
}

impl Projection for OrderSummary {
    fn manifest() -> Manifest {
        Manifest::new("order-summary", "1.0.0")
            .event_types(["OrderPlaced", "OrderLineAdded", "OrderShipped", "OrderCancelled"])
            .stream_prefix("order-")
            .collection(ORDERS, ["customer", "status", "total"])
            // Orders can be found by words of the customer's name.
            .search(["customer"])
            .collection(CUSTOMERS, ["order_count", "total_spent"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let order_id = event.stream_id.as_str();
        match event.event_type.as_str() {
            "OrderPlaced" => {
                let OrderPlaced { customer, lines } = event.payload()?;
                let total = lines.iter().map(Line::amount).sum();
                ctx.update(CUSTOMERS, &customer, |c: &mut Customer| {
                    c.order_count += 1;
                    c.total_spent += total;
                    c.orders.push(order_id.to_owned());
                })?;
                let order = Order { customer, lines, total, status: Status::Placed };
                ctx.upsert(ORDERS, order_id, &order)
            }
            "OrderLineAdded" => {
                let line: Line = event.payload()?;
                let amount = line.amount();
                let mut order = load_order(ctx, event)?;
                order.lines.push(line);
                order.total += amount;
                // A cancelled order no longer counts towards the customer.
                if !matches!(order.status, Status::Cancelled) {
                    ctx.update(CUSTOMERS, &order.customer, |c: &mut Customer| {
                        c.total_spent += amount;
                    })?;
                }
                ctx.upsert(ORDERS, order_id, &order)
            }
            "OrderShipped" => {
                let mut order = load_order(ctx, event)?;
                order.status = Status::Shipped;
                ctx.upsert(ORDERS, order_id, &order)
            }
            "OrderCancelled" => {
                let mut order = load_order(ctx, event)?;
                // Redelivered or repeated cancellations must not subtract twice.
                if matches!(order.status, Status::Cancelled) {
                    return Ok(());
                }
                order.status = Status::Cancelled;
                ctx.update(CUSTOMERS, &order.customer, |c: &mut Customer| {
                    c.order_count = c.order_count.saturating_sub(1);
                    c.total_spent -= order.total;
                })?;
                ctx.upsert(ORDERS, order_id, &order)
            }
            // The host only delivers the manifest's types; ignore others
            // rather than fail should the manifest and this match drift apart.
            _ => Ok(()),
        }
    }
}

/// Reads the event's order, which must have been placed: the customer it
/// belongs to is only known from `OrderPlaced`.
fn load_order(ctx: &Context, event: &Event) -> Result<Order, Error> {
    ctx.get(ORDERS, &event.stream_id)?.ok_or_else(|| {
        Error::msg(format!(
            "{} at position {} for unknown order `{}`",
            event.event_type, event.position, event.stream_id
        ))
    })
}

refract_sdk::export!(OrderSummary);
