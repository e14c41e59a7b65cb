//! `refract events`: reading events back, one stream or the whole log, as
//! JSON lines.

use anyhow::{Result, bail};
use refract::{Event, Subscription};
use serde_json::{Value, json};

use super::Stores;
use super::output::outln;

/// Events read per query.
const PAGE: usize = 1000;

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only this stream's events, by stream version. Without it, the whole log by global position.
    stream: Option<String>,
    /// Start at this position (a stream version with STREAM), inclusive.
    #[arg(long, default_value_t = 1, value_name = "N")]
    from: u64,
    /// Print at most this many events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

/// An event as one JSON line; payload and metadata as JSON.
fn line(e: &Event) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    json!({
        "position": e.position,
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "type": e.event_type,
        "payload": parse(&e.payload),
        "metadata": parse(&e.metadata),
        "timestamp": e.timestamp,
    })
}

/// Prints events as JSON lines, oldest first.
pub async fn events(data: &Stores, EventsArgs { stream, from, limit }: EventsArgs) -> Result<()> {
    if from == 0 {
        bail!("--from counts from 1 (the first event)");
    }
    let store = data.open_events().await?;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut after = from - 1;
    if let Some(stream) = &stream
        && store.stream_version(stream).await? == 0
    {
        bail!("no stream `{stream}`: no events were appended to it");
    }
    let head = store.head().await?;
    while left > 0 {
        let want = PAGE.min(usize::try_from(left).unwrap_or(PAGE));
        let page = match &stream {
            Some(s) => store.read_stream(s, after, want).await?,
            None => store.read(after, head, &Subscription::default(), want).await?,
        };
        for e in &page {
            outln!("{}", line(e))?;
        }
        let Some(last) = page.last() else { break };
        after = if stream.is_some() { last.stream_version } else { last.position };
        left -= page.len() as u64;
        if page.len() < want {
            break;
        }
    }
    Ok(())
}
