//! Churn: 10,000 connect/disconnect cycles against a hub-backed SSE server leave no live stream,
//! no hub subscriber, and the process's memory where it was. Alone in its own test binary,
//! because it measures the whole process's resident memory.

mod common;

use common::{eventually, serve, vm_rss_kib, RawClient};
use http::{Request, Response};
use hyper::body::Incoming;
use std::{convert::Infallible, sync::Arc, time::Duration};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_sse::{hub::Hub, Event, LastEventId, SseBody, SseLayer};

async fn cycles(addr: std::net::SocketAddr, count: usize) {
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let permit = limit.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut client = RawClient::get(addr, "/", &[]).await;
            assert_eq!(client.status(), 200);
            // The stream is open once its first frame arrives; then the client goes away.
            assert!(client.next_bytes().await.is_some());
            drop(client);
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    let hub = Hub::new();
    let topic = hub.topic("churn");
    let layer = SseLayer::new();
    let svc = ServiceBuilder::new().layer(layer.clone()).service_fn({
        let topic = topic.clone();
        move |req: Request<Incoming>| {
            let subscription = topic.subscribe(req.extensions().get::<LastEventId>());
            async move { Ok::<_, Infallible>(Response::new(SseBody::new(subscription))) }
        }
    });
    let addr = serve(svc).await;
    let publisher = tokio::spawn({
        let topic = topic.clone();
        async move {
            loop {
                topic.publish(Event::message("tick")).unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });

    // Fill the topic's history to its cap, so what is measured is the connections alone.
    for _ in 0..1_100 {
        topic.publish(Event::message("tick")).unwrap();
    }
    // Warm up (runtime, allocator and socket pools), then measure.
    cycles(addr, 1_000).await;
    assert!(eventually(Duration::from_secs(10), || layer.open_streams() == 0).await);
    let before = vm_rss_kib();

    cycles(addr, 10_000).await;
    let drained = eventually(Duration::from_secs(10), || {
        layer.open_streams() == 0 && topic.subscribers() == 0
    })
    .await;
    publisher.abort();
    let after = vm_rss_kib();
    println!("RSS before {before} KiB, after 10,000 cycles {after} KiB");
    assert!(
        drained,
        "{} streams, {} subscribers left",
        layer.open_streams(),
        topic.subscribers()
    );
    assert_eq!(hub.stats().subscribers, 0);
    assert!(
        after * 10 <= before * 11,
        "RSS grew from {before} KiB to {after} KiB (more than 10%)"
    );
}
