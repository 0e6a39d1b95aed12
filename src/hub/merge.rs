//! The merge at the seam: a topic's ring kept in the broker's one order, from two inputs that
//! race each other — live events, and history reads ("syncs").
//!
//! A pure state machine: no lock, no waker, no broker, no clock of its own (every input that
//! depends on time takes `now`). [`Shared`](super::topic) holds one under the topic's lock and
//! turns its answers into wake-ups and broker calls; the property tests below drive it against
//! a model through random interleavings.
//!
//! The rules:
//!
//! - **Phases.** Not followed (no local subscriber): `Idle`, live events are ignored and the ring
//!   may go stale. Followed but not sure of its history: `Syncing`, live events are held. Synced:
//!   `Live`, live events append in offset order.
//! - **Every read belongs to one request.** [`begin_sync`](Merge::begin_sync) hands out a ticket
//!   and makes it the only one awaited; a sync with any other ticket (made for an earlier follow,
//!   or before a disconnect) is stale and dropped.
//! - **At the seam**, held live events and the read's events are merged by offset: nothing twice,
//!   nothing missed. When the read cannot bridge what the ring holds (another epoch, or trimmed
//!   past it), the ring starts over as a new *generation*, and subscribers of the old one are
//!   told history-lost.
//! - **A gap** in live events (a lost message) makes the topic ask for a sync.
//! - **Holes**: a position whose payload was not an event is kept as a hole, so it never looks
//!   like a gap.

use super::id::{id_of, parse};
use super::ring::{Bounds, Ring};
use crate::{Event, EventError, LastEventId};
use std::{collections::VecDeque, sync::Arc};
use tokio::time::Instant;

/// A position in the broker's numbering: `(epoch, offset)`.
pub(super) type At = (Arc<str>, u64);

/// One entry of a broker's answer: `(offset, published at, event or hole)`.
pub(super) type Entry = (u64, Instant, Option<Event>);

/// Whether the ring is up to date.
enum Phase {
    Live,
    /// Followed, waiting for the sync with ticket `awaited` (none asked for yet: `None`).
    Syncing {
        awaited: Option<u64>,
        held: VecDeque<Held>,
    },
    Idle,
}

struct Held {
    epoch: Arc<str>,
    offset: u64,
    at: Instant,
    event: Event,
}

/// What became of a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fed {
    /// In the ring: wake the subscribers.
    Appended,
    /// Held until the sync, or ignored (not followed, or already held).
    Kept,
    /// Past a gap: the topic now waits for a sync; ask the broker for one.
    Gap,
}

/// A read of the broker's history: the epoch (`None`: the broker holds nothing), the newest
/// offset, and the newest entries, sorted, ending at `head` without a hole.
pub(super) struct Synced {
    pub(super) epoch: Option<Arc<str>>,
    pub(super) head: u64,
    pub(super) entries: Vec<Entry>,
}

/// Where a new subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// At `cursor`; events from `joined` on count as live (before: replay, never lag). With
    /// `lost`, it is told history-lost first.
    At {
        cursor: u64,
        joined: u64,
        lost: bool,
    },
    /// Its id is a broker's id this ring has not received (past its newest event, or of an
    /// epoch it does not hold: this process lags the broker): known only after a sync begun
    /// from now on.
    Ahead,
}

/// A subscriber made while the topic was not live: the counts then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Made {
    /// Syncs applied.
    pub(super) syncs: u64,
    /// Syncs begun (tickets handed out).
    pub(super) begun: u64,
}

/// One topic's ring and its merge with a broker (or, in memory, its own numbering).
pub(super) struct Merge {
    ring: Ring,
    bounds: Bounds,
    brokered: bool,
    /// First half of the ring's ids: the hub's run, or the broker's epoch (none until told).
    epoch: Option<Arc<str>>,
    generation: u64,
    phase: Phase,
    begun: u64,
    /// Ticket of the newest sync applied (0: none).
    applied: u64,
    syncs: u64,
    /// `(syncs, sequence number)`: where the latest syncs left the ring. A subscriber made while
    /// the topic waited starts where the first sync after it left the ring, so the live events
    /// that followed reach it.
    marks: VecDeque<(u64, u64)>,
}

impl Merge {
    /// An in-memory topic: live from the start, numbered under its own `tag`.
    pub(super) fn local(tag: Arc<str>, bounds: Bounds) -> Merge {
        Merge::new(Some(tag), bounds, false, Phase::Live)
    }

    /// A broker's topic: idle until followed.
    pub(super) fn brokered(bounds: Bounds) -> Merge {
        Merge::new(None, bounds, true, Phase::Idle)
    }

    fn new(epoch: Option<Arc<str>>, bounds: Bounds, brokered: bool, phase: Phase) -> Merge {
        Merge {
            ring: Ring::new(1),
            bounds,
            brokered,
            epoch,
            generation: 0,
            phase,
            begun: 0,
            applied: 0,
            syncs: 0,
            marks: VecDeque::new(),
        }
    }

    pub(super) fn ring(&self) -> &Ring {
        &self.ring
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    /// The newest position the ring holds, if it has an epoch.
    pub(super) fn newest(&self) -> Option<At> {
        let epoch = self.epoch.clone()?;
        Some((epoch, self.ring.next() - 1))
    }

    /// `epoch`, sharing the ring's own copy when it is the same (the usual case: no allocation).
    pub(super) fn shared_epoch(&self, epoch: &str) -> Arc<str> {
        match &self.epoch {
            Some(ours) if **ours == *epoch => ours.clone(),
            _ => Arc::from(epoch),
        }
    }

    pub(super) fn made(&self) -> Made {
        Made {
            syncs: self.syncs,
            begun: self.begun,
        }
    }

    /// Whether a sync begun after `made` has been applied.
    pub(super) fn synced_since(&self, made: Made) -> bool {
        self.applied > made.begun
    }

    /// Whether any sync has been applied since `made`.
    pub(super) fn any_sync_since(&self, made: Made) -> bool {
        self.syncs > made.syncs
    }

    /// Whether a sync begun after `made` is under way or done.
    pub(super) fn sync_begun_since(&self, made: Made) -> bool {
        self.begun > made.begun
    }

    /// Drops what is past the bounds as of `now`.
    pub(super) fn trim(&mut self, now: Instant) {
        self.ring.trim(&self.bounds, now);
    }

    /// Publishes on an in-memory topic: numbers `event` (if it has no id and is dispatched),
    /// appends it, and returns its id (empty for a comment).
    pub(super) fn publish(&mut self, event: Event, now: Instant) -> Result<String, EventError> {
        let event = match &self.epoch {
            Some(run) if event.id().is_none() && event.is_dispatchable() => {
                event.with_id_if_missing(id_of(run, self.ring.next()))?
            }
            _ => event,
        };
        let id = event.id().unwrap_or_default().to_owned();
        self.ring.push(Some(event), now);
        self.trim(now);
        Ok(id)
    }

    /// The first local subscriber joined: wait for a sync.
    pub(super) fn follow(&mut self) {
        self.phase = Phase::Syncing {
            awaited: None,
            held: VecDeque::new(),
        };
    }

    /// The last local subscriber left: live events are ignored from now on.
    pub(super) fn unfollow(&mut self) {
        self.phase = Phase::Idle;
    }

    /// The broker lost its connection: whatever was read or held before is void.
    pub(super) fn disconnected(&mut self) {
        if !matches!(self.phase, Phase::Idle) {
            self.follow();
        }
    }

    /// The broker is about to read the history: the ticket its answer must carry, and the newest
    /// position the ring holds (the read needs nothing older). `None` when not followed.
    pub(super) fn begin_sync(&mut self) -> Option<(u64, Option<At>)> {
        if matches!(self.phase, Phase::Idle) {
            return None;
        }
        self.begun += 1;
        let ticket = self.begun;
        match &mut self.phase {
            Phase::Syncing { awaited, .. } => *awaited = Some(ticket),
            _ => {
                self.phase = Phase::Syncing {
                    awaited: Some(ticket),
                    held: VecDeque::new(),
                }
            }
        }
        Some((ticket, self.newest()))
    }

    /// A live event. Only the broker's reads change the epoch or bridge a gap: a live event is
    /// appended when it is the next one of the ring's epoch; one of another epoch, past a gap,
    /// or at a position the ring holds with other bytes (the broker's numbering went back) makes
    /// the topic wait for a read ([`Fed::Gap`]).
    pub(super) fn event(
        &mut self,
        epoch: Arc<str>,
        offset: u64,
        at: Instant,
        event: Event,
        now: Instant,
    ) -> Fed {
        match &mut self.phase {
            Phase::Idle => Fed::Kept,
            Phase::Syncing { held, .. } => {
                // Bounded: past a history's worth, the oldest are left to the sync to read.
                if held.len() >= self.bounds.events {
                    held.pop_front();
                }
                held.push_back(Held {
                    epoch,
                    offset,
                    at,
                    event,
                });
                Fed::Kept
            }
            Phase::Live => self.live(&epoch, offset, at, event, now),
        }
    }

    /// A live event while the ring is live.
    fn live(
        &mut self,
        epoch: &Arc<str>,
        offset: u64,
        at: Instant,
        event: Event,
        now: Instant,
    ) -> Fed {
        let same = self.epoch.as_deref() == Some(&**epoch);
        let next = self.ring.next();
        if same && offset == next {
            self.append(epoch, offset, at, Some(event), now);
            return Fed::Appended;
        }
        if same && offset < next && !self.conflicts(epoch, offset, event) {
            return Fed::Kept;
        }
        self.follow();
        Fed::Gap
    }

    /// Whether a live event at a position the ring holds differs from what it holds there (the
    /// same event again is a duplicate, expected after a read).
    fn conflicts(&self, epoch: &str, offset: u64, event: Event) -> bool {
        let Some(Some(held)) = self.ring.get(offset) else {
            // Older than the ring, or a hole: nothing to compare.
            return false;
        };
        match event.with_id_if_missing(id_of(epoch, offset)) {
            Ok(event) => event.as_bytes() != held.as_bytes(),
            Err(_) => true,
        }
    }

    /// Appends the entry at `offset` (the next one, in the ring's epoch); `None` is a hole.
    fn append(
        &mut self,
        epoch: &Arc<str>,
        offset: u64,
        at: Instant,
        event: Option<Event>,
        now: Instant,
    ) {
        debug_assert_eq!(offset, self.ring.next());
        let event = event.and_then(|event| event.with_id_if_missing(id_of(epoch, offset)).ok());
        self.ring.push(event, at);
        self.trim(now);
    }

    /// Empties the ring to start over at `first` in `epoch`: a new generation.
    fn restart(&mut self, epoch: Arc<str>, first: u64) {
        self.ring.reset(first);
        self.epoch = Some(epoch);
        self.generation += 1;
        self.marks.clear();
        self.marks.push_back((self.syncs, first));
    }

    /// The answer to the read with `ticket`. Returns whether it was applied (a stale one is
    /// dropped).
    pub(super) fn sync(&mut self, ticket: u64, synced: Synced, now: Instant) -> bool {
        let awaited = matches!(self.phase, Phase::Syncing { awaited: Some(t), .. } if t == ticket);
        if !awaited {
            return false;
        }
        let Phase::Syncing { held, .. } = std::mem::replace(&mut self.phase, Phase::Live) else {
            return false;
        };
        if let Some(epoch) = synced.epoch {
            self.bridge(&epoch, &synced.entries, synced.head);
            for (offset, at, event) in synced.entries {
                if offset == self.ring.next() {
                    self.append(&epoch, offset, at, event, now);
                }
            }
        }
        // With no epoch the broker holds nothing: the ring stays, and the next event (offset 1
        // of a new epoch) makes the topic read again.
        self.syncs += 1;
        self.applied = ticket;
        if self.marks.len() >= 32 {
            self.marks.pop_front();
        }
        self.marks.push_back((self.syncs, self.ring.next()));
        // Held live events follow the read. One past a gap makes the topic read again. So does
        // one of another epoch: the read may predate a new history (it found nothing, or the
        // old epoch), and the next read says; a stale or foreign one is then simply gone.
        for held in held {
            let ours = self.epoch.as_deref() == Some(&*held.epoch);
            if !ours {
                self.follow();
                break;
            }
            if self.live(&held.epoch, held.offset, held.at, held.event, now) == Fed::Gap {
                break;
            }
        }
        true
    }

    /// Makes the ring continue where `entries` (ending at `head`) start, or starts it over.
    fn bridge(&mut self, epoch: &Arc<str>, entries: &[Entry], head: u64) {
        let first = entries.first().map_or(head + 1, |(offset, _, _)| *offset);
        let same = self.epoch.as_deref() == Some(&**epoch);
        let next = self.ring.next();
        if same && first <= next && head + 1 >= next {
            // Reaches back to what the ring holds: no gap.
        } else if self.epoch.is_none() {
            // Nothing read before, so nobody reads this ring yet: no generation to end.
            self.epoch = Some(epoch.clone());
            self.ring.reset(first);
        } else {
            self.restart(epoch.clone(), first);
        }
    }

    /// Where a new subscriber starts. `made`: the counts when it was made, if the topic was not
    /// live then (it starts where the first sync after that left the ring).
    pub(super) fn start(
        &mut self,
        last_event_id: Option<&LastEventId>,
        recent: usize,
        made: Option<Made>,
        now: Instant,
    ) -> Start {
        self.trim(now);
        let joined = match made {
            Some(made) => self
                .marks
                .iter()
                .find(|(n, _)| *n > made.syncs)
                .or(self.marks.front())
                .map_or(self.ring.next(), |(_, seq)| *seq),
            None => self.ring.next(),
        };
        // Where a subscriber with no usable position starts: up to `recent` events back, not
        // before the ring's start (unless it is behind already: the lag policy says so).
        let fresh = joined
            .saturating_sub(recent as u64)
            .max(self.ring.first().min(joined));
        let Some(id) = last_event_id else {
            return Start::At {
                cursor: fresh,
                joined,
                lost: false,
            };
        };
        match self.locate(id.as_str()) {
            Located::After(cursor) => Start::At {
                cursor,
                joined,
                lost: false,
            },
            Located::Ahead if self.brokered && !made.is_some_and(|m| self.synced_since(m)) => {
                Start::Ahead
            }
            Located::Ahead | Located::Unknown => Start::At {
                cursor: fresh,
                joined,
                lost: true,
            },
        }
    }

    /// Where the event with this id sits.
    fn locate(&self, id: &str) -> Located {
        let ring = &self.ring;
        if let Some((tag, seq)) = parse(id) {
            if self.epoch.as_deref() == Some(tag) {
                if seq >= ring.next() {
                    return Located::Ahead;
                }
                // Everything after it must still be held; the event itself may be gone.
                let held = seq + 1 >= ring.first();
                let matches = seq < ring.first()
                    || ring
                        .get(seq)
                        .is_some_and(|e| e.is_none_or(|e| e.id() == Some(id)));
                if held && matches {
                    return Located::After(seq + 1);
                }
            } else if self.brokered {
                // A broker's id of an epoch this ring does not hold: perhaps one it has not
                // seen yet (the broker's history started over, or this ring knows no epoch).
                return Located::Ahead;
            }
        }
        // An id the publisher chose (in-memory hub only): exact match, newest first.
        match ring.find_id(id) {
            Some(seq) => Located::After(seq + 1),
            None => Located::Unknown,
        }
    }
}

enum Located {
    /// Resume at this sequence number.
    After(u64),
    /// Not in this ring yet: past its newest event, or of an epoch it does not hold. Only a read
    /// of the broker can tell whether it exists.
    Ahead,
    Unknown,
}

#[cfg(test)]
mod tests;
