//! A global allocator that counts the bytes live on the heap, so a benchmark can say what a
//! part of the engine costs per app in bytes (deterministic up to hash-map growth), where
//! the resident set size only gives pages and includes freed memory the allocator kept.
//!
//! Install it in a binary with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
//! The counters are process-wide relaxed atomics: one add per allocation and one per free.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static LIVE: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

fn grew(size: usize) {
    let live = LIVE.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// The system allocator, counting live bytes and allocations (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

// A global allocator is an `unsafe` trait by definition: this impl is the one place of the
// bench crate allowed `unsafe`, and only to forward to `System`.
#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters do not touch the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation of this
        // allocator is).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc` and `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            grew(new_size);
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes allocated and not yet freed, by every thread of the process. Always 0 unless
/// [`CountingAlloc`] is the global allocator.
pub fn live_bytes() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once since the last [`reset_peak`] (or the start).
pub fn peak_bytes() -> u64 {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak at the bytes live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Allocations made since the process started (a count, not bytes).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn counts_what_it_is_given_and_frees() {
        let a = CountingAlloc;
        let layout = Layout::from_size_align(4096, 8).expect("layout");
        let before = live_bytes();
        // SAFETY: a non-zero layout; the pointer is freed with the same layout below.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // Other test threads use the System allocator directly (this allocator is not
        // installed in the test binary), so the counter moves only by what this test does.
        assert_eq!(live_bytes() - before, 4096);
        // SAFETY: `p` came from `a.alloc(layout)`.
        let q = unsafe { a.realloc(p, layout, 10_000) };
        assert!(!q.is_null());
        assert_eq!(live_bytes() - before, 10_000);
        assert!(peak_bytes() >= before + 10_000);
        // SAFETY: `q` is live with size 10,000 and alignment 8.
        unsafe { a.dealloc(q, Layout::from_size_align(10_000, 8).expect("layout")) };
        assert_eq!(live_bytes(), before);
    }
}
