//! `refract status`: every projection's version, generation, progress and state.
//!
//! The registry says `running` until a host records the stop, so a host
//! killed with SIGKILL leaves `running` behind. On a SQLite data dir the
//! status tells that apart: a live host holds the data dir's lock, and a
//! `running` projection without one is shown as `stopped (host not
//! running)` (`"host": "gone"` in JSON). PostgreSQL stores can be served
//! by hosts on other machines, which no local lock shows: there a
//! generation whose lease expired has no live host.

use anyhow::Result;
use refract::{HostLiveness, ProjectionState};

use super::Stores;
use super::output::outln;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the status table (or JSON).
pub async fn status(data: &Stores, StatusArgs { json }: StatusArgs) -> Result<()> {
    let events = data.open_events().await?;
    let models = data.open_models().await?;
    let mut status = refract::status(events.as_ref(), models.as_ref()).await?;
    if data.registry_is_local() {
        let host = if data.running_host().is_some() { HostLiveness::Running } else { HostLiveness::Gone };
        for s in status.iter_mut().filter(|s| s.state == ProjectionState::Running) {
            s.host = Some(host);
        }
    }
    // Modules the running host is compiling have no generation yet.
    let compiling = super::compiling::read(data);
    if json {
        let mut rows: Vec<serde_json::Value> = status.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
        rows.extend(compiling.iter().map(|c| {
            serde_json::json!({ "name": c.projection, "source": c.source, "state": "compiling", "started_at": c.started_at })
        }));
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    outln!(
        "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<20} {:<8} LAST ERROR",
        "PROJECTION",
        "VERSION",
        "GEN",
        "ROLE",
        "CHECKPOINT",
        "HEAD",
        "LAG",
        "NODE",
        "STATE"
    )?;
    let verified: Vec<(String, refract::VerifyOutcome)> =
        status.iter().filter_map(|s| Some((s.name.clone(), s.verify.clone()?))).collect();
    for s in status {
        outln!(
            "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<20} {:<8} {}",
            s.name,
            s.version,
            s.generation,
            s.role,
            s.checkpoint,
            s.head,
            s.lag,
            s.owner.as_deref().unwrap_or("-"),
            match s.host {
                // Paused comes first: it is what an operator asked for, and it outlasts restarts.
                _ if s.paused => "paused".to_owned(),
                Some(HostLiveness::Gone) => "stopped (host not running)".to_owned(),
                _ => s.state.to_string(),
            },
            s.last_error.unwrap_or_default()
        )?;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    for c in compiling {
        let seconds = now.saturating_sub(c.started_at) / 1000;
        outln!(
            "{:<24} {:<16} {:>4} {:<8} {:>10} {:>10} {:>10}  {:<20} {:<8} {} for {seconds} s",
            c.projection.as_deref().unwrap_or("-"),
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "compiling",
            c.source
        )?;
    }
    // The last verification of each generation that had one.
    if !verified.is_empty() {
        outln!("")?;
        outln!(
            "{:<24} {:>4} {:<12} {:>10} {:>10} {:>8}  RESULT",
            "VERIFIED",
            "GEN",
            "WHEN",
            "CHECKPOINT",
            "DOCUMENTS",
            "DIFFER"
        )?;
        for (name, v) in verified {
            let ago = format!("{} s ago", now.saturating_sub(v.at) / 1000);
            let show = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let result = match (&v.error, v.rebuild) {
                (Some(e), _) => format!("error: {e}"),
                (None, Some(g)) => format!("{}; rebuilding as generation {g}", v.result.as_str()),
                (None, None) => v.result.as_str().to_owned(),
            };
            outln!(
                "{:<24} {:>4} {:<12} {:>10} {:>10} {:>8}  {result}",
                name,
                v.generation,
                ago,
                show(v.checkpoint),
                show(v.documents),
                show(v.different)
            )?;
        }
    }
    // Table sync sources, when the event store keeps any.
    if let Ok(log) = super::sources::sync_log(data).await {
        let sources = refract::source_status(log.as_ref(), &[]).await?;
        if !sources.is_empty() {
            outln!("")?;
            super::sources::print_table(&sources)?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct NodesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One node as the lease table shows it.
#[derive(serde::Serialize)]
struct Node {
    node: String,
    /// Whether it renewed at least one of its leases in time.
    live: bool,
    /// The generations it holds, as `projection/gN`.
    units: Vec<String>,
    /// The latest expiry among its leases, ms since the Unix epoch.
    expires_at_ms: i64,
}

/// Prints the nodes that hold or held leases, with their units. A node is
/// live while it keeps its leases renewed; a node standing by holds none
/// and is not listed.
pub async fn nodes(data: &Stores, NodesArgs { json }: NodesArgs) -> Result<()> {
    let models = data.open_models().await?;
    let mut nodes: std::collections::BTreeMap<String, Node> = Default::default();
    for l in models.leases().await? {
        let node = nodes.entry(l.owner.clone()).or_insert_with(|| Node {
            node: l.owner.clone(),
            live: false,
            units: vec![],
            expires_at_ms: l.expires_at_ms,
        });
        node.expires_at_ms = node.expires_at_ms.max(l.expires_at_ms);
        if !l.expired {
            node.live = true;
            node.units.push(format!("{}/g{}", l.key.projection, l.key.generation));
        }
    }
    let nodes: Vec<Node> = nodes.into_values().collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&nodes)?)?;
        return Ok(());
    }
    outln!("{:<28} {:<5} UNITS", "NODE", "LIVE")?;
    for n in nodes {
        outln!("{:<28} {:<5} {}", n.node, if n.live { "yes" } else { "no" }, n.units.join(" "))?;
    }
    Ok(())
}
