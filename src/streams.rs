//! The count of live SSE streams under a layer (shared by its clones), and their limit.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Live streams and the most allowed at once.
#[derive(Debug)]
pub(crate) struct Streams {
    live: AtomicUsize,
    max: usize,
}

impl Streams {
    pub(crate) fn new(max: usize) -> Self {
        Streams {
            live: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot; `false` when the limit is reached.
    pub(crate) fn acquire(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < self.max).then_some(live + 1)
            })
            .is_ok()
    }

    pub(crate) fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_up_to_the_limit_and_given_back() {
        let streams = Streams::new(2);
        assert!(streams.acquire());
        assert!(streams.acquire());
        assert!(!streams.acquire());
        assert_eq!(streams.live(), 2);
        streams.release();
        assert!(streams.acquire());
        assert!(!Streams::new(0).acquire());
    }
}
