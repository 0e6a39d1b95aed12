//! `serve::Server` over real sockets: one call serves an axum `Router`, `warp::service(filter)`
//! and a hyper `service_fn`, over HTTP/1.1 and h2c; graceful shutdown with and without a
//! deadline; the connection cap; the header-read timeout.

mod common;

use common::{h2_client, h2_get, RawClient};
use futures_util::{stream, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};
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

/// A hyper service under `layer` whose every stream sends `live`, then stays open.
fn live_app(
    layer: SseLayer,
) -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<SseBody<impl futures_core::Stream<Item = Event> + Send + 'static>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Incoming>| async move {
            Ok::<_, Infallible>(SseBody::from_request(&req, events("live")).into_http_response())
        })
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
    let app = live_app(SseLayer::new().shutdown(&shutdown));
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
    let app = live_app(SseLayer::new());
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
    let app = live_app(SseLayer::new());
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
    let app = live_app(SseLayer::new());
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

#[tokio::test]
async fn a_client_that_never_finishes_the_tls_handshake_is_closed() {
    let tls = SelfSigned::new();
    let app = live_app(SseLayer::new());
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .header_read_timeout(Duration::from_millis(200))
            .serve(app),
    );
    // A TLS record header that promises more than ever comes.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed after the handshake timeout");
}

/// A self-signed certificate for `localhost`, the server configuration that serves it, and
/// clients that trust it.
struct SelfSigned {
    server: Arc<rustls::ServerConfig>,
    cert: rustls::pki_types::CertificateDer<'static>,
}

impl SelfSigned {
    fn new() -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        SelfSigned {
            server: Arc::new(server),
            cert,
        }
    }

    /// Connects a client that offers `alpn`.
    async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap()
    }
}

/// Reads a response body until it holds one event; returns its data.
async fn first_event(mut body: Incoming) -> String {
    let mut decoder = Decoder::new();
    loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(message) = decoder.feed(&frame.into_data().unwrap()).pop() {
            return message.data;
        }
    }
}

fn get(uri: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
    Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .unwrap()
}

#[tokio::test]
async fn https_serves_http2_to_h2_clients_and_http1_to_the_others() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tls = SelfSigned::new();
    let app = ServiceBuilder::new().layer(SseLayer::new()).service_fn(
        |req: Request<Incoming>| async move {
            // Each stream says which protocol carried it.
            let version = Event::message(format!("{:?}", req.version()));
            let events = stream::iter([version]).chain(stream::pending());
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        },
    );
    let (listener, addr) = bind().await;
    tokio::spawn(Server::new(listener).rustls(tls.server.clone()).serve(app));

    // HTTP/2 over TLS: ten streams on one connection.
    let stream = tls.connect(addr, b"h2").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let response = h2
            .send_request(get(&format!("https://localhost:{}/events", addr.port())))
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        bodies.push(response.into_body());
    }
    for body in bodies {
        assert_eq!(first_event(body).await, "HTTP/2.0");
    }

    // HTTP/1.1 over TLS, for a client that offers only that.
    let stream = tls.connect(addr, b"http/1.1").await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = h1.send_request(get("/events")).await.unwrap();
    assert_eq!(first_event(response.into_body()).await, "HTTP/1.1");
}

#[tokio::test]
async fn https_serves_axum_and_warp_apps_over_http2() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use warp::Filter;
    let tls = SelfSigned::new();
    let axum_app = SseLayer::new().layer(axum::Router::new().route(
        "/events",
        axum::routing::get(|| async { SseBody::new(events("axum")) }),
    ));
    let warp_app = SseLayer::new().layer(warp::service(
        warp::path("events").map(|| SseBody::new(events("warp"))),
    ));
    let (listener, axum_addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .serve(axum_app),
    );
    let (listener, warp_addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .serve(warp_app),
    );
    for (name, addr) in [("axum", axum_addr), ("warp", warp_addr)] {
        let stream = tls.connect(addr, b"h2").await;
        let (mut h2, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let response = h2
            .send_request(get(&format!("https://localhost:{}/events", addr.port())))
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(first_event(response.into_body()).await, name);
    }
}
