//! Giving freed memory back to the operating system.
//!
//! glibc keeps what the process frees: its dynamic mmap threshold rises
//! after the first large block is freed, so later 256 KiB copy buffers come
//! from the heap and are never unmapped, and per-thread arenas keep freed
//! chunks for reuse. After 1,000 stuck connections closed, lbd used to stay
//! at ~190 MB. So:
//!
//! - the mmap threshold is fixed ([`MMAP_THRESHOLD`]): large copy buffers
//!   are always mapped on their own and unmapped when freed;
//! - a housekeeping thread calls `malloc_trim(0)` once a second if the
//!   allocator holds several MiB more free memory than after the last trim
//!   (connections' small buffers and state, freed in bulk; the buffer pools
//!   free what they did not need, see [`crate::proxy::buffers`]).
//!
//! None of this is on the data path.

use std::sync::Once;
use std::time::Duration;

/// Allocations of at least this many bytes are mmapped (and unmapped when
/// freed). glibc's default, but fixed instead of rising after frees.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// How often the housekeeping thread runs.
const TICK: Duration = Duration::from_secs(1);

/// Free memory held by the allocator beyond what it held after the last
/// trim that triggers the next one.
const TRIM_AFTER: usize = 4 << 20;

/// Fixes the mmap threshold and starts the housekeeping thread (once; later
/// calls do nothing). Call early, before the workers start.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(start);
}

fn start() {
    set_mmap_threshold();
    // Runs for the life of the process: it holds nothing to clean up, so
    // it is not one of the services that stop on shutdown.
    let never = crate::service::Shutdown::default();
    let spawned = crate::service::spawn_restarting("lbd-memory", never, || {
        let mut trimmer = Trimmer::default();
        loop {
            std::thread::sleep(TICK);
            trimmer.tick();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(
            "cannot start the memory housekeeping thread: {e}; freed memory stays with lbd"
        );
    }
}

#[cfg(target_env = "gnu")]
fn set_mmap_threshold() {
    let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) } != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed: freed copy buffers may stay with lbd");
    }
}

#[cfg(not(target_env = "gnu"))]
fn set_mmap_threshold() {}

/// Decides when to trim: when the allocator's free memory rose by
/// [`TRIM_AFTER`] above its level after the last trim (or its lowest since).
#[derive(Default)]
struct Trimmer {
    floor: usize,
}

impl Trimmer {
    fn tick(&mut self) {
        let Some(free) = allocator_free() else {
            return;
        };
        if free >= self.floor.saturating_add(TRIM_AFTER) {
            trim();
            // Trimming releases the pages of free chunks but keeps the
            // chunks: what is free now is the new floor.
            self.floor = allocator_free().unwrap_or(free);
        } else {
            self.floor = self.floor.min(free);
        }
    }
}

/// Bytes in free chunks across all of the allocator's arenas.
#[cfg(target_env = "gnu")]
fn allocator_free() -> Option<usize> {
    // SAFETY: mallinfo2 has no preconditions (glibc 2.33+).
    let info = unsafe { libc::mallinfo2() };
    Some(info.fordblks)
}

#[cfg(not(target_env = "gnu"))]
fn allocator_free() -> Option<usize> {
    None
}

/// Returns the whole free pages of every arena to the operating system.
#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn trim() {}
