//! The hub behind a real hyper server: presence, replay over HTTP, send timeout.

mod common;

use common::{eventually, serve, serve_wrapped, RawClient};
use http::{Request, Response};
use hyper::body::Incoming;
use std::{convert::Infallible, time::Duration};
use tokio::net::TcpStream;
use tower::ServiceBuilder;
use tower_sse::{
    hub::{Hub, Topic},
    io::SendTimeout,
    Event, KeepAlive, LastEventId, SseBody, SseLayer,
};

fn app(
    topic: Topic,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<SseBody<tower_sse::hub::Subscription>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .layer(SseLayer::new().keep_alive(KeepAlive::disabled()))
        .service_fn(move |req: Request<Incoming>| {
            let sub = topic.subscribe(req.extensions().get::<LastEventId>());
            async move { Ok::<_, Infallible>(Response::new(SseBody::new(sub))) }
        })
}

#[tokio::test]
async fn subscribers_leave_when_clients_disconnect() {
    let hub = Hub::new();
    let topic = hub.topic("room");
    let addr = serve(app(topic.clone())).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(RawClient::get(addr, "/", &[]).await);
    }
    assert!(eventually(Duration::from_secs(5), || topic.subscribers() == 100).await);
    topic
        .publish(Event::message("to all"))
        .now()
        .unwrap()
        .unwrap();
    for client in &mut clients {
        let got = client.events(1).await;
        assert_eq!(got[0].data, "to all");
    }
    drop(clients);
    assert!(
        eventually(Duration::from_secs(5), || topic.subscribers() == 0).await,
        "still {} subscribers",
        topic.subscribers()
    );
    assert_eq!(hub.stats().subscribers, 0);
    assert_eq!(hub.stats().delivered, 100);
}

#[tokio::test]
async fn a_reconnecting_client_replays_what_it_missed() {
    let hub = Hub::new();
    let topic = hub.topic("room");
    let addr = serve(app(topic.clone())).await;
    let mut client = RawClient::get(addr, "/", &[]).await;
    assert!(eventually(Duration::from_secs(5), || topic.subscribers() == 1).await);
    for i in 0..3 {
        topic
            .publish(Event::message(format!("m{i}")))
            .now()
            .unwrap()
            .unwrap();
    }
    let got = client.events(3).await;
    let last = got[2].last_event_id.clone();
    drop(client);
    assert!(eventually(Duration::from_secs(5), || topic.subscribers() == 0).await);
    for i in 3..6 {
        topic
            .publish(Event::message(format!("m{i}")))
            .now()
            .unwrap()
            .unwrap();
    }
    let mut client = RawClient::get(addr, "/", &[("last-event-id", &last)]).await;
    let got = client.events(3).await;
    let data: Vec<&str> = got.iter().map(|m| m.data.as_str()).collect();
    assert_eq!(data, ["m3", "m4", "m5"]);
}

fn with_send_timeout(tcp: TcpStream) -> SendTimeout<TcpStream> {
    SendTimeout::new(tcp, Duration::from_millis(300))
}

#[tokio::test]
async fn a_stalled_client_is_closed_by_the_send_timeout_and_freed() {
    let hub = Hub::builder().max_lag(u64::MAX, u64::MAX).build();
    let topic = hub.topic("feed");
    let addr = serve_wrapped(app(topic.clone()), with_send_timeout).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let stalled = RawClient::get_on(tcp, addr, "/", &[]).await;
    let mut live = RawClient::get(addr, "/", &[]).await;
    assert!(eventually(Duration::from_secs(5), || topic.subscribers() == 2).await);

    // Keep publishing; the live client reads, the stalled one never does.
    let publisher = {
        let topic = topic.clone();
        tokio::spawn(async move {
            let payload = "x".repeat(4096);
            for _ in 0..20_000 {
                topic
                    .publish(Event::message(&payload))
                    .now()
                    .unwrap()
                    .unwrap();
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let reader = tokio::spawn(async move { while live.next_bytes().await.is_some() {} });
    let closed = eventually(Duration::from_secs(20), || topic.subscribers() == 1).await;
    publisher.abort();
    reader.abort();
    assert!(closed, "the stalled client was never closed");
    drop(stalled);
}
