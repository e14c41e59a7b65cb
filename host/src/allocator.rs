//! Process-wide tuning of the C allocator for a long-running host.
//!
//! glibc serves an allocation above its mmap threshold from a mapping of its
//! own and unmaps it on free, but by default it raises that threshold to the
//! size of every such block freed. Commit-sized buffers (a change set, the
//! JSON array SQLite unpacks) then come from the heap and stay there once
//! freed: ten projections committing 50,000-event groups peaked at 314 MiB,
//! against 268 MiB with the threshold pinned at 1 MiB (BENCHMARKS.md). Below
//! 1 MiB (a batch's events are a few hundred KiB) the heap keeps serving:
//! pinning it at 256 KiB cost a tenth of the throughput in page faults.
//!
//! Fastbins are turned off. A runner's strings are allocated on one thread
//! (the event reader, the plugin call) and freed on another, so the
//! fastbins filled up with other threads' chunks, and every batch-sized
//! allocation then paid for consolidating them: about 5% more events/s
//! without them, with the same peak RSS (BENCHMARKS.md). Each thread's
//! cache (tcache) still serves small allocations first.

/// Allocations from this size up get their own mapping, returned on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

/// Pins glibc's mmap threshold so that large freed buffers go back to the
/// OS, and turns its fastbins off; a no-op on other platforms and C libraries. Binaries call it first
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
        libc::mallopt(libc::M_MXFAST, 0);
    }
}
