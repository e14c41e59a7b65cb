//! Running projection components: the wasmtime engine, loading and checking
//! a component, its sandbox limits and capabilities, and the thread each
//! instance is called on. It reads documents through the store's document
//! cache and knows nothing of runners or hosts.

pub(crate) mod bindings;
pub(crate) mod call_thread;
pub(crate) mod capabilities;
pub(crate) mod engine;
pub(crate) mod guest_output;
pub(crate) mod limits;
pub(crate) mod module_cache;
pub(crate) mod native;
pub(crate) mod plugin;
pub(crate) mod source_bundle;
pub(crate) mod tiering;
pub(crate) mod world;
