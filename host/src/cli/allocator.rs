//! glibc tuning for the binaries (`refract` and `refract-bench` both include
//! this file; the library's global allocator is in the library's
//! `allocator.rs`).
//!
//! SQLite's own allocations go to the C allocator, not to jemalloc. glibc
//! serves an allocation above its mmap threshold from a mapping of its own
//! and unmaps it on free, but by default it raises that threshold to the
//! size of every such block freed. Commit-sized buffers (the JSON array
//! SQLite unpacks) then come from the heap and stay there once freed: ten
//! projections committing 50,000-event groups peaked at 314 MiB, against
//! 268 MiB with the threshold pinned at 1 MiB (BENCHMARKS.md).
//!
//! It is a process-wide setting, so it belongs to the program, not to the
//! library: an application that embeds refract makes the same call in its
//! own `main` if it wants the same bound.

/// Allocations from this size up get their own mapping, returned on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;

/// Pins glibc's mmap threshold so that large freed buffers go back to the
/// OS; a no-op on other platforms and C libraries. Called first thing in
/// `main`; it holds for the whole process, whichever thread calls it.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; glibc applies them
    // under its own lock, and an unknown value is refused with a 0 return.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
