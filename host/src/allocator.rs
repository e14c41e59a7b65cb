//! The process's allocators, tuned for a long-running host.
//!
//! Rust allocations go to jemalloc (the `jemalloc` feature, on by default).
//! A runner's strings are allocated on one thread (the event reader, the
//! plugin call) and freed on another (the commit, a worker); glibc's malloc
//! handled that producer/consumer pattern poorly, about an eighth of the
//! engine's CPU went to it, and jemalloc gave about a fifth more events/s
//! at the same peak RSS (BENCHMARKS.md). Its options below bound what it
//! keeps: freed pages go back to the OS within 250 ms, from a background
//! thread. An application that embeds refract and picks its own global
//! allocator turns the feature off (`default-features = false`).
//!
//! SQLite's own allocations still go to the C allocator. The binaries pin
//! glibc's mmap threshold for them (`src/cli/allocator.rs`): a
//! process-wide setting, so it is the program's to make, not the library's.

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (before `main`): four arenas for
/// the host's handful of busy threads, and unused pages returned within
/// 250 ms (1 s kept 10 projections 15 MiB higher; 0 cost throughput).
/// `_RJEM_MALLOC_CONF` in the environment overrides them.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: &[u8] = b"background_thread:true,narenas:4,dirty_decay_ms:250,muzzy_decay_ms:0\0";
