//! The seam between a hub and an engine that shares its topics between server processes.
//!
//! A hub built with a [`Broker`] does not keep its topics to itself: [`Topic::publish`] hands the
//! event to the broker, which orders it, stores it in a shared history and delivers it to every
//! hub that follows the topic, this one included. Each hub still fans out locally through its own
//! ring (the event's bytes are shared by all local subscribers), so handlers do not change.
//!
//! An engine implements four calls, and reports back through a [`Feed`]:
//!
//! - [`Broker::publish`]: append to the topic's history, deliver to every follower, and return
//!   the event's [`Position`]: an epoch (which changes when the shared history is lost) and an
//!   offset (counting up from 1 within the epoch, with no gap).
//! - [`Broker::follow`] / [`Broker::unfollow`]: this hub has local subscribers to the topic now,
//!   or no longer. After `follow` the broker must deliver every event of the topic from then on
//!   ([`Feed::event`]), and once it is sure of that, the newest history ([`Feed::sync`]). The hub
//!   merges the two at the seam by offset: nothing twice, nothing missed, or a `history-lost`
//!   event when the history cannot bridge a gap. `follow` is also how the hub asks for a fresh
//!   [`Feed::sync`] when it sees a gap.
//! - When the broker loses its connection it calls [`Feed::disconnected`], reconnects, follows
//!   again what it followed, and syncs each topic, so subscribers see no gap.
//!
//! [`Topic::publish`]: super::Topic::publish

use super::{topic::Shared, Core};
use crate::sync::lock;
use crate::{Event, EventError};
use bytes::Bytes;
use std::{
    collections::HashMap,
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

/// A boxed future a [`Broker`] returns from [`Broker::publish`].
pub type BrokerFuture = Pin<Box<dyn Future<Output = Result<Position, PublishError>> + Send>>;

/// An engine that shares a hub's topics between hubs (server processes): orders each topic's
/// events, keeps their history, and delivers them to every hub that follows the topic.
///
/// See the [module docs](self) for the contract. The crate's engine is
/// `RedisBroker`, in the `redis` module (feature `redis`).
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Called once, when the hub is built: where to deliver events and histories.
    fn attach(&self, feed: Feed);

    /// Publishes `event` (which has no `id`; the position becomes its id) to `topic`.
    ///
    /// The hub runs the returned future on a task of its own, so it runs to the end even when
    /// nobody awaits the [`Publish`]. It must finish in bounded time, with an error when the
    /// engine cannot be reached.
    fn publish(&self, topic: &str, event: Event) -> BrokerFuture;

    /// The hub has local subscribers to `topic` now, or wants a fresh [`Feed::sync`] of it.
    fn follow(&self, topic: &str);

    /// The hub has no local subscribers to `topic` any more.
    fn unfollow(&self, topic: &str);
}

/// Where an event sits in a topic's shared history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// Changes whenever the shared history is lost and starts over. ASCII letters and digits,
    /// 1 to 64 of them.
    pub epoch: String,
    /// Counts up from 1 within an epoch, with no gap.
    pub offset: u64,
}

impl Position {
    /// The id a hub gives the event at this position: `<epoch>-<offset>`.
    pub fn to_id(&self) -> String {
        id_of(&self.epoch, self.offset)
    }
}

/// The id of event `n` under `tag` (a hub's run or a broker's epoch): `<tag>-<n>`.
pub(super) fn id_of(tag: &str, n: u64) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(tag.len() + 21);
    id.push_str(tag);
    let _ = write!(id, "-{n}");
    id
}

/// Whether `epoch` can be the first half of an id: letters and digits, 1 to 64.
pub(super) fn valid_epoch(epoch: &str) -> bool {
    (1..=64).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The newest part of a topic's shared history, read by a broker after it follows the topic.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(super) epoch: Option<String>,
    pub(super) head: u64,
    pub(super) events: Vec<(u64, Bytes)>,
}

impl Snapshot {
    /// A topic the engine holds nothing for (never published, expired, or lost).
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// A topic in `epoch` whose newest event has offset `head`; add its newest events with
    /// [`push`](Snapshot::push), in any order.
    pub fn new(epoch: impl Into<String>, head: u64) -> Snapshot {
        Snapshot {
            epoch: Some(epoch.into()),
            head,
            events: Vec::new(),
        }
    }

    /// Adds the event at `offset`, as [`Broker::publish`] received it (its encoded bytes).
    pub fn push(&mut self, offset: u64, payload: Bytes) {
        self.events.push((offset, payload));
    }
}

type Topics = Mutex<HashMap<Arc<str>, Arc<Shared>>>;

/// A broker's way back into its hub. Cloning is cheap; it holds the hub weakly, so a broker's
/// task can end when the hub is gone ([`is_closed`](Feed::is_closed)).
#[derive(Clone)]
pub struct Feed {
    pub(super) core: Weak<Core>,
    pub(super) topics: Weak<Topics>,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Feed {
    fn topic(&self, name: &str) -> Option<(Arc<Core>, Arc<Shared>)> {
        let core = self.core.upgrade()?;
        let topics = self.topics.upgrade()?;
        let shared = lock(&topics).get(name)?.clone();
        Some((core, shared))
    }

    /// Whether the hub is gone: a broker's task should stop.
    pub fn is_closed(&self) -> bool {
        self.core.strong_count() == 0
    }

    /// The most events the hub keeps per topic ([`HubBuilder::history`](super::HubBuilder::history)):
    /// how much history a broker should keep and read.
    pub fn history(&self) -> usize {
        self.core.upgrade().map_or(0, |core| core.config.history)
    }

    /// The hub's [`history_age`](super::HubBuilder::history_age), if set.
    pub fn history_age(&self) -> Option<Duration> {
        self.core.upgrade().and_then(|core| core.config.history_age)
    }

    /// The newest position this hub holds for `topic`, if any: a broker reading history after a
    /// reconnect needs nothing older.
    pub fn last_position(&self, topic: &str) -> Option<Position> {
        let (_, shared) = self.topic(topic)?;
        shared.last_position()
    }

    /// A live event of `topic`. Events arrive here in offset order; one already held is ignored,
    /// and one past a gap makes the hub ask for a [`sync`](Feed::sync) (through
    /// [`Broker::follow`]). A payload that is not an event this crate encoded, or an invalid
    /// epoch, is dropped with a warning and counted in
    /// [`HubStats::rejected`](super::HubStats::rejected).
    pub fn event(&self, topic: &str, epoch: &str, offset: u64, payload: Bytes) {
        let Some((core, shared)) = self.topic(topic) else {
            return;
        };
        let Some(event) = checked(&core, topic, epoch, payload) else {
            return;
        };
        if shared.feed_event(epoch, offset, event) {
            if let Some(broker) = &core.config.broker {
                broker.follow(topic);
            }
        }
    }

    /// The newest history of `topic`, read after the broker was sure to deliver every event from
    /// then on. Subscribers continue without a gap when it reaches back to what this hub holds,
    /// and are told `history-lost` when it cannot (the epoch changed, or the history was trimmed).
    pub fn sync(&self, topic: &str, snapshot: Snapshot) {
        let Some((core, shared)) = self.topic(topic) else {
            return;
        };
        let Snapshot {
            epoch,
            head,
            events,
        } = snapshot;
        let epoch = match epoch {
            Some(epoch) if valid_epoch(&epoch) => Some(epoch),
            Some(epoch) => {
                reject(&core, topic, "invalid epoch in a snapshot", &epoch);
                return;
            }
            None => None,
        };
        let mut events: Vec<(u64, Event)> = events
            .into_iter()
            .filter_map(|(offset, payload)| {
                let event = checked(&core, topic, epoch.as_deref().unwrap_or("0"), payload)?;
                Some((offset, event))
            })
            .filter(|(offset, _)| *offset >= 1 && *offset <= head)
            .collect();
        events.sort_by_key(|(offset, _)| *offset);
        events.dedup_by_key(|(offset, _)| *offset);
        // Keep the run that ends at the head without a hole: anything before a hole cannot be
        // delivered in order anyway.
        let mut keep = events.len();
        let mut expect = head;
        while keep > 0 && events[keep - 1].0 == expect {
            keep -= 1;
            expect -= 1;
        }
        events.drain(..keep);
        shared.feed_sync(epoch, head, events);
    }

    /// The broker lost its connection: every followed topic waits for a [`sync`](Feed::sync).
    /// Open streams stay open (keep-alives flow) and continue from where they were.
    pub fn disconnected(&self) {
        let Some(topics) = self.topics.upgrade() else {
            return;
        };
        let topics: Vec<_> = lock(&topics).values().cloned().collect();
        for shared in topics {
            shared.feed_disconnected();
        }
    }
}

/// The event in `payload`, if it and `epoch` are valid; otherwise counted and logged.
fn checked(core: &Core, topic: &str, epoch: &str, payload: Bytes) -> Option<Event> {
    if !valid_epoch(epoch) {
        reject(core, topic, "invalid epoch", epoch);
        return None;
    }
    match Event::from_wire(payload) {
        Some(event) => Some(event),
        None => {
            reject(core, topic, "payload is not an event", "");
            None
        }
    }
}

fn reject(core: &Core, topic: &str, why: &str, what: &str) {
    core.counters
        .rejected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(topic, what, "hub dropped a message from its broker: {why}");
}

/// Why a [`Topic::publish`](super::Topic::publish) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The event cannot take the hub's id (see [`Event::with_id_if_missing`]); the history is
    /// unchanged.
    Event(EventError),
    /// The event has an `id` of its own, and this hub shares its topics through a broker, which
    /// numbers every event so that any server can resume from it. Publish it without one.
    OwnId,
    /// The broker could not be reached, or refused the event. The text is the engine's, for logs.
    Unavailable(String),
    /// The broker did not answer within this time.
    Timeout(Duration),
    /// Too many publishes are waiting for the broker already.
    Overloaded,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Event(err) => write!(f, "event cannot be published: {err}"),
            PublishError::OwnId => f.write_str(
                "a hub with a broker numbers events itself; publish the event without an id",
            ),
            PublishError::Unavailable(why) => write!(f, "hub broker unavailable: {why}"),
            PublishError::Timeout(after) => {
                write!(f, "hub broker did not answer within {after:?}")
            }
            PublishError::Overloaded => f.write_str("too many publishes waiting for the broker"),
        }
    }
}

impl StdError for PublishError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PublishError::Event(err) => Some(err),
            _ => None,
        }
    }
}

impl From<EventError> for PublishError {
    fn from(err: EventError) -> Self {
        PublishError::Event(err)
    }
}

/// A publication under way: await it for the event's id. Returned by
/// [`Topic::publish`](super::Topic::publish).
///
/// The event is published whether or not this is awaited, so a hook or a sync caller can drop
/// it. On the in-memory hub it is done before `publish` returns. With a broker it runs on a
/// task of its own, and a failure is also logged as a warning, so none goes unseen.
#[derive(Debug)]
pub struct Publish {
    state: PublishState,
}

#[derive(Debug)]
enum PublishState {
    Ready(Option<Result<String, PublishError>>),
    Task(tokio::task::JoinHandle<Result<String, PublishError>>),
}

impl Publish {
    pub(super) fn ready(result: Result<String, PublishError>) -> Publish {
        Publish {
            state: PublishState::Ready(Some(result)),
        }
    }

    pub(super) fn spawn(
        future: impl Future<Output = Result<String, PublishError>> + Send + 'static,
    ) -> Publish {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => Publish {
                state: PublishState::Task(handle.spawn(future)),
            },
            Err(_) => Publish::ready(Err(PublishError::Unavailable(
                "no Tokio runtime to publish from".into(),
            ))),
        }
    }

    /// Lets the publication finish on its own: the event is still published, and a failure is
    /// logged (with a broker also counted in
    /// [`HubStats::publish_failed`](super::HubStats::publish_failed)). For hooks and other code
    /// that cannot wait.
    pub fn detach(self) {
        if let PublishState::Ready(Some(Err(err))) = &self.state {
            tracing::warn!(error = %err, "hub publish failed");
        }
    }

    /// The outcome, if it is known already: always on the in-memory hub. Sync code uses this.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let id = hub.topic("t").publish(tower_sse::Event::message("x")).now().unwrap().unwrap();
    /// assert!(id.ends_with("-1"));
    /// ```
    pub fn now(self) -> Option<Result<String, PublishError>> {
        match self.state {
            PublishState::Ready(result) => result,
            PublishState::Task(handle) if handle.is_finished() => {
                let waker = std::task::Waker::noop();
                let mut handle = handle;
                match Pin::new(&mut handle).poll(&mut Context::from_waker(waker)) {
                    Poll::Ready(result) => Some(joined(result)),
                    Poll::Pending => None,
                }
            }
            PublishState::Task(_) => None,
        }
    }
}

fn joined(
    result: Result<Result<String, PublishError>, tokio::task::JoinError>,
) -> Result<String, PublishError> {
    result.unwrap_or_else(|err| Err(PublishError::Unavailable(format!("publish task: {err}"))))
}

impl Future for Publish {
    type Output = Result<String, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            PublishState::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(PublishError::Unavailable(
                    "publish polled after it finished".into(),
                ))
            })),
            PublishState::Task(handle) => Pin::new(handle).poll(cx).map(joined),
        }
    }
}
