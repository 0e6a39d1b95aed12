//! A subscriber's stream: a cursor into its topic's ring.

use super::cursor::{Cursor, LagPolicy, Step};
use super::topic::{history_lost, State, Topic};
use super::{control_event, Core, EVICTED, MISSED};
use crate::{audience::Viewer, come_back::Cause, sync::lock};
use crate::{grants::NotGranted, Event, Grants, LastEventId};
use futures_core::Stream;
use std::{
    fmt,
    pin::Pin,
    sync::atomic::Ordering,
    task::{Context, Poll},
};
use tokio::time::Instant;

/// One subscriber of a [`Topic`]: a `Stream` of its events, ready to wrap in an
/// [`SseBody`](crate::SseBody).
///
/// It joins its topic when first polled (it is then counted and the hub's `on_join` hook runs),
/// so a subscription whose response never streams (refused by the layer, say) leaves no trace.
/// Dropping it (which the server does when the client disconnects) removes the subscriber at
/// once and runs the hub's `on_leave` hook.
///
/// When the hub closes ([`Hub::close`](super::Hub::close)) or evicts it, its last item is
/// marked so that the body sending it ends with a come-back block; read by hand, that last
/// item may be an empty event (one that writes nothing) when the hub closed with no final
/// event.
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
/// let text = std::str::from_utf8(&bytes).unwrap();
/// // The event, then the block that tells the client to come back.
/// assert!(text.starts_with(&format!("data: hi\nid: {id}\n\nretry: ")));
/// assert!(text.ends_with("\n: server shutting down, reconnect\n\n"));
/// assert_eq!(room.subscribers(), 0, "the subscriber left when its stream ended");
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct Subscription {
    topic: Topic,
    /// The waiter slot, once joined (on the first poll).
    key: Option<usize>,
    cursor: Cursor,
    control: Option<Event>,
    /// Events handed out and not yet added to the hub's `delivered` counter.
    unflushed: u64,
    left: bool,
    /// Who reads, for events with an audience: the grants' subject, or nobody (an anonymous
    /// subscriber receives no event that has an audience).
    viewer: Option<Viewer>,
    /// It has read everything its topic held, once its start was settled (after the broker's
    /// history read, on a brokered topic).
    caught_up: bool,
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

impl Topic {
    /// Subscribes to live events; with a `Last-Event-ID`, first replays the events after it.
    ///
    /// If the history cannot resume from that id (it is too old, from another server run or
    /// another topic, or unknown), the subscription starts with a
    /// [`HISTORY_LOST`](super::HISTORY_LOST) event, then goes live.
    ///
    /// The position in the history is fixed now, so nothing published from here on is missed;
    /// the subscriber joins the topic (it is counted, and the `on_join` hook runs) when the
    /// stream is first polled, that is when its response starts streaming.
    ///
    /// With a [broker](super::broker), a topic this process does not follow yet is read from the
    /// broker first, and a broker id this process has not received yet (another process is
    /// ahead of it, perhaps in a new epoch) is looked up in a fresh read: the subscriber resumes
    /// right after it either way, or is told it is lost once the read says so.
    pub fn subscribe(&self, last_event_id: Option<&LastEventId>) -> Subscription {
        self.subscribe_with_recent(last_event_id, 0)
    }

    /// Like [`subscribe`](Topic::subscribe), but a subscriber without a usable position first
    /// receives up to `recent` of the newest events from the history (a chat room's last
    /// messages, a dashboard's last values): one without a `Last-Event-ID`, and one whose id
    /// cannot be resumed (after its [`HISTORY_LOST`](super::HISTORY_LOST) event). A subscriber
    /// away for longer than the history thus gets the newest events it holds, and is told.
    pub fn subscribe_with_recent(
        &self,
        last_event_id: Option<&LastEventId>,
        recent: usize,
    ) -> Subscription {
        let (cursor, lost) = {
            let mut state = lock(&self.shared.state);
            Cursor::new(&mut state.merge, last_event_id, recent, Instant::now())
        };
        Subscription {
            topic: self.clone(),
            key: None,
            cursor,
            control: lost.then(history_lost),
            unflushed: 0,
            left: false,
            viewer: None,
            caught_up: false,
        }
    }
}

impl Subscription {
    /// This subscription, read with `grants`: refused when they do not allow its topic (or
    /// have expired), else it receives, from the history and live, the events without an
    /// [audience](crate::Event::with_audience) and those whose audience holds the grants'
    /// subject. A subscription made without grants receives only the events without an
    /// audience. Checked once per event and subscriber, on the shared bytes: nothing is
    /// encoded or copied for it.
    ///
    /// # Errors
    ///
    /// [`NotGranted`] (a `403` as a response) when the grants do not allow the topic or have
    /// expired; the subscription is dropped without ever joining the topic, counted in
    /// [`HubStats::forbidden`](super::HubStats::forbidden) and logged.
    ///
    /// ```
    /// use tower_sse::{hub::Hub, Grants};
    ///
    /// let hub = Hub::new();
    /// let alice = Grants::new().subject("alice").exact("user:alice");
    /// assert!(hub.topic("user:alice").subscribe(None).granted(&alice).is_ok());
    /// assert!(hub.topic("user:bob").subscribe(None).granted(&alice).is_err());
    /// assert_eq!(hub.stats().forbidden, 1);
    /// ```
    pub fn granted(mut self, grants: &Grants) -> Result<Subscription, NotGranted> {
        if !grants.allows(self.topic.name()) || grants.is_expired() {
            let counters = &self.topic.shared.core.counters;
            counters.forbidden.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                topic = self.topic.name(),
                subject = grants.subject_name(),
                expired = grants.is_expired(),
                "hub subscription refused: the grants do not allow the topic"
            );
            return Err(NotGranted(()));
        }
        self.viewer = grants.subject_name().map(Viewer::new);
        Ok(self)
    }

    /// Whether it has read everything its topic held when it started (with a broker: after
    /// the broker's history read); set by a poll that found nothing more.
    pub(crate) fn is_caught_up(&self) -> bool {
        self.caught_up
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
        let count = self.topic.leave(key);
        let shared = &self.topic.shared;
        shared
            .core
            .counters
            .subscribers
            .fetch_sub(1, Ordering::Relaxed);
        Core::run_hook(&shared.core.config.on_leave, &self.topic, count);
        self.topic.hub.remove_if_unused(shared);
    }

    /// Leaves this task's waker in the subscriber's slot.
    fn wait(&self, state: &mut State, cx: &Context<'_>) {
        if let Some(slot) = self.key.and_then(|key| state.waiters.get_mut(key)) {
            match slot {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
    }

    /// The cursor's next step, taken under the topic's lock (waiting leaves the waker).
    fn step(&mut self, cx: &Context<'_>) -> Step {
        let shared = self.topic.shared.clone();
        let mut state = lock(&shared.state);
        let closed = state.closed.is_some();
        let state = &mut *state;
        let step = self
            .cursor
            .next(&mut state.merge, &shared.lag, closed, Instant::now());
        if let Step::Wait | Step::AskSync = step {
            self.wait(state, cx);
        }
        step
    }

    /// Turns a lag step into its control event, counted and logged.
    fn lag_event(&mut self, step: &Step) -> Option<Event> {
        let core = &*self.topic.shared.core;
        match (step, self.topic.shared.lag.policy) {
            (&Step::Evicted { behind }, LagPolicy::Evict) => {
                core.counters.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    topic = self.topic.name(),
                    behind,
                    "hub subscriber evicted for falling behind"
                );
                self.leave();
                let data = format!(r#"{{"behind":{behind}}}"#);
                Some(control_event(EVICTED, &data).ending_stream(Cause::Evicted))
            }
            (&Step::Missed { missed }, _) => {
                core.counters.skipped.fetch_add(missed, Ordering::Relaxed);
                tracing::debug!(
                    topic = self.topic.name(),
                    missed,
                    "hub subscriber skipped events"
                );
                let data = format!(r#"{{"missed":{missed}}}"#);
                Some(control_event(MISSED, &data))
            }
            _ => None,
        }
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
        loop {
            match this.step(cx) {
                // Not for this subscriber: passed over, as if it were never published.
                Step::Event(event) if !event.admits(this.viewer.as_ref()) => continue,
                step => return this.ready(step),
            }
        }
    }
}

impl Subscription {
    /// What a step of the cursor gives the stream.
    fn ready(&mut self, step: Step) -> Poll<Option<Event>> {
        let this = self;
        match step {
            Step::Event(event) => {
                this.unflushed += 1;
                Poll::Ready(Some(event))
            }
            Step::HistoryLost => {
                this.topic.count_history_lost();
                Poll::Ready(Some(history_lost()))
            }
            step @ (Step::Evicted { .. } | Step::Missed { .. }) => {
                Poll::Ready(this.lag_event(&step))
            }
            Step::AskSync => {
                if let Some(broker) = &this.topic.shared.core.config.broker {
                    broker.follow(this.topic.name());
                }
                this.flush_delivered();
                Poll::Pending
            }
            Step::Wait => {
                this.caught_up |= this.cursor.is_settled();
                this.flush_delivered();
                Poll::Pending
            }
            Step::End => {
                let final_event = lock(&this.topic.shared.state).closed.clone().flatten();
                this.leave();
                // Told to come back after the final event (or after nothing, when none or when
                // its audience leaves this subscriber out).
                let last = final_event
                    .filter(|event| event.admits(this.viewer.as_ref()))
                    .unwrap_or_else(Event::empty);
                Poll::Ready(Some(last.ending_stream(Cause::Shutdown)))
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.leave();
    }
}
