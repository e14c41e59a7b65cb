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
//! SQLite's own allocations still go to the C allocator. glibc serves an
//! allocation above its mmap threshold from a mapping of its own and
//! unmaps it on free, but by default it raises that threshold to the size
//! of every such block freed. Commit-sized buffers (the JSON array SQLite
//! unpacks) then come from the heap and stay there once freed: ten
//! projections committing 50,000-event groups peaked at 314 MiB, against
//! 268 MiB with the threshold pinned at 1 MiB (BENCHMARKS.md).

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

/// Allocations from this size up get their own mapping, returned on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

/// Pins glibc's mmap threshold so that large freed buffers go back to the
/// OS; a no-op on other platforms and C libraries. Binaries call it first
/// thing in `main` (the `refract` binary and `refract-bench` do); it holds
/// for the whole process, whichever thread calls it.
///
/// ```
/// refract::tune_allocator();
/// ```
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; glibc applies them
    // under its own lock, and an unknown value is refused with a 0 return.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
