//! One topic: its ring of events, its subscribers' wakers, publishing and subscribing.

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
    fn position_after(&self, id: &str, run: &str) -> Option<u64> {
        if let Some(seq) = id
            .strip_prefix(run)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            // One of ours, from this run. Everything after it must still be in the ring; the
            // event itself may already have been dropped.
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
}

pub(super) struct Shared {
    name: Arc<str>,
    pub(super) core: Arc<Core>,
    pub(super) state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(name: Arc<str>, core: Arc<Core>) -> Shared {
        Shared {
            name,
            core,
            state: Mutex::new(State {
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

    /// No subscribers and no history (after dropping expired events when `expire` is set).
    pub(super) fn is_idle(&self, expire: bool) -> bool {
        let mut state = lock(&self.state);
        if expire {
            state.trim(&self.core, Instant::now());
        }
        state.waiters.is_empty() && state.ring.is_empty()
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
/// prices.publish(Event::message("101.5")).unwrap();
/// prices.publish(Event::message("101.7")).unwrap();
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
    /// those waiting. Works from sync and async code alike.
    ///
    /// # Errors
    ///
    /// An id the event cannot take ([`Event::with_id_if_missing`]), which cannot happen with
    /// hub-made ids; the history is then unchanged.
    pub fn publish(&self, event: Event) -> Result<String, EventError> {
        let core = &self.shared.core;
        let now = Instant::now();
        let mut state = lock(&self.shared.state);
        let seq = state.next_seq;
        let event = if event.id().is_none() && event.is_dispatchable() {
            let mut id = String::with_capacity(core.run.len() + 21);
            id.push_str(&core.run);
            id.push('-');
            id.push_str(&seq.to_string());
            event.with_id_if_missing(id)?
        } else {
            event
        };
        let id = event.id().unwrap_or_default().to_owned();
        let len = event.len();
        let cum_start = state.cum_bytes;
        state.ring.push_back(Entry {
            event,
            at: now,
            cum_start,
        });
        state.next_seq += 1;
        state.cum_bytes += len as u64;
        state.ring_bytes += len;
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
        state.trim(core, Instant::now());
        let joined = state.next_seq;
        let (cursor, lost) = match last_event_id {
            Some(id) => match state.position_after(id, &core.run) {
                Some(cursor) => (cursor, false),
                None => (joined, true),
            },
            None => (
                joined.saturating_sub(recent as u64).max(state.first_seq),
                false,
            ),
        };
        drop(state);
        let control =
            lost.then(|| control_event(HISTORY_LOST, r#"{"reason":"history-lost"}"#, None));
        Subscription::new(self.clone(), cursor, joined, control)
    }

    /// Adds a subscriber that starts streaming: counted, and announced to `on_join`. Returns
    /// its waiter slot.
    pub(super) fn join(&self, lost: bool) -> usize {
        let core = &self.shared.core;
        let (key, count) = {
            let mut state = lock(&self.shared.state);
            let key = state.waiters.insert(None);
            (key, state.waiters.len())
        };
        let counters = &core.counters;
        counters.subscribers.fetch_add(1, Ordering::Relaxed);
        if lost {
            counters.history_lost.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic = self.name(), "hub subscriber told history-lost");
        }
        Core::run_hook(&core.config.on_join, self, count);
        key
    }
}
