//! The Redis engine's connection task: one pub/sub connection, made again with back-off when
//! it is lost; on it, the channels of the topics the hub follows, and beside it the history
//! reads that bridge each follow and each reconnection.

use super::{wire, Command, Inner, RedisBroker, Started};
use crate::delay::jittered;
use crate::hub::backoff::wait_tracking;
use crate::hub::broker::{Feed, Snapshot, SyncTicket};
use bytes::Bytes;
use futures_core::Stream;
use redis::{
    aio::{PubSubSink, PubSubStream},
    Value,
};
use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};
use tokio::{sync::mpsc, task::JoinSet};

/// Why a session on the pub/sub connection ended.
enum End {
    HubGone,
    Lost(String),
}

type Read = (SyncTicket, Result<Snapshot, String>);

/// The connection task: connect, serve, and reconnect with back-off until the hub is gone.
pub(super) async fn run(
    inner: Arc<Inner>,
    feed: Feed,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let Some(started) = inner.started.get() else {
        return;
    };
    let config = &started.config;
    let mut followed: HashSet<String> = HashSet::new();
    let mut delay = config.backoff.0;
    let mut sessions = 0u64;
    while !feed.is_closed() {
        let connect = inner.client.get_async_pubsub();
        let why = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(pubsub)) => {
                if sessions > 0 {
                    inner.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("hub broker reconnected to Redis");
                }
                sessions += 1;
                delay = config.backoff.0;
                inner.connected.store(true, Ordering::Relaxed);
                let (sink, stream) = pubsub.split();
                let mut session = Session {
                    started,
                    inner: &inner,
                    feed: &feed,
                    followed: &mut followed,
                    sink,
                    reads: JoinSet::new(),
                    reading: HashMap::new(),
                    channel_prefix: format!("{}:c:", config.prefix),
                };
                let end = session.serve(&mut commands, stream).await;
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
        let track = |command| match command {
            Command::Follow(topic) => {
                followed.insert(topic);
            }
            Command::Unfollow(topic) => {
                followed.remove(&topic);
            }
        };
        if !wait_tracking(jittered(delay), &mut commands, track).await {
            return;
        }
        delay = (delay * 2).min(config.backoff.1);
    }
}

/// One pub/sub connection's life.
struct Session<'a> {
    started: &'a Started,
    inner: &'a Arc<Inner>,
    feed: &'a Feed,
    followed: &'a mut HashSet<String>,
    sink: PubSubSink,
    reads: JoinSet<Read>,
    /// The topics with a read under way, each with whether another was asked for meanwhile:
    /// one read at a time per topic, however many resumes ask (see [`Session::read`]).
    reading: HashMap<String, bool>,
    channel_prefix: String,
}

impl Session<'_> {
    /// Subscribes to what the hub follows, then delivers, reads and pings until the connection
    /// is lost or the hub is gone. Dropping the session aborts its reads: their tickets are
    /// stale once the hub is told of the disconnection anyway.
    async fn serve(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        mut stream: PubSubStream,
    ) -> End {
        let topics: Vec<String> = self.followed.iter().cloned().collect();
        for topic in topics {
            if let Err(why) = self.subscribe(&topic).await {
                return End::Lost(why);
            }
            self.read(&topic, Duration::ZERO);
        }
        let mut ping = tokio::time::interval(self.started.config.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let step = tokio::select! {
                message = next(&mut stream) => match message {
                    Some(message) => { self.deliver(&message); Ok(()) }
                    None => Err(End::Lost("connection closed".into())),
                },
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => Err(End::HubGone),
                },
                Some(done) = self.reads.join_next() => {
                    if let Ok(read) = done { self.answer(read) }
                    Ok(())
                }
                _ = ping.tick() => self.ping().await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.channel_prefix)
    }

    async fn subscribe(&mut self, topic: &str) -> Result<(), String> {
        let channel = self.channel(topic);
        let limit = self.started.config.connect_timeout;
        answered(limit, "subscribe", self.sink.subscribe(&channel)).await
    }

    /// A follow or unfollow from the hub. A follow of a topic already followed asks for a fresh
    /// read (the hub saw a gap, or a client resumes from an id it has not received yet).
    async fn command(&mut self, command: Command) -> Result<(), End> {
        let limit = self.started.config.connect_timeout;
        match command {
            Command::Follow(topic) => {
                // Followed from now on: if subscribing fails, the next session subscribes.
                if self.followed.insert(topic.clone()) {
                    self.subscribe(&topic).await.map_err(End::Lost)?;
                }
                self.read(&topic, Duration::ZERO);
            }
            Command::Unfollow(topic) => {
                if self.followed.remove(&topic) {
                    let channel = self.channel(&topic);
                    answered(limit, "unsubscribe", self.sink.unsubscribe(&channel))
                        .await
                        .map_err(End::Lost)?;
                }
            }
        }
        Ok(())
    }

    /// Starts a history read of `topic` after `wait`, for a ticket taken now: the channel is
    /// subscribed already, so every event after the read arrives live.
    ///
    /// One read at a time per topic: asked for while one is under way (a burst of resumes, each
    /// needing a read begun after it), the topic gets one more read when that one is answered,
    /// for all who asked meanwhile. A burst of N resumes costs at most two reads per round
    /// trip, not N.
    fn read(&mut self, topic: &str, wait: Duration) {
        if let Some(again) = self.reading.get_mut(topic) {
            *again = true;
            return;
        }
        if let Some(ticket) = self.feed.begin_sync(topic) {
            self.reading.insert(topic.to_owned(), false);
            self.spawn_read(ticket, wait);
        }
    }

    fn spawn_read(&mut self, ticket: SyncTicket, wait: Duration) {
        self.reads.spawn(read(
            self.inner.clone(),
            self.started.config.clone(),
            ticket,
            wait,
        ));
    }

    /// A finished read: handed to the hub (which drops it if stale), or tried again.
    fn answer(&mut self, (ticket, result): Read) {
        match result {
            Ok(snapshot) => {
                let topic = ticket.topic().to_owned();
                self.feed.sync(ticket, snapshot);
                if self.reading.remove(&topic) == Some(true) && self.followed.contains(&topic) {
                    self.read(&topic, Duration::ZERO);
                }
            }
            Err(err) => {
                tracing::warn!(topic = ticket.topic(), error = %err, "hub broker could not read history; trying again");
                if self.followed.contains(ticket.topic()) {
                    let wait = jittered(self.started.config.backoff.0 * 4);
                    self.spawn_read(ticket, wait);
                } else {
                    self.reading.remove(ticket.topic());
                }
            }
        }
    }

    /// Hands a channel message to the hub.
    fn deliver(&self, message: &redis::Msg) {
        let Some(topic) = message
            .get_channel_name()
            .strip_prefix(&self.channel_prefix)
        else {
            return;
        };
        let wire::Message {
            epoch,
            offset,
            published,
            payload,
        } = wire::message(message.get_payload_bytes());
        let payload = Bytes::copy_from_slice(payload);
        match published {
            Some(at) => self.feed.event_at(topic, epoch, offset, at, payload),
            None => self.feed.event(topic, epoch, offset, payload),
        }
    }

    async fn ping(&mut self) -> Result<(), End> {
        // The task ends within a ping period of the hub's end.
        if self.feed.is_closed() {
            return Err(End::HubGone);
        }
        let limit = self.started.config.connect_timeout;
        answered(limit, "ping", self.sink.ping::<Value>())
            .await
            .map(drop)
            .map_err(End::Lost)
    }
}

/// The answer to a Redis call within `limit`, or why there was none.
pub(super) async fn answered<T>(
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

async fn next(stream: &mut PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Reads a topic's newest history for `ticket`, after `wait`.
async fn read(
    inner: Arc<Inner>,
    config: super::Config,
    ticket: SyncTicket,
    wait: Duration,
) -> Read {
    tokio::time::sleep(wait).await;
    let Some(started) = inner.started.get() else {
        return (ticket, Err("not started".into()));
    };
    let (hash, stream, _) = RedisBroker::keys(&config.prefix, ticket.topic());
    let known = ticket.after();
    let mut invocation = inner.read.key(hash);
    invocation
        .key(stream)
        .arg(started.history)
        .arg(known.map_or("", |p| p.epoch.as_str()))
        .arg(known.map_or(0, |p| p.offset));
    let mut conn = started.conn.clone();
    let call = invocation.invoke_async::<Value>(&mut conn);
    let result = answered(config.publish_timeout, "history read", call)
        .await
        .and_then(|value| wire::snapshot(&value).ok_or_else(|| "unexpected answer".to_owned()));
    (ticket, result)
}
