//! Faults over real sockets: graceful shutdown (HTTP/1.1 and HTTP/2), the stream limit, `Accept`,
//! odd `Last-Event-ID` headers, panics in a stream, keep-alive over HTTP/2.
//! (Churn has its own test binary, since it measures the process's memory.)

mod common;

use common::{eventually, h2_client, h2_get, serve, RawClient};
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::ServiceBuilder;
use tower_sse::{decode::Decoder, Event, KeepAlive, LastEventId, Shutdown, SseBody, SseLayer};

#[tokio::test]
async fn graceful_shutdown_ends_every_stream_over_http1_and_http2() {
    let shutdown = Shutdown::new();
    let (senders_tx, mut senders) = mpsc::unbounded_channel::<mpsc::UnboundedSender<Event>>();
    let layer = SseLayer::new().shutdown(&shutdown);
    let svc =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |_req: Request<Incoming>| {
                let (tx, rx) = mpsc::unbounded_channel();
                senders_tx.send(tx).unwrap();
                async move {
                    Ok::<_, Infallible>(Response::new(SseBody::new(UnboundedReceiverStream::new(
                        rx,
                    ))))
                }
            });

    // A server loop with hyper-util's graceful shutdown, as an application would write it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                Ok((tcp, _)) = listener.accept() => {
                    let conn = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc.clone()))
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move { let _ = conn.await; });
                }
                _ = &mut stop_rx => break,
            }
        }
        graceful.shutdown().await;
    });

    let mut h1_clients = Vec::new();
    for _ in 0..10 {
        h1_clients.push(RawClient::get(addr, "/", &[]).await);
    }
    let mut h2 = h2_client(addr).await;
    let mut h2_bodies = Vec::new();
    for _ in 0..10 {
        h2_bodies.push(
            h2.send_request(h2_get(addr, "/"))
                .await
                .unwrap()
                .into_body(),
        );
    }
    let mut txs = Vec::new();
    for _ in 0..20 {
        txs.push(senders.recv().await.unwrap());
    }
    assert!(eventually(Duration::from_secs(5), || layer.open_streams() == 20).await);

    // Events accepted just before the shutdown must all be delivered: 100 of 1 KiB each, far
    // more than one coalesced frame.
    let accepted: Vec<String> = (0..100)
        .map(|i| format!("{i:04}{}", "x".repeat(1020)))
        .collect();
    for tx in &txs {
        for data in &accepted {
            tx.send(Event::message(data)).unwrap();
        }
    }
    let mut expected: Vec<(&str, &str)> =
        accepted.iter().map(|d| ("message", d.as_str())).collect();
    expected.push(("shutdown", "bye"));
    let bye = Event::builder()
        .event("shutdown")
        .retry(Duration::from_secs(7))
        .data("bye")
        .build()
        .unwrap();
    shutdown.trigger(Some(bye));
    stop_tx.send(()).unwrap();

    for client in &mut h1_clients {
        let (_, messages) = client.read_to_end().await;
        let got: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.event.as_str(), m.data.as_str()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(client.decoder.retry(), Some(7000));
        assert!(client.ended, "the chunked response was finished");
    }
    for body in h2_bodies {
        let bytes = body.collect().await.unwrap().to_bytes();
        let messages = Decoder::new().feed(&bytes);
        let got: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.event.as_str(), m.data.as_str()))
            .collect();
        assert_eq!(got, expected, "over HTTP/2");
    }
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server exits in bounded time")
        .unwrap();
    assert_eq!(layer.open_streams(), 0);
}

/// A body under a layer with `shutdown`, over a stream of `ready` events of 1 KiB.
async fn body_under_shutdown(
    shutdown: &Shutdown,
    ready: usize,
) -> impl http_body::Body<Data = bytes::Bytes, Error = tower_sse::BoxError> {
    use tower::ServiceExt;
    let events: Vec<Event> = (0..ready)
        .map(|i| Event::message(format!("{i:04}{}", "x".repeat(1020))))
        .collect();
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().open_frame(false).shutdown(shutdown))
        .service_fn(move |_req: Request<()>| {
            let events = stream::iter(events.clone()).chain(stream::pending());
            async move { Ok::<_, Infallible>(Response::new(SseBody::new(events))) }
        });
    svc.oneshot(Request::new(())).await.unwrap().into_body()
}

#[tokio::test]
async fn shutdown_delivers_ready_events_up_to_the_flush_limit() {
    let shutdown = Shutdown::new().flush_limit(4 * 1024);
    let body = body_under_shutdown(&shutdown, 100).await;
    shutdown.trigger(Some(
        Event::builder().event("bye").data("").build().unwrap(),
    ));
    let bytes = body.collect().await.unwrap().to_bytes();
    let messages = Decoder::new().feed(&bytes);
    // Each event is 1,033 bytes on the wire: frames stop once 4 KiB have gone out, so four
    // whole events, then the final one.
    let names: Vec<&str> = messages.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(names, ["message", "message", "message", "message", "bye"]);
    assert!(messages[3].data.starts_with("0003"));
}

#[tokio::test]
async fn shutdown_wakes_a_body_that_moved_to_another_task() {
    let shutdown = Shutdown::new();
    let mut body = Box::pin(body_under_shutdown(&shutdown, 0).await);
    // First polled (and left waiting) by one task...
    let mut body = tokio::spawn(async move {
        let polled = futures_util::poll!(body.frame());
        assert!(polled.is_pending());
        body
    })
    .await
    .unwrap();
    // ...then waited on by another: the trigger must wake this one.
    let waiter = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
    tokio::task::yield_now().await;
    shutdown.trigger(None);
    let ended = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the trigger woke the body's new task")
        .unwrap();
    assert_eq!(ended, None, "the stream ended");
}

#[tokio::test]
async fn beyond_the_stream_limit_clients_get_503_with_retry_after() {
    let svc = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .max_streams(3)
                .retry(Duration::from_millis(2500)),
        )
        .service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::pending::<Event>())))
        });
    let addr = serve(svc).await;

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::get(addr, "/", &[]).await;
        assert_eq!(client.status(), 200);
        assert_eq!(client.next_bytes().await.unwrap(), "retry: 2500\n");
        open.push(client);
    }
    let mut refused = RawClient::get(addr, "/", &[]).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.header("retry-after").as_deref(), Some("3"));
    assert_ne!(
        refused.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let (body, _) = refused.read_to_end().await;
    assert!(body.is_empty(), "a refused stream sends nothing");

    // A slot frees up when a client leaves.
    drop(open.pop());
    let mut again = None;
    for _ in 0..200 {
        let client = RawClient::get(addr, "/", &[]).await;
        if client.status() == 200 {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(again.is_some(), "a new stream is accepted after one closes");
}

#[tokio::test]
async fn the_longest_retry_gives_a_retry_after_within_client_timers() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().max_streams(0).retry(Duration::MAX))
        .service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::pending::<Event>())))
        });
    let addr = serve(svc).await;
    let refused = RawClient::get(addr, "/", &[]).await;
    assert_eq!(refused.status(), 503);
    // 2^31-1 ms, rounded up to whole seconds.
    assert_eq!(refused.header("retry-after").as_deref(), Some("2147484"));
}

#[tokio::test]
async fn an_accept_header_without_event_stream_gets_406() {
    let svc =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(SseBody::new(stream::iter([Event::message(
                    "x",
                )]))))
            });
    let addr = serve(svc).await;
    let mut client = RawClient::get(addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(client.status(), 406);
    let (body, _) = client.read_to_end().await;
    assert!(body.is_empty());
    // Anything that admits text/event-stream streams.
    let mut ok = RawClient::get(addr, "/", &[("accept", "*/*")]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.events(1).await[0].data, "x");
}

/// Sends a request with raw header bytes; returns the status line and the first body bytes.
async fn raw_request(addr: SocketAddr, extra_header: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = b"GET / HTTP/1.1\r\nhost: x\r\n".to_vec();
    req.extend_from_slice(extra_header);
    req.extend_from_slice(b"\r\n\r\n");
    tcp.write_all(&req).await.unwrap();
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("data:")
        && !String::from_utf8_lossy(&got).starts_with("HTTP/1.1 4")
    {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn odd_last_event_id_headers_are_ignored_without_error() {
    let svc = ServiceBuilder::new().layer(SseLayer::new()).service_fn(
        |req: Request<Incoming>| async move {
            let seen = match req.extensions().get::<LastEventId>() {
                Some(id) => format!("seen {}", id.len()),
                None => "none".to_owned(),
            };
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::iter([Event::message(
                seen,
            )]))))
        },
    );
    let addr = serve(svc).await;

    let (status, text) = raw_request(addr, b"last-event-id: 42").await;
    assert_eq!(status, 200);
    assert!(text.contains("data: seen 2"), "{text}");
    // Not UTF-8 (obs-text bytes, which HTTP allows): ignored.
    let (status, text) = raw_request(addr, b"last-event-id: \xff\xfe\x80abc").await;
    assert_eq!(status, 200);
    assert!(text.contains("data: none"), "{text}");
    // 10 KiB: ignored.
    let mut long = b"last-event-id: ".to_vec();
    long.extend(std::iter::repeat_n(b'7', 10 * 1024));
    let (status, text) = raw_request(addr, &long).await;
    assert_eq!(status, 200);
    assert!(text.contains("data: none"), "{text}");
    // Tabs are allowed by HTTP but by no event id, so ignored; other control characters never
    // reach the application: hyper refuses the request itself, and the server goes on serving.
    let (status, text) = raw_request(addr, b"last-event-id: a\tb").await;
    assert_eq!(status, 200);
    assert!(text.contains("data: none"), "{text}");
    let (status, _) = raw_request(addr, b"last-event-id: \x01\x02\x03\x1b[31m").await;
    assert_eq!(status, 400);
    let (status, _) = raw_request(addr, b"last-event-id: 1").await;
    assert_eq!(status, 200, "still serving");
}

#[tokio::test]
async fn a_panicking_stream_ends_its_response_and_spares_the_others() {
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let (errors_tx, mut errors) = mpsc::unbounded_channel::<String>();
    let layer = SseLayer::new().on_stream_error(move |err| {
        let _ = errors_tx.send(err.to_string());
    });
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req: Request<Incoming>| {
            let rx = rx.clone();
            async move {
                let events: stream::BoxStream<'static, Event> = if req.uri().path() == "/panic" {
                    stream::iter(0..)
                        .then(|i| async move {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if i == 2 {
                                panic!("application bug");
                            }
                            Event::message(i.to_string())
                        })
                        .boxed()
                } else if let Some(rx) = rx.lock().unwrap().take() {
                    UnboundedReceiverStream::new(rx).boxed()
                } else {
                    stream::iter([Event::message("fresh")]).boxed()
                };
                Ok::<_, Infallible>(Response::new(SseBody::new(events)))
            }
        });
    let addr = serve(svc).await;
    let mut healthy = RawClient::get(addr, "/ok", &[]).await;
    tx.send(Event::message("before")).unwrap();
    assert_eq!(healthy.events(1).await[0].data, "before");

    let mut buggy = RawClient::get(addr, "/panic", &[]).await;
    let (_, messages) = buggy.read_to_end().await;
    let got: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.event.as_str(), m.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("message", "0"),
            ("message", "1"),
            ("stream-error", r#"{"reason":"error"}"#)
        ]
    );
    assert!(buggy.ended, "the response ended cleanly");
    assert_eq!(buggy.decoder.retry(), Some(5000), "with a back-off");
    // The server is told what happened; the client was not.
    assert_eq!(errors.recv().await.unwrap(), "the event stream panicked");

    tx.send(Event::message("after")).unwrap();
    assert_eq!(
        healthy.events(1).await[0].data,
        "after",
        "other connections live on"
    );
    let mut fresh = RawClient::get(addr, "/ok2", &[]).await;
    assert_eq!(fresh.status(), 200, "the server still accepts connections");
    drop(fresh.next_bytes().await);
}

#[tokio::test]
async fn keep_alive_flows_over_http2() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().keep_alive(KeepAlive::new().interval(Duration::from_millis(25))))
        .service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::pending::<Event>())))
        });
    let addr = serve(svc).await;
    let mut h2 = h2_client(addr).await;
    let response = h2.send_request(h2_get(addr, "/")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    let mut seen = String::new();
    while seen.matches(": keep-alive\n").count() < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&frame.into_data().unwrap()).unwrap());
    }
    assert!(Decoder::new().feed(seen.as_bytes()).is_empty());
}
