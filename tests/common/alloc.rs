//! A global allocator that counts live allocations, for leak tests that a busy machine cannot
//! fail: resident memory moves with allocator arenas and load, live allocations do not.
//!
//! A test binary opts in with
//! `#[global_allocator] static ALLOC: common::alloc::Counting = common::alloc::Counting;`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicIsize, Ordering},
};

static LIVE_COUNT: AtomicIsize = AtomicIsize::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Allocations made by this thread (count, bytes requested): what one test does, whatever
    /// the other tests of the binary do on their threads.
    static THREAD: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

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
        // A thread being torn down has no thread-local left: it is simply not counted.
        let _ = THREAD.try_with(|t| {
            let (count, bytes) = t.get();
            t.set((count + 1, bytes + layout.size() as u64));
        });
    }
    ptr
}

/// Runs `f` and says how many allocations it made on this thread, and how many bytes they
/// asked for (a reallocation counts as a new allocation of its new size).
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let (count, bytes) = THREAD.with(Cell::get);
    let result = f();
    let (count_after, bytes_after) = THREAD.with(Cell::get);
    (result, count_after - count, bytes_after - bytes)
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
