//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps what a thread freed in that thread's arena;
//! after thousands of connections close, the server would keep their
//! memory (measured: 2,000 idle IMAP connections left ~50 MB behind).
//! `malloc_trim` returns the free pages of every arena. The connection
//! table calls [`trim_at`] when the number of open connections has
//! fallen to half of its peak, at most once per `TRIM_EVERY` (a later one
//! waits for its turn).
//! (mimalloc and jemalloc were measured against glibc for this; glibc
//! with trimming kept the least: docs/benchmarks.md, "Allocator".)

use std::time::Duration;

/// The shortest time between two trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Trims below this peak are not worth a walk over the arenas.
pub const TRIM_MIN_PEAK: usize = 64;

/// Returns free heap memory to the system at `at` (now if it passed), on
/// a blocking thread when a runtime is there (the walk over the arenas
/// takes milliseconds).
pub fn trim_at(at: std::time::Instant) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let _ = tokio::task::spawn_blocking(trim).await;
            });
        }
        Err(_) => trim(),
    }
}

/// Returns free heap memory to the system now.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's
    // own arenas; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
