//! `SseLayer`: through `ServiceBuilder` and `oneshot` (headers, settings, `Last-Event-ID`, the
//! disconnect handle), and over real sockets (the stream limit and its `Retry-After`, the
//! `Accept` check, odd `Last-Event-ID` headers as a client sends them, hub streams rotated by
//! their lifetime and resumed).

mod common;

use bytes::Bytes;
use common::{logs_of, serve, RawClient};
use futures_util::{stream, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_sse::{
    CloseReason, Disconnect, ErrorPolicy, Event, KeepAlive, LastEventId, Shutdown, SseBody,
    SseContext, SseLayer,
};

type Events = stream::Iter<std::vec::IntoIter<Event>>;

fn events(data: &[&str]) -> Events {
    let events: Vec<Event> = data.iter().map(|d| Event::message(*d)).collect();
    stream::iter(events)
}

#[tokio::test]
async fn sets_sse_headers_and_keeps_status_and_others() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_req: Request<()>| async {
            let mut res = Response::new(SseBody::new(events(&["x"])));
            *res.status_mut() = StatusCode::ACCEPTED;
            let h = res.headers_mut();
            h.insert("x-app", HeaderValue::from_static("kept"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
            h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok::<_, Infallible>(res)
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["x-app"], "kept");
    for gone in [
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
    ] {
        assert!(!h.contains_key(gone), "{gone} must be removed");
    }
}

#[tokio::test]
async fn an_explicit_cache_control_is_kept() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_req: Request<()>| async {
            let mut res = Response::new(SseBody::new(events(&[])));
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok::<_, Infallible>(res)
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn non_sse_responses_pass_through_untouched() {
    let svc =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(|req: Request<()>| async move {
                let disconnect = req.extensions().get::<Disconnect>().unwrap().clone();
                let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
                res.extensions_mut().insert(disconnect);
                Ok::<_, Infallible>(res)
            });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["content-length"], "2");
    assert!(!res.headers().contains_key("x-accel-buffering"));
    let disconnect = res.extensions().get::<Disconnect>().unwrap();
    assert_eq!(disconnect.reason(), Some(CloseReason::NoStream));
}

#[tokio::test]
async fn a_body_built_then_discarded_does_not_make_the_response_sse() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_req: Request<()>| async {
            drop(SseBody::new(events(&["never"])));
            let mut res = Response::new(Full::new(Bytes::from_static(b"nope")));
            *res.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(res)
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(!res.headers().contains_key("content-type"));
}

#[tokio::test]
async fn layer_settings_reach_the_body() {
    let svc = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .retry(Duration::from_millis(1234))
                .coalesce(0),
        )
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(events(&["a", "b"]))))
        });
    let mut body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    // Coalescing off: one frame per event, after the retry hint.
    assert_eq!(frames, ["retry: 1234\n", "data: a\n\n", "data: b\n\n"]);
}

#[tokio::test]
async fn the_innermost_layer_wins_and_body_setters_override_it() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_secs(1)))
        .layer(SseLayer::new().retry(Duration::from_secs(2)))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(events(&[]))))
        });
    let body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "retry: 2000\n");

    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_secs(1)))
        .service_fn(|_req: Request<()>| async {
            let body = SseBody::new(events(&[])).retry(Duration::from_secs(9));
            Ok::<_, Infallible>(Response::new(body))
        });
    let body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "retry: 9000\n");
}

#[tokio::test]
async fn a_body_built_in_call_itself_gets_the_settings() {
    // A service that builds its body synchronously in `call`, not in its future.
    let svc = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .open_frame(false)
                .on_error(ErrorPolicy::Abort),
        )
        .service_fn(|_req: Request<()>| {
            let items = stream::iter(vec![Err::<Event, _>(std::io::Error::other("x"))]);
            let res = Response::new(SseBody::new(items));
            std::future::ready(Ok::<_, Infallible>(res))
        });
    let body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert!(
        body.collect().await.is_err(),
        "the abort policy came from the layer"
    );
}

#[tokio::test]
async fn a_body_outside_any_layer_uses_defaults() {
    let body = SseBody::new(events(&["x"]));
    assert_eq!(body.collect().await.unwrap().to_bytes(), ":\ndata: x\n\n");
}

async fn seen_last_event_id(value: Option<&[u8]>) -> Option<String> {
    let svc =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(|req: Request<()>| async move {
                let id = req
                    .extensions()
                    .get::<LastEventId>()
                    .map(|id| id.to_string());
                Ok::<_, Infallible>(Response::new(id))
            });
    let mut req = Request::new(());
    if let Some(value) = value {
        req.headers_mut()
            .insert("last-event-id", HeaderValue::from_bytes(value).unwrap());
    }
    svc.oneshot(req).await.unwrap().into_body()
}

#[tokio::test]
async fn last_event_id_is_parsed_or_safely_ignored() {
    assert_eq!(seen_last_event_id(Some(b"17")).await.as_deref(), Some("17"));
    assert_eq!(seen_last_event_id(None).await, None);
    assert_eq!(seen_last_event_id(Some(b"")).await, None);
    assert_eq!(seen_last_event_id(Some(b"\xc3\x28")).await, None);
    assert_eq!(seen_last_event_id(Some(&[b'9'; 10 * 1024])).await, None);
    // `http` refuses control characters other than tab in header values; no event id holds a
    // tab (the builder refuses it), so a value with one names no position either.
    assert_eq!(seen_last_event_id(Some(b"a\tb")).await, None);
    assert_eq!(seen_last_event_id(Some(b" 17")).await, None);
}

#[tokio::test]
async fn a_stale_last_event_id_extension_is_replaced() {
    let inner = service_fn(|req: Request<()>| async move {
        let id = req
            .extensions()
            .get::<LastEventId>()
            .map(|id| id.to_string());
        Ok::<_, Infallible>(Response::new(id))
    });
    let svc = ServiceBuilder::new().layer(SseLayer::new()).service(inner);
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(LastEventId::parse(b"forged").unwrap());
    assert_eq!(svc.oneshot(req).await.unwrap().into_body(), None);
}

#[tokio::test]
async fn disconnect_handle_in_extensions_tracks_the_body() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().keep_alive(KeepAlive::disabled()))
        .service_fn(move |req: Request<()>| {
            let disconnect = req.extensions().get::<Disconnect>().unwrap().clone();
            tx.lock().unwrap().take().unwrap().send(disconnect).unwrap();
            async {
                let pending = stream::pending::<Event>();
                Ok::<_, Infallible>(Response::new(SseBody::new(pending)))
            }
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    let disconnect = rx.await.unwrap();
    assert!(!disconnect.is_closed());
    drop(res);
    assert_eq!(disconnect.closed().await, CloseReason::Disconnected);
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Boom;
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_req: Request<()>| async { Err::<Response<()>, _>(Boom) });
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap_err(), Boom);
}

/// Parses the `retry:` value of a comeback body.
fn comeback_retry(body: &[u8]) -> u64 {
    let text = std::str::from_utf8(body).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    assert_eq!(rest, ": over capacity, come back later\n\n", "{text:?}");
    first.strip_prefix("retry: ").unwrap().parse().unwrap()
}

#[tokio::test]
async fn beyond_the_stream_limit_clients_are_told_to_come_back_later() {
    let layer = SseLayer::new()
        .max_streams(3)
        .retry(Duration::from_millis(2500))
        .come_back(Duration::from_millis(1500)..=Duration::from_millis(3000));
    let stats = layer.stream_stats();
    let svc = ServiceBuilder::new()
        .layer(layer)
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
    assert_eq!(stats.open(), 3);

    // An EventSource client (it asks for text/event-stream) gets a 200 stream that only sets
    // its reconnection delay, drawn from the come-back window, and ends.
    let mut delays = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let mut refused = RawClient::get(addr, "/", &[]).await;
        assert_eq!(refused.status(), 200);
        assert_eq!(
            refused.header("content-type").as_deref(),
            Some("text/event-stream")
        );
        let (body, messages) = refused.read_to_end().await;
        assert!(messages.is_empty(), "no event is dispatched");
        assert!(refused.ended, "the stream ends at once");
        let retry = comeback_retry(&body);
        assert!((1500..=3000).contains(&retry), "{retry}");
        delays.insert(retry);
    }
    assert!(delays.len() > 1, "jittered: {delays:?}");

    // Any other client gets 503 with Retry-After: a delay from the window, rounded up to whole
    // seconds.
    let mut refused = RawClient::get(addr, "/", &[("accept", "*/*")]).await;
    assert_eq!(refused.status(), 503);
    let after = refused.header("retry-after").unwrap();
    assert!(after == "2" || after == "3", "{after}");
    assert_ne!(
        refused.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let (body, _) = refused.read_to_end().await;
    assert!(body.is_empty(), "a refused stream sends nothing");
    assert_eq!(stats.refused(), 6);
    assert_eq!(stats.open(), 3);

    // A slot frees up when a client leaves.
    drop(open.pop());
    let mut again = None;
    for _ in 0..200 {
        let mut client = RawClient::get(addr, "/", &[]).await;
        if client.next_bytes().await.as_deref() == Some(b"retry: 2500\n".as_slice()) {
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
        .layer(
            SseLayer::new()
                .max_streams(0)
                .come_back(Duration::MAX..=Duration::MAX),
        )
        .service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::pending::<Event>())))
        });
    let addr = serve(svc).await;
    let refused = RawClient::get(addr, "/", &[("accept", "*/*")]).await;
    assert_eq!(refused.status(), 503);
    // 2^31-1 ms, rounded up to whole seconds.
    assert_eq!(refused.header("retry-after").as_deref(), Some("2147484"));
    let mut browser = RawClient::get(addr, "/", &[]).await;
    let (body, _) = browser.read_to_end().await;
    assert_eq!(comeback_retry(&body), 2_147_483_647);
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

// ---- The layer's reach, in ordinary tower compositions, over a real hyper server. ----

/// Opens a stream and reads its body until it holds `until` (or the stream ends).
async fn read_until(addr: SocketAddr, until: &str) -> (RawClient, String) {
    let mut client = RawClient::get(addr, "/", &[]).await;
    let mut text = String::new();
    while !text.contains(until) {
        match client.next_bytes().await {
            Some(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
            None => break,
        }
    }
    (client, text)
}

#[tokio::test]
async fn a_body_built_behind_a_buffer_gets_the_layer_through_the_request() {
    // The buffer runs the inner service (whose `call` builds the body) on a task of its own,
    // out of the layer's reach on the current task.
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_millis(1234)))
        .buffer(16)
        .service_fn(|req: Request<Incoming>| {
            let events = stream::iter([Event::message("hi")]).chain(stream::pending());
            let response = match req.uri().path() {
                "/explicit" => SseBody::from_request(&req, events).into_http_response(),
                _ => SseBody::new(events).into_http_response(),
            };
            async move { Ok::<_, Infallible>(response) }
        });
    let addr = serve(svc).await;

    let mut client = RawClient::get(addr, "/explicit", &[]).await;
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let first = client.next_bytes().await.unwrap();
    assert!(first.starts_with(b"retry: 1234\n"), "the layer's settings");

    // The implicit path cannot reach the layer from there: the response is still an event
    // stream (its headers were set when it was built), with the defaults (and a warning).
    let mut client = RawClient::get(addr, "/implicit", &[]).await;
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(client.header("cache-control").as_deref(), Some("no-cache"));
    let first = client.next_bytes().await.unwrap();
    assert!(first.starts_with(b":\n"), "the defaults");
}

#[tokio::test]
async fn a_body_built_in_a_spawned_task_gets_settings_limit_and_disconnect() {
    let (disconnects_tx, mut disconnects) = tokio::sync::mpsc::unbounded_channel();
    let layer = SseLayer::new()
        .retry(Duration::from_millis(800))
        .max_streams(1);
    let stats = layer.stream_stats();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req: Request<Incoming>| {
            let disconnects = disconnects_tx.clone();
            async move {
                let context = req.extensions().get::<SseContext>().unwrap().clone();
                disconnects
                    .send(req.extensions().get::<Disconnect>().unwrap().clone())
                    .unwrap();
                // The common channel pattern: a task builds the stream and hands the body back.
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let events =
                        stream::iter([Event::message("from a task")]).chain(stream::pending());
                    let _ = tx.send(SseBody::from_context(&context, events));
                });
                Ok::<_, Infallible>(rx.await.unwrap().into_http_response())
            }
        });
    let addr = serve(svc).await;

    let (client, text) = read_until(addr, "from a task").await;
    assert_eq!(text, "retry: 800\ndata: from a task\n\n");
    let disconnect = disconnects.recv().await.unwrap();
    assert_eq!(disconnect.reason(), None, "the stream is live");
    assert_eq!(stats.open(), 1);

    // The limit holds for bodies built in tasks too.
    let (_, refused) = read_until(addr, "over capacity").await;
    assert!(refused.starts_with("retry: "), "{refused:?}");
    assert!(refused.contains(": over capacity"), "{refused:?}");
    assert_eq!(stats.refused(), 1);
    assert_eq!(
        disconnects.recv().await.unwrap().closed().await,
        CloseReason::NoStream
    );

    drop(client);
    assert_eq!(disconnect.closed().await, CloseReason::Disconnected);
}

#[tokio::test]
async fn nested_layers_apply_every_limit_and_shutdown() {
    let shutdown = Shutdown::new();
    let outer = SseLayer::new().max_streams(1).shutdown(&shutdown);
    let svc = ServiceBuilder::new()
        .layer(outer)
        .layer(SseLayer::new().retry(Duration::from_millis(700)))
        .service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(stream::pending::<Event>())))
        });
    let addr = serve(svc).await;

    let (mut first, head) = read_until(addr, "retry").await;
    assert_eq!(head, "retry: 700\n", "the innermost settings");
    let (_, second) = read_until(addr, "over capacity").await;
    assert!(
        second.contains(": over capacity"),
        "the outer limit: {second:?}"
    );

    let bye = Event::builder().event("bye").data("").build().unwrap();
    shutdown.trigger(Some(bye));
    let (_, messages) = first.read_to_end().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].event, "bye",
        "the outer shutdown ends the stream"
    );
    assert!(first.ended);
}

#[tokio::test]
async fn compression_in_either_order_leaves_event_streams_alone() {
    use axum::{routing::get, Router};
    use tower_http::compression::CompressionLayer;
    let routes = || {
        Router::new()
            .route(
                "/events",
                get(|| async {
                    SseBody::new(
                        stream::iter([Event::message("x".repeat(400))]).chain(stream::pending()),
                    )
                }),
            )
            .route_service(
                "/plain",
                service_fn(|_req: axum::extract::Request| async {
                    let events =
                        stream::iter([Event::message("x".repeat(400))]).chain(stream::pending());
                    Ok::<_, Infallible>(SseBody::new(events).into_http_response())
                }),
            )
            .route("/big", get(|| async { "y".repeat(4096) }))
    };
    let inside =
        tower_layer::Layer::layer(&SseLayer::new(), routes().layer(CompressionLayer::new()));
    let outside = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(SseLayer::new())
        .service(routes());
    for (order, addr) in [
        ("compression inside", serve(inside).await),
        ("compression outside", serve(outside).await),
    ] {
        let gzip = [("accept-encoding", "gzip"), ("accept", "*/*")];
        let big = RawClient::get(addr, "/big", &gzip).await;
        assert_eq!(
            big.header("content-encoding").as_deref(),
            Some("gzip"),
            "{order}: compression is on"
        );

        for path in ["/events", "/plain"] {
            let mut events = RawClient::get(addr, path, &[("accept-encoding", "gzip")]).await;
            assert_eq!(events.header("content-encoding"), None, "{order} {path}");
            assert_eq!(
                events.header("content-type").as_deref(),
                Some("text/event-stream")
            );
            // Events arrive as they are produced, not when a compressor's buffer fills.
            assert_eq!(events.events(1).await[0].data.len(), 400, "{order} {path}");
        }
    }
}

#[tokio::test]
async fn a_refused_request_leaves_no_trace_in_the_hub() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_sse::hub::Hub;
    let joins = std::sync::Arc::new(AtomicUsize::new(0));
    let leaves = std::sync::Arc::new(AtomicUsize::new(0));
    let hub = Hub::builder()
        .on_join({
            let joins = joins.clone();
            move |_, _| {
                joins.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_leave({
            let leaves = leaves.clone();
            move |_, _| {
                leaves.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build();
    let topic = hub.topic("room");
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().max_streams(1))
        .service_fn({
            let topic = topic.clone();
            move |req: Request<Incoming>| {
                // A Last-Event-ID from nowhere: a history-lost for a stream that streams.
                let subscription = topic.subscribe(req.extensions().get::<LastEventId>());
                async move { Ok::<_, Infallible>(Response::new(SseBody::new(subscription))) }
            }
        });
    let addr = serve(svc).await;

    let mut streaming = RawClient::get(addr, "/", &[("last-event-id", "gone")]).await;
    assert_eq!(streaming.events(1).await[0].event, "history-lost");
    for _ in 0..3 {
        let mut refused = RawClient::get(addr, "/", &[("last-event-id", "gone")]).await;
        let (body, messages) = refused.read_to_end().await;
        assert!(messages.is_empty() && body.starts_with(b"retry: "));
    }
    assert_eq!(
        joins.load(Ordering::SeqCst),
        1,
        "only the streaming client joined"
    );
    assert_eq!(leaves.load(Ordering::SeqCst), 0);
    assert_eq!(topic.subscribers(), 1);
    let stats = hub.stats();
    assert_eq!((stats.subscribers, stats.history_lost), (1, 1));
}

#[tokio::test(flavor = "current_thread")]
async fn an_event_stream_built_out_of_reach_is_reported() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new())
        .buffer(4)
        .service_fn(|_req: Request<()>| {
            let response = SseBody::new(events(&["x"])).into_http_response();
            async move { Ok::<_, Infallible>(response) }
        });
    let (response, logs) = logs_of(svc.oneshot(Request::new(()))).await;
    let response = response.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("no SseBody built in reach of the SseLayer"),
        "{logs}"
    );

    // Built in reach: nothing to warn about; the stream's life is logged at DEBUG.
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new())
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(SseBody::new(events(&["x"])).into_http_response())
        });
    let ((), logs) = logs_of(async {
        let response = svc.oneshot(Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap();
    })
    .await;
    assert!(!logs.contains("WARN"), "{logs}");
    assert!(logs.contains("SSE stream opened"), "{logs}");
    assert!(
        logs.contains("SSE response ended reason=Completed"),
        "{logs}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_refusal_over_the_limit_is_logged() {
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().max_streams(0))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(SseBody::new(events(&["x"]))))
        });
    let (response, logs) = logs_of(svc.oneshot(Request::new(()))).await;
    assert_eq!(response.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(logs.contains("INFO"), "{logs}");
    assert!(
        logs.contains("SSE stream refused: a stream limit is reached"),
        "{logs}"
    );
}

#[tokio::test]
async fn rotated_hub_streams_resume_with_no_gap_and_no_duplicate() {
    use tower_sse::hub::Hub;
    const EVENTS: u32 = 400;
    let hub = Hub::new();
    let topic = hub.topic("feed");
    let layer = SseLayer::new()
        .keep_alive(KeepAlive::disabled())
        .max_lifetime(Duration::from_millis(120))
        .come_back(Duration::from_millis(5)..=Duration::from_millis(10));
    let stats = layer.stream_stats();
    let subscribe_to = topic.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req: Request<Incoming>| {
            let sub = subscribe_to.subscribe(req.extensions().get::<LastEventId>());
            async move { Ok::<_, Infallible>(Response::new(SseBody::new(sub))) }
        });
    let addr = serve(svc).await;

    let mut client = RawClient::get(addr, "/", &[]).await;
    assert!(common::eventually(Duration::from_secs(5), || topic.subscribers() == 1).await);
    let publisher = tokio::spawn(async move {
        for i in 0..EVENTS {
            let event = Event::message(i.to_string());
            topic.publish(event).now().unwrap().unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let (mut seen, mut rotations) = (Vec::new(), 0);
    loop {
        let (raw, messages) = client.read_to_end().await;
        let raw = String::from_utf8(raw).unwrap();
        assert!(
            raw.ends_with("\n: stream lifetime reached, reconnect\n\n"),
            "every stream ends by its lifetime, with the come-back block: {raw:?}"
        );
        let retry = client.decoder.retry().unwrap();
        assert!((5..=10).contains(&retry), "{retry}");
        rotations += 1;
        for message in &messages {
            assert_eq!(message.event, "message", "{message:?}");
            seen.push(message.data.parse::<u32>().unwrap());
        }
        if seen.len() >= EVENTS as usize {
            break;
        }
        // As a browser does: wait `retry`, then come back with the last id seen.
        tokio::time::sleep(Duration::from_millis(retry)).await;
        let last = client.decoder.last_event_id().to_owned();
        assert!(!last.is_empty() || seen.is_empty());
        client = RawClient::get(addr, "/", &[("last-event-id", &last)]).await;
    }
    publisher.await.unwrap();
    assert_eq!(
        seen,
        (0..EVENTS).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert!(rotations >= 3, "only {rotations} rotations");
    assert_eq!(stats.rotated(), rotations);
}
