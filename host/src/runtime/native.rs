//! Projections compiled into the host process, called where a component's
//! `handle` would be.
//!
//! This is the baseline the sandbox is measured against: `refract-bench`
//! runs account-summary natively through the same [`Host`](crate::Host),
//! runner, read-ahead, document cache and commits as the component, with
//! only the call replaced, so WASM/native is the sandbox's own cost. A
//! native projection has no sandbox (no deadline, fuel or memory limit), so
//! it is not offered for user code.

use std::sync::Arc;

use crate::model::changes::Change;
use crate::model::event::Event;
use crate::runtime::limits::Limits;
use crate::runtime::plugin::{GetRefusal, HostState, ModelAccess, PluginError};

/// What a component's `handle` export does, in native code.
#[doc(hidden)]
pub trait NativeProjection: Send + Sync + 'static {
    /// Projects one batch into changes. `get` reads a document of the
    /// projection's own collections, staged or committed, exactly as the
    /// `get` import does; it fails with a message as `get-error` would.
    fn handle(
        &self,
        events: &[Event],
        get: &mut dyn FnMut(&str, &str) -> Result<Option<String>, String>,
    ) -> Result<Vec<Change>, NativeFailure>;
}

/// A native projection's failure: the `projection-error` of the WIT.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct NativeFailure {
    /// Position of the event that failed.
    pub position: u64,
    /// What went wrong.
    pub message: String,
}

/// A native projection bound to one generation's documents.
pub(crate) struct NativeInstance {
    projection: Arc<dyn NativeProjection>,
    state: HostState,
}

impl NativeInstance {
    pub(crate) fn new(
        projection: Arc<dyn NativeProjection>,
        name: String,
        access: Option<ModelAccess>,
        limits: &Limits,
    ) -> Self {
        Self { projection, state: HostState::new(name, access, limits) }
    }

    /// Projects one batch; its output is held to the same limits as a
    /// component's.
    pub(crate) fn handle(&mut self, events: &[Event], limits: &Limits) -> Result<Vec<Change>, PluginError> {
        let state = &mut self.state;
        let mut get = |collection: &str, id: &str| {
            state.read(collection.to_owned(), id.to_owned()).map_err(|refusal| match refusal {
                GetRefusal::UnknownCollection(c) => format!("unknown collection {c}"),
                GetRefusal::Unavailable(m) => m,
            })
        };
        let changes = self
            .projection
            .handle(events, &mut get)
            .map_err(|f| PluginError::Failed { position: f.position, message: f.message })?;
        limits.check_output(&changes).map_err(PluginError::OutputTooLarge)?;
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upserts one document per event, after reading it if `.0`.
    struct Echo(bool);

    impl NativeProjection for Echo {
        fn handle(
            &self,
            events: &[Event],
            get: &mut dyn FnMut(&str, &str) -> Result<Option<String>, String>,
        ) -> Result<Vec<Change>, NativeFailure> {
            let mut changes = vec![];
            for e in events {
                if self.0 {
                    get("docs", &e.stream_id).map_err(|message| NativeFailure { position: e.position, message })?;
                }
                changes.push(Change::Upsert { collection: "docs".into(), id: e.stream_id.clone(), body: "{}".into() });
            }
            Ok(changes)
        }
    }

    fn events(n: u64) -> Vec<Event> {
        (1..=n)
            .map(|position| Event {
                position,
                stream_id: format!("s-{position}"),
                stream_version: 1,
                event_type: "Happened".into(),
                payload: "{}".into(),
                metadata: "{}".into(),
                timestamp: 0,
            })
            .collect()
    }

    #[test]
    fn a_native_projection_is_held_to_the_same_get_and_output_rules_as_a_component() {
        let limits = Limits { max_changes: 2, ..Limits::default() };
        // Without a read model (as during describe), `get` is refused, and
        // the failure names the event, as a component's would.
        let mut detached = NativeInstance::new(Arc::new(Echo(true)), "echo".into(), None, &limits);
        match detached.handle(&events(1), &limits) {
            Err(PluginError::Failed { position: 1, message }) => {
                assert!(message.contains("no read model"), "{message}")
            }
            other => panic!("expected a failure at position 1, got {other:?}"),
        }
        let mut writer = NativeInstance::new(Arc::new(Echo(false)), "echo".into(), None, &limits);
        assert_eq!(writer.handle(&events(2), &limits).unwrap().len(), 2);
        match writer.handle(&events(3), &limits) {
            Err(PluginError::OutputTooLarge(m)) => assert!(m.contains("3 changes in one batch"), "{m}"),
            other => panic!("expected the output limit, got {other:?}"),
        }
    }
}
