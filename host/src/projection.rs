//! Keeping read models in step with the log: the host that loads plugins
//! and runs one runner per projection generation, the runner's batch loop,
//! failure policies, `refract.toml`, and the plugins-folder watcher.

pub(crate) mod admin;
pub(crate) mod compiles;
pub(crate) mod config;
pub(crate) mod host;
pub(crate) mod lease;
pub(crate) mod modules;
pub(crate) mod policy;
pub(crate) mod read_ahead;
pub(crate) mod runner;
pub(crate) mod verify;
pub(crate) mod verify_schedule;
pub(crate) mod watch;
