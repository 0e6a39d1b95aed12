//! `serve::Server` over real sockets: one call serves an axum `Router`, `warp::service(filter)`
//! and a hyper `service_fn`, over HTTP/1.1 and h2c; graceful shutdown with and without a
//! deadline; the connection cap; the header-read timeout.

mod common;

use common::{
    h2_client, h2_get,
    serve::{bind, live_app, plain_and_tls, plain_app, SelfSigned, PREFACE_AND_SETTINGS},
    RawClient,
};
use futures_util::{stream, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};
use tower::ServiceBuilder;
use tower_layer::Layer;
use tower_sse::{decode::Decoder, serve::Server, Event, Shutdown, SseBody, SseLayer};

fn events(name: &'static str) -> impl futures_core::Stream<Item = Event> + Send + 'static {
    stream::iter([Event::message(name)]).chain(stream::pending())
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

// ---- Timeouts: one budget from accept, the shutdown deadline, HTTP/2, the send timeout ----

/// A HEADERS frame on stream 1 (END_STREAM | END_HEADERS): `GET /` with `:authority: x`,
/// HPACK-encoded from the static table.
const GET_ON_STREAM_1: &[u8] = b"\x00\x00\x06\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x01x";

/// Reads and drops whatever `io` receives until the peer closes it (end of stream or an
/// error); the time that took since `since`, or `None` if it is still open after `limit`.
async fn closed_within<I>(io: &mut I, since: Instant, limit: Duration) -> Option<Duration>
where
    I: tokio::io::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            let _ = n;
        }
    };
    tokio::time::timeout(limit.saturating_sub(since.elapsed()), read_all)
        .await
        .ok()
        .map(|()| since.elapsed())
}

/// Connects, sends `sent`, and says how long after connecting the server closed the
/// connection (`None`: still open after `limit`).
async fn plain_client_closed_after(
    addr: SocketAddr,
    sent: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let since = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(sent).await.unwrap();
    closed_within(&mut tcp, since, limit).await
}

#[tokio::test]
async fn a_silent_or_partial_client_is_closed_one_header_read_timeout_after_accept() {
    // The budget runs from accept whatever the first bytes turn out to be: the peek for the
    // HTTP/2 preface draws on it, and hyper's HTTP/1.1 timer must not start a second one.
    const T: Duration = Duration::from_secs(3);
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(T)
            .serve(live_app(SseLayer::new())),
    );
    let sent: [&[u8]; 3] = [b"", b"PRI * HT", b"GET /events HTTP/1.1\r\nhost:"];
    let closed = futures_util::future::join_all(
        sent.map(|sent| plain_client_closed_after(addr, sent, T + Duration::from_secs(2))),
    )
    .await;
    for (sent, closed) in sent.iter().zip(closed) {
        eprintln!(
            "sent {:?}: closed after {closed:?}",
            String::from_utf8_lossy(sent)
        );
        let closed = closed.unwrap_or_else(|| panic!("open after T + 2 s, having sent {sent:?}"));
        assert!(
            closed >= T / 2,
            "closed early ({closed:?}) having sent {sent:?}"
        );
    }
}

#[tokio::test]
async fn an_http2_client_that_sends_no_request_is_closed_after_the_header_read_timeout() {
    // h2c and h2 over TLS, after the preface alone or with its SETTINGS; a TLS client that
    // never starts its handshake; an HTTP/1.1-over-TLS client silent after the handshake.
    // The TLS handshake draws on the same budget.
    const T: Duration = Duration::from_secs(3);
    let limit = T + Duration::from_secs(2);
    let tls = SelfSigned::new();
    let (h2c, https) = plain_and_tls(&tls, T).await;
    let over_tls = |alpn: &'static [u8], sent: &'static [u8]| {
        let tls = tls.clone();
        async move {
            let since = Instant::now();
            let mut stream = tls.connect(https, alpn).await;
            stream.write_all(sent).await.unwrap();
            stream.flush().await.unwrap();
            closed_within(&mut stream, since, limit).await
        }
    };
    let (preface, preface_and_settings, silent_tls, h2_tls, h1_tls) = tokio::join!(
        plain_client_closed_after(h2c, &PREFACE_AND_SETTINGS[..24], limit),
        plain_client_closed_after(h2c, PREFACE_AND_SETTINGS, limit),
        plain_client_closed_after(https, b"", limit),
        over_tls(b"h2", PREFACE_AND_SETTINGS),
        over_tls(b"http/1.1", b""),
    );
    for (what, closed) in [
        ("h2c preface", preface),
        ("h2c preface + SETTINGS", preface_and_settings),
        ("TLS, no handshake", silent_tls),
        ("h2 over TLS, preface + SETTINGS", h2_tls),
        ("HTTP/1.1 over TLS, silent", h1_tls),
    ] {
        eprintln!("{what}: closed after {closed:?}");
        let closed = closed.unwrap_or_else(|| panic!("{what}: open after T + 2 s"));
        assert!(closed >= T / 2, "{what}: closed early ({closed:?})");
    }
}

#[tokio::test]
async fn clients_that_send_only_the_http2_preface_hold_their_slots_only_until_the_header_read_timeout(
) {
    const T: Duration = Duration::from_secs(2);
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .max_connections(2)
            .header_read_timeout(T)
            .serve(live_app(SseLayer::new())),
    );
    let mut squatters = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(PREFACE_AND_SETTINGS).await.unwrap();
        squatters.push(tcp);
    }
    let since = Instant::now();
    let served = tokio::time::timeout(
        T + Duration::from_secs(3),
        RawClient::get(addr, "/events", &[]),
    )
    .await;
    eprintln!("a third client was served after {:?}", since.elapsed());
    let mut client = served.expect("a slot frees up within T + 3 s");
    assert_eq!(client.events(1).await[0].data, "live");
}

/// An HTTP/2 (h2c) client and a handle that finishes when its connection closes.
async fn h2_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

#[tokio::test]
async fn an_http2_connection_with_no_open_stream_is_closed_after_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let (listener, plain) = bind().await;
    tokio::spawn(Server::new(listener).idle_timeout(IDLE).serve(plain_app()));
    let (listener, live) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .idle_timeout(IDLE)
            .serve(live_app(SseLayer::new())),
    );

    // One request, answered and done: then no stream is open.
    let (mut idle, idle_conn) = h2_connection(plain).await;
    let response = idle.send_request(h2_get(plain, "/plain")).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"plain");
    let since = Instant::now();
    // An SSE stream that stays open on another connection.
    let (mut busy, busy_conn) = h2_connection(live).await;
    let response = busy.send_request(h2_get(live, "/events")).await.unwrap();
    let stream = response.into_body();

    tokio::time::timeout(IDLE + Duration::from_secs(3), idle_conn)
        .await
        .expect("the idle connection is closed within the idle timeout + 3 s")
        .unwrap();
    eprintln!("idle HTTP/2 connection closed after {:?}", since.elapsed());
    tokio::time::sleep((IDLE * 3).saturating_sub(since.elapsed())).await;
    assert!(
        !busy_conn.is_finished(),
        "a connection with an open stream is not idle"
    );
    assert_eq!(first_event(stream).await, "live");
}

#[tokio::test]
async fn an_http2_peer_that_stops_answering_pings_is_closed() {
    const INTERVAL: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .http2_keep_alive(Some(INTERVAL), TIMEOUT)
            .serve(live_app(SseLayer::new())),
    );
    // A raw client: it opens an SSE stream, then reads what comes and never writes again, so
    // the server's PINGs go unanswered.
    let mut mute = TcpStream::connect(addr).await.unwrap();
    mute.write_all(&[PREFACE_AND_SETTINGS, GET_ON_STREAM_1].concat())
        .await
        .unwrap();
    let since = Instant::now();
    // A real client answers them, and its stream stays open.
    let (mut live, live_conn) = h2_connection(addr).await;
    let stream = live
        .send_request(h2_get(addr, "/events"))
        .await
        .unwrap()
        .into_body();

    let closed = closed_within(
        &mut mute,
        since,
        INTERVAL + TIMEOUT + Duration::from_secs(3),
    )
    .await;
    eprintln!("a peer silent to PINGs was closed after {closed:?}");
    assert!(closed.is_some(), "closed within interval + timeout + 3 s");
    assert!(
        !live_conn.is_finished(),
        "a peer that answers stays connected"
    );
    assert_eq!(first_event(stream).await, "live");
}

#[tokio::test]
async fn a_graceful_shutdown_closes_connections_that_brought_no_request_at_once() {
    // With a header-read timeout far beyond the deadline, only the shutdown can close them;
    // none has brought a request, so none has anything to finish.
    const GRACE: Duration = Duration::from_secs(3);
    let tls = SelfSigned::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for tls in [None, Some(tls.server.clone())] {
        let (listener, addr) = bind().await;
        let mut server = Server::new(listener)
            .header_read_timeout(Duration::from_secs(60))
            .graceful_timeout(GRACE);
        if let Some(tls) = tls {
            server = server.rustls(tls);
        }
        let mut stopped = stopped.clone();
        servers.push(tokio::spawn(server.serve_with_graceful_shutdown(
            live_app(SseLayer::new()),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        )));
        addrs.push(addr);
    }
    let (plain, https) = (addrs[0], addrs[1]);
    let mut clients = Vec::new();
    for (addr, sent) in [
        (plain, &b""[..]),
        (plain, b"PRI * HT"),
        (plain, PREFACE_AND_SETTINGS),
        (plain, b"GET /events HTTP/1.1\r\nhost:"),
        (https, b""),
        (https, &[0x16, 0x03, 0x01, 0x02, 0x00]),
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        clients.push(tcp);
    }
    let mut h2_tls = tls.connect(https, b"h2").await;
    h2_tls.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    // Let the server take every connection in before it stops.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let since = Instant::now();
    stop.send(true).unwrap();
    for server in servers {
        tokio::time::timeout(
            (GRACE + Duration::from_secs(2)).saturating_sub(since.elapsed()),
            server,
        )
        .await
        .expect("the server returns within the graceful timeout + 2 s")
        .unwrap();
    }
    eprintln!(
        "both servers returned {:?} after the signal",
        since.elapsed()
    );
    assert!(
        since.elapsed() < GRACE,
        "closed as the shutdown starts, not at its deadline"
    );
    let limit = since.elapsed() + Duration::from_secs(1);
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(
            closed_within(client, since, limit).await.is_some(),
            "client {i} is closed"
        );
    }
    assert!(
        closed_within(&mut h2_tls, since, limit).await.is_some(),
        "h2 over TLS is closed"
    );
}

/// Endless 16 KiB events, produced as fast as the connection takes them; `dropped` fires when
/// the server drops the stream.
fn firehose(
    dropped: oneshot::Sender<()>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<SseBody<impl futures_core::Stream<Item = Event> + Send + 'static>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    struct OnDrop(Option<oneshot::Sender<()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let dropped = Arc::new(std::sync::Mutex::new(Some(dropped)));
    ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(move |req: Request<Incoming>| {
            let guard = OnDrop(dropped.lock().unwrap().take());
            async move {
                let data = "x".repeat(16 * 1024);
                let events = stream::repeat_with(move || {
                    let _ = &guard;
                    Event::message(data.clone())
                });
                Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
            }
        })
}

/// A client whose kernel receive buffer is `SO_RCVBUF` = 64 KiB (the kernel doubles it), so
/// the pace of its reads, not the kernel's autotuning, decides when its window opens.
async fn small_window_client(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    tcp
}

#[tokio::test]
async fn a_slow_but_live_reader_is_never_cut_by_the_send_timeout() {
    // The server's unsent queue is held small, so its writes wait only while this client's
    // window is shut; the client empties its 128 KiB receive buffer every ~0.7 s, three
    // times the slowest pace the send timeout allows (128 KiB per 2 s).
    const SEND_TIMEOUT: Duration = Duration::from_secs(2);
    const RATE: f64 = 192.0 * 1024.0;
    let (dropped, mut stream_dropped) = oneshot::channel();
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .send_timeout(SEND_TIMEOUT)
            .serve(firehose(dropped)),
    );
    let mut tcp = small_window_client(addr).await;
    let kernel_buffer = socket2::SockRef::from(&tcp).recv_buffer_size().unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let (mut total, mut longest_gap, mut last) = (0usize, Duration::ZERO, Instant::now());
    while start.elapsed() < SEND_TIMEOUT * 3 {
        // Read no faster than RATE on average.
        if (total as f64) > RATE * start.elapsed().as_secs_f64() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("data keeps coming")
            .unwrap_or(0);
        // A closed socket still delivers what its kernel had queued: the server's side tells
        // when it was cut.
        assert!(
            stream_dropped.try_recv().is_err(),
            "cut after {:?} having read {total} bytes",
            start.elapsed()
        );
        assert!(
            n > 0,
            "ended after {:?} having read {total} bytes",
            start.elapsed()
        );
        total += n;
        longest_gap = longest_gap.max(last.elapsed());
        last = Instant::now();
    }
    eprintln!(
        "read {total} bytes in {:?} ({:.0} B/s) through a {kernel_buffer}-byte receive buffer; longest wait for data {longest_gap:?}",
        start.elapsed(),
        total as f64 / start.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_reader_that_stops_is_cut_within_the_send_timeout() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(1);
    let (dropped, stream_dropped) = oneshot::channel();
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .send_timeout(SEND_TIMEOUT)
            .serve(firehose(dropped)),
    );
    let mut tcp = small_window_client(addr).await;
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // It reads nothing more: its buffers fill at once, then the server's writes stall.
    let since = Instant::now();
    tokio::time::timeout(SEND_TIMEOUT + Duration::from_secs(3), stream_dropped)
        .await
        .expect("the stalled connection is closed within the send timeout + 3 s")
        .unwrap();
    eprintln!("a stalled reader was cut after {:?}", since.elapsed());
    drop(tcp);
}

#[tokio::test]
async fn an_http1_connection_waits_one_header_read_timeout_for_its_next_request() {
    const T: Duration = Duration::from_secs(1);
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(T)
            .serve(plain_app()),
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"plain") {
        let mut buf = [0u8; 256];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the response ended");
        response.extend_from_slice(&buf[..n]);
    }
    let since = Instant::now();
    let closed = closed_within(&mut tcp, since, T + Duration::from_secs(2)).await;
    eprintln!("a keep-alive connection with no next request closed after {closed:?}");
    assert!(closed.is_some(), "closed within T + 2 s of the response");
}
