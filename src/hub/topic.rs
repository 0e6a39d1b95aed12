//! One topic: its handle ([`Topic`]), and what its subscribers share ([`Shared`]): the merge
//! under a lock, and their wakers.

use super::broker::{Position, SyncTicket};
use super::cursor::Lag;
use super::merge::{Fed, Merge, Synced};
use super::publish::{Publish, PublishError};
use super::ring::Bounds;
use super::{control_event, Core, Hub, HISTORY_LOST};
use crate::sync::{lock, take_wakers};
use crate::{Event, EventError};
use slab::Slab;
use std::{
    collections::HashMap,
    fmt,
    sync::{atomic::Ordering, Arc, Mutex},
    task::Waker,
};
use tokio::time::Instant;

/// A hub's topics by name.
pub(super) type Topics = Mutex<HashMap<Arc<str>, Arc<Shared>>>;

pub(super) struct State {
    pub(super) merge: Merge,
    /// One slot per subscriber: its waker while it waits for an event.
    pub(super) waiters: Slab<Option<Waker>>,
    /// Set by [`Hub::close`]: subscribers end after the history, with this final event.
    pub(super) closed: Option<Option<Event>>,
}

impl State {
    /// Wakes every waiting subscriber once `state`'s lock is released.
    fn wake_all(mut state: std::sync::MutexGuard<'_, State>) {
        let wakers = take_wakers(&mut state.waiters);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }
}

pub(super) struct Shared {
    name: Arc<str>,
    pub(super) core: Arc<Core>,
    pub(super) lag: Lag,
    pub(super) state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(name: Arc<str>, core: Arc<Core>) -> Shared {
        let config = &core.config;
        let bounds = Bounds {
            events: config.history,
            bytes: config.history_bytes,
            age: config.history_age,
        };
        let merge = if config.broker.is_some() {
            Merge::brokered(bounds)
        } else {
            // A tag of its own: an id from another topic, or from this topic before it was
            // removed and made again, is unknown here, never a position.
            Merge::local(Arc::from(super::id::random_tag(12)), bounds)
        };
        let lag = Lag {
            events: config.max_lag_events,
            bytes: config.max_lag_bytes,
            policy: config.policy,
        };
        Shared {
            name,
            core,
            lag,
            state: Mutex::new(State {
                merge,
                waiters: Slab::new(),
                closed: None,
            }),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Ends every subscription once it has read what was published; see [`Hub::close`].
    pub(super) fn close(&self, final_event: Option<Event>) {
        let mut state = lock(&self.state);
        state.closed = Some(final_event);
        State::wake_all(state);
    }

    /// No subscribers and no history (after dropping expired events when `expire` is set). With
    /// a broker the ring is only a copy of the shared history, so no subscribers is enough.
    pub(super) fn is_idle(&self, expire: bool) -> bool {
        let mut state = lock(&self.state);
        if expire {
            state.merge.trim(Instant::now());
        }
        state.waiters.is_empty()
            && (state.merge.ring().len() == 0 || self.core.config.broker.is_some())
    }

    /// The newest position in the ring, if it has a broker's epoch.
    pub(super) fn last_position(&self) -> Option<Position> {
        let state = lock(&self.state);
        let (epoch, offset) = state.merge.newest()?;
        Some(Position {
            epoch: epoch.to_string(),
            offset,
        })
    }

    /// A live event from the broker. Returns whether the hub must ask for a sync.
    pub(super) fn feed_event(&self, epoch: &str, offset: u64, at: Instant, event: Event) -> bool {
        let mut state = lock(&self.state);
        let epoch = state.merge.shared_epoch(epoch);
        match state.merge.event(epoch, offset, at, event, Instant::now()) {
            Fed::Appended => {
                State::wake_all(state);
                false
            }
            Fed::Kept => false,
            Fed::Gap => {
                tracing::debug!(topic = %self.name, offset, "hub saw a gap; asking its broker to sync");
                true
            }
        }
    }

    /// A ticket for the broker's next read, if the topic is followed.
    pub(super) fn begin_sync(&self) -> Option<SyncTicket> {
        let (number, after) = lock(&self.state).merge.begin_sync()?;
        Some(SyncTicket {
            topic: self.name.clone(),
            number,
            after: after.map(|(epoch, offset)| Position {
                epoch: epoch.to_string(),
                offset,
            }),
        })
    }

    /// The broker's read for ticket `number`.
    pub(super) fn feed_sync(&self, number: u64, synced: Synced) {
        self.core
            .counters
            .history_reads
            .fetch_add(1, Ordering::Relaxed);
        let mut state = lock(&self.state);
        let generation = state.merge.generation();
        if !state.merge.sync(number, synced, Instant::now()) {
            tracing::debug!(topic = %self.name, "hub dropped a stale history read");
            return;
        }
        if state.merge.generation() != generation {
            tracing::debug!(topic = %self.name, "hub history cannot bridge a gap: history-lost");
        }
        let again = !state.merge.is_live();
        State::wake_all(state);
        if again {
            if let Some(broker) = &self.core.config.broker {
                broker.follow(&self.name);
            }
        }
    }

    /// The broker lost its connection: wait for its sync.
    pub(super) fn feed_disconnected(&self) {
        lock(&self.state).merge.disconnected();
    }
}

/// A handle to one topic of a [`Hub`]: publish to it, subscribe to it. Cloning is cheap.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures_util::StreamExt;
/// use tower_sse::{hub::Hub, Event};
///
/// let hub = Hub::new();
/// let prices = hub.topic("prices");
/// prices.publish(Event::message("101.5")).await.unwrap();
/// prices.publish(Event::message("101.7")).await.unwrap();
///
/// // A dashboard that opens now first gets the newest value from the history, then live ones.
/// let mut dashboard = prices.subscribe_with_recent(None, 1);
/// assert!(dashboard.next().await.unwrap().as_bytes().starts_with(b"data: 101.7\n"));
/// assert_eq!(prices.subscribers(), 1);
/// assert_eq!(prices.history_len(), 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Topic {
    pub(super) shared: Arc<Shared>,
    pub(super) hub: Hub,
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name())
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl Topic {
    pub(super) fn from_shared(shared: Arc<Shared>, hub: Hub) -> Topic {
        Topic { shared, hub }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// How many subscribers the topic has now: subscriptions whose stream has started (a
    /// [`Subscription`](super::Subscription) joins when it is first polled, so a response that is refused before it
    /// streams never counts, and fires no hook).
    pub fn subscribers(&self) -> usize {
        lock(&self.shared.state).waiters.len()
    }

    /// How many events the history holds now, events older than
    /// [`history_age`](super::HubBuilder::history_age) excluded (they are dropped here).
    pub fn history_len(&self) -> usize {
        let mut state = lock(&self.shared.state);
        state.merge.trim(Instant::now());
        state.merge.ring().len()
    }

    /// Publishes an event to every subscriber, and returns its id.
    ///
    /// An event without an `id` gets one from the hub (the only case that copies the event's
    /// bytes, once). Never blocks on subscribers: it appends to the topic's history and wakes
    /// those waiting. Works from sync and async code alike: the event is published whether or
    /// not the returned [`Publish`] is awaited, and on the in-memory hub it is done when this
    /// returns ([`Publish::now`] has the id).
    ///
    /// With a [broker](super::broker) the event goes to the broker, which numbers it, keeps it
    /// and delivers it to every hub that follows the topic, this one included; subscribers here
    /// receive it from there, in the topic's one order.
    ///
    /// # Errors
    ///
    /// - [`PublishError::Event`]: an id the event cannot take ([`Event::with_id_if_missing`]),
    ///   which cannot happen with hub-made ids; the history is then unchanged.
    /// - With a broker: [`PublishError::OwnId`] for an event with an id of its own, and
    ///   [`Unavailable`](PublishError::Unavailable), [`Timeout`](PublishError::Timeout) or
    ///   [`Overloaded`](PublishError::Overloaded) when the broker cannot take it.
    pub fn publish(&self, event: Event) -> Publish {
        let Some(broker) = &self.shared.core.config.broker else {
            return Publish::ready(self.publish_here(event).map_err(PublishError::Event));
        };
        if event.id().is_some() {
            return Publish::ready(Err(PublishError::OwnId));
        }
        // Its audience rides in the bytes, so that every broker carries it unchanged.
        let sent = broker.publish(self.name(), event.for_broker());
        let core = self.shared.core.clone();
        let topic = self.shared.name.clone();
        Publish::spawn(async move {
            match sent.await {
                Ok(position) => {
                    core.counters.published.fetch_add(1, Ordering::Relaxed);
                    Ok(position.to_id())
                }
                Err(err) => {
                    core.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %topic, error = %err, "hub publish failed");
                    Err(err)
                }
            }
        })
    }

    /// Publishes an event inside the caller's Postgres transaction (with the
    /// [Postgres engine](super::postgres)): it is delivered if and only if the transaction
    /// commits, in the topic's one order, and returns the id it has then. A rollback delivers
    /// nothing and hands its id to the next publish.
    ///
    /// `conn` is the transaction (`&mut tx`), or any connection (a lone statement commits on
    /// its own). Until the transaction ends, other publishes to this topic wait (see
    /// [the engine's docs](super::postgres#transactional-publish)): keep it short.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn f(hub: tower_sse::hub::Hub, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("UPDATE stock SET left = left - 1 WHERE item = 'tea'").execute(&mut *tx).await?;
    /// hub.topic("stock").publish_in(&mut tx, tower_sse::Event::message("tea: one less")).await?;
    /// tx.commit().await?; // now, and only now, every subscriber receives it
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`PublishError::Unavailable`] when the hub's broker is not the Postgres engine, or
    ///   Postgres refused the statement (the transaction is then aborted, as after any failed
    ///   statement: roll it back).
    /// - [`PublishError::OwnId`] for an event with an id of its own.
    /// - [`PublishError::Timeout`] when the broker's tables are still being created after its
    ///   publish timeout.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn publish_in<C>(&self, conn: &mut C, event: Event) -> Result<String, PublishError>
    where
        C: std::ops::DerefMut<Target = sqlx::PgConnection> + Send,
    {
        let Some(broker) = &self.shared.core.config.postgres else {
            return Err(PublishError::Unavailable(
                "publish_in needs a hub on the Postgres engine (HubBuilder::postgres)".into(),
            ));
        };
        if event.id().is_some() {
            return Err(PublishError::OwnId);
        }
        let event = event.for_broker();
        match broker.publish_on(conn, self.name(), &event).await {
            Ok(position) => Ok(position.to_id()),
            Err(err) => {
                let core = &self.shared.core;
                core.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.shared.name, error = %err, "hub publish failed");
                Err(err)
            }
        }
    }

    /// Publishing on the in-memory hub.
    fn publish_here(&self, event: Event) -> Result<String, EventError> {
        let mut state = lock(&self.shared.state);
        let id = state.merge.publish(event, Instant::now())?;
        State::wake_all(state);
        self.shared
            .core
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Adds a subscriber that starts streaming: counted, and announced to `on_join`. Returns
    /// its waiter slot. The first subscriber makes the hub follow the topic on its broker.
    pub(super) fn join(&self, lost: bool) -> usize {
        let core = &self.shared.core;
        let (key, count) = {
            let mut state = lock(&self.shared.state);
            let key = state.waiters.insert(None);
            if state.waiters.len() == 1 {
                if let Some(broker) = &core.config.broker {
                    state.merge.follow();
                    broker.follow(self.name());
                }
            }
            (key, state.waiters.len())
        };
        core.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        if lost {
            self.count_history_lost();
        }
        Core::run_hook(&core.config.on_join, self, count);
        key
    }

    /// Removes the subscriber in slot `key`; the last one makes the hub unfollow the topic.
    /// Returns how many are left.
    pub(super) fn leave(&self, key: usize) -> usize {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        state.waiters.try_remove(key);
        if state.waiters.is_empty() {
            if let Some(broker) = &shared.core.config.broker {
                state.merge.unfollow();
                broker.unfollow(self.name());
            }
        }
        state.waiters.len()
    }

    pub(super) fn count_history_lost(&self) {
        let counters = &self.shared.core.counters;
        counters.history_lost.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(topic = self.name(), "hub subscriber told history-lost");
    }
}

/// The control event that tells a subscriber its history is lost.
pub(super) fn history_lost() -> Event {
    control_event(HISTORY_LOST, r#"{"reason":"history-lost"}"#)
}
