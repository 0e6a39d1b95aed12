//! The Postgres engine's connection task: one connection of the node's own, which `LISTEN`s for
//! wake-ups and makes every read, made again with back-off when it is lost.

use super::sql::{self, Answer, Known};
use super::{Command, Inner, Started, CHANNEL};
use crate::delay::jittered;
use crate::hub::backoff::wait_tracking;
use crate::hub::broker::{Feed, Snapshot, SyncTicket};
use crate::hub::id::random_tag;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};
use tokio::{sync::mpsc, time::Instant};

/// Why a session on the listening connection ended.
enum End {
    HubGone,
    Lost(String),
}

/// The most topics one read asks for; more are read in several.
const BATCH: usize = 500;

/// How often a node deletes the topics whose time to live has passed: once a minute, or twice
/// per time to live when that is shorter.
fn expire_every(ttl: Duration) -> Duration {
    Duration::from_secs(60)
        .min(ttl / 2)
        .max(Duration::from_millis(100))
}

/// What the node knows of a followed topic.
#[derive(Debug, Default)]
struct Followed {
    /// What was delivered to the hub (or read for it) so far; `None` before the first read.
    known: Option<Known>,
    /// The hub asked for a read of the history (a follow, a gap, a resume from ahead).
    sync: bool,
    /// Woken (or due for a poll): read what came after `known`.
    dirty: bool,
}

/// The followed topics, and which of them need a read.
#[derive(Debug, Default)]
struct Topics {
    map: HashMap<String, Followed>,
    /// The topics with `sync` or `dirty` set.
    pending: HashSet<String>,
    /// When the first wake-up of the pending ones arrived (`None`: none did, or a read is due
    /// at once anyway: a follow, a poll, a reconnection).
    woken_at: Option<Instant>,
    /// A read is due at once, whatever the batch window.
    urgent: bool,
}

impl Topics {
    /// A follow or unfollow from the hub. A follow of a topic already followed asks for a
    /// fresh read (the hub saw a gap, or a client resumes from an id it has not received yet).
    fn apply(&mut self, command: Command) {
        match command {
            Command::Follow(topic) => {
                self.map.entry(topic.clone()).or_default().sync = true;
                self.pending.insert(topic);
                self.urgent = true;
            }
            Command::Unfollow(topic) => {
                self.map.remove(&topic);
                self.pending.remove(&topic);
            }
        }
    }

    /// Every followed topic reads what came after what it holds, at once.
    fn mark_all(&mut self) {
        for (topic, followed) in &mut self.map {
            followed.dirty = true;
            self.pending.insert(topic.clone());
        }
        self.urgent = !self.pending.is_empty();
    }

    /// A wake-up for `topic`, or for every topic when it names none (a name too long for a
    /// notification comes as `""`).
    fn woke(&mut self, topic: &str) {
        if topic.is_empty() {
            for (topic, followed) in &mut self.map {
                followed.dirty = true;
                self.pending.insert(topic.clone());
            }
        } else if let Some(followed) = self.map.get_mut(topic) {
            followed.dirty = true;
            self.pending.insert(topic.to_owned());
        } else {
            return;
        }
        self.woken_at.get_or_insert_with(Instant::now);
    }

    /// Asks for a read of `topic`'s history on the next round.
    fn resync(&mut self, topic: &str) {
        if let Some(followed) = self.map.get_mut(topic) {
            followed.sync = true;
            self.pending.insert(topic.to_owned());
            self.urgent = true;
        }
    }

    /// When the next read is due, if one is: at once for a follow, a poll or a reconnection,
    /// a batch window after the first wake-up otherwise.
    fn due(&self, window: Duration) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        match self.woken_at {
            Some(at) if !self.urgent => Some(at + window),
            _ => Some(Instant::now()),
        }
    }

    /// The topics to read now; the next ones start a new batch.
    fn take_pending(&mut self) -> Vec<String> {
        self.woken_at = None;
        self.urgent = false;
        self.pending.drain().collect()
    }
}

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
    // The node's own connection, made with the app's options; not one of the app's pool.
    let own: PgPool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(config.read_timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        // Never used twice: a connection given back after a session was cut (a statement
        // abandoned at its timeout, a transaction left open) is closed, not handed to the next.
        .after_release(|_, _| Box::pin(async { Ok(false) }))
        .connect_lazy_with(
            (*inner.pool.connect_options())
                .clone()
                .application_name("tower-sse"),
        );
    let mut topics = Topics::default();
    let mut delay = config.backoff.0;
    let mut sessions = 0u64;
    while !feed.is_closed() {
        let why = match connect(&inner, started, &own).await {
            Ok(mut listener) => {
                if sessions > 0 {
                    inner.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("hub broker reconnected to Postgres");
                }
                sessions += 1;
                delay = config.backoff.0;
                inner.connected.store(true, Ordering::Relaxed);
                // Whatever a lost connection missed is read after what each topic holds.
                topics.mark_all();
                let mut session = Session {
                    inner: &inner,
                    started,
                    feed: &feed,
                    topics: &mut topics,
                };
                let end = session.serve(&mut listener, &mut commands).await;
                inner.connected.store(false, Ordering::Relaxed);
                match end {
                    End::HubGone => return,
                    End::Lost(why) => why,
                }
            }
            Err(why) => why,
        };
        tracing::warn!(error = %why, retry_in = ?delay, "hub broker lost Postgres");
        if !wait_tracking(jittered(delay), &mut commands, |c| topics.apply(c)).await {
            return;
        }
        delay = (delay * 2).min(config.backoff.1);
    }
}

/// Makes the tables if asked (on every connection: a database restored or recreated meanwhile
/// gets them again), then the listening connection.
async fn connect(inner: &Inner, started: &Started, own: &PgPool) -> Result<PgListener, String> {
    let limit = started.config.read_timeout;
    if started.config.create_tables {
        match tokio::time::timeout(limit, sql::migrate(own)).await {
            Ok(Ok(())) => {
                inner.ready.send_replace(true);
            }
            Ok(Err(err)) => return Err(format!("creating the tables: {}", sql::describe(&err))),
            Err(_) => return Err("creating the tables: unanswered".into()),
        }
    }
    let listen = async {
        let mut listener = PgListener::connect_with(own).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(limit, listen).await {
        Ok(Ok(listener)) => Ok(listener),
        Ok(Err(err)) => Err(sql::describe(&err)),
        Err(_) => Err(format!("no connection within {limit:?}")),
    }
}

/// One read: a topic, and the ticket when it is a read of the history for the hub.
struct Ask {
    topic: String,
    ticket: Option<SyncTicket>,
    known: Known,
}

/// One listening connection's life.
struct Session<'a> {
    inner: &'a Inner,
    started: &'a Started,
    feed: &'a Feed,
    topics: &'a mut Topics,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        listener: &mut PgListener,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> End {
        let config = &self.started.config;
        let mut poll = tokio::time::interval(config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        let mut expire = tokio::time::interval(expire_every(config.topic_ttl));
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let window = config.batch_window;
        loop {
            // What arrived meanwhile is answered together, by the next read.
            while let Ok(command) = commands.try_recv() {
                self.topics.apply(command);
            }
            while let Some(note) = listener.next_buffered() {
                self.woke(note.payload());
            }
            let due = self.topics.due(window);
            if due.is_some_and(|at| at <= Instant::now()) {
                if let Err(end) = self.read(listener).await {
                    return end;
                }
                continue;
            }
            let batch = tokio::time::sleep_until(due.unwrap_or_else(Instant::now));
            tokio::select! {
                note = listener.try_recv() => match note {
                    Ok(Some(note)) => self.woke(note.payload()),
                    Ok(None) => return End::Lost("connection closed".into()),
                    Err(err) => return End::Lost(sql::describe(&err)),
                },
                command = commands.recv() => match command {
                    Some(command) => self.topics.apply(command),
                    None => return End::HubGone,
                },
                _ = batch, if due.is_some() => {}
                _ = poll.tick() => {
                    // The task ends within a poll period of the hub's end.
                    if self.feed.is_closed() {
                        return End::HubGone;
                    }
                    self.topics.mark_all();
                    if self.topics.map.is_empty() {
                        // Nothing to read: the connection's health is checked anyway.
                        let check = sqlx::query("SELECT 1").execute(&mut *listener);
                        if let Err(end) = self.answered("health check", check).await {
                            return end;
                        }
                    }
                }
                _ = expire.tick() => {
                    let ttl = config.topic_ttl;
                    let gone = sql::expire(&mut *listener, ttl);
                    match self.answered("expiry", gone).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(topics = n, "hub broker deleted expired topics"),
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    fn woke(&mut self, topic: &str) {
        self.inner.wakeups.fetch_add(1, Ordering::Relaxed);
        self.topics.woke(topic);
    }

    /// The answer to `call` within the read timeout, or the end of the session.
    async fn answered<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, End> {
        let limit = self.started.config.read_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(End::Lost(format!("{what}: {}", sql::describe(&err)))),
            Err(_) => Err(End::Lost(format!("{what} unanswered within {limit:?}"))),
        }
    }

    /// Reads every topic that needs it, in batches, and hands the answers to the hub.
    async fn read(&mut self, listener: &mut PgListener) -> Result<(), End> {
        let mut asks = Vec::new();
        let mut again = Vec::new();
        for topic in self.topics.take_pending() {
            let Some(followed) = self.topics.map.get_mut(&topic) else {
                continue;
            };
            let (sync, dirty) = (followed.sync, followed.dirty);
            followed.sync = false;
            followed.dirty = false;
            if sync {
                let Some(ticket) = self.feed.begin_sync(&topic) else {
                    continue;
                };
                if !sql::storable(&topic) {
                    // Nothing can be published to it: its history is empty.
                    self.feed.sync(ticket, Snapshot::empty());
                    followed.known = Some(Known::default());
                    continue;
                }
                // What the node read at the hub's newest position, if that is where it is: the
                // read checks the table still holds that event there.
                let digest = followed.known.as_ref().and_then(|k| {
                    let p = ticket.after()?;
                    (k.epoch == p.epoch && k.offset == p.offset).then(|| k.digest.clone())?
                });
                let known = ticket.after().map_or_else(Known::default, |p| Known {
                    epoch: p.epoch.clone(),
                    offset: p.offset,
                    digest,
                });
                asks.push(Ask {
                    topic,
                    ticket: Some(ticket),
                    known,
                });
            } else if dirty {
                match &followed.known {
                    Some(known) if sql::storable(&topic) => {
                        let known = known.clone();
                        asks.push(Ask {
                            topic,
                            ticket: None,
                            known,
                        });
                    }
                    Some(_) => {}
                    // Never read: the history first.
                    None => again.push(topic),
                }
            }
        }
        let result = self.answer_all(listener, &asks, &mut again).await;
        if result.is_err() {
            // The hub still awaits the reads it handed out tickets for: the next connection
            // makes them again.
            again.extend(
                asks.into_iter()
                    .filter(|a| a.ticket.is_some())
                    .map(|a| a.topic),
            );
        }
        for topic in again {
            self.topics.resync(&topic);
        }
        result
    }

    /// Reads `asks` in batches and hands each answer to the hub; the topics whose history must
    /// be read (again) go to `again`.
    async fn answer_all(
        &mut self,
        listener: &mut PgListener,
        asks: &[Ask],
        again: &mut Vec<String>,
    ) -> Result<(), End> {
        for batch in asks.chunks(BATCH) {
            let topics: Vec<(&str, &Known)> = batch
                .iter()
                .map(|ask| (ask.topic.as_str(), &ask.known))
                .collect();
            let limit = self.started.history;
            let read = sql::read(&mut *listener, &topics, limit);
            let answers = self.answered("read", read).await?;
            self.inner.reads.fetch_add(1, Ordering::Relaxed);
            for (ask, answer) in batch.iter().zip(answers) {
                if self.answer(listener, ask, answer).await? {
                    again.push(ask.topic.clone());
                }
            }
        }
        Ok(())
    }

    /// Hands one topic's answer to the hub. True when the topic's history must be read (again).
    async fn answer(
        &mut self,
        listener: &mut PgListener,
        ask: &Ask,
        answer: Answer,
    ) -> Result<bool, End> {
        let Some(followed) = self.topics.map.get_mut(&ask.topic) else {
            // Unfollowed meanwhile.
            return Ok(false);
        };
        // A history that is not the one delivered (restored from an older backup: the head went
        // back, or the event at the last offset delivered is another): a new epoch, rows and
        // all, so that no client receives two events under one id; the next read tells
        // subscribers history-lost.
        if let Some((epoch, head)) = &answer.head {
            let ours = !ask.known.epoch.is_empty() && *epoch == ask.known.epoch;
            let went_back = ours && *head < ask.known.offset;
            let replaced =
                ours && matches!((&ask.known.digest, &answer.anchor), (Some(d), Some(a)) if d != a);
            if went_back || replaced {
                tracing::warn!(
                    topic = %ask.topic,
                    held = ask.known.offset,
                    head,
                    "the topic's history in Postgres is not the one delivered (restored?); \
                     starting a new epoch"
                );
                let new_epoch = random_tag(12);
                // Within half the read timeout for the topic's row, so the fence ends (or is
                // rolled back) before the session would count as lost.
                let wait = self.started.config.read_timeout / 2;
                let fence = sql::fence(&mut *listener, &ask.topic, epoch, &new_epoch, wait);
                match self.answered("new epoch", fence).await {
                    Err(End::Lost(why)) if why.contains("55P03") => {
                        // The row stayed held: the next read tries again.
                        tracing::debug!(topic = %ask.topic, "the topic's row is held; fencing later");
                    }
                    other => {
                        other?;
                    }
                }
                return Ok(true);
            }
        }
        if let Some(ticket) = &ask.ticket {
            followed.known = Some(match &answer.head {
                Some((epoch, head)) => Known {
                    epoch: epoch.clone(),
                    offset: *head,
                    digest: answer
                        .events
                        .iter()
                        .find(|(offset, ..)| offset == head)
                        .and_then(|(.., digest)| digest.clone()),
                },
                None => Known::default(),
            });
            self.feed.sync(ticket.clone(), answer.snapshot());
            return Ok(false);
        }
        let Some((epoch, head)) = answer.head else {
            // The topic is gone (expired, deleted): its next publish starts a new epoch, which
            // the next read finds.
            return Ok(false);
        };
        let known = followed.known.get_or_insert_with(Known::default);
        if epoch != known.epoch {
            return Ok(true);
        }
        let mut events = answer.events;
        events.reverse();
        if events
            .first()
            .is_some_and(|(offset, ..)| *offset > known.offset + 1)
        {
            // More than a history's worth, or rows missing: the history decides.
            return Ok(true);
        }
        for (offset, at, payload, digest) in events {
            if offset <= known.offset {
                continue;
            }
            known.offset = offset;
            known.digest = digest;
            self.feed.event_at(&ask.topic, &epoch, offset, at, payload);
        }
        // Positions the table no longer holds (deleted by hand): the history decides.
        Ok(head > known.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn following(names: &[&str]) -> Topics {
        let mut topics = Topics::default();
        for name in names {
            topics.apply(Command::Follow((*name).to_owned()));
        }
        topics.take_pending();
        topics
    }

    #[tokio::test(start_paused = true)]
    async fn wake_ups_wait_for_the_window_and_follows_do_not() {
        let window = Duration::from_millis(50);
        let mut topics = following(&["a", "b"]);
        assert_eq!(topics.due(window), None, "nothing to read");
        topics.woke("a");
        let due = topics.due(window).unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        topics.woke("b");
        assert_eq!(
            topics.due(window),
            Some(due),
            "the window counts from the first"
        );
        assert!(due > Instant::now());
        topics.apply(Command::Follow("c".into()));
        assert!(
            topics.due(window).unwrap() <= Instant::now(),
            "a follow reads at once"
        );
        let mut read = topics.take_pending();
        read.sort();
        assert_eq!(read, ["a", "b", "c"]);
        assert_eq!(topics.due(window), None);
    }

    #[test]
    fn a_wake_up_for_no_followed_topic_wakes_nothing_and_an_empty_one_wakes_all() {
        let mut topics = following(&["a", "b"]);
        topics.woke("elsewhere");
        assert!(topics.pending.is_empty());
        assert_eq!(topics.woken_at, None);
        topics.woke("");
        assert_eq!(topics.pending.len(), 2);
        topics.apply(Command::Unfollow("a".into()));
        assert_eq!(topics.take_pending(), ["b"]);
        assert!(topics.map["b"].dirty);
    }
}
