//! A topic's ring: its newest events by sequence number, bounded by count, bytes and age.
//!
//! The ring is both the history a resuming client replays and every subscriber's buffer. A
//! sequence number may hold a hole: a position the broker numbered whose payload was not an
//! event (dropped and counted). Holding it keeps the numbering whole, so one bad entry never
//! looks like a gap that would cost the entries after it.

use crate::Event;
use std::{collections::VecDeque, time::Duration};
use tokio::time::Instant;

/// How much a ring keeps.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) events: usize,
    pub(super) bytes: usize,
    pub(super) age: Option<Duration>,
}

struct Entry {
    /// `None`: a hole, numbered but never delivered.
    event: Option<Event>,
    /// When the event was published (for a broker's event, by the broker's clock).
    at: Instant,
    /// Bytes published before this entry, so a subscriber's lag in bytes is one subtraction.
    cum_start: u64,
}

/// Events `first..next` by sequence number.
pub(super) struct Ring {
    entries: VecDeque<Entry>,
    first: u64,
    next: u64,
    bytes: usize,
    cum_bytes: u64,
}

impl Ring {
    /// An empty ring whose next event is `first`.
    pub(super) fn new(first: u64) -> Ring {
        Ring {
            entries: VecDeque::new(),
            first,
            next: first,
            bytes: 0,
            cum_bytes: 0,
        }
    }

    /// Sequence number of the oldest entry held (equal to [`next`](Ring::next) when empty).
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// Sequence number the next entry will get.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Empties the ring; its next entry will be `first`.
    pub(super) fn reset(&mut self, first: u64) {
        *self = Ring {
            cum_bytes: self.cum_bytes,
            ..Ring::new(first)
        };
    }

    /// The entry at `seq`: `Some(None)` for a hole, `None` when not held.
    pub(super) fn get(&self, seq: u64) -> Option<Option<&Event>> {
        let index = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.entries.get(index).map(|entry| entry.event.as_ref())
    }

    /// Appends the next entry, published at `at`.
    pub(super) fn push(&mut self, event: Option<Event>, at: Instant) {
        let len = event.as_ref().map_or(0, Event::len);
        self.entries.push_back(Entry {
            event,
            at,
            cum_start: self.cum_bytes,
        });
        self.next += 1;
        self.cum_bytes += len as u64;
        self.bytes += len;
    }

    /// Bytes published from sequence number `from` on (0 when `from` is not held).
    pub(super) fn bytes_from(&self, from: u64) -> u64 {
        let Some(index) = from
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return 0;
        };
        self.entries
            .get(index)
            .map_or(0, |entry| self.cum_bytes - entry.cum_start)
    }

    /// Drops the oldest entries beyond `bounds`, as of `now`. The newest entry is kept whatever
    /// its size, but not past its age.
    pub(super) fn trim(&mut self, bounds: &Bounds, now: Instant) {
        while self.entries.len() > bounds.events
            || (self.bytes > bounds.bytes && self.entries.len() > 1)
        {
            self.pop_front();
        }
        if let Some(age) = bounds.age {
            while self
                .entries
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) > age)
            {
                self.pop_front();
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.event.as_ref().map_or(0, Event::len);
            self.first += 1;
        }
    }

    /// Sequence number of the newest event whose id is exactly `id`.
    pub(super) fn find_id(&self, id: &str) -> Option<u64> {
        self.entries
            .iter()
            .rposition(|e| e.event.as_ref().and_then(Event::id) == Some(id))
            .map(|i| self.first + i as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(events: usize, bytes: usize, age: Option<Duration>) -> Bounds {
        Bounds { events, bytes, age }
    }

    #[test]
    fn holes_keep_the_numbering_and_weigh_nothing() {
        let now = Instant::now();
        let mut ring = Ring::new(5);
        ring.push(Some(Event::message("a")), now);
        ring.push(None, now);
        ring.push(Some(Event::message("b")), now);
        assert_eq!((ring.first(), ring.next(), ring.len()), (5, 8, 3));
        assert!(matches!(ring.get(6), Some(None)));
        assert!(ring.get(7).unwrap().is_some());
        assert!(ring.get(8).is_none() && ring.get(4).is_none());
        assert_eq!(ring.bytes_from(6), ring.bytes_from(7));
    }

    #[test]
    fn trims_by_count_bytes_and_age() {
        let start = Instant::now();
        let mut ring = Ring::new(1);
        for i in 0..10u64 {
            ring.push(
                Some(Event::message("x".repeat(10))),
                start + Duration::from_secs(i),
            );
        }
        ring.trim(&bounds(8, usize::MAX, None), start);
        assert_eq!(ring.first(), 3);
        ring.trim(&bounds(8, 50, None), start);
        assert_eq!(ring.len(), 2, "each event is 18 bytes");
        ring.trim(
            &bounds(8, usize::MAX, Some(Duration::from_secs(1))),
            start + Duration::from_secs(9),
        );
        assert_eq!((ring.first(), ring.len()), (9, 2));
        ring.trim(
            &bounds(8, usize::MAX, Some(Duration::from_secs(1))),
            start + Duration::from_secs(20),
        );
        assert_eq!((ring.first(), ring.next(), ring.len()), (11, 11, 0));
    }
}
