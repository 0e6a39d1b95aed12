//! The hub's side of the `Broker` contract, driven by a scripted engine: what subscribers see
//! when live events and history arrive in every order an engine can produce.

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use std::sync::{Arc, Mutex};
use tower_sse::{
    decode::{Decoder, Message},
    hub::{
        broker::{BrokerFuture, Feed, Position, Snapshot},
        Broker, Hub, PublishError, Subscription, HISTORY_LOST,
    },
    Event, LastEventId,
};

/// An engine the test drives by hand: it records what the hub asks, and the test plays the
/// engine's part through the [`Feed`].
#[derive(Debug, Clone, Default)]
struct Scripted {
    state: Arc<Mutex<ScriptedState>>,
}

#[derive(Debug, Default)]
struct ScriptedState {
    feed: Option<Feed>,
    calls: Vec<String>,
    published: Vec<Bytes>,
}

impl Broker for Scripted {
    fn attach(&self, feed: Feed) {
        self.state.lock().unwrap().feed = Some(feed);
    }

    fn publish(&self, _topic: &str, event: Event) -> BrokerFuture {
        let mut state = self.state.lock().unwrap();
        state.published.push(event.as_bytes().clone());
        let offset = state.published.len() as u64;
        Box::pin(async move {
            Ok(Position {
                epoch: "E".into(),
                offset,
            })
        })
    }

    fn follow(&self, topic: &str) {
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("follow {topic}"));
    }

    fn unfollow(&self, topic: &str) {
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("unfollow {topic}"));
    }
}

impl Scripted {
    fn feed(&self) -> Feed {
        self.state.lock().unwrap().feed.clone().unwrap()
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }
}

fn payload(data: &str) -> Bytes {
    Event::message(data).into_bytes()
}

fn snapshot(epoch: &str, head: u64, events: &[(u64, &str)]) -> Snapshot {
    let mut snapshot = Snapshot::new(epoch, head);
    for (offset, data) in events {
        snapshot.push(*offset, payload(data));
    }
    snapshot
}

/// Plays a read of topic `t`: a ticket taken now, answered with `snapshot`.
fn sync(engine: &Scripted, snapshot: Snapshot) {
    let feed = engine.feed();
    let ticket = feed.begin_sync("t").expect("the hub follows t");
    feed.sync(ticket, snapshot);
}

fn setup() -> (Hub, Scripted) {
    let engine = Scripted::default();
    let hub = Hub::builder().broker(engine.clone()).build();
    (hub, engine)
}

/// Everything ready now, as a client would dispatch it.
fn ready(sub: &mut Subscription) -> Vec<Message> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    while let Some(Some(event)) = sub.next().now_or_never() {
        out.extend(decoder.feed(event.as_bytes()));
    }
    out
}

/// A subscriber of topic `t` whose stream has started (so the hub follows `t`), with nothing
/// to read before the engine's sync.
fn streaming(hub: &Hub) -> Subscription {
    let mut sub = hub.topic("t").subscribe(None);
    assert!(ready(&mut sub).is_empty());
    sub
}

fn seen(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| format!("{}:{}:{}", m.event, m.data, m.last_event_id))
        .collect()
}

fn id(text: &str) -> LastEventId {
    LastEventId::parse(text.as_bytes()).unwrap()
}

#[tokio::test]
async fn the_hub_follows_a_topic_while_it_has_subscribers_and_waits_for_the_sync() {
    let (hub, engine) = setup();
    let mut sub = hub.topic("t").subscribe(None);
    assert!(engine.calls().is_empty(), "nothing until the stream starts");
    assert!(ready(&mut sub).is_empty());
    assert_eq!(engine.calls(), ["follow t"]);
    // A live event before the sync waits for it; the sync says where the topic stands.
    engine.feed().event("t", "E", 3, payload("three"));
    assert!(ready(&mut sub).is_empty(), "not live before the sync");
    sync(&engine, snapshot("E", 2, &[(1, "one"), (2, "two")]));
    // A subscriber without Last-Event-ID starts after the newest event the sync knew of.
    assert_eq!(seen(&ready(&mut sub)), ["message:three:E-3"]);
    let mut second = hub.topic("t").subscribe(None);
    assert!(ready(&mut second).is_empty());
    assert!(engine.calls().is_empty(), "followed once per topic");
    drop(sub);
    assert!(engine.calls().is_empty());
    drop(second);
    assert_eq!(engine.calls(), ["unfollow t"]);
}

#[tokio::test]
async fn a_resume_merges_history_and_held_live_events_without_gap_or_duplicate() {
    let (hub, engine) = setup();
    let mut sub = hub.topic("t").subscribe(Some(&id("E-1")));
    assert!(ready(&mut sub).is_empty());
    // Live events 3 and 4 arrive while the engine reads history up to 3: 3 is in both.
    engine.feed().event("t", "E", 3, payload("three"));
    engine.feed().event("t", "E", 4, payload("four"));
    sync(
        &engine,
        snapshot("E", 3, &[(3, "three"), (1, "one"), (2, "two")]),
    );
    engine.feed().event("t", "E", 4, payload("four"));
    engine.feed().event("t", "E", 5, payload("five"));
    assert_eq!(
        seen(&ready(&mut sub)),
        [
            "message:two:E-2",
            "message:three:E-3",
            "message:four:E-4",
            "message:five:E-5"
        ]
    );
    assert_eq!(hub.stats().history_lost, 0);
    // Other bytes at a position the hub holds: the engine's numbering went back. The hub asks
    // for a read instead of taking either for a duplicate, and the read tells.
    engine.calls();
    engine.feed().event("t", "E", 5, payload("not five"));
    assert_eq!(engine.calls(), ["follow t"]);
    sync(&engine, snapshot("E", 2, &[(1, "x"), (2, "y")]));
    assert_eq!(ready(&mut sub)[0].event, HISTORY_LOST);
}

#[tokio::test]
async fn a_gap_in_live_events_asks_for_a_sync_that_fills_it() {
    let (hub, engine) = setup();
    let mut sub = streaming(&hub);
    sync(&engine, snapshot("E", 1, &[(1, "one")]));
    engine.calls();
    engine.feed().event("t", "E", 2, payload("two"));
    engine.feed().event("t", "E", 4, payload("four"));
    assert_eq!(engine.calls(), ["follow t"], "the gap asks for a sync");
    assert_eq!(seen(&ready(&mut sub)), ["message:two:E-2"]);
    sync(&engine, snapshot("E", 4, &[(3, "three"), (4, "four")]));
    assert_eq!(
        seen(&ready(&mut sub)),
        ["message:three:E-3", "message:four:E-4"]
    );
    assert_eq!(hub.stats().history_lost, 0);
}

#[tokio::test]
async fn after_a_lost_connection_the_sync_fills_the_gap_or_says_history_lost() {
    let (hub, engine) = setup();
    let mut sub = streaming(&hub);
    sync(&engine, snapshot("E", 0, &[]));
    engine.feed().event("t", "E", 1, payload("one"));
    assert_eq!(seen(&ready(&mut sub)), ["message:one:E-1"]);

    engine.feed().disconnected();
    // Reconnected: the history still reaches back to what the hub holds.
    sync(&engine, snapshot("E", 3, &[(2, "two"), (3, "three")]));
    assert_eq!(
        seen(&ready(&mut sub)),
        ["message:two:E-2", "message:three:E-3"]
    );

    engine.feed().disconnected();
    // Reconnected again: events 4 to 9 were published meanwhile, the history keeps 8 and 9.
    sync(&engine, snapshot("E", 9, &[(8, "eight"), (9, "nine")]));
    assert_eq!(
        seen(&ready(&mut sub)),
        [
            r#"history-lost:{"reason":"history-lost"}:"#,
            "message:eight:E-8",
            "message:nine:E-9"
        ]
    );
    assert_eq!(hub.stats().history_lost, 1);
}

#[tokio::test]
async fn a_new_epoch_is_history_lost_then_its_events() {
    let (hub, engine) = setup();
    let mut sub = streaming(&hub);
    sync(&engine, snapshot("E", 2, &[(1, "one"), (2, "two")]));
    assert!(ready(&mut sub).is_empty(), "live, after two");
    // The engine lost its history (a flush): the next event is offset 1 of another epoch. Only
    // a read changes the epoch (a live message could come from anywhere): the hub asks for one.
    engine.calls();
    engine.feed().event("t", "F", 1, payload("fresh"));
    assert!(ready(&mut sub).is_empty(), "held until the read");
    assert_eq!(engine.calls(), ["follow t"]);
    sync(&engine, snapshot("F", 1, &[(1, "fresh")]));
    let got = ready(&mut sub);
    assert_eq!(got[0].event, HISTORY_LOST);
    assert_eq!(seen(&got[1..]), ["message:fresh:F-1"]);
    // An id of another epoch than the hub holds could be of one it has not seen yet: a fresh
    // read decides, and says it is gone.
    engine.calls();
    let mut late = hub.topic("t").subscribe(Some(&id("E-2")));
    assert!(ready(&mut late).is_empty(), "waits for the read");
    assert_eq!(engine.calls(), ["follow t"]);
    sync(&engine, snapshot("F", 1, &[(1, "fresh")]));
    assert_eq!(ready(&mut late)[0].event, HISTORY_LOST);
    // An id of the new one resumes.
    engine.feed().event("t", "F", 2, payload("second"));
    let mut resumed = hub.topic("t").subscribe(Some(&id("F-1")));
    assert_eq!(seen(&ready(&mut resumed)), ["message:second:F-2"]);
}

#[tokio::test]
async fn what_is_not_an_event_or_an_epoch_is_dropped_and_counted() {
    let (hub, engine) = setup();
    let mut sub = streaming(&hub);
    sync(&engine, snapshot("E", 0, &[]));
    engine.calls();
    engine
        .feed()
        .event("t", "E", 1, Bytes::from_static(b"id: 9\ndata: x\n\n"));
    engine.feed().event("t", "E-vil", 1, payload("bad epoch"));
    sync(&engine, snapshot("not/valid", 1, &[(1, "x")]));
    assert!(ready(&mut sub).is_empty());
    assert_eq!(hub.stats().rejected, 3);
    // A junk entry in a snapshot is passed over like the junk live event before it: it costs
    // none of the entries after it.
    engine.feed().disconnected();
    let mut snap = snapshot("E", 3, &[(1, "one"), (3, "three")]);
    snap.push(2, Bytes::from_static(b"data: a\n\ndata: b\n\n"));
    sync(&engine, snap);
    // The live junk at 1 took no position; the read says what 1 is.
    assert_eq!(
        seen(&ready(&mut sub)),
        ["message:one:E-1", "message:three:E-3"]
    );
    assert_eq!(hub.stats().rejected, 4);
    assert_eq!(hub.stats().history_lost, 0);
}

#[tokio::test]
async fn publishing_goes_to_the_engine_and_comes_back_from_it() {
    let (hub, engine) = setup();
    let topic = hub.topic("t");
    let id = topic.publish(Event::message("hi")).await.unwrap();
    assert_eq!(id, "E-1");
    assert_eq!(
        engine.state.lock().unwrap().published,
        [Bytes::from_static(b"data: hi\n\n")],
        "the engine gets the event without an id"
    );
    assert_eq!(hub.stats().published, 1);
    let own = Event::builder().id("x").data("y").build().unwrap();
    assert!(matches!(topic.publish(own).await, Err(PublishError::OwnId)));
    // Nothing reaches subscribers but through the engine.
    let mut sub = topic.subscribe(None);
    assert!(ready(&mut sub).is_empty());
    sync(&engine, snapshot("E", 1, &[(1, "hi")]));
    assert!(
        ready(&mut sub).is_empty(),
        "published before this subscriber"
    );
}
