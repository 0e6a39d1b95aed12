//! One topic: its ring of events, its subscribers' wakers, publishing and subscribing.

use super::broker::{id_of, Position, Publish, PublishError};
use super::{control_event, subscription::Subscription, Core, Hub, HISTORY_LOST};
use crate::sync::{lock, take_wakers};
use crate::{Event, EventError, LastEventId};
use slab::Slab;
use std::{
    collections::VecDeque,
    fmt,
    sync::{atomic::Ordering, Arc, Mutex},
    task::Waker,
};
use tokio::time::Instant;

pub(super) struct Entry {
    pub(super) event: Event,
    at: Instant,
    /// Bytes published on the topic before this event.
    cum_start: u64,
}

pub(super) struct State {
    pub(super) ring: VecDeque<Entry>,
    /// Sequence number of `ring[0]` (equal to `next_seq` when the ring is empty).
    pub(super) first_seq: u64,
    pub(super) next_seq: u64,
    ring_bytes: usize,
    cum_bytes: u64,
    /// One slot per subscriber: its waker while it waits for an event.
    pub(super) waiters: Slab<Option<Waker>>,
    /// Set by [`Hub::close`]: subscribers end after the history, with this final event.
    pub(super) closed: Option<Option<Event>>,
    /// First half of the ring's ids: the hub's run, or the broker's epoch (none before the
    /// broker has told one).
    pub(super) epoch: Option<Arc<str>>,
    /// Bumped when the ring starts over past a gap that could not be filled: subscribers of an
    /// older generation are told `history-lost` and continue from the new ring's start.
    pub(super) generation: u64,
    pub(super) phase: Phase,
    /// Syncs from the broker so far.
    pub(super) syncs: u64,
    /// Where the latest syncs left the ring, `(sync number, sequence number)`: a subscription
    /// made while the topic waited for a sync starts where the first sync after it left the
    /// ring, so the live events that followed reach it.
    marks: VecDeque<(u64, u64)>,
}

/// Whether the ring is up to date. An in-memory hub is always live.
pub(super) enum Phase {
    /// Followed by the broker and synced: every event arrives in order.
    Live,
    /// Followed, waiting for the broker's sync; live events that arrive meanwhile wait here.
    Syncing(VecDeque<(Arc<str>, u64, Event)>),
    /// Not followed (no local subscribers): the ring may be stale.
    Idle,
}

/// What became of an event from the broker.
enum Fed {
    Appended,
    Held,
    /// Past a gap: the event is handed back, to hold until a sync.
    Gap(Event),
}

impl State {
    /// Bytes published from sequence number `from` on; `from` must not be below `first_seq`.
    pub(super) fn bytes_from(&self, from: u64) -> u64 {
        if from >= self.next_seq {
            return 0;
        }
        let start = self.ring[(from - self.first_seq) as usize].cum_start;
        self.cum_bytes - start
    }

    /// Appends `event` as the next in sequence.
    fn push(&mut self, event: Event, now: Instant) {
        let len = event.len();
        let cum_start = self.cum_bytes;
        self.ring.push_back(Entry {
            event,
            at: now,
            cum_start,
        });
        self.next_seq += 1;
        self.cum_bytes += len as u64;
        self.ring_bytes += len;
    }

    /// Empties the ring to start over at `first` in `epoch`: a new generation.
    fn restart(&mut self, epoch: Arc<str>, first: u64) {
        self.ring.clear();
        self.ring_bytes = 0;
        self.first_seq = first;
        self.next_seq = first;
        self.epoch = Some(epoch);
        self.generation += 1;
        self.marks.clear();
        self.marks.push_back((self.syncs, first));
    }

    /// `epoch`, sharing the ring's own copy when it is the same (the usual case: no allocation).
    fn shared_epoch(&self, epoch: &str) -> Arc<str> {
        match &self.epoch {
            Some(ours) if **ours == *epoch => ours.clone(),
            _ => Arc::from(epoch),
        }
    }

    /// Takes a live event from the broker, numbered `offset` in `epoch`.
    fn feed(&mut self, core: &Core, epoch: &Arc<str>, offset: u64, event: Event) -> Fed {
        let same = self.epoch.as_deref() == Some(&**epoch);
        if same && offset < self.next_seq {
            return Fed::Held;
        }
        if same && offset == self.next_seq
            || self.epoch.is_none() && self.next_seq == 1 && offset == 1
        {
            self.epoch = Some(epoch.clone());
        } else if !same && offset == 1 {
            // The history was lost and started over: nothing of the new epoch was missed.
            self.restart(epoch.clone(), 1);
        } else {
            return Fed::Gap(event);
        }
        match event.with_id_if_missing(id_of(epoch, offset)) {
            Ok(event) => self.push(event, Instant::now()),
            // Cannot happen: the epoch was checked, the offset is digits.
            Err(_) => return Fed::Held,
        }
        self.trim(core, Instant::now());
        Fed::Appended
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.ring.pop_front() {
            self.ring_bytes -= entry.event.len();
            self.first_seq += 1;
        }
    }

    fn trim(&mut self, core: &Core, now: Instant) {
        while self.ring.len() > core.config.history
            || (self.ring_bytes > core.config.history_bytes && self.ring.len() > 1)
        {
            self.pop_front();
        }
        if let Some(age) = core.config.history_age {
            while self
                .ring
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.at) > age)
            {
                self.pop_front();
            }
        }
    }

    /// The sequence number just after the event with this id, if the history can resume from it.
    fn position_after(&self, id: &str) -> Option<u64> {
        let ours = self.epoch.as_deref().and_then(|epoch| {
            id.strip_prefix(epoch)?
                .strip_prefix('-')?
                .parse::<u64>()
                .ok()
        });
        if let Some(seq) = ours {
            // One of ours, from this run or epoch. Everything after it must still be in the
            // ring; the event itself may already have been dropped.
            if seq < self.next_seq && seq.saturating_add(1) >= self.first_seq {
                let matches = seq < self.first_seq
                    || self.ring[(seq - self.first_seq) as usize].event.id() == Some(id);
                if matches {
                    return Some(seq + 1);
                }
            }
        }
        // An id the publisher chose: find it by exact match, newest first.
        self.ring
            .iter()
            .rposition(|e| e.event.id() == Some(id))
            .map(|i| self.first_seq + i as u64 + 1)
    }

    /// Where a new subscriber starts: `(cursor, joined, history_lost)`. One made while the topic
    /// waited for a sync (`waited`: the number of syncs then) starts where the first sync after
    /// it left the ring.
    pub(super) fn start(
        &mut self,
        core: &Core,
        last_event_id: Option<&LastEventId>,
        recent: usize,
        waited: Option<u64>,
    ) -> (u64, u64, bool) {
        self.trim(core, Instant::now());
        let joined = match waited {
            Some(syncs) => self
                .marks
                .iter()
                .find(|(n, _)| *n > syncs)
                .or(self.marks.front())
                .map_or(self.next_seq, |(_, seq)| *seq),
            None => self.next_seq,
        };
        match last_event_id {
            Some(id) => match self.position_after(id.as_str()) {
                Some(cursor) => (cursor, joined, false),
                None => (joined, joined, true),
            },
            // Not before the ring's start, unless it is behind already (then the lag policy says
            // so).
            None => (
                joined
                    .saturating_sub(recent as u64)
                    .max(self.first_seq.min(joined)),
                joined,
                false,
            ),
        }
    }
}

pub(super) struct Shared {
    name: Arc<str>,
    pub(super) core: Arc<Core>,
    pub(super) state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(name: Arc<str>, core: Arc<Core>) -> Shared {
        let brokered = core.config.broker.is_some();
        let epoch = (!brokered).then(|| Arc::from(&*core.run));
        Shared {
            name,
            core,
            state: Mutex::new(State {
                epoch,
                generation: 0,
                syncs: 0,
                marks: VecDeque::new(),
                phase: if brokered { Phase::Idle } else { Phase::Live },
                ring: VecDeque::new(),
                first_seq: 1,
                next_seq: 1,
                ring_bytes: 0,
                cum_bytes: 0,
                waiters: Slab::new(),
                closed: None,
            }),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Ends every subscription once it has read what was published; see [`Hub::close`].
    pub(super) fn close(&self, final_event: Option<Event>) {
        let mut state = lock(&self.state);
        state.closed = Some(final_event);
        let wakers = take_wakers(&mut state.waiters);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// No subscribers and no history (after dropping expired events when `expire` is set). With
    /// a broker the ring is only a copy of the shared history, so no subscribers is enough.
    pub(super) fn is_idle(&self, expire: bool) -> bool {
        let mut state = lock(&self.state);
        if expire {
            state.trim(&self.core, Instant::now());
        }
        state.waiters.is_empty() && (state.ring.is_empty() || self.core.config.broker.is_some())
    }

    /// The newest position in the ring, if it has an epoch.
    pub(super) fn last_position(&self) -> Option<Position> {
        let state = lock(&self.state);
        let epoch = state.epoch.as_deref()?;
        Some(Position {
            epoch: epoch.to_owned(),
            offset: state.next_seq - 1,
        })
    }

    /// A live event from the broker. Returns whether the hub must ask for a sync.
    pub(super) fn feed_event(&self, epoch: &str, offset: u64, event: Event) -> bool {
        let mut state = lock(&self.state);
        let epoch = state.shared_epoch(epoch);
        let fed = match &mut state.phase {
            Phase::Idle => return false,
            Phase::Syncing(held) => {
                // Bounded: past a history's worth, the oldest held events are left to the sync,
                // which reads them from the broker's history.
                if held.len() > self.core.config.history {
                    held.pop_front();
                }
                held.push_back((epoch, offset, event));
                return false;
            }
            Phase::Live => state.feed(&self.core, &epoch, offset, event),
        };
        match fed {
            Fed::Appended => {
                let wakers = take_wakers(&mut state.waiters);
                drop(state);
                wakers.into_iter().for_each(Waker::wake);
                false
            }
            Fed::Held => false,
            Fed::Gap(event) => {
                tracing::debug!(topic = %self.name, offset, "hub saw a gap; asking its broker to sync");
                state.phase = Phase::Syncing(VecDeque::from([(epoch, offset, event)]));
                true
            }
        }
    }

    /// The newest history from the broker (`events` run without a hole up to `head`).
    pub(super) fn feed_sync(&self, epoch: Option<String>, head: u64, events: Vec<(u64, Event)>) {
        let mut state = lock(&self.state);
        let held = match std::mem::replace(&mut state.phase, Phase::Live) {
            Phase::Syncing(held) => held,
            // Not waiting for this one (unfollowed since): stay as it was.
            other => {
                state.phase = other;
                return;
            }
        };
        if let Some(epoch) = epoch {
            let epoch = state.shared_epoch(&epoch);
            let first = events.first().map_or(head + 1, |(offset, _)| *offset);
            let same = state.epoch.as_deref() == Some(&*epoch);
            let fresh = state.epoch.is_none() && state.next_seq == 1;
            if same && first <= state.next_seq && head + 1 >= state.next_seq {
                // Reaches back to what the ring holds: no gap.
            } else if fresh && (first == 1 || state.waiters.is_empty()) {
                state.epoch = Some(epoch.clone());
                state.first_seq = first;
                state.next_seq = first;
            } else {
                tracing::debug!(topic = %self.name, "hub history cannot bridge a gap: history-lost");
                state.restart(epoch.clone(), first);
            }
            for (offset, event) in events {
                if offset >= state.next_seq {
                    state.feed(&self.core, &epoch, offset, event);
                }
            }
        }
        state.syncs += 1;
        let mark = (state.syncs, state.next_seq);
        if state.marks.len() >= 32 {
            state.marks.pop_front();
        }
        state.marks.push_back(mark);
        // With no epoch the broker holds nothing: the ring stays, and the next event (offset 1
        // of a new epoch) starts it over. Held live events follow the snapshot; one that still
        // does not fit is stale or foreign (a genuine one would be in the snapshot or next in
        // line), so it is dropped rather than waited for.
        for (epoch, offset, event) in held {
            if let Fed::Gap(_) = state.feed(&self.core, &epoch, offset, event) {
                tracing::debug!(topic = %self.name, offset, "hub dropped an event that fits no sync");
            }
        }
        let wakers = take_wakers(&mut state.waiters);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The broker lost its connection: wait for its sync.
    pub(super) fn feed_disconnected(&self) {
        let mut state = lock(&self.state);
        if !matches!(state.phase, Phase::Idle) {
            state.phase = Phase::Syncing(VecDeque::new());
        }
    }
}

/// A handle to one topic of a [`Hub`]: publish to it, subscribe to it. Cloning is cheap.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures_util::StreamExt;
/// use tower_sse::{hub::Hub, Event};
///
/// let hub = Hub::new();
/// let prices = hub.topic("prices");
/// prices.publish(Event::message("101.5")).await.unwrap();
/// prices.publish(Event::message("101.7")).await.unwrap();
///
/// // A dashboard that opens now first gets the newest value from the history, then live ones.
/// let mut dashboard = prices.subscribe_with_recent(None, 1);
/// assert!(dashboard.next().await.unwrap().as_bytes().starts_with(b"data: 101.7\n"));
/// assert_eq!(prices.subscribers(), 1);
/// assert_eq!(prices.history_len(), 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Topic {
    pub(super) shared: Arc<Shared>,
    pub(super) hub: Hub,
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name())
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl Topic {
    pub(super) fn from_shared(shared: Arc<Shared>, hub: Hub) -> Topic {
        Topic { shared, hub }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// How many subscribers the topic has now: subscriptions whose stream has started (a
    /// [`Subscription`] joins when it is first polled, so a response that is refused before it
    /// streams never counts, and fires no hook).
    pub fn subscribers(&self) -> usize {
        lock(&self.shared.state).waiters.len()
    }

    /// How many events the history holds now, events older than
    /// [`history_age`](super::HubBuilder::history_age) excluded (they are dropped here).
    pub fn history_len(&self) -> usize {
        let mut state = lock(&self.shared.state);
        state.trim(&self.shared.core, Instant::now());
        state.ring.len()
    }

    /// Publishes an event to every subscriber, and returns its id.
    ///
    /// An event without an `id` gets one from the hub (the only case that copies the event's
    /// bytes, once). Never blocks on subscribers: it appends to the topic's history and wakes
    /// those waiting. Works from sync and async code alike: the event is published whether or
    /// not the returned [`Publish`] is awaited, and on the in-memory hub it is done when this
    /// returns ([`Publish::now`] has the id).
    ///
    /// With a [broker](super::broker) the event goes to the broker, which numbers it, keeps it
    /// and delivers it to every hub that follows the topic, this one included; subscribers here
    /// receive it from there, in the topic's one order.
    ///
    /// # Errors
    ///
    /// - [`PublishError::Event`]: an id the event cannot take ([`Event::with_id_if_missing`]),
    ///   which cannot happen with hub-made ids; the history is then unchanged.
    /// - With a broker: [`PublishError::OwnId`] for an event with an id of its own, and
    ///   [`Unavailable`](PublishError::Unavailable), [`Timeout`](PublishError::Timeout) or
    ///   [`Overloaded`](PublishError::Overloaded) when the broker cannot take it.
    pub fn publish(&self, event: Event) -> Publish {
        let Some(broker) = &self.shared.core.config.broker else {
            return Publish::ready(self.publish_here(event).map_err(PublishError::Event));
        };
        if event.id().is_some() {
            return Publish::ready(Err(PublishError::OwnId));
        }
        let sent = broker.publish(self.name(), event);
        let core = self.shared.core.clone();
        let topic = self.shared.name.clone();
        Publish::spawn(async move {
            match sent.await {
                Ok(position) => {
                    core.counters.published.fetch_add(1, Ordering::Relaxed);
                    Ok(position.to_id())
                }
                Err(err) => {
                    core.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %topic, error = %err, "hub publish failed");
                    Err(err)
                }
            }
        })
    }

    /// Publishing on the in-memory hub.
    fn publish_here(&self, event: Event) -> Result<String, EventError> {
        let core = &self.shared.core;
        let now = Instant::now();
        let mut state = lock(&self.shared.state);
        let seq = state.next_seq;
        let event = if event.id().is_none() && event.is_dispatchable() {
            event.with_id_if_missing(id_of(&core.run, seq))?
        } else {
            event
        };
        let id = event.id().unwrap_or_default().to_owned();
        state.push(event, now);
        state.trim(core, now);
        let wakers = take_wakers(&mut state.waiters);
        drop(state);
        core.counters.published.fetch_add(1, Ordering::Relaxed);
        for waker in wakers {
            waker.wake();
        }
        Ok(id)
    }

    /// Subscribes to live events; with a `Last-Event-ID`, first replays the events after it.
    ///
    /// If the history cannot resume from that id (it is too old, from another server run, or
    /// unknown), the subscription starts with a [`HISTORY_LOST`] event, then goes live.
    ///
    /// The position in the history is fixed now, so nothing published from here on is missed;
    /// the subscriber joins the topic (it is counted, and the `on_join` hook runs) when the
    /// stream is first polled, that is when its response starts streaming.
    pub fn subscribe(&self, last_event_id: Option<&LastEventId>) -> Subscription {
        self.subscribe_with_recent(last_event_id, 0)
    }

    /// Like [`subscribe`](Topic::subscribe), but a subscriber without a `Last-Event-ID` first
    /// receives up to `recent` of the newest events from the history (a chat room's last
    /// messages, a dashboard's last values).
    pub fn subscribe_with_recent(
        &self,
        last_event_id: Option<&LastEventId>,
        recent: usize,
    ) -> Subscription {
        let core = &self.shared.core;
        let mut state = lock(&self.shared.state);
        if !matches!(state.phase, Phase::Live) {
            // A broker's topic with no subscribers here yet: where to start is known once the
            // topic is followed and synced, when the stream is first polled.
            let syncs = state.syncs;
            drop(state);
            return Subscription::pending(self.clone(), last_event_id.cloned(), recent, syncs);
        }
        let (cursor, joined, lost) = state.start(core, last_event_id, recent, None);
        let generation = state.generation;
        drop(state);
        let control = lost.then(history_lost);
        Subscription::new(self.clone(), cursor, joined, generation, control)
    }

    /// Adds a subscriber that starts streaming: counted, and announced to `on_join`. Returns
    /// its waiter slot.
    pub(super) fn join(&self, lost: bool) -> usize {
        let core = &self.shared.core;
        let (key, count) = {
            let mut state = lock(&self.shared.state);
            let key = state.waiters.insert(None);
            if state.waiters.len() == 1 {
                if let Some(broker) = &core.config.broker {
                    state.phase = Phase::Syncing(VecDeque::new());
                    broker.follow(self.name());
                }
            }
            (key, state.waiters.len())
        };
        let counters = &core.counters;
        counters.subscribers.fetch_add(1, Ordering::Relaxed);
        if lost {
            self.count_history_lost();
        }
        Core::run_hook(&core.config.on_join, self, count);
        key
    }

    pub(super) fn count_history_lost(&self) {
        let counters = &self.shared.core.counters;
        counters.history_lost.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(topic = self.name(), "hub subscriber told history-lost");
    }
}

/// The control event that tells a subscriber its history is lost.
pub(super) fn history_lost() -> Event {
    control_event(HISTORY_LOST, r#"{"reason":"history-lost"}"#, None)
}
