//! `refract append` and `refract import`: writing events.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use refract::{AppendRequest, ExpectedVersion, NewEvent};
use serde::Deserialize;

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct AppendArgs {
    /// Stream id, e.g. account-42.
    stream: String,
    /// Event type, e.g. MoneyDeposited.
    event_type: String,
    /// Payload as JSON text.
    payload: String,
    /// Metadata as JSON text.
    #[arg(long, default_value = "{}")]
    metadata: String,
    /// Refuse the append unless the stream is at this version (`no-stream` = must not exist, `any` = no check).
    #[arg(long, default_value = "any")]
    expected_version: ExpectedVersion,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The .jsonl file (`-` for standard input).
    file: PathBuf,
}

/// One line of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    payload: serde_json::Value,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    expected_version: Option<u64>,
}

/// Appends one event; prints its global position.
pub async fn append(data: &Stores, args: AppendArgs) -> Result<()> {
    let AppendArgs { stream, event_type, payload, metadata, expected_version } = args;
    let events = data.open_events().await?;
    let request = AppendRequest {
        stream_id: stream,
        expected: expected_version,
        events: vec![NewEvent::new(event_type, payload).with_metadata(metadata)],
    };
    let appended = events.append(&[request]).await?;
    outln!("{}", appended[0].last_position)?;
    Ok(())
}

/// Appends every event of a JSON-lines file in one atomic append.
pub async fn import(data: &Stores, ImportArgs { file }: ImportArgs) -> Result<()> {
    let requests = read_import(&file)?;
    let events = data.open_events().await?;
    let head = if requests.is_empty() {
        // Nothing to append: the head is wherever it already was.
        events.head().await?
    } else {
        events.append(&requests).await?.last().map_or(0, |a| a.last_position)
    };
    outln!("imported {} events; head is now {head}", requests.len())?;
    Ok(())
}

/// Reads and checks every line before anything is appended.
fn read_import(file: &Path) -> Result<Vec<AppendRequest>> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let mut requests = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: ImportLine =
            serde_json::from_str(&line).with_context(|| format!("line {}: not a valid event line", n + 1))?;
        requests.push(AppendRequest {
            stream_id: l.stream,
            expected: l.expected_version.map_or(ExpectedVersion::Any, ExpectedVersion::Exact),
            events: vec![NewEvent {
                event_type: l.event_type,
                payload: l.payload.to_string(),
                metadata: l.metadata.map_or_else(|| "{}".to_owned(), |m| m.to_string()),
            }],
        });
    }
    Ok(requests)
}
