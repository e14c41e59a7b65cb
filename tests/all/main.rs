//! The end-to-end tests, in one binary: one module per subject, the shared
//! helpers in `common/`. One binary links wasmtime and the host once rather
//! than once per file, and its tests share the machine's cores under one
//! libtest scheduler (`--test-threads`) instead of running file after file.
//!
//! Only what must run alone has a binary of its own: `tests/sandbox_rss.rs`
//! reads the peak RSS of its process.
//!
//! No test here may change process-wide state (environment variables, the
//! current directory): tests of every module run on parallel threads of this
//! one process. Pass settings to child processes with `Command::env` and
//! `Command::current_dir` instead.

mod common;

mod admin;
mod aggregate_bench;
mod api_contract;
mod append;
mod auth;
mod bad_input;
mod bank;
mod change_log;
mod cli_docs;
mod cluster;
mod compiling;
mod config_file;
mod conformance;
mod console;
mod corrupt_events;
mod crash;
mod data_dir;
mod deploy;
mod dev_loop_bench;
mod disk_full;
mod events_read;
mod exit_codes;
mod http_aggregate;
mod http_api;
mod http_search;
mod import_race;
mod jetstream;
mod killed_host;
mod metrics;
mod packaging;
mod polyglot;
mod postgres_gap;
mod query_guards;
mod ready;
mod reliability;
mod reload;
mod sandbox;
mod scaffold;
mod search_bench;
mod signals;
mod store_refusals;
mod sync_crash;
mod sync_faults;
mod sync_sources;
mod sync_workload;
mod throughput;
mod tiering;
mod user_errors;
mod verify;
mod wakeups;
mod wit_versions;
