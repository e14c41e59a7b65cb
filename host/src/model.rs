//! The vocabulary every layer speaks: events and subscriptions, the manifest
//! a projection declares, and the change sets it produces. Nothing here
//! imports another part of the crate.

pub(crate) mod changes;
pub(crate) mod event;
pub(crate) mod manifest;
