//! End-to-end over real sockets with hyper 1 (hyper-util `auto`: HTTP/1.1 and h2c).

mod common;

use common::{h2_client, h2_get, serve, RawClient};
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_sse::{CloseReason, Disconnect, ErrorPolicy, Event, KeepAlive, SseBody, SseLayer};

/// A stream that never yields and records when it is dropped.
struct Idle(Arc<AtomicBool>);

impl futures_core::Stream for Idle {
    type Item = Event;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        std::task::Poll::Pending
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A server whose one route streams nothing (no traffic at all) and reports each request's
/// disconnect handle and stream-dropped flag.
async fn idle_server() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(Disconnect, Arc<AtomicBool>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().keep_alive(KeepAlive::disabled()))
        .service_fn(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let dropped = Arc::new(AtomicBool::new(false));
                let disconnect = req.extensions().get::<Disconnect>().unwrap().clone();
                tx.send((disconnect, dropped.clone())).unwrap();
                Ok::<_, Infallible>(Response::new(SseBody::new(Idle(dropped))))
            }
        });
    (serve(svc).await, rx)
}

#[tokio::test]
async fn http1_headers_and_events_on_the_wire() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_millis(2500)))
        .service_fn(|_req: Request<Incoming>| async {
            let events = stream::iter([
                Event::builder().event("a").id("1").data("x\r\ny").build(),
                Event::builder().data(" spaced").build(),
            ]);
            Ok::<_, Infallible>(Response::new(SseBody::new(events)))
        });
    let addr = serve(svc).await;
    let mut client = RawClient::get(addr, "/", &[]).await;
    assert_eq!(client.status(), 200);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(client.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(client.header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(client.header("content-length"), None);
    let (raw, messages) = client.read_to_end().await;
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        "retry: 2500\nevent: a\nid: 1\ndata: x\ndata: y\n\ndata:  spaced\n\n"
    );
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].data, "x\ny");
    assert_eq!(messages[1].data, " spaced");
    assert_eq!(messages[1].last_event_id, "1");
    assert_eq!(client.decoder.retry(), Some(2500));
}

#[tokio::test]
async fn http1_client_fin_is_seen_without_any_write() {
    let (addr, mut handles) = idle_server().await;
    let mut client = RawClient::get(addr, "/", &[]).await;
    assert_eq!(client.next_bytes().await.unwrap(), ":\n");
    let (disconnect, dropped) = handles.recv().await.unwrap();
    // Nothing flows now: no events, no keep-alive, so only the FIN itself can tell the server.
    // The bound is generous for a loaded machine; the figure is printed (BENCHMARKS.md).
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!disconnect.is_closed());
    let closed_at = Instant::now();
    drop(client);
    let reason = tokio::time::timeout(Duration::from_secs(5), disconnect.closed())
        .await
        .expect("disconnect noticed");
    let elapsed = closed_at.elapsed();
    println!("HTTP/1.1 FIN noticed after {elapsed:?}");
    assert_eq!(reason, CloseReason::Disconnected);
    assert!(dropped.load(Ordering::SeqCst), "the stream was dropped");
}

#[tokio::test]
async fn http2_stream_reset_is_seen_without_any_write() {
    let (addr, mut handles) = idle_server().await;
    let mut client = h2_client(addr).await;
    let response = client.send_request(h2_get(addr, "/")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, ":\n");
    let (disconnect, dropped) = handles.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!disconnect.is_closed());
    // Dropping the body resets the stream; the connection itself stays open.
    let reset_at = Instant::now();
    drop(body);
    let reason = tokio::time::timeout(Duration::from_secs(5), disconnect.closed())
        .await
        .expect("reset noticed");
    let elapsed = reset_at.elapsed();
    println!("HTTP/2 RST_STREAM noticed after {elapsed:?}");
    assert_eq!(reason, CloseReason::Disconnected);
    assert!(dropped.load(Ordering::SeqCst));

    // The connection still serves new streams.
    let again = client.send_request(h2_get(addr, "/")).await.unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn http2_headers_have_no_connection_specific_fields() {
    let svc =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(|_req: Request<Incoming>| async {
                let mut res = Response::new(SseBody::new(stream::iter([Event::message("h2")])));
                res.headers_mut()
                    .insert("connection", http::HeaderValue::from_static("keep-alive"));
                Ok::<_, Infallible>(res)
            });
    let addr = serve(svc).await;
    let mut client = h2_client(addr).await;
    let response = client.send_request(h2_get(addr, "/")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
    ] {
        assert!(!response.headers().contains_key(name), "{name}");
    }
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, ":\ndata: h2\n\n");
}

#[tokio::test]
async fn keep_alive_comments_flow_on_an_idle_connection() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().keep_alive(KeepAlive::new().interval(Duration::from_millis(30))))
        .service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::pending::<Event>())))
        });
    let addr = serve(svc).await;
    let mut client = RawClient::get(addr, "/", &[]).await;
    let mut seen = String::new();
    while seen.matches(": keep-alive\n").count() < 3 {
        let bytes = client.next_bytes().await.unwrap();
        seen.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    assert!(seen.starts_with(":\n"));
    assert_eq!(
        client.decoder.feed(seen.as_bytes()),
        vec![],
        "keep-alives dispatch nothing"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_stalls_the_producer() {
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let payload = "x".repeat(1024);
    let svc =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(move |_req: Request<Incoming>| {
                let counter = counter.clone();
                let payload = payload.clone();
                async move {
                    let events = stream::iter(0..).map(move |_: u64| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Event::message(&payload)
                    });
                    Ok::<_, Infallible>(Response::new(SseBody::new(events)))
                }
            });
    let addr = serve(svc).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut client = RawClient::get_on(tcp, addr, "/", &[]).await;

    // Read nothing more; wait until production stops.
    let mut last = 0;
    let mut stable_rounds = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = produced.load(Ordering::SeqCst);
        stable_rounds = if now == last { stable_rounds + 1 } else { 0 };
        last = now;
        if stable_rounds >= 8 {
            break;
        }
    }
    assert!(
        stable_rounds >= 8,
        "the producer never stalled ({last} events)"
    );
    println!("stalled after {last} events of 1 KiB");
    // Kernel socket buffers plus one hyper write buffer: a few MiB at most, never unbounded.
    assert!(
        last < 20_000,
        "{last} events produced for a client reading nothing"
    );

    // Reading again resumes production once the buffers in between drain.
    let mut read = 0;
    while produced.load(Ordering::SeqCst) == last && read < 64 * 1024 * 1024 {
        read += client.next_bytes().await.unwrap().len();
    }
    println!("production resumed after the client read {read} bytes");
    assert!(produced.load(Ordering::SeqCst) > last, "production resumed");
}

/// A server whose streams yield two events and then an error, all ready at once (`/together`),
/// or the error in a later poll than the events (`/later`), under `ErrorPolicy::Abort`.
async fn aborting_server() -> std::net::SocketAddr {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().on_error(ErrorPolicy::Abort))
        .service_fn(|req: Request<Incoming>| async move {
            let items = stream::iter([
                Ok(Event::message("one")),
                Ok(Event::message("two")),
                Err(std::io::Error::other("boom")),
            ]);
            let events = if req.uri().path() == "/later" {
                // Each item after a pause, so each goes to the server in a poll of its own.
                items
                    .then(|item| async move {
                        tokio::task::yield_now().await;
                        item
                    })
                    .boxed()
            } else {
                items.boxed()
            };
            Ok::<_, Infallible>(Response::new(SseBody::new(events)))
        });
    serve(svc).await
}

#[tokio::test]
async fn abort_delivers_the_events_before_the_error_over_http1() {
    let addr = aborting_server().await;
    for path in ["/together", "/later"] {
        let mut client = RawClient::get(addr, path, &[]).await;
        assert_eq!(client.status(), 200);
        let (raw, messages) = client.read_to_end().await;
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            ":\ndata: one\n\ndata: two\n\n",
            "{path}"
        );
        assert_eq!(messages.len(), 2);
        // Aborted: the connection closed without the chunked body's last chunk.
        assert!(client.ended);
        assert!(client.head.contains("transfer-encoding: chunked"));
    }
}

#[tokio::test]
async fn abort_delivers_the_events_before_the_error_over_http2() {
    let addr = aborting_server().await;
    let mut client = h2_client(addr).await;
    for path in ["/together", "/later"] {
        let response = client.send_request(h2_get(addr, path)).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let reset = loop {
            match body.frame().await {
                Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
                Some(Err(err)) => break err,
                None => panic!("{path}: the stream ended normally instead of being reset"),
            }
        };
        assert_eq!(
            String::from_utf8(received).unwrap(),
            ":\ndata: one\n\ndata: two\n\n",
            "{path}"
        );
        // Aborted: the server reset the stream.
        assert!(format!("{reset:?}").contains("INTERNAL_ERROR"), "{reset:?}");
    }
}
