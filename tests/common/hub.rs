//! Hubs as separate server processes on a test-owned `redis-server`: how the Redis tests build
//! nodes, wait for a subscription to be live, publish and read.

#[cfg(feature = "redis")]
use super::redis::{LaggingProxy, RedisServer};
use futures_util::StreamExt;
use std::time::Duration;
#[cfg(feature = "redis")]
use tower_sse::hub::{redis::RedisBroker, HubBuilder};
use tower_sse::{
    decode::{Decoder, Message},
    hub::{Hub, Subscription},
    Event, LastEventId,
};

/// Long enough that only a hang can reach it.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub const MARKER: &str = "marker";

#[cfg(feature = "redis")]
pub fn node(server: &RedisServer) -> (Hub, RedisBroker) {
    node_with(server, Hub::builder())
}

#[cfg(feature = "redis")]
pub fn node_with(server: &RedisServer, builder: HubBuilder) -> (Hub, RedisBroker) {
    let broker = RedisBroker::new(server.client())
        .publish_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    (builder.broker(broker.clone()).build(), broker)
}

/// A node whose every Redis reply arrives `delay` late.
#[cfg(feature = "redis")]
pub async fn lagging_node(
    server: &RedisServer,
    delay: Duration,
    builder: HubBuilder,
) -> (Hub, RedisBroker, LaggingProxy) {
    let proxy = LaggingProxy::start(server.port(), delay).await;
    let broker = RedisBroker::new(proxy.client())
        .publish_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    (builder.broker(broker.clone()).build(), broker, proxy)
}

/// The next stream item, within the patience.
pub async fn item(sub: &mut Subscription) -> Event {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an event within the patience")
        .expect("the stream stays open")
}

pub fn decode(event: &Event) -> Vec<Message> {
    Decoder::new().feed(event.as_bytes())
}

/// The next `n` dispatched events, markers left out.
pub async fn take(sub: &mut Subscription, n: usize) -> Vec<Message> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    while out.len() < n {
        let event = item(sub).await;
        out.extend(
            decoder
                .feed(event.as_bytes())
                .into_iter()
                .filter(|m| m.data != MARKER),
        );
    }
    assert_eq!(out.len(), n, "one event per item");
    out
}

pub fn data(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.data.clone()).collect()
}

pub fn numbers(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

pub fn id(text: &str) -> LastEventId {
    LastEventId::parse(text.as_bytes()).unwrap()
}

pub fn split_id(id: &str) -> (String, u64) {
    let (epoch, offset) = id.rsplit_once('-').expect("an id <epoch>-<offset>");
    (epoch.to_owned(), offset.parse().expect("an offset"))
}

pub async fn publish(hub: &Hub, topic: &str, data: &str) -> String {
    tokio::time::timeout(PATIENCE, hub.topic(topic).publish(Event::message(data)))
        .await
        .expect("publish answers")
        .expect("publish succeeds")
}

/// Subscribes and waits until the subscription is live; returns it with the id of the marker
/// it received (the subscriber's position).
pub async fn live_at(hub: &Hub, publisher: &Hub, topic: &str) -> (Subscription, String) {
    let mut sub = hub.topic(topic).subscribe(None);
    sub.join();
    loop {
        publish(publisher, topic, MARKER).await;
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await
        {
            let got = decode(&event);
            assert_eq!(got.len(), 1, "{event:?}");
            assert_eq!(got[0].data, MARKER, "{event:?}");
            return (sub, got[0].last_event_id.clone());
        }
    }
}

pub async fn live(hub: &Hub, publisher: &Hub, topic: &str) -> Subscription {
    live_at(hub, publisher, topic).await.0
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(feature = "redis")]
pub async fn kill_pubsub_connections(server: &RedisServer) {
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut server.admin().await)
        .await
        .unwrap();
}
