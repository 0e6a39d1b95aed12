//! The hub's side of a broker's [`Feed`](super::broker::Feed): checks what the broker reports
//! and hands it to the topic it is for.

use super::broker::{Hubward, Position, Snapshot, SyncTicket};
use super::id::valid_tag;
use super::merge::{Entry, Synced};
use super::topic::{Shared, Topics};
use super::Core;
use crate::sync::lock;
use crate::Event;
use bytes::Bytes;
use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::{Duration, SystemTime},
};
use tokio::time::Instant;

/// What a broker's [`Feed`](super::broker::Feed) reaches: the hub, held weakly.
pub(super) struct HubSide {
    pub(super) core: Weak<Core>,
    pub(super) topics: Weak<Topics>,
}

impl HubSide {
    fn topic(&self, name: &str) -> Option<(Arc<Core>, Arc<Shared>)> {
        let core = self.core.upgrade()?;
        let topics = self.topics.upgrade()?;
        let shared = lock(&topics).get(name)?.clone();
        Some((core, shared))
    }
}

impl Hubward for HubSide {
    fn history(&self) -> usize {
        self.core.upgrade().map_or(0, |core| core.config.history)
    }

    fn history_age(&self) -> Option<Duration> {
        self.core.upgrade().and_then(|core| core.config.history_age)
    }

    fn last_position(&self, topic: &str) -> Option<Position> {
        let (_, shared) = self.topic(topic)?;
        shared.last_position()
    }

    fn event(&self, topic: &str, epoch: &str, offset: u64, at: Option<SystemTime>, payload: Bytes) {
        let Some((core, shared)) = self.topic(topic) else {
            return;
        };
        if !valid_tag(epoch) || offset == 0 {
            reject(&core, topic, "invalid position", epoch);
            return;
        }
        // A live message that is not an event is dropped: it takes no position. If it stood for
        // a real one, the next event shows a gap and the read fills it from the history.
        let Some(event) = checked(&core, topic, payload) else {
            return;
        };
        if shared.feed_event(epoch, offset, arrived(at), event) {
            if let Some(broker) = &core.config.broker {
                broker.follow(topic);
            }
        }
    }

    fn begin_sync(&self, topic: &str) -> Option<SyncTicket> {
        let (_, shared) = self.topic(topic)?;
        shared.begin_sync()
    }

    fn sync(&self, ticket: SyncTicket, snapshot: Snapshot) {
        let Some((core, shared)) = self.topic(&ticket.topic) else {
            return;
        };
        let synced = synced(&core, &ticket.topic, snapshot);
        shared.feed_sync(ticket.number, synced);
    }

    fn disconnected(&self) {
        let Some(topics) = self.topics.upgrade() else {
            return;
        };
        let topics: Vec<_> = lock(&topics).values().cloned().collect();
        for shared in topics {
            shared.feed_disconnected();
        }
    }
}

/// A snapshot as the merge takes it: entries sorted, deduplicated, and only the run that ends
/// at the head without a hole (anything before a hole cannot be delivered in order anyway). A
/// snapshot with an invalid epoch is taken as one of a broker that holds nothing, so no
/// subscriber waits for ever.
fn synced(core: &Core, topic: &str, snapshot: Snapshot) -> Synced {
    let Snapshot {
        epoch,
        head,
        events,
    } = snapshot;
    let epoch = match epoch {
        Some(epoch) if valid_tag(&epoch) => Arc::<str>::from(epoch),
        Some(epoch) => {
            reject(core, topic, "invalid epoch in a snapshot", &epoch);
            return Synced {
                epoch: None,
                head: 0,
                entries: Vec::new(),
            };
        }
        None => {
            return Synced {
                epoch: None,
                head,
                entries: Vec::new(),
            }
        }
    };
    let mut entries: Vec<(u64, Instant, Option<Event>, usize)> = Vec::with_capacity(events.len());
    for (pushed, (offset, at, payload)) in events.into_iter().enumerate() {
        if offset == 0 || offset > head {
            reject(
                core,
                topic,
                "history entry outside the topic's numbering",
                "",
            );
            continue;
        }
        entries.push((offset, arrived(at), checked(core, topic, payload), pushed));
    }
    // Two entries claiming one offset: an event beats junk, then the one pushed later (the Redis
    // engine pushes newest first, so the older entry: the one that was there first).
    entries.sort_by_key(|(offset, _, event, pushed)| {
        (*offset, event.is_none(), std::cmp::Reverse(*pushed))
    });
    entries.dedup_by_key(|(offset, _, _, _)| *offset);
    let mut entries: Vec<Entry> = entries
        .into_iter()
        .map(|(offset, at, event, _)| (offset, at, event))
        .collect();
    let mut keep = entries.len();
    let mut expect = head;
    while keep > 0 && entries[keep - 1].0 == expect {
        keep -= 1;
        expect -= 1;
    }
    entries.drain(..keep);
    Synced {
        epoch: Some(epoch),
        head,
        entries,
    }
}

/// When an event published at `published` (by the broker's clock) happened on this process's
/// clock; now, when the broker did not say or says it is in the future.
fn arrived(published: Option<SystemTime>) -> Instant {
    let now = Instant::now();
    let age = published.and_then(|at| SystemTime::now().duration_since(at).ok());
    age.and_then(|age| now.checked_sub(age)).unwrap_or(now)
}

/// The event in `payload`, or `None` (counted and logged) when it is not one this crate encoded.
fn checked(core: &Core, topic: &str, payload: Bytes) -> Option<Event> {
    let event = Event::from_wire(payload);
    if event.is_none() {
        reject(core, topic, "payload is not an event", "");
    }
    event
}

fn reject(core: &Core, topic: &str, why: &str, what: &str) {
    core.counters.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(topic, what, "hub dropped a message from its broker: {why}");
}
