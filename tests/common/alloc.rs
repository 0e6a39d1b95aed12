//! A global allocator that counts live allocations, for leak tests that a busy machine cannot
//! fail: resident memory moves with allocator arenas and load, live allocations do not.
//!
//! A test binary opts in with
//! `#[global_allocator] static ALLOC: common::alloc::Counting = common::alloc::Counting;`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

static LIVE_COUNT: AtomicIsize = AtomicIsize::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting what is allocated and not yet freed.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// atomics that never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(System.alloc(layout), layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted(System.alloc_zeroed(layout), layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_COUNT.fetch_sub(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

/// Counts a new allocation, unless it failed.
fn counted(ptr: *mut u8, layout: Layout) -> *mut u8 {
    if !ptr.is_null() {
        LIVE_COUNT.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
    }
    ptr
}

/// Allocations made and not yet freed, in number and in bytes, process-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub count: isize,
    pub bytes: isize,
}

impl Live {
    pub fn now() -> Live {
        Live {
            count: LIVE_COUNT.load(Ordering::Relaxed),
            bytes: LIVE_BYTES.load(Ordering::Relaxed),
        }
    }

    /// How much `self` holds beyond `earlier`.
    pub fn since(self, earlier: Live) -> Live {
        Live {
            count: self.count - earlier.count,
            bytes: self.bytes - earlier.bytes,
        }
    }
}
