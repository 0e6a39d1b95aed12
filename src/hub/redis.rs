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
//!   offset, so a client resuming on any hub gets every event after its id, once.
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
//! without its id) and the channel `tower-sse:c:T` (messages `<epoch> <offset> <event>`).
//! Whatever arrives that is not an event this crate encoded is dropped and counted
//! ([`HubStats::rejected`](super::HubStats::rejected)).

use super::broker::{Broker, BrokerFuture, Feed, Position, PublishError, Snapshot};
use super::random_tag;
use crate::delay::jittered;
use crate::Event;
use bytes::Bytes;
use futures_core::Stream;
use redis::{aio::ConnectionManager, Script, Value};
use std::{
    collections::HashSet,
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
};

/// Numbers, stores and publishes one event. KEYS: hash, stream. ARGV: epoch if new, payload,
/// max length, time to live (s), channel, max age (ms, 0 for none).
const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'o', offset, 'd', ARGV[2])
if ARGV[6] ~= '0' then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[6])
  if oldest > 0 then
    redis.call('XTRIM', KEYS[2], 'MINID', '~', oldest)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], epoch .. ' ' .. offset .. ' ' .. ARGV[2])
return {epoch, offset}
";

/// Reads a topic's epoch, head and newest events at once. KEYS: hash, stream. ARGV: how many
/// events at most, the epoch the reader holds, the newest offset it holds.
const READ: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  return {}
end
local head = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local count = tonumber(ARGV[1])
if ARGV[2] == epoch and head - tonumber(ARGV[3]) < count then
  count = head - tonumber(ARGV[3])
end
local events = {}
if count > 0 then
  events = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
end
return {epoch, tostring(head), events}
";

#[derive(Debug, Clone)]
struct Config {
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

struct Inner {
    client: redis::Client,
    publish: Script,
    read: Script,
    started: OnceLock<Started>,
    connected: AtomicBool,
    reconnects: AtomicU64,
}

/// What exists once the broker is attached to a hub inside a runtime.
struct Started {
    config: Config,
    conn: ConnectionManager,
    commands: mpsc::UnboundedSender<Command>,
    pending: Arc<Semaphore>,
    history: usize,
    history_age: Option<Duration>,
}

enum Command {
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
        let min = crate::delay::saturate(min.max(Duration::from_millis(1)));
        self.config.backoff = (min, crate::delay::saturate(max).max(min));
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
        runtime.spawn(run(self.inner.clone(), feed, receiver));
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

/// Why a session on the pub/sub connection ended.
enum End {
    HubGone,
    Lost(String),
}

/// The connection task: connect, serve, and reconnect with back-off until the hub is gone.
async fn run(inner: Arc<Inner>, feed: Feed, mut commands: mpsc::UnboundedReceiver<Command>) {
    let Some(started) = inner.started.get() else {
        return;
    };
    let config = &started.config;
    let mut followed: HashSet<String> = HashSet::new();
    let mut delay = config.backoff.0;
    let mut sessions = 0u64;
    loop {
        if feed.is_closed() {
            return;
        }
        let why =
            match tokio::time::timeout(config.connect_timeout, inner.client.get_async_pubsub())
                .await
            {
                Ok(Ok(pubsub)) => {
                    if sessions > 0 {
                        inner.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("hub broker reconnected to Redis");
                    }
                    sessions += 1;
                    delay = config.backoff.0;
                    inner.connected.store(true, Ordering::Relaxed);
                    let end =
                        session(started, &inner, &feed, &mut commands, &mut followed, pubsub).await;
                    inner.connected.store(false, Ordering::Relaxed);
                    match end {
                        End::HubGone => return,
                        End::Lost(why) => {
                            feed.disconnected();
                            why
                        }
                    }
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no connection within {:?}", config.connect_timeout),
            };
        tracing::warn!(error = %why, retry_in = ?delay, "hub broker lost Redis");
        // Wait, still keeping track of what to follow.
        let sleep = tokio::time::sleep(jittered(delay));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Follow(topic)) => { followed.insert(topic); }
                    Some(Command::Unfollow(topic)) => { followed.remove(&topic); }
                },
            }
        }
        delay = (delay * 2).min(config.backoff.1);
    }
}

/// Serves one pub/sub connection: subscribes, reads history, delivers, pings.
async fn session(
    started: &Started,
    inner: &Arc<Inner>,
    feed: &Feed,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    followed: &mut HashSet<String>,
    pubsub: redis::aio::PubSub,
) -> End {
    let config = &started.config;
    let limit = config.connect_timeout;
    let (mut sink, mut stream) = pubsub.split();
    let channel_prefix = format!("{}:c:", config.prefix);
    let mut reads = JoinSet::new();
    for topic in followed.iter() {
        let channel = format!("{channel_prefix}{topic}");
        if let Err(why) = answered(limit, "subscribe", sink.subscribe(&channel)).await {
            return End::Lost(why);
        }
        reads.spawn(read(
            inner.clone(),
            feed.clone(),
            topic.clone(),
            Duration::ZERO,
        ));
    }
    let mut ping = tokio::time::interval(config.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = next(&mut stream) => {
                let Some(message) = message else {
                    return End::Lost("connection closed".into());
                };
                let Some(topic) = message.get_channel_name().strip_prefix(&channel_prefix) else {
                    continue;
                };
                deliver(feed, topic, message.get_payload_bytes());
            }
            command = commands.recv() => match command {
                None => return End::HubGone,
                Some(Command::Follow(topic)) => {
                    // Followed from now on: if subscribing fails, the next session subscribes.
                    if followed.insert(topic.clone()) {
                        let channel = format!("{channel_prefix}{topic}");
                        if let Err(why) = answered(limit, "subscribe", sink.subscribe(&channel)).await {
                            return End::Lost(why);
                        }
                    }
                    reads.spawn(read(inner.clone(), feed.clone(), topic, Duration::ZERO));
                }
                Some(Command::Unfollow(topic)) => {
                    if followed.remove(&topic) {
                        let channel = format!("{channel_prefix}{topic}");
                        if let Err(why) = answered(limit, "unsubscribe", sink.unsubscribe(&channel)).await {
                            return End::Lost(why);
                        }
                    }
                }
            },
            Some(done) = reads.join_next() => {
                let Ok((topic, result)) = done else { continue };
                match result {
                    Ok(snapshot) => {
                        if followed.contains(&topic) {
                            feed.sync(&topic, snapshot);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(topic = %topic, error = %err, "hub broker could not read history; trying again");
                        if followed.contains(&topic) {
                            let wait = jittered(config.backoff.0 * 4);
                            reads.spawn(read(inner.clone(), feed.clone(), topic, wait));
                        }
                    }
                }
            }
            _ = ping.tick() => {
                // The task ends within a ping period of the hub's end.
                if feed.is_closed() {
                    return End::HubGone;
                }
                if let Err(why) = answered(limit, "ping", sink.ping::<Value>()).await {
                    return End::Lost(why);
                }
            }
        }
    }
}

/// The answer to a Redis call within `limit`, or why there was none.
async fn answered<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("{what} unanswered")),
    }
}

async fn next(stream: &mut redis::aio::PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Hands a channel message `<epoch> <offset> <event>` to the hub.
fn deliver(feed: &Feed, topic: &str, message: &[u8]) {
    let mut parts = message.splitn(3, |b| *b == b' ');
    let (Some(epoch), Some(offset), Some(payload)) = (parts.next(), parts.next(), parts.next())
    else {
        feed.event(topic, "", 0, Bytes::new());
        return;
    };
    let epoch = std::str::from_utf8(epoch).unwrap_or("");
    let offset = std::str::from_utf8(offset)
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    feed.event(topic, epoch, offset, Bytes::copy_from_slice(payload));
}

/// Reads a topic's newest history, after `wait`.
async fn read(
    inner: Arc<Inner>,
    feed: Feed,
    topic: String,
    wait: Duration,
) -> (String, Result<Snapshot, String>) {
    tokio::time::sleep(wait).await;
    let Some(started) = inner.started.get() else {
        return (topic, Err("not started".into()));
    };
    let (hash, stream, _) = RedisBroker::keys(&started.config.prefix, &topic);
    let known = feed.last_position(&topic);
    let mut invocation = inner.read.key(hash);
    invocation
        .key(stream)
        .arg(started.history)
        .arg(known.as_ref().map_or("", |p| p.epoch.as_str()))
        .arg(known.as_ref().map_or(0, |p| p.offset));
    let mut conn = started.conn.clone();
    let call = invocation.invoke_async::<Value>(&mut conn);
    let result = answered(started.config.publish_timeout, "history read", call)
        .await
        .and_then(|value| snapshot(&value).ok_or_else(|| "unexpected answer".to_owned()));
    (topic, result)
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

/// The READ script's answer as a snapshot.
fn snapshot(value: &Value) -> Option<Snapshot> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [epoch, head, events] = parts.as_slice() else {
        return parts.is_empty().then(Snapshot::empty);
    };
    let epoch = std::str::from_utf8(bytes(epoch)?).ok()?;
    let mut snapshot = Snapshot::new(epoch, number(head)?);
    let Value::Array(events) = events else {
        return Some(snapshot);
    };
    for entry in events {
        let Value::Array(entry) = entry else { continue };
        let Some(Value::Array(fields)) = entry.get(1) else {
            continue;
        };
        let (mut offset, mut payload) = (None, None);
        for pair in fields.chunks(2) {
            match (pair.first().and_then(bytes), pair.get(1)) {
                (Some(b"o"), Some(value)) => offset = number(value),
                (Some(b"d"), Some(value)) => payload = bytes(value),
                _ => {}
            }
        }
        if let (Some(offset), Some(payload)) = (offset, payload) {
            snapshot.push(offset, Bytes::copy_from_slice(payload));
        }
    }
    Some(snapshot)
}
