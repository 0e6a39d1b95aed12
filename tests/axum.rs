//! axum integration: responder, extractors, one layer for the router, compression alongside.

mod common;

use axum::{
    body::Body,
    routing::{get, get_service},
    Router,
};
use common::RawClient;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use std::{convert::Infallible, time::Duration};
use tower::{service_fn, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_sse::{CloseReason, Disconnect, Event, KeepAlive, LastEventId, SseBody, SseLayer};

async fn body_text(response: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn get_req(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

async fn hello() -> SseBody<impl futures_core::Stream<Item = Event>> {
    SseBody::new(stream::iter([Event::message("hi")]))
}

#[tokio::test]
async fn a_handler_returns_an_sse_body_and_the_router_layer_configures_it() {
    let app = Router::new()
        .route("/sse", get(hello))
        .route(
            "/json",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .layer(SseLayer::new().retry(Duration::from_millis(700)));

    let res = app.clone().oneshot(get_req("/sse")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(body_text(res).await, "retry: 700\ndata: hi\n\n");

    let res = app.oneshot(get_req("/json")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(body_text(res).await, r#"{"ok":true}"#);
}

#[tokio::test]
async fn without_the_layer_the_responder_still_sets_headers_and_defaults() {
    let app = Router::new().route("/sse", get(hello));
    let res = app.oneshot(get_req("/sse")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(body_text(res).await, ":\ndata: hi\n\n");
}

#[tokio::test]
async fn a_stream_service_mounts_with_route_service() {
    let svc = service_fn(|_req: Request<Body>| async {
        let events = stream::iter([Event::message("served")]);
        Ok::<_, Infallible>(Response::new(SseBody::new(events)))
    });
    let app = Router::new()
        .route_service("/raw", get_service(svc))
        .layer(SseLayer::new().open_frame(false));
    let res = app.oneshot(get_req("/raw")).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(body_text(res).await, "data: served\n\n");
}

#[tokio::test]
async fn last_event_id_extractors() {
    async fn required(id: LastEventId) -> String {
        id.to_string()
    }
    async fn optional(id: Option<LastEventId>) -> String {
        format!("{:?}", id.map(|id| id.to_string()))
    }
    // Without the layer the header is parsed by the extractor itself, with the same rules.
    let app = Router::new()
        .route("/req", get(required))
        .route("/opt", get(optional));
    let with = |uri: &str, id: &str| {
        Request::builder()
            .uri(uri)
            .header("last-event-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let res = app.clone().oneshot(with("/req", "5")).await.unwrap();
    assert_eq!(body_text(res).await, "5");
    let res = app.clone().oneshot(get_req("/req")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = app.clone().oneshot(with("/opt", "")).await.unwrap();
    assert_eq!(body_text(res).await, "None");
    let long = "x".repeat(2048);
    let res = app.clone().oneshot(with("/opt", &long)).await.unwrap();
    assert_eq!(body_text(res).await, "None");
    let res = app
        .layer(SseLayer::new())
        .oneshot(with("/opt", "abc"))
        .await
        .unwrap();
    assert_eq!(body_text(res).await, r#"Some("abc")"#);
}

#[tokio::test]
async fn disconnect_extractor_needs_the_layer_and_then_tracks_the_response() {
    let (tx, rx) = tokio::sync::oneshot::channel::<Disconnect>();
    let tx = std::sync::Mutex::new(Some(tx));
    let tx = std::sync::Arc::new(tx);
    let handler = move |disconnect: Disconnect| {
        let tx = tx.clone();
        async move {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(disconnect);
            }
            SseBody::new(stream::pending::<Event>())
        }
    };
    let bare = Router::new().route("/sse", get(handler.clone()));
    let res = bare.oneshot(get_req("/sse")).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_text(res).await.contains("SseLayer"));

    let app = Router::new()
        .route("/sse", get(handler))
        .layer(SseLayer::new().keep_alive(KeepAlive::disabled()));
    let res = app.oneshot(get_req("/sse")).await.unwrap();
    let disconnect = rx.await.unwrap();
    assert!(!disconnect.is_closed());
    drop(res);
    assert_eq!(disconnect.closed().await, CloseReason::Disconnected);
}

#[tokio::test]
async fn compression_layer_does_not_buffer_or_compress_sse() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/sse",
            get(move || {
                let rx = rx.lock().unwrap().take().unwrap();
                async move { SseBody::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)) }
            }),
        )
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .layer(SseLayer::new())
        .layer(CompressionLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Compression is really on for other routes.
    let big = RawClient::get(addr, "/big", &[("accept-encoding", "gzip")]).await;
    assert_eq!(big.header("content-encoding").as_deref(), Some("gzip"));
    drop(big);

    let mut client = RawClient::get(addr, "/sse", &[("accept-encoding", "gzip")]).await;
    assert_eq!(client.header("content-encoding"), None);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    // Each event arrives while the stream is still open: nothing waits for a compressor.
    for i in 0..3 {
        tx.send(Event::message(format!("e{i}"))).unwrap();
        let got = client.events(1).await;
        assert_eq!(got[0].data, format!("e{i}"));
    }
}

#[tokio::test]
async fn send_timeout_listener_sets_socket_options_on_accepted_connections() {
    use axum::serve::Listener;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut listener = tower_sse::axum::SendTimeoutListener::new(listener, Duration::from_secs(40));
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (io, _) = listener.accept().await;
    let tcp = io.get_ref();
    assert!(tcp.nodelay().unwrap());
    let user_timeout = socket2::SockRef::from(tcp).tcp_user_timeout().unwrap();
    assert_eq!(user_timeout, Some(Duration::from_secs(40)));
}

/// An axum `Sse` handler, ported: its `Event::default()` chains stay as they are.
async fn ported(
) -> SseBody<impl futures_core::Stream<Item = Result<tower_sse::EventBuilder, Infallible>>> {
    let events = (1..=2).map(|n| {
        Ok(Event::default()
            .event("tick")
            .id(n.to_string())
            .json_data(serde_json::json!({ "n": n })))
    });
    SseBody::new(stream::iter(events))
}

#[tokio::test]
async fn an_axum_sse_handler_ports_with_its_event_chains_unchanged() {
    let app = Router::new()
        .route("/ported", get(ported))
        .route(
            "/bad",
            get(|| async {
                // A builder that fails (a line break in the name) fails the stream safely.
                SseBody::new(stream::iter([
                    Event::default().data("first"),
                    Event::default().event("x\ny").data("never"),
                ]))
            }),
        )
        .layer(SseLayer::new().keep_alive(KeepAlive::new().text("ping").unwrap()));
    let res = app.clone().oneshot(get_req("/ported")).await.unwrap();
    assert_eq!(
        body_text(res).await,
        ":\nevent: tick\nid: 1\ndata: {\"n\":1}\n\nevent: tick\nid: 2\ndata: {\"n\":2}\n\n"
    );
    let text = body_text(app.oneshot(get_req("/bad")).await.unwrap()).await;
    assert!(text.starts_with(":\ndata: first\n\n"), "{text}");
    assert!(text.contains("event: stream-error\n"), "{text}");
    assert!(!text.contains("never"), "{text}");
}
