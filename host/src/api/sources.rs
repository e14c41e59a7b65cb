//! Table sync sources over HTTP: `GET /sources` and their `/metrics` lines.

use std::fmt::Write;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::ApiError;
use crate::source::SyncLog;
use crate::sync::{SourceConfig, SourceStatus, source_status};

/// The sources a host syncs, and where their state is.
pub struct Sources {
    log: Arc<dyn SyncLog>,
    configured: Vec<SourceConfig>,
}

impl Sources {
    pub fn new(log: Arc<dyn SyncLog>, configured: Vec<SourceConfig>) -> Self {
        Self { log, configured }
    }

    /// Every source's status.
    pub async fn status(&self) -> Result<Vec<SourceStatus>, ApiError> {
        source_status(self.log.as_ref(), &self.configured).await.map_err(|e| ApiError::Internal(e.to_string()))
    }
}

/// The JSON schema of one entry of `GET /sources`.
pub fn schema() -> Value {
    json!({ "type": "array", "items": { "type": "object", "properties": {
        "name": { "type": "string" },
        "table": { "type": ["string", "null"] },
        "last_value": { "description": "The tracking value at the end of the last page read." },
        "rows": { "type": "integer", "description": "Row changes ingested since the last reset." },
        "last_sync_ms": { "type": ["integer", "null"], "description": "When the last pass finished (ms since the Unix epoch)." },
        "last_error": { "type": ["string", "null"], "description": "The error the source is retrying, naming the source and what is wrong; null while it syncs." },
        "rows_pending": { "type": ["integer", "null"], "description": "Rows changed in the table after the last position synced, counted by the source database when asked; null when it cannot be asked (down, or the table no longer fits the source)." }
    } } })
}

/// Prometheus lines for the sources.
pub fn render(status: &[SourceStatus]) -> String {
    let mut out = String::new();
    if status.is_empty() {
        return out;
    }
    for (name, kind, help) in [
        ("refract_source_rows_total", "counter", "Row changes ingested from the source since its last reset."),
        ("refract_source_last_sync_seconds", "gauge", "When the source's last pass finished (Unix time)."),
        ("refract_source_errors", "gauge", "1 while the source retries an error (see last_error in /sources), else 0."),
        (
            "refract_source_rows_pending",
            "gauge",
            "Rows changed in the source table after the last position synced (absent while the database cannot be asked).",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    for s in status {
        let n = s.name.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "refract_source_rows_total{{source=\"{n}\"}} {}", s.rows);
        if let Some(ms) = s.last_sync_ms {
            let _ = writeln!(out, "refract_source_last_sync_seconds{{source=\"{n}\"}} {}", ms as f64 / 1000.0);
        }
        let _ = writeln!(out, "refract_source_errors{{source=\"{n}\"}} {}", u8::from(s.last_error.is_some()));
        if let Some(p) = s.rows_pending {
            let _ = writeln!(out, "refract_source_rows_pending{{source=\"{n}\"}} {p}");
        }
    }
    out
}
