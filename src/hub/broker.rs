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
//!   ([`Feed::event_at`]), and once it is sure of that, read the newest history for a ticket
//!   ([`Feed::begin_sync`], then [`Feed::sync`]). The hub merges the two at the seam by offset:
//!   nothing twice, nothing missed, or a `history-lost` event when the history cannot bridge a
//!   gap. `follow` is also how the hub asks for a fresh read: when it sees a gap, or when a
//!   client resumes from an id this hub has not received yet.
//! - When the broker loses its connection it calls [`Feed::disconnected`], reconnects, follows
//!   again what it followed, and reads each topic again, so subscribers see no gap. An engine
//!   whose history holds every event in offset order (the Postgres engine's table) may instead
//!   deliver, once reconnected, every event after the newest it delivered, and make again the
//!   reads the hub was still waiting for.
//!
//! Every read belongs to one ticket, and only the newest ticket of a topic counts: an answer
//! that arrives after the topic was unfollowed and followed again, or after a disconnect, is
//! dropped. An event's age ([`HubBuilder::history_age`](super::HubBuilder::history_age)) counts
//! from its publishing time as the engine reports it, so every hub trims alike.
//!
//! [`Topic::publish`]: super::Topic::publish

use super::id::id_of;
use super::publish::PublishError;
use crate::Event;
use bytes::Bytes;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};

/// A boxed future a [`Broker`] returns from [`Broker::publish`].
pub type BrokerFuture = Pin<Box<dyn Future<Output = Result<Position, PublishError>> + Send>>;

/// An engine that shares a hub's topics between hubs (server processes): orders each topic's
/// events, keeps their history, and delivers them to every hub that follows the topic.
///
/// See the [module docs](self) for the contract. The crate's engines are `RedisBroker`, in the
/// `redis` module (feature `redis`), and `PostgresBroker`, in the `postgres` module (feature
/// `postgres`).
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Called once, when the hub is built: where to deliver events and histories.
    fn attach(&self, feed: Feed);

    /// Publishes `event` (which has no `id`; the position becomes its id) to `topic`.
    ///
    /// The hub runs the returned future on a task of its own, so it runs to the end even when
    /// nobody awaits the [`Publish`](super::Publish). It must finish in bounded time, with an error when the
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

/// The newest part of a topic's shared history, read by a broker for a [`SyncTicket`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(super) epoch: Option<String>,
    pub(super) head: u64,
    pub(super) events: Vec<(u64, Option<SystemTime>, Bytes)>,
}

impl Snapshot {
    /// A topic the engine holds nothing for (never published, expired, or lost).
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// A topic in `epoch` whose newest event has offset `head`; add its newest events with
    /// [`push_at`](Snapshot::push_at), in any order.
    pub fn new(epoch: impl Into<String>, head: u64) -> Snapshot {
        Snapshot {
            epoch: Some(epoch.into()),
            head,
            events: Vec::new(),
        }
    }

    /// Adds the event at `offset`, as [`Broker::publish`] received it (its encoded bytes),
    /// published at `published` by the engine's clock. A payload that is not an event is kept
    /// as a hole at its offset (counted in [`HubStats::rejected`](super::HubStats::rejected)):
    /// it costs none of the events after it. Of two entries for one offset, an event wins over
    /// junk, then the one pushed later. The hub's
    /// [`history_age`](super::HubBuilder::history_age) counts from that time, so every hub on
    /// the engine gives one answer for the same topic.
    pub fn push_at(&mut self, offset: u64, published: SystemTime, payload: Bytes) {
        self.events.push((offset, Some(published), payload));
    }

    /// Like [`push_at`](Snapshot::push_at), for an engine that does not know when the event was
    /// published: its age then counts from its arrival.
    pub fn push(&mut self, offset: u64, payload: Bytes) {
        self.events.push((offset, None, payload));
    }
}

/// A read of one topic's history the hub asked for: the broker gets one from
/// [`Feed::begin_sync`] before it reads, and hands it back with the answer to [`Feed::sync`].
///
/// The hub applies only the answer to the newest ticket it handed out for the topic: a read made
/// for an earlier follow, or before the broker lost its connection, is stale and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTicket {
    pub(super) topic: Arc<str>,
    pub(super) number: u64,
    pub(super) after: Option<Position>,
}

impl SyncTicket {
    /// The topic to read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The newest position the hub holds for the topic, if any: the read needs nothing at or
    /// before it (when its epoch is still the topic's).
    pub fn after(&self) -> Option<&Position> {
        self.after.as_ref()
    }
}

/// The hub's side of a [`Feed`]: what a broker's reports do to the hub.
pub(super) trait Hubward: Send + Sync {
    fn history(&self) -> usize;
    fn history_age(&self) -> Option<Duration>;
    fn last_position(&self, topic: &str) -> Option<Position>;
    fn event(&self, topic: &str, epoch: &str, offset: u64, at: Option<SystemTime>, payload: Bytes);
    fn begin_sync(&self, topic: &str) -> Option<SyncTicket>;
    fn sync(&self, ticket: SyncTicket, snapshot: Snapshot);
    fn disconnected(&self);
}

/// A broker's way back into its hub. Cloning is cheap; it holds the hub weakly, so a broker's
/// task can end when the hub is gone ([`is_closed`](Feed::is_closed)).
#[derive(Clone)]
pub struct Feed {
    pub(super) hub: Weak<dyn Hubward>,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Feed {
    /// Whether the hub is gone: a broker's task should stop.
    pub fn is_closed(&self) -> bool {
        self.hub.strong_count() == 0
    }

    /// The most events the hub keeps per topic ([`HubBuilder::history`](super::HubBuilder::history)):
    /// how much history a broker should keep and read.
    pub fn history(&self) -> usize {
        self.hub.upgrade().map_or(0, |hub| hub.history())
    }

    /// The hub's [`history_age`](super::HubBuilder::history_age), if set.
    pub fn history_age(&self) -> Option<Duration> {
        self.hub.upgrade().and_then(|hub| hub.history_age())
    }

    /// The newest position this hub holds for `topic`, if any.
    pub fn last_position(&self, topic: &str) -> Option<Position> {
        self.hub.upgrade()?.last_position(topic)
    }

    /// A live event of `topic`, whose publishing time is not known (its age counts from now).
    /// See [`event_at`](Feed::event_at).
    pub fn event(&self, topic: &str, epoch: &str, offset: u64, payload: Bytes) {
        if let Some(hub) = self.hub.upgrade() {
            hub.event(topic, epoch, offset, None, payload);
        }
    }

    /// A live event of `topic`, published at `published` by the engine's clock. Events arrive
    /// here in offset order; one already held is ignored. One past a gap, of another epoch than
    /// the hub holds, or at a position the hub holds with other bytes makes the hub ask for a
    /// read (through [`Broker::follow`]): only a read of the history changes a topic's epoch. A
    /// payload that is not an event this crate encoded is dropped with a warning and counted in
    /// [`HubStats::rejected`](super::HubStats::rejected), and takes no position (if it stood
    /// for a real one, the next event shows the gap and the read fills it); a message with an
    /// invalid epoch is dropped the same way.
    pub fn event_at(
        &self,
        topic: &str,
        epoch: &str,
        offset: u64,
        published: SystemTime,
        payload: Bytes,
    ) {
        if let Some(hub) = self.hub.upgrade() {
            hub.event(topic, epoch, offset, Some(published), payload);
        }
    }

    /// Call right before reading `topic`'s history, once the broker is sure to deliver every
    /// event of the topic from now on: the ticket to hand back with the answer to
    /// [`sync`](Feed::sync). `None` when the hub does not follow the topic (no read is needed).
    /// Every later call makes the tickets before it stale.
    pub fn begin_sync(&self, topic: &str) -> Option<SyncTicket> {
        self.hub.upgrade()?.begin_sync(topic)
    }

    /// The newest history of a topic, read for `ticket`. Subscribers continue without a gap when
    /// it reaches back to what this hub holds, and are told `history-lost` when it cannot (the
    /// epoch changed, or the history was trimmed). The answer to a stale ticket is dropped.
    pub fn sync(&self, ticket: SyncTicket, snapshot: Snapshot) {
        if let Some(hub) = self.hub.upgrade() {
            hub.sync(ticket, snapshot);
        }
    }

    /// The broker lost its connection: every followed topic waits for a sync, and tickets
    /// handed out so far are stale. Open streams stay open (keep-alives flow) and continue from
    /// where they were.
    pub fn disconnected(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.disconnected();
        }
    }
}
