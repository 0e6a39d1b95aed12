//! A [`Broker`] on PostgreSQL: many server processes share their hubs' topics through the
//! database the app already runs, and an event can be published inside the app's own
//! transaction (feature `postgres`).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_sse::{hub::Hub, Event};
//!
//! let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/app").await?;
//! // Every server process builds its hub the same way; handlers do not change.
//! let hub = Hub::builder().history(1000).postgres(pool.clone()).build();
//!
//! // The order and its notification exist together, or neither does.
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO orders (item) VALUES ($1)").bind("tea").execute(&mut *tx).await?;
//! let id = hub.topic("orders").publish_in(&mut tx, Event::message("tea")).await?;
//! tx.commit().await?;
//! # let _ = id;
//! # Ok(()) }
//! ```
//!
//! # Transactional publish
//!
//! [`Topic::publish_in`](super::Topic::publish_in) writes the event into the caller's
//! transaction: nothing is delivered unless and until it commits, and a rollback delivers
//! nothing (it does not even take up an id). [`Topic::publish`](super::Topic::publish) works
//! as on any broker, in a transaction of its own.
//!
//! Publishes to one topic **take turns**: the topic's row in `tower_sse_topics` stays locked
//! from the publish to the end of the transaction, so each offset is handed out only after the
//! one before it committed or rolled back. That is what makes ids strictly increasing in commit
//! order, with no gap: an id is never handed out before a smaller one that is still to commit.
//! Keep transactions that publish short (a transaction that publishes and then waits holds up
//! every other publish to that topic); publishes to different topics do not wait for each
//! other. A transaction that publishes to several topics should do so in one order (sorted,
//! say), or Postgres may end two such transactions with a deadlock error. Set `lock_timeout`
//! in the transaction to bound the wait.
//!
//! # Tables
//!
//! [`MIGRATION`] creates them (idempotent, safe on every start); the broker runs it when it
//! starts, and again whenever its connection is made again (a database recreated meanwhile
//! gets its tables back), unless [`create_tables(false)`](PostgresBroker::create_tables) says
//! the app's own migrations do. They live in the first schema of the connection's
//! `search_path`. The node's own connection is named `tower-sse` (`application_name`), so
//! `pg_stat_activity` shows it.
//!
//! - `tower_sse_topics (topic, epoch, head, touched)`: a topic's epoch (a random tag made with
//!   the row) and its newest offset.
//! - `tower_sse_events (topic, epoch, "offset", published, payload)`: the history, each event's
//!   encoded bytes; trimmed to [`history`](super::HubBuilder::history) events and
//!   [`history_age`](super::HubBuilder::history_age) by the publishes themselves (every 32nd
//!   publish of a topic trims it, so a topic may hold up to 31 more rows; a hub still reads back
//!   at most `history`), and a topic nobody publishes to for
//!   [`topic_ttl`](PostgresBroker::topic_ttl) is deleted, history and all.
//!
//! **Epoch**: deleting a topic's row (by the time to live, by hand, or a truncated table) makes
//! the next publish start a new epoch; an id of the old one is answered with `history-lost`,
//! never taken for a position. Deleted rows of `tower_sse_events` are told as `history-lost` to
//! a client that resumes from before them.
//!
//! **Restores**: a database restored from an older backup holds an older history under the same
//! epoch. A node that follows the topic numbers its publishes past the newest offset it has
//! delivered, and a node that reads the topic checks that the row at the newest offset it
//! delivered still holds that event (by its digest) and that the head did not go back; when
//! either fails it gives the topic a new epoch, rows and all: its subscribers are told
//! `history-lost`, then receive the topic's history as the table holds it, under the new epoch's
//! ids (so events restored from the backup may come again, under ids of their own). So no
//! client receives two events under one id, and a client that resumes from before the restore
//! is told `history-lost`, or (from a node that still holds what it missed, and numbered past
//! it) given exactly that: never another event under its id.
//! What this cannot cover: a publish made by a node that does not follow the topic, before any
//! node has read it, returns an id of the old epoch that clients of the restored history may
//! hold for another event (its event is then delivered under the new epoch's id). Nodes started
//! after the restore know nothing older than the table. After restoring, run
//! `DELETE FROM tower_sse_topics` before the app serves again: every topic then starts over.
//!
//! Topic names are stored as they are, up to [`MAX_TOPIC_BYTES`] (a key of Postgres's indexes
//! holds about 2,700 bytes); a longer name, or one with a NUL character (which `text` cannot
//! hold), is refused with [`PublishError::Unavailable`], and its subscribers wait for nothing.
//!
//! # Delivery
//!
//! Each hub keeps **one** connection of its own (beside the app's pool, so an exhausted pool
//! does not stop delivery), which `LISTEN`s on the channel `tower_sse`. A publish `NOTIFY`s the
//! topic's name (at commit, as Postgres does); the notification is only a wake-up: the node
//! then reads, in one query for every topic that woke, the rows after the last offset it holds.
//! Wake-ups that arrive while a read is under way are answered by the next read, together, so
//! a burst of N publishes costs far fewer than N reads. Every
//! [`poll_interval`](PostgresBroker::poll_interval) the node also reads every topic it follows,
//! so a wake-up lost with a connection costs a delay, never an event; that read is the
//! connection's health check too.
//!
//! **Resume anywhere**: a hub that starts following a topic reads its newest history and merges
//! it with what arrives live, by offset, at the same seam as every engine (see [`broker`]); a
//! client resumes from its `Last-Event-ID` on any node with no gap and no duplicate.
//!
//! **Faults**: when the connection is lost (Postgres restarted, the backend terminated, a read
//! that does not answer within [`read_timeout`](PostgresBroker::read_timeout)) open streams
//! stay open (keep-alives flow), the node connects again with jittered exponential back-off
//! and reads what its subscribers missed from the table. While Postgres is unreachable, a
//! publish fails within [`publish_timeout`](PostgresBroker::publish_timeout) (the pool's
//! waiting included), and at most [`max_pending`](PostgresBroker::max_pending) publishes wait
//! at once. A publish runs in a transaction of its own whose statements Postgres cancels at the
//! timeout (`statement_timeout`, set for that transaction only), and whose commit, once sent, is
//! awaited for a quarter of the timeout more: a publish that reports
//! [`Timeout`](PublishError::Timeout) was not published and will not be later (when waiting for
//! a topic held by a long transaction, say), unless Postgres left that commit unanswered.
//!
//! Whatever the tables hold that is not an event this crate encoded is dropped and counted
//! ([`HubStats::rejected`](super::HubStats::rejected)); its offset is passed over, so it costs
//! none of the events after it. Counts are per process, as on Redis.
//!
//! [`broker`]: super::broker

mod session;
mod sql;

pub use sql::MAX_TOPIC_BYTES;

use super::broker::{Broker, BrokerFuture, Feed, Position};
use super::id::random_tag;
use super::publish::PublishError;
use crate::Event;
use sqlx::PgPool;
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};
use tokio::sync::{mpsc, watch, Semaphore};

/// The SQL that creates the engine's tables and index: idempotent, for the app's own
/// migrations when the broker is told not to run it ([`PostgresBroker::create_tables`]).
pub const MIGRATION: &str = include_str!("schema.sql");

/// The channel every node listens on and every publish notifies.
pub const CHANNEL: &str = "tower_sse";

#[derive(Debug, Clone)]
struct Config {
    publish_timeout: Duration,
    read_timeout: Duration,
    topic_ttl: Duration,
    max_pending: usize,
    backoff: (Duration, Duration),
    poll_interval: Duration,
    batch_window: Duration,
    create_tables: bool,
}

/// Shares hubs' topics through PostgreSQL; see the [module docs](self).
///
/// Cloning is cheap and shares the state: keep a clone to watch
/// [`is_connected`](PostgresBroker::is_connected).
#[derive(Clone)]
pub struct PostgresBroker {
    config: Config,
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    started: OnceLock<Started>,
    /// The hub's side: the newest position it holds of a topic is the floor of its publishes.
    feed: OnceLock<Feed>,
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// Reads made by the listening connection (each answers every topic that woke).
    reads: AtomicU64,
    /// Wake-ups received.
    wakeups: AtomicU64,
    /// Whether the tables are known to exist (made by this broker, or by the app).
    ready: watch::Sender<bool>,
}

/// What exists once the broker is attached to a hub inside a runtime.
struct Started {
    config: Config,
    commands: mpsc::UnboundedSender<Command>,
    pending: Arc<Semaphore>,
    history: usize,
    history_age: Option<Duration>,
}

enum Command {
    Follow(String),
    Unfollow(String),
}

impl fmt::Debug for PostgresBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBroker")
            .field("config", &self.config)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

impl PostgresBroker {
    /// A broker on the database `pool` connects to, with the default settings. Publishes use
    /// the pool; the broker's listening connection is made with the pool's connect options but
    /// is not taken from it.
    pub fn new(pool: PgPool) -> PostgresBroker {
        let (ready, _) = watch::channel(false);
        PostgresBroker {
            config: Config {
                publish_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(5),
                topic_ttl: Duration::from_secs(24 * 3600),
                max_pending: 10_000,
                backoff: (Duration::from_millis(100), Duration::from_secs(5)),
                poll_interval: Duration::from_secs(5),
                batch_window: Duration::ZERO,
                create_tables: true,
            },
            inner: Arc::new(Inner {
                pool,
                started: OnceLock::new(),
                feed: OnceLock::new(),
                connected: AtomicBool::new(false),
                reconnects: AtomicU64::new(0),
                reads: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                ready,
            }),
        }
    }

    /// The longest a [`publish`](super::Topic::publish) waits, for the pool and for Postgres,
    /// before it fails with [`PublishError::Timeout`] (a commit already sent gets a quarter of
    /// it more). Default: 2 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = crate::delay::saturate(timeout.max(Duration::from_millis(1)));
        self
    }

    /// The longest the listening connection waits to connect or for a read's answer before it
    /// counts as lost and is made again. Default: 5 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = crate::delay::saturate(timeout.max(Duration::from_millis(10)));
        self
    }

    /// How long a topic nobody publishes to keeps its history and epoch. Default: 24 hours.
    /// Each publish starts it again; once it passes, the topic is deleted (by whichever node
    /// looks first: each looks once a minute, or twice per time to live when that is shorter)
    /// and the next publish starts a new epoch. At least 1 s.
    pub fn topic_ttl(mut self, ttl: Duration) -> Self {
        self.config.topic_ttl = crate::delay::saturate(ttl.max(Duration::from_secs(1)));
        self
    }

    /// How many publishes may wait for Postgres at once; more fail at once with
    /// [`PublishError::Overloaded`]. Default: 10,000. Transactional publishes are the app's
    /// own and are not counted.
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

    /// How often the node reads every topic it follows whether or not it was woken, which
    /// bounds how late an event whose wake-up was lost arrives. Default: 5 s.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.config.poll_interval = crate::delay::saturate(every.max(Duration::from_millis(10)));
        self
    }

    /// How long a node waits after a wake-up before it reads, so that the wake-ups of that
    /// time are answered by one read. Default: none: the node reads at once, and the wake-ups
    /// that arrive while a read is under way are answered together by the next one. A window
    /// of a few milliseconds trades that much latency for fewer reads under a steady stream of
    /// publishes (see BENCHMARKS.md); at most 1 s is kept. Follows, polls and reconnections
    /// read at once.
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.config.batch_window = crate::delay::saturate(window).min(Duration::from_secs(1));
        self
    }

    /// Whether the broker runs [`MIGRATION`] when it starts (under an advisory lock, so nodes
    /// that start together do not race). Default: true. With `false`, run it from the app's
    /// own migrations before the hub publishes.
    pub fn create_tables(mut self, create: bool) -> Self {
        self.config.create_tables = create;
        self
    }

    /// Runs [`MIGRATION`] on `pool`, under an advisory lock (nodes that start together take
    /// turns), in one transaction.
    ///
    /// # Errors
    ///
    /// Whatever Postgres answers: the connection failed, or the role may not create tables.
    pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
        sql::migrate(pool).await
    }

    /// Whether the listening connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// How many times the listening connection was made again after it was lost.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// How many reads of the tables the listening connection made: one per batch of topics
    /// that woke (however many did), per follow, and per poll.
    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Ordering::Relaxed)
    }

    /// How many wake-ups (`NOTIFY`s) the listening connection received.
    pub fn wakeups(&self) -> u64 {
        self.inner.wakeups.load(Ordering::Relaxed)
    }

    /// Publishes on `conn`, in whatever transaction it is in: what
    /// [`Topic::publish_in`](super::Topic::publish_in) calls.
    pub(super) async fn publish_on(
        &self,
        conn: &mut sqlx::PgConnection,
        topic: &str,
        event: &Event,
    ) -> Result<Position, PublishError> {
        let started = self.started()?;
        self.wait_ready(started).await?;
        let delivered = self.delivered(topic);
        sql::publish(
            conn,
            topic,
            event,
            &random_tag(12),
            started,
            delivered.as_ref(),
        )
        .await
        .map_err(|err| PublishError::Unavailable(sql::describe(&err)))
    }

    /// The newest position the hub holds of `topic`: a publish numbers past it.
    fn delivered(&self, topic: &str) -> Option<Position> {
        self.inner.feed.get()?.last_position(topic)
    }

    fn started(&self) -> Result<&Started, PublishError> {
        self.inner.started.get().ok_or_else(|| {
            PublishError::Unavailable(
                "the broker did not start: build the hub inside a Tokio runtime".into(),
            )
        })
    }

    /// Waits until the tables exist (at once when the app made them), within the publish
    /// timeout.
    async fn wait_ready(&self, started: &Started) -> Result<(), PublishError> {
        let mut ready = self.inner.ready.subscribe();
        let limit = started.config.publish_timeout;
        let waited = tokio::time::timeout(limit, async {
            ready.wait_for(|ready| *ready).await.map(drop)
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PublishError::Unavailable("the broker stopped".into())),
            Err(_) => Err(PublishError::Timeout(limit)),
        }
    }
}

impl Broker for PostgresBroker {
    fn attach(&self, feed: Feed) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("PostgresBroker needs a Tokio runtime: build the hub inside one");
            return;
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let started = Started {
            config: self.config.clone(),
            commands,
            pending: Arc::new(Semaphore::new(self.config.max_pending)),
            history: feed.history().max(1),
            history_age: feed.history_age(),
        };
        if self.inner.started.set(started).is_err() {
            tracing::error!(
                "a PostgresBroker serves one hub; build another broker for another hub"
            );
            return;
        }
        let _ = self.inner.feed.set(feed.clone());
        if !self.config.create_tables {
            self.inner.ready.send_replace(true);
        }
        runtime.spawn(session::run(self.inner.clone(), feed, receiver));
    }

    fn publish(&self, topic: &str, event: Event) -> BrokerFuture {
        let broker = self.clone();
        let topic = topic.to_owned();
        Box::pin(async move {
            let started = broker.started()?;
            let _permit = started
                .pending
                .clone()
                .try_acquire_owned()
                .map_err(|_| PublishError::Overloaded)?;
            let limit = started.config.publish_timeout;
            let deadline = tokio::time::Instant::now() + limit;
            let ready = async {
                broker.wait_ready(started).await?;
                broker
                    .inner
                    .pool
                    .acquire()
                    .await
                    .map_err(|err| PublishError::Unavailable(sql::describe(&err)))
            };
            let mut conn = match tokio::time::timeout_at(deadline, ready).await {
                Ok(conn) => conn?,
                Err(_) => return Err(PublishError::Timeout(limit)),
            };
            let delivered = broker.delivered(&topic);
            let epoch = random_tag(12);
            let limits = (deadline, limit / 4);
            let floor = delivered.as_ref();
            sql::publish_alone(&mut conn, &topic, &event, &epoch, started, floor, limits)
                .await
                .map_err(|err| match err {
                    Some(err) => PublishError::Unavailable(sql::describe(&err)),
                    None => PublishError::Timeout(limit),
                })
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
