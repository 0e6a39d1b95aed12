//! Fan-out: publish an event once, deliver it to every subscriber of a topic.
//!
//! A [`Hub`] holds named [`Topic`]s. Publishing encodes nothing again and copies no event bytes:
//! each topic keeps one ring of [`Event`]s (each a shared [`Bytes`](bytes::Bytes)), and every
//! [`Subscription`] is a cursor into that ring. The ring is at once
//!
//! - the **history** a reconnecting client replays from its `Last-Event-ID`, bounded by count,
//!   bytes and age, and
//! - every subscriber's **buffer**: how far a subscriber may fall behind the newest event is
//!   bounded by events and by bytes ([`HubBuilder::max_lag`]).
//!
//! So a subscriber that never reads costs a cursor, not a queue, however much is published.
//!
//! # Never silent
//!
//! - A subscriber that falls further behind than allowed gets the [`LagPolicy`]: `Evict` ends its
//!   stream with a final [`EVICTED`] event carrying a `retry` hint (it reconnects and replays from
//!   its last id), `Skip` jumps it to the newest event (which it then receives) after a [`MISSED`]
//!   event that says how many it missed.
//! - A subscriber whose `Last-Event-ID` is no longer in the history (too old, from another server
//!   run or another topic, or unknown) receives a [`HISTORY_LOST`] event first, then what a
//!   subscriber without an id gets (the `recent` newest events of
//!   [`Topic::subscribe_with_recent`], none with [`Topic::subscribe`]), then live events, so the
//!   app can resync; it never gets a silent partial replay.
//! - Every case is counted in [`HubStats`].
//!
//! # Ordering
//!
//! Events of one topic are totally ordered by publication (publishing takes the topic's lock).
//! Each subscriber receives them in that order, each exactly once, with no gap except the ones
//! a control event announces. Replay then live is one read of the same ring, so there is no gap
//! and no duplicate at the seam, even under concurrent publishing.
//!
//! # Ids
//!
//! An event published without an `id` gets one from the hub: `<tag>-<n>`, where `n` counts up per
//! topic and `<tag>` is random per topic (made when the topic is), so an id from an earlier
//! server run, from another topic, or from a topic that was removed and made again is recognised
//! as unknown instead of being mistaken for a position. Events published with their own ids keep
//! them and are found by exact match.
//!
//! # Many processes
//!
//! A hub built with a [`Broker`] ([`HubBuilder::broker`], `HubBuilder::redis` with feature
//! `redis`, or `HubBuilder::postgres` with feature `postgres`) shares its topics with every hub on the same broker: handlers do not change. The
//! broker orders each topic's events and numbers them `<epoch>-<offset>`; a client resumes from
//! its `Last-Event-ID` on any of the hubs; an id from a lost history (another epoch) gets
//! [`HISTORY_LOST`]. Events published with their own id are refused
//! ([`PublishError::OwnId`]): only broker-made ids can be resumed from anywhere. Each hub
//! still fans out locally through its ring, so everything below holds per process. See
//! [`broker`] for the contract, the `redis` module for the Redis engine and the `postgres`
//! module for the Postgres engine (where `Topic::publish_in` publishes inside the app's own
//! transaction).
//!
//! A subscription on a topic that has no other subscriber in this process starts once the hub
//! follows the topic and has read its newest history from the broker (a round trip): without a
//! `Last-Event-ID`, events published in that moment count as before it. A `Last-Event-ID` that
//! this process has not received yet (the client read it from a process ahead of this one) is
//! looked up in a fresh read, and the subscription continues right after it; only an id that
//! the broker's history does not hold either is answered with [`HISTORY_LOST`].
//!
//! What the builder accepts crosses the broker unchanged (an empty event name included); a
//! message from the broker that is not an event this crate encoded is dropped and counted
//! ([`HubStats::rejected`]), and its position is passed over, so it costs none of the events
//! after it.
//!
//! # What "bounded" means
//!
//! A topic holds at most [`history`](HubBuilder::history) events and
//! [`history_bytes`](HubBuilder::history_bytes) bytes of encoded events (plus, per event, about 64
//! bytes of bookkeeping), and nothing older than [`history_age`](HubBuilder::history_age). A
//! subscriber holds a cursor, a waker, and at most one pending control event.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use futures_util::StreamExt;
//! use tower_sse::{hub::Hub, Event, LastEventId};
//!
//! let hub = Hub::new();
//! let room = hub.topic("lobby");
//! let mut alice = room.subscribe(None);
//!
//! let id = room.publish(Event::message("hello")).await.unwrap();
//! let got = alice.next().await.unwrap();
//! assert_eq!(got.id(), Some(id.as_str()));
//!
//! // Bob reconnects having seen nothing after `id`: he replays what came next, then goes live.
//! room.publish(Event::message("you missed this")).await.unwrap();
//! let last = LastEventId::parse(id.as_bytes()).unwrap();
//! let mut bob = room.subscribe(Some(&last));
//! assert!(std::str::from_utf8(bob.next().await.unwrap().as_bytes()).unwrap().contains("you missed this"));
//! assert_eq!(hub.stats().subscribers, 2);
//! # }
//! ```

#[cfg(any(feature = "redis", feature = "postgres"))]
mod backoff;
pub mod broker;
mod cursor;
mod feed;
mod id;
mod merge;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
mod publish;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod ring;
mod subscription;
mod topic;

use crate::sync::lock;

pub use broker::Broker;
pub use cursor::LagPolicy;
pub use publish::{Publish, PublishError};
pub use subscription::Subscription;
pub use topic::Topic;

use crate::Event;
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

/// Name of the final event sent to a subscriber evicted for falling behind.
pub const EVICTED: &str = "evicted";
/// Name of the event sent when a subscriber skipped events to catch up.
pub const MISSED: &str = "missed";
/// Name of the event sent when a `Last-Event-ID` cannot be resumed from the history.
pub const HISTORY_LOST: &str = "history-lost";

/// A snapshot of a hub's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Topics that exist now.
    pub topics: usize,
    /// Subscribers connected now, over all topics.
    pub subscribers: u64,
    /// Events published since the hub was created.
    pub published: u64,
    /// Events handed to subscribers (replayed or live), control events excluded.
    pub delivered: u64,
    /// Events subscribers jumped over under [`LagPolicy::Skip`].
    pub skipped: u64,
    /// Subscribers evicted under [`LagPolicy::Evict`].
    pub evicted: u64,
    /// Subscribers told [`HISTORY_LOST`].
    pub history_lost: u64,
    /// Publishes the [broker] failed (each also returned its error and was logged).
    pub publish_failed: u64,
    /// Messages from the broker dropped because they were not valid events (logged).
    pub rejected: u64,
    /// History reads the [broker] answered (each follow of a topic, each gap bridged, each
    /// burst of resumes from ids this process has not received yet), stale ones included.
    /// Resumes that the process's own history covers cost none, and the Redis engine runs one
    /// read at a time per topic, so a burst of resumes shares its reads. Always 0 in memory:
    /// a resume there finds its position in the history by arithmetic, with nothing to read.
    pub history_reads: u64,
    /// Subscriptions refused because their grants do not allow the topic
    /// ([`Subscription::granted`]), each logged.
    pub forbidden: u64,
}

#[derive(Debug, Default)]
struct Counters {
    subscribers: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    skipped: AtomicU64,
    evicted: AtomicU64,
    history_lost: AtomicU64,
    publish_failed: AtomicU64,
    rejected: AtomicU64,
    history_reads: AtomicU64,
    forbidden: AtomicU64,
}

type Hook = Arc<dyn Fn(&Topic, usize) + Send + Sync>;

/// Settings and counters shared by a hub and all its topics.
#[derive(Debug)]
struct Core {
    config: HubBuilder,
    counters: Counters,
}

impl Core {
    /// Runs a presence hook; a panicking hook is contained, so it can never take down the
    /// connection (or the publisher) that triggered it.
    fn run_hook(hook: &Option<Hook>, topic: &Topic, count: usize) {
        if let Some(hook) = hook {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(topic, count)));
        }
    }
}

/// Many topics, each fanning events out to its subscribers. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Hub {
    core: Arc<Core>,
    topics: Arc<topic::Topics>,
    closed: Arc<Mutex<Option<Option<Event>>>>,
    /// The broker's way in, kept alive by the hub (the broker holds it weakly).
    side: Arc<Mutex<Option<Arc<dyn broker::Hubward>>>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("core", &self.core)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::builder().build()
    }
}

impl Hub {
    /// A hub with the default settings (see [`HubBuilder`]).
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Starts configuring a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// The topic with this name, created if it does not exist.
    pub fn topic(&self, name: &str) -> Topic {
        let mut topics = lock(&self.topics);
        if let Some(shared) = topics.get(name) {
            return Topic::from_shared(shared.clone(), self.clone());
        }
        let name: Arc<str> = name.into();
        let shared = Arc::new(topic::Shared::new(name.clone(), self.core.clone()));
        if let Some(final_event) = lock(&self.closed).clone() {
            shared.close(final_event);
        }
        topics.insert(name, shared.clone());
        Topic::from_shared(shared, self.clone())
    }

    /// The topic with this name, if it exists.
    pub fn get(&self, name: &str) -> Option<Topic> {
        let shared = lock(&self.topics).get(name)?.clone();
        Some(Topic::from_shared(shared, self.clone()))
    }

    /// Names of the topics that exist now.
    pub fn topic_names(&self) -> Vec<String> {
        lock(&self.topics).keys().map(|k| k.to_string()).collect()
    }

    /// Removes topics that nobody uses: no subscriber, no [`Topic`] handle held elsewhere, and no
    /// history left once events older than [`history_age`](HubBuilder::history_age) are dropped.
    /// Topics are also removed on their own when their last subscriber leaves and they hold no
    /// history; call this now and then when many short-lived topics keep history.
    pub fn prune(&self) -> usize {
        let mut topics = lock(&self.topics);
        let before = topics.len();
        topics.retain(|_, shared| Arc::strong_count(shared) > 1 || !shared.is_idle(true));
        before - topics.len()
    }

    /// Ends every subscription: each first delivers the events already published, then
    /// `final_event` if given, then its stream ends; the [`SseBody`](crate::SseBody) sending
    /// it adds a come-back block last (`retry: <ms>\n: server shutting down, reconnect\n\n`,
    /// the delay drawn from the layer's [`come_back`](crate::SseLayer::come_back) window). Subscriptions made afterwards end the same way at once. Publishing
    /// still works, for whatever the history should hold. For how this fits a graceful server
    /// shutdown, see [`Shutdown`](crate::Shutdown#stopping-a-server-gracefully).
    pub fn close(&self, final_event: Option<Event>) {
        let mut topics = lock(&self.topics);
        *lock(&self.closed) = Some(final_event.clone());
        for shared in topics.values_mut() {
            shared.close(final_event.clone());
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> HubStats {
        let c = &self.core.counters;
        HubStats {
            topics: lock(&self.topics).len(),
            subscribers: c.subscribers.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            history_lost: c.history_lost.load(Ordering::Relaxed),
            publish_failed: c.publish_failed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            history_reads: c.history_reads.load(Ordering::Relaxed),
            forbidden: c.forbidden.load(Ordering::Relaxed),
        }
    }

    /// Removes `shared` from the map if it is unused: called when a subscriber leaves.
    fn remove_if_unused(&self, shared: &Arc<topic::Shared>) {
        let mut topics = lock(&self.topics);
        // The map's reference and the caller's: nobody else holds the topic.
        if Arc::strong_count(shared) == 2 && shared.is_idle(false) {
            topics.remove(shared.name());
        }
    }
}

/// Configures a [`Hub`].
#[derive(Clone)]
#[must_use]
pub struct HubBuilder {
    history: usize,
    history_bytes: usize,
    history_age: Option<Duration>,
    max_lag_events: u64,
    max_lag_bytes: u64,
    policy: LagPolicy,
    on_join: Option<Hook>,
    on_leave: Option<Hook>,
    broker: Option<Arc<dyn Broker>>,
    /// The broker again when it is the Postgres engine: what transactional publishes use.
    #[cfg(feature = "postgres")]
    postgres: Option<postgres::PostgresBroker>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("history", &self.history)
            .field("history_bytes", &self.history_bytes)
            .field("history_age", &self.history_age)
            .field("max_lag_events", &self.max_lag_events)
            .field("max_lag_bytes", &self.max_lag_bytes)
            .field("policy", &self.policy)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl Default for HubBuilder {
    fn default() -> Self {
        HubBuilder {
            history: 1024,
            history_bytes: 4 * 1024 * 1024,
            history_age: None,
            max_lag_events: 512,
            max_lag_bytes: 1024 * 1024,
            policy: LagPolicy::default(),
            on_join: None,
            on_leave: None,
            broker: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }
}

impl HubBuilder {
    /// The most events a topic keeps, for replay and as subscribers' shared buffer. Default: 1024.
    /// At least 1.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// The most bytes of encoded events a topic keeps. Default: 4 MiB. The newest event is always
    /// kept, whatever its size.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// Drops events older than this from the history. Default: no age limit.
    ///
    /// The age counts from when the event was published; with a [`broker`](HubBuilder::broker),
    /// by the broker's clock (Redis's, for the Redis engine), so every hub on it gives the same
    /// answer for the same topic, whether it received the event live or read it back later.
    pub fn history_age(mut self, age: Duration) -> Self {
        self.history_age = Some(age);
        self
    }

    /// How far a subscriber may fall behind the newest event, in events and in bytes, before the
    /// [`LagPolicy`] applies. Default: 512 events, 1 MiB. A subscriber whose next event has been
    /// dropped from the history is behind in any case.
    pub fn max_lag(mut self, events: u64, bytes: u64) -> Self {
        self.max_lag_events = events.max(1);
        self.max_lag_bytes = bytes.max(1);
        self
    }

    /// What happens to a subscriber that falls behind. Default: [`LagPolicy::Evict`].
    pub fn lag_policy(mut self, policy: LagPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Called after a subscriber joins a topic, with the topic and its new subscriber count.
    /// Runs outside the topic's lock (it may publish); a panic in it is contained.
    pub fn on_join(mut self, hook: impl Fn(&Topic, usize) + Send + Sync + 'static) -> Self {
        self.on_join = Some(Arc::new(hook));
        self
    }

    /// Called after a subscriber leaves a topic (its stream was dropped: the client
    /// disconnected, or it was evicted), with the topic and its new subscriber count.
    /// Runs outside the topic's lock (it may publish); a panic in it is contained.
    pub fn on_leave(mut self, hook: impl Fn(&Topic, usize) + Send + Sync + 'static) -> Self {
        self.on_leave = Some(Arc::new(hook));
        self
    }

    /// Shares the hub's topics with other hubs (other server processes) through `broker`: an
    /// event published on any of them reaches every subscriber of every one, in one order per
    /// topic, and a client resumes from its `Last-Event-ID` on any of them. See [`broker`].
    pub fn broker(mut self, broker: impl Broker) -> Self {
        #[cfg(feature = "postgres")]
        {
            let any: &dyn std::any::Any = &broker;
            self.postgres = any.downcast_ref::<postgres::PostgresBroker>().cloned();
        }
        self.broker = Some(Arc::new(broker));
        self
    }

    /// Shares the hub's topics through Redis, with [`RedisBroker`](redis::RedisBroker)'s
    /// default settings: the one line that turns a hub into one of many.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    /// let hub = tower_sse::hub::Hub::builder().redis(client).build();
    /// # drop(hub);
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(self, client: ::redis::Client) -> Self {
        self.broker(redis::RedisBroker::new(client))
    }

    /// Shares the hub's topics through PostgreSQL, with
    /// [`PostgresBroker`](postgres::PostgresBroker)'s default settings (it creates its tables
    /// when it starts), and lets [`Topic::publish_in`] publish inside the app's transactions.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// let pool = sqlx::PgPool::connect_lazy("postgres://app@127.0.0.1/app").unwrap();
    /// let hub = tower_sse::hub::Hub::builder().postgres(pool).build();
    /// # drop(hub);
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(self, pool: sqlx::PgPool) -> Self {
        self.broker(postgres::PostgresBroker::new(pool))
    }

    /// Creates the hub. With a [`broker`](HubBuilder::broker), call it within a Tokio runtime:
    /// the broker starts its connection here.
    pub fn build(self) -> Hub {
        let broker = self.broker.clone();
        let hub = Hub {
            core: Arc::new(Core {
                config: self,
                counters: Counters::default(),
            }),
            topics: Arc::default(),
            closed: Arc::default(),
            side: Arc::default(),
        };
        if let Some(broker) = broker {
            let side: Arc<dyn broker::Hubward> = Arc::new(feed::HubSide {
                core: Arc::downgrade(&hub.core),
                topics: Arc::downgrade(&hub.topics),
            });
            broker.attach(broker::Feed {
                hub: Arc::downgrade(&side),
            });
            *lock(&hub.side) = Some(side);
        }
        hub
    }
}

/// Builds one of the hub's own control events. Their fields are fixed and valid.
fn control_event(name: &str, data: &str) -> Event {
    Event::builder()
        .event(name)
        .data(data)
        .build()
        .unwrap_or_else(|_| Event::message(data))
}
