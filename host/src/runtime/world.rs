//! The versions of the `refract:projection` world the host loads: which one
//! is current, which one a component targets, and the thin layer that calls
//! a component through its version's bindings.
//!
//! A breaking change of the contract is a new package version, and the host
//! keeps loading the old ones. Every version is converted here to the one
//! model ([`Manifest`], [`Event`], [`Change`]), so loading, limits and the
//! runner never learn that versions exist.

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};

use crate::model::changes::Change;
use crate::model::event::{Event, Subscription};
use crate::model::manifest::{CollectionSpec, Manifest};
use crate::runtime::bindings::{v0_1, v0_2};
use crate::runtime::plugin::{GetRefusal, HostState};

/// A version of the `refract:projection` package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    /// The first contract: collections declare indexes only.
    V0_1,
    /// Collections also declare the text fields to search.
    V0_2,
}

impl WitVersion {
    /// The version of `wit/projection.wit`: the one the SDKs target and
    /// `refract new` writes. The one place it is decided.
    pub const CURRENT: Self = Self::V0_2;

    /// Every version the host loads, newest first: a component exporting
    /// more than one is called through the newest.
    pub const ALL: [Self; 2] = [Self::CURRENT, Self::V0_1];

    /// The package version, e.g. `0.2.0`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }

    /// The interface a component of this version exports.
    pub fn projection_export(self) -> String {
        format!("refract:projection/projection@{}", self.as_str())
    }

    /// The version whose `projection` interface `component` exports, if any.
    pub(crate) fn of(engine: &Engine, component: &Component) -> Option<Self> {
        let ty = component.component_type();
        Self::ALL.into_iter().find(|v| ty.get_export(engine, &v.projection_export()).is_some())
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Links the host imports of every version, so a component of any of them
/// instantiates against one linker.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::Projector::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::Projector::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    // The `interpreted` world's one import beyond `projector`'s. Only an
    // interpreter imports it; it answers from the instance's state.
    let source = format!("refract:projection/source@{}", WitVersion::CURRENT.as_str());
    linker.instance(&source)?.func_wrap("files", |store, (): ()| Ok((store.data().source_files(),)))?;
    Ok(())
}

/// The host imports of one version, answered by the version-free
/// [`HostState::log_message`] and [`HostState::read`]. The WIT of the
/// `host` interface is the same in every version; only the generated types
/// differ, so this is written once and expanded per bindings module.
macro_rules! host_imports {
    ($v:ident) => {
        impl $v::refract::projection::types::Host for HostState {}

        impl $v::refract::projection::host::Host for HostState {
            fn log(
                &mut self,
                level: $v::refract::projection::types::LogLevel,
                message: String,
            ) -> wasmtime::Result<()> {
                use $v::refract::projection::types::LogLevel as L;
                let level = match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                };
                self.log_message(level, &message);
                Ok(())
            }

            fn get(
                &mut self,
                collection: String,
                id: String,
            ) -> wasmtime::Result<Result<Option<String>, $v::refract::projection::types::GetError>> {
                use $v::refract::projection::types::GetError as E;
                Ok(self.read(collection, id).map_err(|refusal| match refusal {
                    GetRefusal::UnknownCollection(name) => E::UnknownCollection(name),
                    GetRefusal::Unavailable(reason) => E::Unavailable(reason),
                }))
            }
        }
    };
}

host_imports!(v0_1);
host_imports!(v0_2);

/// What a projection's `handle` returned as its error.
pub(crate) struct GuestFailure {
    /// Global position of the event that failed.
    pub position: u64,
    /// The projection's message.
    pub message: String,
}

/// The exports of one version, converted to the model.
trait Calls {
    fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Manifest>;
    fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[Event],
    ) -> wasmtime::Result<Result<Vec<Change>, GuestFailure>>;
}

/// [`Calls`] for one version's bindings; `$collection` converts its
/// `collection-spec`, the one record that differs between versions.
macro_rules! calls {
    ($v:ident, $collection:expr) => {
        impl Calls for $v::Projector {
            fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Manifest> {
                let m = self.refract_projection_projection().call_describe(store)?;
                Ok(Manifest {
                    name: m.name,
                    version: m.version,
                    subscription: Subscription { event_types: m.event_types, stream_prefixes: m.stream_prefixes },
                    collections: m.collections.into_iter().map($collection).collect(),
                })
            }

            fn handle(
                &self,
                store: &mut Store<HostState>,
                events: &[Event],
            ) -> wasmtime::Result<Result<Vec<Change>, GuestFailure>> {
                use $v::exports::refract::projection::projection as wit;
                let batch: Vec<wit::Event> = events
                    .iter()
                    .map(|e| wit::Event {
                        position: e.position,
                        stream_id: &e.stream_id,
                        stream_version: e.stream_version,
                        event_type: &e.event_type,
                        payload: &e.payload,
                        metadata: &e.metadata,
                        timestamp: e.timestamp,
                    })
                    .collect();
                let result = self.refract_projection_projection().call_handle(store, &batch)?;
                Ok(result
                    .map(|changes| {
                        changes
                            .into_iter()
                            .map(|c| match c {
                                wit::Change::Upsert(d) => {
                                    Change::Upsert { collection: d.collection, id: d.id, body: d.body }
                                }
                                wit::Change::Delete(k) => Change::Delete { collection: k.collection, id: k.id },
                            })
                            .collect()
                    })
                    .map_err(|e| GuestFailure { position: e.position, message: e.message }))
            }
        }
    };
}

calls!(v0_1, |c: v0_1::refract::projection::types::CollectionSpec| CollectionSpec {
    name: c.name,
    indexes: c.indexes,
    // 0.1.0 had no way to declare search fields.
    search: Vec::new(),
});
calls!(v0_2, |c: v0_2::refract::projection::types::CollectionSpec| CollectionSpec {
    name: c.name,
    indexes: c.indexes,
    search: c.search,
});

/// A linked component ready to instantiate, through its version's bindings.
pub(crate) enum ProjectorPre {
    V0_1(v0_1::ProjectorPre<HostState>),
    V0_2(v0_2::ProjectorPre<HostState>),
}

impl ProjectorPre {
    /// Checks that the component's exports have `version`'s types.
    pub(crate) fn new(version: WitVersion, pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match version {
            WitVersion::V0_1 => Self::V0_1(v0_1::ProjectorPre::new(pre)?),
            WitVersion::V0_2 => Self::V0_2(v0_2::ProjectorPre::new(pre)?),
        })
    }

    /// The version the component targets.
    pub(crate) fn version(&self) -> WitVersion {
        match self {
            Self::V0_1(_) => WitVersion::V0_1,
            Self::V0_2(_) => WitVersion::V0_2,
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Self::V0_1(pre) => pre.engine(),
            Self::V0_2(pre) => pre.engine(),
        }
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Projector> {
        Ok(match self {
            Self::V0_1(pre) => Projector(Box::new(pre.instantiate(store)?)),
            Self::V0_2(pre) => Projector(Box::new(pre.instantiate(store)?)),
        })
    }
}

/// A live instance's exports, whatever its version.
pub(crate) struct Projector(Box<dyn Calls + Send + Sync>);

impl Projector {
    /// Calls `describe`; the manifest is not validated yet.
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Manifest> {
        self.0.describe(store)
    }

    /// Calls `handle` with `events`; the changes are not checked yet.
    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[Event],
    ) -> wasmtime::Result<Result<Vec<Change>, GuestFailure>> {
        self.0.handle(store, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The current version is the package of `wit/projection.wit`, and every
    /// other version loaded has its frozen file.
    #[test]
    fn the_current_version_is_the_one_in_wit_projection_wit() {
        let current = include_str!("../../../wit/projection.wit");
        assert!(current.contains(&format!("\npackage refract:projection@{};\n", WitVersion::CURRENT)));
        let frozen = include_str!("../../../wit/v0.1.0/projection.wit");
        assert!(frozen.contains("\npackage refract:projection@0.1.0;\n"));
        assert_eq!(WitVersion::V0_1.projection_export(), "refract:projection/projection@0.1.0");
    }
}
