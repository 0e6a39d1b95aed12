//! `serve::Server` over real sockets: one call serves an axum `Router`, `warp::service(filter)`
//! and a hyper `service_fn`, over HTTP/1.1 and h2c; graceful shutdown with and without a
//! deadline; the connection cap; the header-read timeout.

mod common;

use common::{h2_client, h2_get, RawClient};
use futures_util::{stream, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tower::ServiceBuilder;
use tower_layer::Layer;
use tower_sse::{decode::Decoder, serve::Server, Event, Shutdown, SseBody, SseLayer};

fn events(name: &'static str) -> impl futures_core::Stream<Item = Event> + Send + 'static {
    stream::iter([Event::message(name)]).chain(stream::pending())
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The first event of `/events` over HTTP/1.1 and over h2c.
async fn first_events(addr: SocketAddr) -> (String, String) {
    let mut h1 = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(
        h1.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let over_h1 = h1.events(1).await[0].data.clone();

    let mut h2 = h2_client(addr).await;
    let response = h2.send_request(h2_get(addr, "/events")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    let mut decoder = Decoder::new();
    let over_h2 = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(message) = decoder.feed(&frame.into_data().unwrap()).pop() {
            break message.data;
        }
    };
    (over_h1, over_h2)
}

#[tokio::test]
async fn one_call_serves_axum_warp_and_hyper_over_http1_and_h2c() {
    use warp::Filter;
    let axum_app = SseLayer::new().layer(axum::Router::new().route(
        "/events",
        axum::routing::get(|| async { SseBody::new(events("axum")) }),
    ));
    let warp_app = SseLayer::new().layer(warp::service(
        warp::path("events").map(|| SseBody::new(events("warp"))),
    ));
    let hyper_app = ServiceBuilder::new().layer(SseLayer::new()).service_fn(
        |req: Request<Incoming>| async move {
            Ok::<_, Infallible>(SseBody::from_request(&req, events("hyper")).into_http_response())
        },
    );

    let (listener, axum_addr) = bind().await;
    tokio::spawn(Server::new(listener).serve(axum_app));
    let (listener, warp_addr) = bind().await;
    tokio::spawn(Server::new(listener).serve(warp_app));
    let (listener, hyper_addr) = bind().await;
    tokio::spawn(Server::new(listener).serve(hyper_app));

    for (name, addr) in [
        ("axum", axum_addr),
        ("warp", warp_addr),
        ("hyper", hyper_addr),
    ] {
        let (h1, h2) = first_events(addr).await;
        assert_eq!((h1.as_str(), h2.as_str()), (name, name));
    }
}

#[tokio::test]
async fn graceful_shutdown_ends_the_streams_then_returns() {
    let shutdown = Shutdown::new();
    let app = ServiceBuilder::new()
        .layer(SseLayer::new().shutdown(&shutdown))
        .service_fn(|req: Request<Incoming>| async move {
            Ok::<_, Infallible>(SseBody::from_request(&req, events("live")).into_http_response())
        });
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let bye = Event::builder()
        .event("bye")
        .data("restarting")
        .build()
        .ok();
    let server = tokio::spawn(
        Server::new(listener)
            .shutdown(&shutdown, bye)
            .serve_with_graceful_shutdown(app, async {
                let _ = stopped.await;
            }),
    );

    let mut h1 = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(h1.events(1).await[0].data, "live");
    let mut h2 = h2_client(addr).await;
    let h2_body = h2
        .send_request(h2_get(addr, "/events"))
        .await
        .unwrap()
        .into_body();

    stop.send(()).unwrap();
    let (_, messages) = h1.read_to_end().await;
    assert_eq!(messages.last().map(|m| m.event.as_str()), Some("bye"));
    assert!(h1.ended, "the response was finished");
    let bytes = h2_body.collect().await.unwrap().to_bytes();
    let names: Vec<String> = Decoder::new()
        .feed(&bytes)
        .into_iter()
        .map(|m| m.event)
        .collect();
    assert_eq!(names, ["message", "bye"], "over HTTP/2");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server returns once its connections are done")
        .unwrap();
    // It no longer accepts.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn after_the_deadline_the_connections_left_are_closed() {
    // No Shutdown given: the stream would hold the server open for ever.
    let app = ServiceBuilder::new().layer(SseLayer::new()).service_fn(
        |req: Request<Incoming>| async move {
            Ok::<_, Infallible>(SseBody::from_request(&req, events("live")).into_http_response())
        },
    );
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new(listener)
            .graceful_timeout(Duration::from_millis(200))
            .serve_with_graceful_shutdown(app, async {
                let _ = stopped.await;
            }),
    );
    let mut client = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(client.events(1).await[0].data, "live");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server returns after the deadline")
        .unwrap();
    let (_, messages) = client.read_to_end().await;
    assert!(messages.is_empty());
    assert!(client.ended, "the connection was closed");
}

#[tokio::test]
async fn beyond_the_connection_cap_new_connections_wait() {
    let app = ServiceBuilder::new().layer(SseLayer::new()).service_fn(
        |req: Request<Incoming>| async move {
            Ok::<_, Infallible>(SseBody::from_request(&req, events("live")).into_http_response())
        },
    );
    let (listener, addr) = bind().await;
    tokio::spawn(Server::new(listener).max_connections(1).serve(app));

    let mut first = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(first.events(1).await[0].data, "live");
    // The kernel takes the second connection, but the server does not serve it yet.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second
        .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "no answer while the only slot is taken");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once the slot frees up")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_that_sends_no_request_head_is_closed() {
    let app = ServiceBuilder::new().layer(SseLayer::new()).service_fn(
        |req: Request<Incoming>| async move {
            Ok::<_, Infallible>(SseBody::from_request(&req, events("live")).into_http_response())
        },
    );
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(Duration::from_millis(200))
            .serve(app),
    );
    for sent in [
        &b""[..],
        b"GET /events HTTP/1.1\r\nhost:",
        b"PRI * HTTP/2.0\r\n",
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "closed after sending {sent:?}");
        assert!(!rest.starts_with(b"HTTP/1.1 200"), "{sent:?}");
    }
}
