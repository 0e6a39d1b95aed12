//! A subscriber's stream: a cursor into its topic's ring.

use super::topic::{history_lost, Phase, Topic};
use super::{control_event, Core, LagPolicy, EVICTED, MISSED};
use crate::sync::lock;
use crate::{Event, LastEventId};
use futures_core::Stream;
use std::{
    fmt,
    pin::Pin,
    sync::atomic::Ordering,
    task::{Context, Poll},
};

/// One subscriber of a [`Topic`]: a `Stream` of its events, ready to wrap in an
/// [`SseBody`](crate::SseBody).
///
/// It joins its topic when first polled (it is then counted and the hub's `on_join` hook runs),
/// so a subscription whose response never streams (refused by the layer, say) leaves no trace.
/// Dropping it (which the server does when the client disconnects) removes the subscriber at
/// once and runs the hub's `on_leave` hook.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use http_body_util::BodyExt;
/// use tower_sse::{hub::Hub, Event, SseBody};
///
/// let hub = Hub::new();
/// let room = hub.topic("room");
/// let subscription = room.subscribe(None);
/// let id = room.publish(Event::message("hi")).await.unwrap();
/// hub.close(None); // ends the subscription after what was published
///
/// let body = SseBody::new(subscription).open_frame(false);
/// let bytes = body.collect().await.unwrap().to_bytes();
/// assert_eq!(bytes, format!("data: hi\nid: {id}\n\n"));
/// assert_eq!(room.subscribers(), 0, "the subscriber left when its stream ended");
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct Subscription {
    topic: Topic,
    /// The waiter slot, once joined (on the first poll).
    key: Option<usize>,
    cursor: u64,
    /// Sequence number of the first event published after the subscription began: events
    /// before it are replay, which does not count as lag.
    joined: u64,
    control: Option<Event>,
    /// The ring generation `cursor` belongs to.
    generation: u64,
    /// Where to start, until the topic is live (a broker's topic, synced after the first poll):
    /// the `Last-Event-ID`, how many recent events, and the topic's syncs so far.
    pending: Option<(Option<LastEventId>, usize, u64)>,
    /// Events handed out and not yet added to the hub's `delivered` counter.
    unflushed: u64,
    left: bool,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic.name())
            .field("cursor", &self.cursor)
            .field("left", &self.left)
            .finish()
    }
}

impl Subscription {
    pub(super) fn new(
        topic: Topic,
        cursor: u64,
        joined: u64,
        generation: u64,
        control: Option<Event>,
    ) -> Subscription {
        Subscription {
            topic,
            key: None,
            cursor,
            joined,
            control,
            generation,
            pending: None,
            unflushed: 0,
            left: false,
        }
    }

    pub(super) fn pending(
        topic: Topic,
        last_event_id: Option<LastEventId>,
        recent: usize,
        syncs: u64,
    ) -> Subscription {
        let mut subscription = Subscription::new(topic, 0, 0, 0, None);
        subscription.pending = Some((last_event_id, recent, syncs));
        subscription
    }

    /// The topic this subscription reads.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Joins the topic now, if not yet: the subscriber is counted and the hub's `on_join` hook
    /// runs. A subscription joins by itself when first polled; call this where something must
    /// happen once the subscriber is in (a presence message that counts it, say).
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let topic = hub.topic("room");
    /// let mut subscription = topic.subscribe(None);
    /// assert_eq!(topic.subscribers(), 0, "not streaming yet");
    /// subscription.join();
    /// assert_eq!(topic.subscribers(), 1);
    /// ```
    pub fn join(&mut self) {
        if self.key.is_none() && !self.left {
            self.key = Some(self.topic.join(self.control.is_some()));
        }
    }

    fn flush_delivered(&mut self) {
        if self.unflushed > 0 {
            let counters = &self.topic.shared.core.counters;
            counters
                .delivered
                .fetch_add(self.unflushed, Ordering::Relaxed);
            self.unflushed = 0;
        }
    }

    /// Removes the subscriber from its topic, once, if it had joined.
    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let Some(key) = self.key else {
            // Never joined: nothing to undo, but the topic may have been made for it alone.
            self.topic.hub.remove_if_unused(&self.topic.shared);
            return;
        };
        self.flush_delivered();
        let shared = &self.topic.shared;
        let count = {
            let mut state = lock(&shared.state);
            state.waiters.try_remove(key);
            if state.waiters.is_empty() {
                if let Some(broker) = &shared.core.config.broker {
                    state.phase = Phase::Idle;
                    broker.unfollow(self.topic.name());
                }
            }
            state.waiters.len()
        };
        shared
            .core
            .counters
            .subscribers
            .fetch_sub(1, Ordering::Relaxed);
        Core::run_hook(&shared.core.config.on_leave, &self.topic, count);
        self.topic.hub.remove_if_unused(shared);
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        this.join();
        if let Some(event) = this.control.take() {
            return Poll::Ready(Some(event));
        }
        if this.left {
            return Poll::Ready(None);
        }
        let core = &*this.topic.shared.core;
        let mut state = lock(&this.topic.shared.state);

        if let Some((_, _, made_after)) = this.pending {
            if state.syncs <= made_after && state.closed.is_none() {
                // Waits for the broker's next sync, which wakes every waiter of the topic.
                this.wait(&mut state, cx);
                return Poll::Pending;
            }
            if let Some((last_event_id, recent, syncs)) = this.pending.take() {
                let (cursor, joined, lost) =
                    state.start(core, last_event_id.as_ref(), recent, Some(syncs));
                this.cursor = cursor;
                this.joined = joined;
                this.generation = state.generation;
                if lost {
                    drop(state);
                    this.topic.count_history_lost();
                    return Poll::Ready(Some(history_lost()));
                }
            }
        }

        if this.generation != state.generation {
            // The ring started over past a gap the broker's history could not fill.
            this.generation = state.generation;
            this.cursor = state.first_seq;
            this.joined = state.next_seq;
            drop(state);
            this.topic.count_history_lost();
            return Poll::Ready(Some(history_lost()));
        }

        let lag_from = this.cursor.max(this.joined);
        // Only the newest event left to read is never lag, whatever its size: it is where a
        // skipping subscriber lands.
        let lagging = this.cursor < state.first_seq
            || state.next_seq - lag_from > core.config.max_lag_events
            || (state.next_seq - lag_from > 1
                && state.bytes_from(lag_from) > core.config.max_lag_bytes);
        if lagging {
            let behind = state.next_seq - this.cursor;
            match core.config.policy {
                LagPolicy::Evict { retry } => {
                    drop(state);
                    core.counters.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        topic = this.topic.name(),
                        behind,
                        "hub subscriber evicted for falling behind"
                    );
                    this.leave();
                    let data = format!(r#"{{"behind":{behind}}}"#);
                    return Poll::Ready(Some(control_event(EVICTED, &data, Some(retry))));
                }
                LagPolicy::Skip => {
                    // Land on the newest event, which is delivered next; only the events
                    // before it are missed.
                    let newest = state.next_seq.saturating_sub(1).max(state.first_seq);
                    let missed = newest - this.cursor;
                    this.cursor = newest;
                    drop(state);
                    core.counters.skipped.fetch_add(missed, Ordering::Relaxed);
                    tracing::debug!(
                        topic = this.topic.name(),
                        missed,
                        "hub subscriber skipped events"
                    );
                    let data = format!(r#"{{"missed":{missed}}}"#);
                    return Poll::Ready(Some(control_event(MISSED, &data, None)));
                }
            }
        }

        if this.cursor < state.next_seq {
            let event = state.ring[(this.cursor - state.first_seq) as usize]
                .event
                .clone();
            this.cursor += 1;
            this.unflushed += 1;
            return Poll::Ready(Some(event));
        }

        if let Some(final_event) = &state.closed {
            let final_event = final_event.clone();
            drop(state);
            this.leave();
            return Poll::Ready(final_event);
        }

        this.wait(&mut state, cx);
        drop(state);
        this.flush_delivered();
        Poll::Pending
    }
}

impl Subscription {
    /// Leaves this task's waker in the subscriber's slot.
    fn wait(&self, state: &mut super::topic::State, cx: &Context<'_>) {
        if let Some(slot) = self.key.and_then(|key| state.waiters.get_mut(key)) {
            match slot {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.leave();
    }
}
