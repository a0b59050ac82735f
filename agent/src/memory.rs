//! Giving freed heap memory back to the system.
//!
//! glibc keeps what a burst of allocations freed: parsing a large tag map (10,000 tags peak
//! at about 38 MiB of heap, mostly `toml_edit`'s document, all freed once the configuration
//! is built) left the agent at 66 MiB RSS before it had received a single sample, and the
//! per-thread arenas of the commit threads hold on to their high-water mark the same way.
//! `malloc_trim(0)` returns the free pages of every arena. It runs after start, after a
//! reload (which parses the files again), and in every housekeeping round; it costs about a
//! millisecond and touches no live allocation.

/// Returns free heap pages to the system (glibc only; elsewhere nothing to do). One of the
/// project's two `unsafe` calls (the other is `clock::kernel_sync_state`).
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes no
    // pointer and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `trim` on a blocking thread: it walks and locks every arena, which is no work for a
/// runtime worker that also serves the line pipeline.
pub async fn trim_off_runtime() {
    if let Err(e) = tokio::task::spawn_blocking(trim).await {
        tracing::warn!(error = %e, "Returning freed memory to the system failed.");
    }
}
