//! A subscriber's position in its topic's ring, and what it gets next: an event, a control
//! event (history lost, evicted, missed), or nothing yet.
//!
//! Pure, like the merge it reads: [`Subscription`](super::Subscription) runs it under the topic's
//! lock and turns each [`Step`] into a stream item, a wake-up or a broker call.

use super::merge::{Made, Merge, Start};
use crate::{Event, LastEventId};
use tokio::time::Instant;

/// What happens to a subscriber that falls further behind than
/// [`HubBuilder::max_lag`](super::HubBuilder::max_lag) allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LagPolicy {
    /// End the subscriber's stream with a final [`EVICTED`](super::EVICTED) event; the
    /// [`SseBody`](crate::SseBody) sending it adds a come-back block after it, its `retry:`
    /// drawn from the layer's [`come_back`](crate::SseLayer::come_back) window, as for every
    /// stream the crate ends on purpose. The client reconnects with its `Last-Event-ID` and
    /// replays what it missed, if the history still holds it (or is told
    /// [`HISTORY_LOST`](super::HISTORY_LOST) if not). The default.
    #[default]
    Evict,
    /// Jump to the newest event: a [`MISSED`](super::MISSED) event whose data is `{"missed":N}`
    /// (the events jumped over), then the newest event, then live events.
    Skip,
}

/// How far a subscriber may fall behind, and what then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lag {
    pub(super) events: u64,
    pub(super) bytes: u64,
    pub(super) policy: LagPolicy,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub(super) enum Step {
    Event(Event),
    /// Its `Last-Event-ID` cannot be resumed, or the ring started over: it continues from what
    /// the ring holds now.
    HistoryLost,
    /// Behind by `behind` events under [`LagPolicy::Evict`]: its stream ends.
    Evicted {
        behind: u64,
    },
    /// Jumped over `missed` events under [`LagPolicy::Skip`].
    Missed {
        missed: u64,
    },
    /// Nothing yet.
    Wait,
    /// Nothing yet, and its position is known only after a sync begun from now on: ask the
    /// broker for one.
    AskSync,
    /// The topic is closed and everything was read.
    End,
}

/// Where a subscriber waits until its topic is live.
#[derive(Debug, Clone)]
struct Pending {
    last_event_id: Option<LastEventId>,
    recent: usize,
    made: Made,
    /// Needs a sync begun after `made` (its id is ahead of the ring).
    fresh: bool,
    asked: bool,
}

/// A subscriber's position.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    seq: u64,
    /// Just skipped to `seq` under [`LagPolicy::Skip`]: it is delivered next, as the `missed`
    /// event said, however much arrives meanwhile (unless the history dropped it).
    landed: bool,
    /// Events from here on are live; before it, replay (never lag).
    joined: u64,
    generation: u64,
    pending: Option<Pending>,
}

impl Cursor {
    /// A subscriber of `merge` that starts now, told history-lost first when the second value
    /// is true.
    pub(super) fn new(
        merge: &mut Merge,
        last_event_id: Option<&LastEventId>,
        recent: usize,
        now: Instant,
    ) -> (Cursor, bool) {
        let made = merge.made();
        let mut cursor = Cursor {
            seq: 0,
            landed: false,
            joined: 0,
            generation: merge.generation(),
            pending: None,
        };
        if !merge.is_live() {
            cursor.wait_for_sync(last_event_id, recent, made, false);
            return (cursor, false);
        }
        match merge.start(last_event_id, recent, None, now) {
            Start::At {
                cursor: seq,
                joined,
                lost,
            } => {
                cursor.seq = seq;
                cursor.joined = joined;
                (cursor, lost)
            }
            Start::Ahead => {
                cursor.wait_for_sync(last_event_id, recent, made, true);
                (cursor, false)
            }
        }
    }

    fn wait_for_sync(
        &mut self,
        last_event_id: Option<&LastEventId>,
        recent: usize,
        made: Made,
        fresh: bool,
    ) {
        self.pending = Some(Pending {
            last_event_id: last_event_id.cloned(),
            recent,
            made,
            fresh,
            asked: false,
        });
    }

    /// Whether its start is settled (it no longer waits for a sync to know where it starts).
    pub(super) fn is_settled(&self) -> bool {
        self.pending.is_none()
    }

    /// What this subscriber gets next from `merge`. `closed`: the topic is closed.
    pub(super) fn next(
        &mut self,
        merge: &mut Merge,
        lag: &Lag,
        closed: bool,
        now: Instant,
    ) -> Step {
        if self.pending.is_some() {
            if let Some(step) = self.resolve(merge, closed, now) {
                return step;
            }
        }
        if self.generation != merge.generation() {
            self.generation = merge.generation();
            self.seq = merge.ring().first();
            self.joined = merge.ring().next();
            return Step::HistoryLost;
        }
        let landed = std::mem::take(&mut self.landed) && self.seq >= merge.ring().first();
        if !landed {
            if let Some(step) = self.lagging(merge, lag) {
                return step;
            }
        }
        let ring = merge.ring();
        while self.seq < ring.next() {
            let entry = ring.get(self.seq);
            self.seq += 1;
            if let Some(Some(event)) = entry {
                return Step::Event(event.clone());
            }
            // A hole: numbered, never delivered.
        }
        if closed {
            Step::End
        } else {
            Step::Wait
        }
    }

    /// Settles where a pending subscriber starts, once the topic is live: `None` when it has
    /// (and has no control event to give), a step otherwise.
    fn resolve(&mut self, merge: &mut Merge, closed: bool, now: Instant) -> Option<Step> {
        let pending = self.pending.as_mut()?;
        if !closed {
            if pending.fresh && !merge.synced_since(pending.made) {
                if pending.asked || merge.sync_begun_since(pending.made) {
                    return Some(Step::Wait);
                }
                pending.asked = true;
                return Some(Step::AskSync);
            }
            if !pending.fresh && !merge.any_sync_since(pending.made) {
                return Some(Step::Wait);
            }
        }
        let made = pending.made;
        let start = merge.start(
            pending.last_event_id.as_ref(),
            pending.recent,
            Some(made),
            now,
        );
        match start {
            // Not live: a read is on its way, and only a live ring may say an id is lost.
            Start::Ahead | Start::At { lost: true, .. } if !closed && !merge.is_live() => {
                Some(Step::Wait)
            }
            Start::Ahead if !closed => {
                pending.fresh = true;
                pending.made = merge.made();
                pending.asked = true;
                Some(Step::AskSync)
            }
            Start::Ahead => {
                self.pending = None;
                self.place(merge, merge.ring().next(), merge.ring().next());
                Some(Step::HistoryLost)
            }
            Start::At {
                cursor,
                joined,
                lost,
            } => {
                self.pending = None;
                self.place(merge, cursor, joined);
                lost.then_some(Step::HistoryLost)
            }
        }
    }

    fn place(&mut self, merge: &Merge, seq: u64, joined: u64) {
        self.seq = seq;
        self.joined = joined;
        self.generation = merge.generation();
    }

    /// The lag policy's step, if this subscriber is too far behind.
    fn lagging(&mut self, merge: &Merge, lag: &Lag) -> Option<Step> {
        let ring = merge.ring();
        let lag_from = self.seq.max(self.joined);
        let behind_live = ring.next().saturating_sub(lag_from);
        // Only the newest event left to read is never lag, whatever its size: it is where a
        // skipping subscriber lands.
        let lagging = self.seq < ring.first()
            || behind_live > lag.events
            || (behind_live > 1 && ring.bytes_from(lag_from) > lag.bytes);
        if !lagging {
            return None;
        }
        let behind = ring.next().saturating_sub(self.seq);
        Some(match lag.policy {
            LagPolicy::Evict => Step::Evicted { behind },
            LagPolicy::Skip => {
                // Land on the newest event, which is delivered next; only the events before it
                // are missed.
                let newest = ring.next().saturating_sub(1).max(ring.first());
                let missed = newest.saturating_sub(self.seq);
                self.seq = newest;
                self.landed = true;
                Step::Missed { missed }
            }
        })
    }
}
