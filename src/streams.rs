//! The count of live SSE streams under a layer (shared by its clones), and their limit.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// The stream counts of an [`SseLayer`](crate::SseLayer) and its clones: a cheap handle to keep
/// wherever the figures are wanted (a metrics endpoint, a health check), without the layer.
///
/// Get it from [`SseLayer::stream_stats`](crate::SseLayer::stream_stats) after setting
/// [`max_streams`](crate::SseLayer::max_streams), which starts a new count.
///
/// ```
/// use tower_sse::SseLayer;
///
/// let layer = SseLayer::new().max_streams(10_000);
/// let stats = layer.stream_stats();
/// assert_eq!((stats.open(), stats.refused(), stats.limit()), (0, 0, Some(10_000)));
/// assert_eq!(stats.rotated(), 0);
/// ```
#[derive(Clone)]
pub struct StreamStats {
    streams: Arc<Streams>,
}

impl StreamStats {
    pub(crate) fn new(streams: Arc<Streams>) -> Self {
        StreamStats { streams }
    }

    /// SSE streams open now.
    pub fn open(&self) -> usize {
        self.streams.live()
    }

    /// Streams refused so far because the limit was reached.
    pub fn refused(&self) -> usize {
        self.streams.refused()
    }

    /// Streams ended so far by their [`max_lifetime`](crate::SseLayer::max_lifetime), each
    /// told to reconnect.
    pub fn rotated(&self) -> usize {
        self.streams.rotated()
    }

    /// The limit set by [`max_streams`](crate::SseLayer::max_streams), if any.
    pub fn limit(&self) -> Option<usize> {
        (self.streams.max() != usize::MAX).then_some(self.streams.max())
    }
}

impl fmt::Debug for StreamStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamStats")
            .field("open", &self.open())
            .field("refused", &self.refused())
            .field("rotated", &self.rotated())
            .field("limit", &self.limit())
            .finish()
    }
}

/// Live streams and the most allowed at once.
#[derive(Debug)]
pub(crate) struct Streams {
    live: AtomicUsize,
    refused: AtomicUsize,
    rotated: AtomicUsize,
    max: usize,
}

impl Streams {
    pub(crate) fn new(max: usize) -> Self {
        Streams {
            live: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            rotated: AtomicUsize::new(0),
            max,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_rotation(&self) {
        self.rotated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rotated(&self) -> usize {
        self.rotated.load(Ordering::Relaxed)
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
