//! `SseLayer`: through `ServiceBuilder` and `oneshot` (headers, settings, `Last-Event-ID`, the
//! disconnect handle), and over real sockets (the stream limit and its `Retry-After`, the
//! `Accept` check, odd `Last-Event-ID` headers as a client sends them).

mod common;

use bytes::Bytes;
use common::{serve, RawClient};
use futures_util::stream;
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
    CloseReason, Disconnect, ErrorPolicy, Event, KeepAlive, LastEventId, SseBody, SseLayer,
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
