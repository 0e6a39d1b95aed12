//! A [`Broker`] on Redis: many server processes share their hubs' topics (feature `redis`).
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use tower_sse::hub::{redis::RedisBroker, Hub};
//!
//! let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
//! // Every server process builds its hub the same way; handlers do not change.
//! let hub = Hub::builder().history(1000).redis(client).build();
//! let id = hub.topic("room").publish(tower_sse::Event::message("hi")).await.unwrap();
//! # let _ = (id, RedisBroker::new);
//! # }
//! ```
//!
//! # How
//!
//! - **Publish** runs one Lua script, so it is atomic: it numbers the event (`HINCRBY` on the
//!   topic's hash, which also holds the topic's epoch), appends it to the topic's Redis Stream
//!   (`XADD` trimmed to [`history`](super::HubBuilder::history) with `MAXLEN ~`, and by
//!   [`history_age`](super::HubBuilder::history_age) with `MINID ~`, measured by Redis's clock;
//!   `~` lets Redis trim whole blocks of entries, so the stream may hold somewhat more, while a
//!   hub still reads back at most `history` events),
//!   refreshes both keys' time to live, and `PUBLISH`es it to the topic's channel. It returns the
//!   event's id, `<epoch>-<offset>`: a valid SSE id, strictly increasing per topic.
//! - **Epoch**: a random tag stored with the topic, made by the first publish after the topic's
//!   keys are gone (never published, expired after [`topic_ttl`](RedisBroker::topic_ttl), flushed,
//!   or lost with a Redis restart without persistence). An id from another epoch is recognised
//!   and answered with `history-lost`, never mistaken for a position.
//! - **Delivery**: each hub keeps **one** pub/sub connection, subscribed to a topic's channel
//!   while it has local subscribers to it, plus one multiplexed connection for publishing and
//!   reading history. Events reach local subscribers through the hub's ring, as in one process.
//! - **Resume anywhere**: when a hub starts following a topic it subscribes first, then reads the
//!   stream's newest events (one script: epoch, head and events together), and merges the two by
//!   offset, so a client resuming on any hub gets every event after its id, once. A hub that
//!   lags behind Redis (its pub/sub deliveries are late) and is asked to resume from an id it has
//!   not received yet reads the stream again for it, and continues right after that id.
//! - **Age**: every entry is stamped by Redis's clock (its stream id); publishes carry the stamp
//!   and reads are measured against Redis's `TIME`, so
//!   [`history_age`](super::HubBuilder::history_age) gives one answer on every hub, for events
//!   received live and read back alike (a hub whose own clock runs ahead of Redis's by `d` drops
//!   live events `d` early).
//! - **Faults**: when the connection drops (or a ping goes unanswered), subscribers keep their
//!   streams (keep-alives flow); the broker reconnects with jittered exponential back-off,
//!   subscribes again and reads from each topic's stream what its subscribers missed. If the
//!   stream cannot bridge the gap (trimmed, or a new epoch), subscribers get `history-lost`, then
//!   the events that follow. While Redis is unreachable, publish fails with
//!   [`PublishError`] within [`publish_timeout`](RedisBroker::publish_timeout), and at most
//!   [`max_pending`](RedisBroker::max_pending) publishes wait at once.
//!
//! # Counts are per process
//!
//! [`Topic::subscribers`](super::Topic::subscribers), [`HubStats`](super::HubStats) and the
//! presence hooks count this process's subscribers. A cluster-wide count is not kept: it would
//! need every node to write its count for every followed topic on a heartbeat (nodes × topics
//! writes per period, on the one Redis every publish goes through), stay stale for up to that
//! period, and still be wrong for a period after a node dies. Sum `Topic::subscribers` across
//! nodes in your metrics instead.
//!
//! # Keys
//!
//! For a topic `T` and the default prefix `tower-sse`: the hash `tower-sse:m:T` (epoch and last
//! offset), the stream `tower-sse:s:T` (fields `o`, the offset, and `d`, the encoded event
//! without its id) and the channel `tower-sse:c:T` (messages `<epoch> <offset> <ms> <event>`,
//! `ms` being the entry's time by Redis's clock). Whatever arrives that is not an event this
//! crate encoded is dropped and counted ([`HubStats::rejected`](super::HubStats::rejected)); its
//! offset is passed over, so it costs none of the events after it.

mod session;
mod wire;

use super::broker::{Broker, BrokerFuture, Feed, Position};
use super::id::random_tag;
use super::publish::PublishError;
use crate::Event;
use redis::{aio::ConnectionManager, Script};
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};
use tokio::sync::{mpsc, Semaphore};

/// Numbers, stores and publishes one event (see the script for its keys and arguments).
const PUBLISH: &str = include_str!("publish.lua");

/// Reads a topic's epoch, head and newest events at once.
const READ: &str = include_str!("read.lua");

#[derive(Debug, Clone)]
pub(super) struct Config {
    prefix: String,
    publish_timeout: Duration,
    connect_timeout: Duration,
    topic_ttl: Duration,
    max_pending: usize,
    backoff: (Duration, Duration),
    ping_every: Duration,
}

/// Shares hubs' topics through Redis; see the [module docs](self).
///
/// Cloning is cheap and shares the connection: keep a clone to watch
/// [`is_connected`](RedisBroker::is_connected).
#[derive(Clone)]
pub struct RedisBroker {
    config: Config,
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    client: redis::Client,
    publish: Script,
    read: Script,
    started: OnceLock<Started>,
    connected: AtomicBool,
    reconnects: AtomicU64,
}

/// What exists once the broker is attached to a hub inside a runtime.
pub(super) struct Started {
    config: Config,
    conn: ConnectionManager,
    commands: mpsc::UnboundedSender<Command>,
    pending: Arc<Semaphore>,
    history: usize,
    history_age: Option<Duration>,
}

pub(super) enum Command {
    Follow(String),
    Unfollow(String),
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.config)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

impl RedisBroker {
    /// A broker on the Redis server `client` points to, with the default settings.
    pub fn new(client: redis::Client) -> RedisBroker {
        RedisBroker {
            config: Config {
                prefix: "tower-sse".into(),
                publish_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(2),
                topic_ttl: Duration::from_secs(24 * 3600),
                max_pending: 10_000,
                backoff: (Duration::from_millis(100), Duration::from_secs(5)),
                ping_every: Duration::from_secs(5),
            },
            inner: Arc::new(Inner {
                client,
                publish: Script::new(PUBLISH),
                read: Script::new(READ),
                started: OnceLock::new(),
                connected: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// Prefix of every key and channel. Default: `tower-sse`. Hubs that share topics must use the
    /// same one; different prefixes keep apps on one Redis apart.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The longest a publish waits for Redis, connecting included, before it fails with
    /// [`PublishError::Timeout`]. Default: 2 s. Also bounds connecting the pub/sub connection.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = crate::delay::saturate(timeout.max(Duration::from_millis(1)));
        self.config.connect_timeout = self.config.publish_timeout;
        self
    }

    /// How long a topic nobody publishes to keeps its history and epoch in Redis. Default: 24
    /// hours. Each publish starts it again; once it passes, the next publish starts a new epoch.
    pub fn topic_ttl(mut self, ttl: Duration) -> Self {
        self.config.topic_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How many publishes may wait for Redis at once; more fail at once with
    /// [`PublishError::Overloaded`]. Default: 10,000.
    pub fn max_pending(mut self, publishes: usize) -> Self {
        self.config.max_pending = publishes.max(1);
        self
    }

    /// Bounds of the reconnection back-off: it starts at `min`, doubles per failed attempt up to
    /// `max`, each wait jittered. Default: 100 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff = crate::delay::backoff_bounds(min, max);
        self
    }

    /// Whether the pub/sub connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// How many times the pub/sub connection was made again after it was lost.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    fn keys(prefix: &str, topic: &str) -> (String, String, String) {
        (
            format!("{prefix}:m:{topic}"),
            format!("{prefix}:s:{topic}"),
            format!("{prefix}:c:{topic}"),
        )
    }
}

impl Broker for RedisBroker {
    fn attach(&self, feed: Feed) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("RedisBroker needs a Tokio runtime: build the hub inside one");
            return;
        };
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.publish_timeout))
            .set_number_of_retries(1)
            .set_min_delay(self.config.backoff.0)
            .set_max_delay(self.config.backoff.1);
        let conn = {
            let _guard = runtime.enter();
            ConnectionManager::new_lazy_with_config(self.inner.client.clone(), manager)
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                tracing::error!(error = %err, "RedisBroker cannot make its connection");
                return;
            }
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let started = Started {
            config: self.config.clone(),
            conn,
            commands,
            pending: Arc::new(Semaphore::new(self.config.max_pending)),
            history: feed.history().max(1),
            history_age: feed.history_age(),
        };
        if self.inner.started.set(started).is_err() {
            tracing::error!("a RedisBroker serves one hub; build another broker for another hub");
            return;
        }
        runtime.spawn(session::run(self.inner.clone(), feed, receiver));
    }

    fn publish(&self, topic: &str, event: Event) -> BrokerFuture {
        let inner = self.inner.clone();
        let topic = topic.to_owned();
        Box::pin(async move {
            let Some(started) = inner.started.get() else {
                return Err(PublishError::Unavailable(
                    "the broker did not start: build the hub inside a Tokio runtime".into(),
                ));
            };
            let _permit = started
                .pending
                .clone()
                .try_acquire_owned()
                .map_err(|_| PublishError::Overloaded)?;
            let config = &started.config;
            let (hash, stream, channel) = RedisBroker::keys(&config.prefix, &topic);
            let mut conn = started.conn.clone();
            let age = started
                .history_age
                .map_or(0, |age| crate::delay::millis(age).max(1));
            let mut invocation = inner.publish.key(hash);
            invocation
                .key(stream)
                .arg(random_tag(12))
                .arg(event.as_bytes().as_ref())
                .arg(started.history)
                .arg(config.topic_ttl.as_secs())
                .arg(channel)
                .arg(age);
            let call = invocation.invoke_async::<(String, u64)>(&mut conn);
            match tokio::time::timeout(config.publish_timeout, call).await {
                Ok(Ok((epoch, offset))) => Ok(Position { epoch, offset }),
                Ok(Err(err)) => Err(PublishError::Unavailable(err.to_string())),
                Err(_) => Err(PublishError::Timeout(config.publish_timeout)),
            }
        })
    }

    fn follow(&self, topic: &str) {
        if let Some(started) = self.inner.started.get() {
            let _ = started.commands.send(Command::Follow(topic.to_owned()));
        }
    }

    fn unfollow(&self, topic: &str) {
        if let Some(started) = self.inner.started.get() {
            let _ = started.commands.send(Command::Unfollow(topic.to_owned()));
        }
    }
}
