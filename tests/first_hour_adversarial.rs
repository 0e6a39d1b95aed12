//! A new user's first hour: the promises of the README, the crate docs and the examples, each
//! checked the way a newcomer would lean on it (mostly over real HTTP on loopback).
//!
//! Tests marked "Was broken" describe what they found before it was fixed.
#![allow(clippy::duplicate_mod)]

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/chat.rs"]
mod chat;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/notifications.rs"]
mod notifications;

use axum::{routing::get, Router};
use common::{eventually, post_json, RawClient};
use futures_util::stream::{self, Stream, StreamExt};
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{
    decode::{Decoder, Message},
    hub::Hub,
    serve::Server,
    Event, EventBuilder, KeepAlive, LastEventId, SseBody, SseLayer,
};
use warp::Filter;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn json(message: &Message) -> serde_json::Value {
    serde_json::from_str(&message.data).unwrap()
}

async fn serve_router(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// What the handler saw as the `Last-Event-ID`, as one event's data.
fn seen(last: Option<LastEventId>) -> SseBody<impl Stream<Item = Event>> {
    let text = last.map_or("<none>".to_owned(), |id| format!("[{}]", id.as_str()));
    SseBody::new(stream::iter([Event::message(text)]))
}

/// An axum app that echoes its `Option<LastEventId>` extractor, under `layer` (if any).
async fn axum_echo(layer: Option<SseLayer>) -> SocketAddr {
    let router = Router::new().route(
        "/e",
        get(|last: Option<LastEventId>| async move { seen(last) }),
    );
    serve_router(match layer {
        Some(layer) => router.layer(layer),
        None => router,
    })
    .await
}

/// The first event's data of the response to `GET path` with `headers` (raw HTTP/1.1).
async fn first_data(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut client = RawClient::get(addr, path, headers).await;
    assert_eq!(client.status(), 200, "{}", client.head);
    let (_, messages) = client.read_to_end().await;
    messages.first().expect("one event").data.clone()
}

/// The whole body of `GET path`, as text (the stream must end by itself).
async fn body_text(addr: SocketAddr, path: &str) -> String {
    let mut client = RawClient::get(addr, path, &[]).await;
    assert_eq!(client.status(), 200, "{}", client.head);
    let (raw, _) = client.read_to_end().await;
    String::from_utf8(raw).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. `lastEventId` in the query
// ---------------------------------------------------------------------------------------------

/// "The id a query string carries in parameter `name` (percent-decoded, `+` as a space), by the
/// same rule as the header: `None` when the parameter is absent, repeated or unusable."
#[test]
fn from_query_decodes_like_a_browser_encodes() {
    let q =
        |query: &str| LastEventId::from_query(Some(query), "lastEventId").map(|id| id.to_string());
    // encodeURIComponent("a+b") is "a%2Bb": the plus survives; a bare plus is a space.
    assert_eq!(q("lastEventId=a%2Bb").as_deref(), Some("a+b"));
    assert_eq!(q("lastEventId=a%2bb").as_deref(), Some("a+b"));
    assert_eq!(q("lastEventId=a+b").as_deref(), Some("a b"));
    assert_eq!(q("lastEventId=a%20b").as_deref(), Some("a b"));
    // A space at either edge is unusable (the header rule), however it was written.
    assert_eq!(q("lastEventId=%20a"), None);
    assert_eq!(q("lastEventId=a+"), None);
    // Unicode, percent-encoded as UTF-8 (encodeURIComponent("ü✓😀")).
    assert_eq!(
        q("lastEventId=%C3%BC%E2%9C%93%F0%9F%98%80").as_deref(),
        Some("ü✓😀")
    );
    // Raw non-ASCII text in the query string (a &str, as from a decoded URL).
    assert_eq!(q("lastEventId=ü-1").as_deref(), Some("ü-1"));
    // A lone '%' or a bad escape stays as written (as URLSearchParams does).
    assert_eq!(q("lastEventId=100%").as_deref(), Some("100%"));
    assert_eq!(q("lastEventId=%zz").as_deref(), Some("%zz"));
    // An '=' in the value is part of it.
    assert_eq!(q("lastEventId=a=b").as_deref(), Some("a=b"));
    // Bytes that are not UTF-8, control characters, line breaks: unusable.
    for bad in [
        "lastEventId=%FF",
        "lastEventId=%00",
        "lastEventId=%0D",
        "lastEventId=a%09b",
    ] {
        assert_eq!(q(bad), None, "{bad}");
    }
    // Exactly the header's length rule, counted in decoded bytes.
    let max = format!("lastEventId={}", "%C3%BC".repeat(512)); // 1024 bytes decoded
    assert_eq!(q(&max).map(|id| id.len()), Some(1024));
    let over = format!("lastEventId={}a", "%C3%BC".repeat(512));
    assert_eq!(q(&over), None);
}

/// The parameter's *name* is percent-decoded too (URLSearchParams decodes keys): `last%45ventId`
/// is `lastEventId`, and written both ways it is a repeated parameter.
#[test]
fn from_query_decodes_the_key_and_counts_repeats_across_spellings() {
    let q =
        |query: &str| LastEventId::from_query(Some(query), "lastEventId").map(|id| id.to_string());
    assert_eq!(q("last%45ventId=7").as_deref(), Some("7"));
    assert_eq!(q("lastEventId=1&last%45ventId=2"), None, "repeated");
    // Keys are case-sensitive.
    assert_eq!(q("LASTEVENTID=1"), None);
}

/// "`None` when the parameter is absent, repeated or unusable": an empty value, a key with no
/// `=`, and a usable value next to an empty one (repeated).
#[test]
fn from_query_empty_and_repeated() {
    let q = |query: &str| LastEventId::from_query(Some(query), "lastEventId");
    assert!(q("lastEventId=").is_none());
    assert!(q("lastEventId").is_none());
    assert!(q("").is_none());
    assert!(q("&&").is_none());
    assert!(
        q("lastEventId=&lastEventId=5").is_none(),
        "repeated, one empty"
    );
    assert!(
        q("lastEventId=5&lastEventId=5").is_none(),
        "repeated, same value"
    );
    assert_eq!(q("a=1&&lastEventId=5&").unwrap().as_str(), "5");
}

/// Layer docs: "parses `Last-Event-ID` ... (absent when the header is missing or unusable); when
/// the header is missing, it reads the `lastEventId` query parameter the same way", and "The
/// header, when present, wins". Over real HTTP, through axum's `Option<LastEventId>`.
#[tokio::test]
async fn layer_reads_the_query_over_http_and_the_header_wins() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let addr = axum_echo(Some(SseLayer::new())).await;
    let cases: &[Case<'_>] = &[
        ("/e?lastEventId=e1-42", &[], "[e1-42]"),
        ("/e?lastEventId=a%2Bb", &[], "[a+b]"),
        ("/e?lastEventId=a+b", &[], "[a b]"),
        ("/e?lastEventId=%E2%9C%93", &[], "[✓]"),
        ("/e?last%45ventId=9", &[], "[9]"),
        ("/e?lastEventId=", &[], "<none>"),
        ("/e?lastEventId=1&lastEventId=2", &[], "<none>"),
        ("/e?lasteventid=1", &[], "<none>"),
        // The header wins over the query.
        ("/e?lastEventId=old", &[("last-event-id", "new")], "[new]"),
        // A header present but empty or unusable: the header is what the client sent, so the
        // query is not consulted (the layer's rule: the query only when the header is missing).
        ("/e?lastEventId=old", &[("last-event-id", "")], "<none>"),
        ("/e?lastEventId=old", &[("last-event-id", "a\tb")], "<none>"),
        (
            "/e?lastEventId=old",
            &[("last-event-id", "1"), ("last-event-id", "2")],
            "<none>",
        ),
        // A header that is fine with a junk query: the header.
        ("/e?lastEventId=%FF", &[("last-event-id", "7")], "[7]"),
    ];
    for (path, headers, expected) in cases {
        assert_eq!(
            first_data(addr, path, headers).await,
            *expected,
            "{path} {headers:?}"
        );
    }
}

/// "`last_event_id_query(None)` to read only the header"; and another name reads that name only.
#[tokio::test]
async fn layer_query_name_none_and_custom() {
    let none = axum_echo(Some(SseLayer::new().last_event_id_query(None))).await;
    assert_eq!(first_data(none, "/e?lastEventId=5", &[]).await, "<none>");
    assert_eq!(
        first_data(none, "/e?lastEventId=5", &[("last-event-id", "6")]).await,
        "[6]"
    );
    let since = axum_echo(Some(SseLayer::new().last_event_id_query(Some("since")))).await;
    assert_eq!(first_data(since, "/e?since=5", &[]).await, "[5]");
    assert_eq!(first_data(since, "/e?lastEventId=5", &[]).await, "<none>");
}

/// Without a layer, axum's `Option<LastEventId>` is "the header itself otherwise (same rules)":
/// the query is not read, the header is, by the same rule.
#[tokio::test]
async fn axum_extractor_without_a_layer_reads_the_header_only() {
    let addr = axum_echo(None).await;
    assert_eq!(first_data(addr, "/e?lastEventId=5", &[]).await, "<none>");
    assert_eq!(
        first_data(addr, "/e", &[("last-event-id", "5")]).await,
        "[5]"
    );
    assert_eq!(
        first_data(addr, "/e", &[("last-event-id", "5\t6")]).await,
        "<none>"
    );
}

/// The non-optional `LastEventId` extractor: "Fails with `400 Bad Request` when the header is
/// absent or unusable"; under the layer it takes the query too.
#[tokio::test]
async fn axum_required_extractor() {
    let app = Router::new()
        .route(
            "/e",
            get(|last: LastEventId| async move { seen(Some(last)) }),
        )
        .layer(SseLayer::new());
    let addr = serve_router(app).await;
    assert_eq!(first_data(addr, "/e?lastEventId=3", &[]).await, "[3]");
    let client = RawClient::get(addr, "/e", &[]).await;
    assert_eq!(client.status(), 400);
}

/// "Layers nest: ... its settings are the innermost layer's": the innermost layer's query name
/// decides, and an inner `None` turns the query off whatever the outer layer says.
#[tokio::test]
async fn nested_layers_use_the_innermost_query_setting() {
    let app = |outer: SseLayer, inner: SseLayer| {
        Router::new()
            .route(
                "/e",
                get(|last: Option<LastEventId>| async move { seen(last) }),
            )
            .layer(inner)
            .layer(outer)
    };
    let addr = serve_router(app(
        SseLayer::new().last_event_id_query(Some("after")),
        SseLayer::new(),
    ))
    .await;
    assert_eq!(first_data(addr, "/e?lastEventId=6", &[]).await, "[6]");
    assert_eq!(first_data(addr, "/e?after=5", &[]).await, "<none>");

    let addr = serve_router(app(
        SseLayer::new(),
        SseLayer::new().last_event_id_query(None),
    ))
    .await;
    assert_eq!(first_data(addr, "/e?lastEventId=6", &[]).await, "<none>");
    assert_eq!(
        first_data(addr, "/e", &[("last-event-id", "h")]).await,
        "[h]"
    );
}

async fn serve_warp<F>(filter: F, layer: Option<SseLayer>) -> SocketAddr
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match layer {
        Some(layer) => {
            let service = ServiceBuilder::new()
                .layer(layer)
                .service(warp::service(filter));
            tokio::spawn(Server::new(listener).serve(service));
        }
        None => {
            tokio::spawn(Server::new(listener).serve(warp::service(filter)));
        }
    }
    addr
}

/// `tower_sse::warp::last_event_id()`: "what SseLayer read from the `Last-Event-ID` header or,
/// when that is absent, the `lastEventId` query parameter; without a layer, the header alone."
#[tokio::test]
async fn warp_filter_with_and_without_a_layer() {
    let filter = || {
        warp::path("e")
            .and(tower_sse::warp::last_event_id())
            .map(seen)
    };
    let bare = serve_warp(filter(), None).await;
    assert_eq!(first_data(bare, "/e?lastEventId=5", &[]).await, "<none>");
    assert_eq!(
        first_data(bare, "/e", &[("last-event-id", "5")]).await,
        "[5]"
    );
    assert_eq!(
        first_data(bare, "/e", &[("last-event-id", "")]).await,
        "<none>"
    );

    let layered = serve_warp(filter(), Some(SseLayer::new())).await;
    assert_eq!(
        first_data(layered, "/e?lastEventId=a%2Bb", &[]).await,
        "[a+b]"
    );
    assert_eq!(
        first_data(layered, "/e?lastEventId=q", &[("last-event-id", "h")]).await,
        "[h]"
    );
    let off = serve_warp(filter(), Some(SseLayer::new().last_event_id_query(None))).await;
    assert_eq!(first_data(off, "/e?lastEventId=q", &[]).await, "<none>");
}

// ---------------------------------------------------------------------------------------------
// 2. The axum port
// ---------------------------------------------------------------------------------------------

/// README, "Coming from axum's Sse": the ported handler, exactly as given (keep-alive with
/// `.text("ping").unwrap()`), under `.layer(SseLayer::new())`: same events as axum's own `Sse`.
async fn ported_ticks() -> SseBody<impl Stream<Item = EventBuilder>> {
    let events = stream::iter(1..=3).map(|n| {
        Event::default()
            .event("tick")
            .id(n.to_string())
            .json_data(serde_json::json!({ "n": n }))
    });
    SseBody::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(10))
            .text("ping")
            .unwrap(),
    )
}

async fn axum_original_ticks(
) -> axum::response::sse::Sse<impl Stream<Item = Result<axum::response::sse::Event, axum::Error>>> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let events = stream::iter(1..=3).map(|n| {
        Event::default()
            .event("tick")
            .id(n.to_string())
            .json_data(serde_json::json!({ "n": n }))
    });
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(10))
            .text("ping"),
    )
}

#[tokio::test]
async fn readme_port_sends_what_axum_sent() {
    let ours = serve_router(
        Router::new()
            .route("/ticks", get(ported_ticks))
            .layer(SseLayer::new()),
    )
    .await;
    let theirs = serve_router(Router::new().route("/ticks", get(axum_original_ticks))).await;
    let ours_raw = body_text(ours, "/ticks").await;
    assert_eq!(
        ours_raw,
        ":\nevent: tick\nid: 1\ndata: {\"n\":1}\n\n\
         event: tick\nid: 2\ndata: {\"n\":2}\n\n\
         event: tick\nid: 3\ndata: {\"n\":3}\n\n"
    );
    let decode = |raw: &str| Decoder::new().feed(raw.as_bytes());
    let theirs_raw = body_text(theirs, "/ticks").await;
    assert_eq!(decode(&ours_raw), decode(&theirs_raw));
    // The headers a browser and a proxy need.
    let client = RawClient::get(ours, "/ticks", &[]).await;
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(client.header("cache-control").as_deref(), Some("no-cache"));
}

/// Table: "`.json_data(v)` → `EventBuilder`"; a porter passes a reference (`json_data(&value)`),
/// as axum's takes one.
#[tokio::test]
async fn json_data_by_reference_and_infallible_results() {
    #[derive(serde::Serialize)]
    struct Tick {
        n: u32,
        label: String,
    }
    async fn handler() -> SseBody<impl Stream<Item = Result<EventBuilder, Infallible>>> {
        let ticks = vec![
            Tick {
                n: 1,
                label: "a\nb".into(),
            },
            Tick {
                n: 2,
                label: "ü".into(),
            },
        ];
        SseBody::new(
            stream::iter(ticks)
                .map(|tick| Ok::<_, Infallible>(Event::default().event("tick").json_data(&tick))),
        )
    }
    let addr = serve_router(
        Router::new()
            .route("/t", get(handler))
            .layer(SseLayer::new()),
    )
    .await;
    assert_eq!(
        body_text(addr, "/t").await,
        ":\nevent: tick\ndata: {\"n\":1,\"label\":\"a\\nb\"}\n\n\
         event: tick\ndata: {\"n\":2,\"label\":\"ü\"}\n\n"
    );
}

const SECRET: &str = "postgres://admin:hunter2@db";
const SAFE_END: &str = "event: stream-error\nretry: 5000\ndata: {\"reason\":\"error\"}\n\n";

/// README: "a failing stream ends with a `stream-error` event that names no detail and carries a
/// reconnection back-off"; the table: "a `Result<Event, E>` stream — the same, or
/// `Result<EventBuilder, E>`". An `Err(std::io::Error)` mid-stream.
#[tokio::test]
async fn io_error_mid_stream_is_a_safe_stream_error() {
    async fn handler() -> SseBody<impl Stream<Item = Result<EventBuilder, std::io::Error>>> {
        SseBody::new(stream::iter([
            Ok(Event::default().data("one")),
            Err(std::io::Error::other(SECRET)),
            Ok(Event::default().data("never")),
        ]))
    }
    let addr = serve_router(
        Router::new()
            .route("/t", get(handler))
            .layer(SseLayer::new()),
    )
    .await;
    let text = body_text(addr, "/t").await;
    assert_eq!(text, format!(":\ndata: one\n\n{SAFE_END}"));
    assert!(!text.contains("hunter2"));
}

/// Table: "a bad value is a typed error at `.build()` (or a safe stream error), never a panic";
/// the port's note: "a bad name or id fails the stream with a safe `stream-error` event instead
/// of panicking". Each kind of bad builder, mid-stream, in a stream of bare `EventBuilder`s.
#[tokio::test]
async fn a_failing_builder_mid_stream_is_a_safe_stream_error() {
    use std::collections::BTreeMap;
    type Make = fn() -> EventBuilder;
    let bad: Vec<(&str, Make)> = vec![
        ("id with LF", || Event::default().id("a\nb").data("x")),
        ("id with CR", || Event::default().id("a\rb").data("x")),
        ("id with NUL", || Event::default().id("a\0b").data("x")),
        ("id with a leading space", || {
            Event::default().id(" a").data("x")
        }),
        ("id too long", || {
            Event::default().id("i".repeat(5000)).data("x")
        }),
        ("event name with LF", || {
            Event::default().event("a\nb").data("x")
        }),
        ("comment with CR", || {
            Event::default().comment("a\rb").data("x")
        }),
        ("json that cannot serialize", || {
            // Map keys that are not strings: serde_json refuses them.
            let mut map = BTreeMap::new();
            map.insert((1, 2), "v");
            Event::default().json_data(map)
        }),
    ];
    for (what, make) in bad {
        let app = Router::new()
            .route(
                "/t",
                get(move || async move {
                    SseBody::new(stream::iter(vec![
                        Event::default().event("ok").data("before"),
                        make(),
                        Event::default().data("after"),
                    ]))
                }),
            )
            .layer(SseLayer::new());
        let addr = serve_router(app).await;
        let text = body_text(addr, "/t").await;
        assert_eq!(
            text,
            format!(":\nevent: ok\ndata: before\n\n{SAFE_END}"),
            "{what}"
        );
    }
}

/// A failing builder as the very first item: the client still gets the open frame and the safe
/// end, with the layer's retry in the open frame and the error back-off in the end.
#[tokio::test]
async fn a_failing_first_builder() {
    let app = Router::new()
        .route(
            "/t",
            get(|| async {
                SseBody::new(stream::iter([Event::default()
                    .event("bad\nname")
                    .data("x")]))
            }),
        )
        .layer(SseLayer::new().retry(Duration::from_secs(2)));
    let addr = serve_router(app).await;
    assert_eq!(
        body_text(addr, "/t").await,
        format!("retry: 2000\n{SAFE_END}")
    );
}

/// README: "the error itself goes to a server-side hook and `tracing`": the detail a client
/// never sees is in the server's log.
#[tokio::test(flavor = "current_thread")]
async fn the_error_detail_goes_to_tracing() {
    use http_body_util::BodyExt;
    let service =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(|_req: http::Request<()>| async {
                let items: Vec<Result<EventBuilder, std::io::Error>> =
                    vec![Err(std::io::Error::other(SECRET))];
                Ok::<_, Infallible>(SseBody::new(stream::iter(items)).into_http_response())
            });
    let (bytes, logs) = common::logs_of(async {
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    })
    .await;
    assert_eq!(bytes, format!(":\n{SAFE_END}"));
    assert!(logs.contains("hunter2"), "logged: {logs}");
}

/// Table: "`KeepAlive::text(t)` returns `Result` (`EventError`)" where axum's panics.
#[test]
fn keep_alive_text_with_a_line_break_is_an_error_not_a_panic() {
    assert!(KeepAlive::new().text("a\nb").is_err());
    assert!(KeepAlive::new().text("a\rb").is_err());
    assert!(KeepAlive::new().text("ping").is_ok());
}

// ---------------------------------------------------------------------------------------------
// 3. The examples, as a person uses them
// ---------------------------------------------------------------------------------------------

async fn start_chat() -> (SocketAddr, Hub) {
    let hub = chat::hub();
    (serve_router(chat::app(hub.clone())).await, hub)
}

fn message_body(user: &str, text: &str) -> String {
    serde_json::json!({ "user": user, "text": text }).to_string()
}

/// An event-stream client that hands out events one at a time (a read may decode several).
struct Events {
    client: RawClient,
    pending: std::collections::VecDeque<Message>,
}

impl Events {
    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Events {
        let client = RawClient::get(addr, path, headers).await;
        assert_eq!(client.status(), 200, "{path}: {}", client.head);
        Events {
            client,
            pending: Default::default(),
        }
    }

    /// The next event (bounded by the client's read timeout); `None` when the stream ended.
    async fn next(&mut self) -> Option<Message> {
        while self.pending.is_empty() {
            let got = self.client.events(1).await;
            if got.is_empty() {
                return None;
            }
            self.pending.extend(got);
        }
        self.pending.pop_front()
    }

    async fn take(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.next().await.expect("the stream ended early"));
        }
        out
    }

    /// Reads events until one named `name` comes.
    async fn until(&mut self, name: &str) -> Message {
        for _ in 0..500 {
            let message = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before a `{name}` event"));
            if message.event == name {
                return message;
            }
        }
        panic!("no `{name}` event in 500");
    }
}

/// chat: "A message the server refuses (too long ...)"; the limit is 2000 characters (its 422
/// says so): 2000 multi-byte characters go through intact, 2001 do not; empty and blank texts
/// are refused; unicode and line breaks arrive as sent.
#[tokio::test]
async fn chat_message_lengths_blanks_and_unicode() {
    let (addr, _hub) = start_chat().await;
    let mut reader = Events::get(addr, "/rooms/len/events?user=reader", &[]).await;
    reader.until("join").await;

    let long = "é".repeat(2000);
    let (status, body) = post_json(addr, "/rooms/len/messages", &message_body("a", &long)).await;
    assert_eq!(status, 202, "{body}");
    let got = reader.until("message").await;
    assert_eq!(json(&got)["text"], long.as_str());

    let emoji = "😀".repeat(2000); // 2000 characters, 4000 UTF-16 units
    assert_eq!(
        post_json(addr, "/rooms/len/messages", &message_body("a", &emoji))
            .await
            .0,
        202
    );
    assert_eq!(json(&reader.until("message").await)["text"], emoji.as_str());

    for refused in ["é".repeat(2001), String::new(), " \t\n\r ".to_owned()] {
        let (status, body) =
            post_json(addr, "/rooms/len/messages", &message_body("a", &refused)).await;
        assert_eq!(status, 422, "{body}");
        assert!(body.contains("2000"), "{body}");
    }

    let odd = "line one\nline two\r\n\u{2028}tab\there \u{0}nul «ü» 👩‍👩‍👧 </script>";
    assert_eq!(
        post_json(addr, "/rooms/len/messages", &message_body("a", odd))
            .await
            .0,
        202
    );
    assert_eq!(json(&reader.until("message").await)["text"], odd);
}

/// chat: names are cleaned (`clean_name`: no control characters, at most 32 characters, blank
/// becomes "anonymous"), on the stream (join notices) and in messages alike.
#[tokio::test]
async fn chat_odd_names() {
    let (addr, _hub) = start_chat().await;
    let mut watcher = Events::get(addr, "/rooms/names/events?user=watcher", &[]).await;
    watcher.until("join").await;

    let long = "n".repeat(500);
    for (raw_query, expected) in [
        ("a%07b%1Bc%0Ad%C2%85e", "abcde".to_owned()),
        (long.as_str(), "n".repeat(32)),
        ("%20%20", "anonymous".to_owned()),
        ("%09%0A", "anonymous".to_owned()),
        ("%C3%BC%F0%9F%98%80", "ü😀".to_owned()),
    ] {
        let _joiner =
            Events::get(addr, &format!("/rooms/names/events?user={raw_query}"), &[]).await;
        let joined = watcher.until("join").await;
        assert_eq!(json(&joined)["user"], expected.as_str(), "{raw_query}");
    }
    for (name, expected) in [
        ("x\u{7}y\u{1b}[31mz", "xy[31mz".to_owned()),
        (&*"m".repeat(500), "m".repeat(32)),
        ("\u{0}\u{1}", "anonymous".to_owned()),
    ] {
        assert_eq!(
            post_json(addr, "/rooms/names/messages", &message_body(name, "hi"))
                .await
                .0,
            202
        );
        let got = watcher.until("message").await;
        assert_eq!(json(&got)["user"], expected.as_str(), "{name:?}");
    }
}

/// chat: "joining and leaving (a closed tab, a lost network) are announced to the room", with
/// the server's online count; two tabs with one name count twice and leave one at a time.
#[tokio::test]
async fn chat_presence_counts_and_two_tabs_with_one_name() {
    let (addr, hub) = start_chat().await;
    let mut host = Events::get(addr, "/rooms/p/events?user=host", &[]).await;
    assert_eq!(json(&host.until("join").await)["online"], 1);

    let tab1 = Events::get(addr, "/rooms/p/events?user=sam", &[]).await;
    let j = host.until("join").await;
    assert_eq!(
        (json(&j)["user"].clone(), json(&j)["online"].clone()),
        ("sam".into(), 2.into())
    );
    let mut tab2 = Events::get(addr, "/rooms/p/events?user=sam", &[]).await;
    let j = host.until("join").await;
    assert_eq!(
        (json(&j)["user"].clone(), json(&j)["online"].clone()),
        ("sam".into(), 3.into())
    );

    drop(tab1);
    let l = host.until("leave").await;
    assert_eq!(
        (json(&l)["user"].clone(), json(&l)["online"].clone()),
        ("sam".into(), 2.into())
    );
    // The other tab is still in the room and still gets messages.
    assert_eq!(
        post_json(
            addr,
            "/rooms/p/messages",
            &message_body("host", "still there?")
        )
        .await
        .0,
        202
    );
    assert_eq!(json(&tab2.until("message").await)["text"], "still there?");
    drop(tab2);
    let l = host.until("leave").await;
    assert_eq!(json(&l)["online"], 1);
    assert!(
        eventually(Duration::from_secs(30), || hub.topic("p").subscribers()
            == 1)
        .await
    );
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.event == "message")
        .map(|m| json(m)["text"].as_str().unwrap().to_owned())
        .collect()
}

/// chat: "A newcomer sees the room's last 50 messages: join and leave notices are live only
/// (they carry no id and are kept in no history), so they never push messages out."
#[tokio::test]
async fn chat_late_joiner_sees_the_last_50_messages_and_no_notices() {
    let (addr, _hub) = start_chat().await;
    let mut host = Events::get(addr, "/rooms/late/events?user=host", &[]).await;
    host.until("join").await;
    for i in 1..=55 {
        let body = message_body("host", &format!("m{i}"));
        assert_eq!(post_json(addr, "/rooms/late/messages", &body).await.0, 202);
    }
    for i in 0..6 {
        let mut visitor = Events::get(addr, &format!("/rooms/late/events?user=v{i}"), &[]).await;
        // In the room (its own join seen, after the 50 recent messages), then gone.
        assert_eq!(json(&visitor.until("join").await)["user"], format!("v{i}"));
        drop(visitor);
    }
    // Wait until the host has heard all six leave, so they are all over.
    for _ in 0..6 {
        host.until("leave").await;
    }
    let mut late = Events::get(addr, "/rooms/late/events?user=late", &[]).await;
    let first = late.take(51).await;
    let expected: Vec<String> = (6..=55).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&first[..50]), expected);
    assert!(first[..50]
        .iter()
        .all(|m| m.event == "message" && !m.last_event_id.is_empty()));
    assert_eq!(first[50].event, "join");
    assert_eq!(json(&first[50])["user"], "late");
}

/// chat: "a client that reconnects sends `Last-Event-ID` and gets the messages it missed"; the
/// page's own reconnect (a rename) passes `?lastEventId=`. A rename while messages keep coming:
/// the new connection continues exactly after the last message read (no duplicate, no gap), and
/// the room sees the old name leave and the new one join.
#[tokio::test]
async fn chat_reconnect_and_rename_while_messages_arrive() {
    let (addr, _hub) = start_chat().await;
    let mut host = Events::get(addr, "/rooms/r/events?user=host", &[]).await;
    host.until("join").await;
    let mut old = Events::get(addr, "/rooms/r/events?user=old", &[]).await;
    old.until("join").await;
    host.until("join").await;
    for i in 1..=5 {
        let body = message_body("host", &format!("m{i}"));
        post_json(addr, "/rooms/r/messages", &body).await;
    }
    let mut read = Vec::new();
    while read.len() < 2 {
        read.push(old.until("message").await);
    }
    let last = read[1].last_event_id.clone();
    assert_eq!(texts(&read), ["m1", "m2"]);
    drop(old);
    // More messages while the page reconnects.
    for i in 6..=8 {
        let body = message_body("host", &format!("m{i}"));
        post_json(addr, "/rooms/r/messages", &body).await;
    }
    let query = format!(
        "/rooms/r/events?user=new&lastEventId={}",
        percent_encode(&last)
    );
    let mut renamed = Events::get(addr, &query, &[]).await;
    let got = renamed.take(7).await;
    assert_eq!(texts(&got), ["m3", "m4", "m5", "m6", "m7", "m8"]);
    assert_eq!(got[6].event, "join");
    assert_eq!(json(&got[6])["user"], "new");
    // The room saw the old name leave and the new one join (messages aside).
    let mut notices = Vec::new();
    while notices.len() < 2 {
        for m in host.take(1).await {
            if m.event != "message" {
                notices.push((
                    m.event.clone(),
                    json(&m)["user"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    assert_eq!(
        notices,
        [
            ("leave".to_owned(), "old".to_owned()),
            ("join".to_owned(), "new".to_owned())
        ]
    );

    // The same resume by the header (a browser's own reconnect), and the header beating a
    // stale query.
    let mut by_header =
        Events::get(addr, "/rooms/r/events?user=h", &[("last-event-id", &last)]).await;
    assert_eq!(
        texts(&by_header.take(6).await),
        ["m3", "m4", "m5", "m6", "m7", "m8"]
    );
    let stale = read[0].last_event_id.clone();
    let mut both = Events::get(
        addr,
        &format!(
            "/rooms/r/events?user=b&lastEventId={}",
            percent_encode(&stale)
        ),
        &[("last-event-id", &last)],
    )
    .await;
    assert_eq!(
        texts(&both.take(6).await),
        ["m3", "m4", "m5", "m6", "m7", "m8"]
    );
}

/// encodeURIComponent, for ids.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn start_notifications() -> (SocketAddr, Hub) {
    let hub = Hub::builder().history(100).build();
    let app = notifications::App::new(hub.clone(), notifications::Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(notifications::serve(listener, app, std::future::pending()));
    (addr, hub)
}

/// Signs in to the notifications example as `user`: the `cookie` header of the session (a
/// stream is the signed-in user's own).
async fn sign_in(addr: SocketAddr, user: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({ "user": user }).to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /session HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let cookie = text
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no session for {user:?}: {text}"));
    cookie.split(';').next().unwrap().to_owned()
}

/// The stream of `user`, signed in as them, at `path`.
async fn user_events(addr: SocketAddr, user: &str, path: &str) -> Events {
    let cookie = sign_in(addr, user).await;
    Events::get(addr, path, &[("cookie", &cookie)]).await
}

async fn notify(addr: SocketAddr, user: &str, title: &str) -> (u16, String) {
    let body = serde_json::json!({ "title": title, "body": "b" }).to_string();
    post_json(addr, &format!("/users/{user}/notify"), &body).await
}

fn titles(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.event == "notification")
        .map(|m| json(m)["title"].as_str().unwrap().to_owned())
        .collect()
}

/// notifications: "a first visit gets the user's last 20 notifications"; a user never online
/// gets what was sent; then "opens its stream with `?lastEventId=` so it continues exactly after
/// it, without a duplicate".
#[tokio::test]
async fn notifications_never_online_then_reopened_exactly() {
    let (addr, _hub) = start_notifications().await;
    let mut ids = Vec::new();
    for i in 1..=25 {
        let (status, body) = notify(addr, "dora", &format!("n{i}")).await;
        assert_eq!(status, 202, "{body}");
        let id: serde_json::Value = serde_json::from_str(&body).unwrap();
        ids.push(id["id"].as_str().unwrap().to_owned());
    }
    let mut first = user_events(addr, "dora", "/users/dora/events").await;
    let got = first.take(20).await;
    let expected: Vec<String> = (6..=25).map(|i| format!("n{i}")).collect();
    assert_eq!(titles(&got), expected);
    assert_eq!(got.last().unwrap().last_event_id, ids[24]);
    // Nothing more is replayed: the next event is a new one.
    notify(addr, "dora", "n26").await;
    assert_eq!(titles(&first.take(1).await), ["n26"]);
    drop(first);

    // The page, opened again after reading n22, resumes at n23.
    for i in 27..=28 {
        notify(addr, "dora", &format!("n{i}")).await;
    }
    let path = format!(
        "/users/dora/events?lastEventId={}",
        percent_encode(&ids[21])
    );
    let mut again = user_events(addr, "dora", &path).await;
    let got = again.take(6).await;
    assert_eq!(titles(&got), ["n23", "n24", "n25", "n26", "n27", "n28"]);
    notify(addr, "dora", "n29").await;
    assert_eq!(
        titles(&again.take(1).await),
        ["n29"],
        "no duplicate after the resume"
    );
}

/// notifications: "a user who was offline gets what arrived meanwhile (up to the history of
/// 100) ... One away for longer than the history is told (`history-lost`) and gets the newest
/// 20": more than 100 arrive while the page is closed.
// Was broken (fixed since): the hub sent `history-lost` and went live, so the page got only
// ["sentinel"], none of the notifications the topic still held.
#[tokio::test]
async fn notifications_offline_for_more_than_the_history_gets_up_to_100() {
    let (addr, _hub) = start_notifications().await;
    let (_, body) = notify(addr, "ed", "seen").await;
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seen = seen["id"].as_str().unwrap().to_owned();
    for i in 1..=105 {
        notify(addr, "ed", &format!("n{i}")).await;
    }
    let path = format!("/users/ed/events?lastEventId={}", percent_encode(&seen));
    let mut page = user_events(addr, "ed", &path).await;
    // A sentinel after the replay, so the read is bounded whatever is replayed.
    notify(addr, "ed", "sentinel").await;
    let mut got = Vec::new();
    while !got
        .iter()
        .any(|m: &Message| m.event == "notification" && json(m)["title"] == "sentinel")
    {
        let more = page.take(1).await;
        assert!(!more.is_empty(), "the stream ended");
        got.extend(more);
    }
    let expected: Vec<String> = (86..=105)
        .map(|i| format!("n{i}"))
        .chain(["sentinel".to_owned()])
        .collect();
    let events: Vec<&str> = got.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(events[0], "history-lost", "told first: {events:?}");
    assert_eq!(titles(&got), expected, "events: {events:?}");
}

/// notifications: user ids are 1 to 64 of `[A-Za-z0-9_-]`; anything else is `400` on the
/// stream (for a signed-in user), the notify and the sign-in routes, and creates no topic.
#[tokio::test]
async fn notifications_odd_user_ids() {
    let (addr, hub) = start_notifications().await;
    let someone = sign_in(addr, "someone").await;
    let max = "a".repeat(64);
    for ok in [max.as_str(), "-", "_", "A-b_9"] {
        assert_eq!(notify(addr, ok, "x").await.0, 202, "{ok}");
        let mut client = user_events(addr, ok, &format!("/users/{ok}/events")).await;
        assert_eq!(titles(&client.take(1).await), ["x"], "{ok}");
    }
    let over = "a".repeat(65);
    for bad in [
        over.as_str(),
        "a%20b",
        "%C3%A9",
        "a.b",
        "..",
        "%2E%2E",
        "a%2Fb",
        "a+b",
    ] {
        assert_eq!(notify(addr, bad, "x").await.0, 400, "notify {bad}");
        // As JSON text: the id decoded, as a person would type it.
        let decoded = percent_encoding::percent_decode_str(bad).decode_utf8_lossy();
        let form = serde_json::json!({ "user": decoded }).to_string();
        assert_eq!(
            post_json(addr, "/session", &form).await.0,
            400,
            "sign in {bad}"
        );
        let path = format!("/users/{bad}/events");
        let client = RawClient::get(addr, &path, &[("cookie", &someone)]).await;
        assert!(
            [400, 404].contains(&client.status()),
            "events {bad}: {}",
            client.head
        );
    }
    let names = hub.topic_names();
    assert!(
        names.iter().all(|n| {
            let id = n.strip_prefix("user:").unwrap();
            ["-", "_", "A-b_9", max.as_str()].contains(&id)
        }),
        "{names:?}"
    );
}

/// notifications: "`POST /notify` — the same to every user with a stream or pending
/// notifications", answering how many users: two streaming, one offline with a pending one; a
/// user who came and went with nothing pending is not one.
#[tokio::test]
async fn notifications_notify_all_counts() {
    let (addr, hub) = start_notifications().await;
    let (status, body) = post_json(addr, "/notify", r#"{"title":"nobody","body":"b"}"#).await;
    assert_eq!((status, body.as_str()), (202, r#"{"users":0}"#));

    let mut ann = user_events(addr, "ann", "/users/ann/events").await;
    let mut ben = user_events(addr, "ben", "/users/ben/events").await;
    notify(addr, "cat", "pending").await;
    let passer = user_events(addr, "passer", "/users/passer/events").await;
    assert!(
        eventually(Duration::from_secs(30), || hub
            .get("user:passer")
            .is_some_and(|t| t.subscribers() == 1))
        .await
    );
    drop(passer);
    assert!(
        eventually(Duration::from_secs(30), || hub.get("user:passer").is_none()).await,
        "a topic with no subscriber and no history goes away"
    );
    // ann and ben count once their streams have joined.
    assert!(
        eventually(Duration::from_secs(30), || ["ann", "ben"]
            .iter()
            .all(|u| hub
                .get(&format!("user:{u}"))
                .is_some_and(|t| t.subscribers() == 1)))
        .await
    );
    let (status, body) = post_json(addr, "/notify", r#"{"title":"all","body":"b"}"#).await;
    assert_eq!((status, body.as_str()), (202, r#"{"users":3}"#));
    assert_eq!(titles(&ann.take(1).await), ["all"]);
    assert_eq!(titles(&ben.take(1).await), ["all"]);
    let mut cat = user_events(addr, "cat", "/users/cat/events").await;
    assert_eq!(titles(&cat.take(2).await), ["pending", "all"]);
    // Bad bodies are refused.
    assert_eq!(post_json(addr, "/notify", r#"{"title":1}"#).await.0, 400);
    assert_eq!(post_json(addr, "/notify", "not json").await.0, 400);
}

/// notifications page: "the page keeps the notifications it showed and the id of the last one in
/// `localStorage`, and opens its stream with `?lastEventId=` so it continues exactly after it".
/// A person signed in as alice types "bob" in the box (not yet pressing sign in) while a
/// notification for alice arrives, then signs in as bob: bob's page must show bob's
/// notifications only, all of them, and none of alice's.
// Was broken (fixed since): the page filed each notification under the id *in the box* when it arrives (`key()`
// reads the input), so alice's notification is stored and shown as bob's, and bob's stream is
// resumed from alice's id (same hub epoch, offset 1): bob's page shows
// ["for bob 3", "for bob 2", "for alice"] and "for bob 1" never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn notifications_page_switching_user_in_chromium() {
    let (addr, _hub) = start_notifications().await;
    let results =
        common::run_in_chromium("first_hour_adversarial.mjs", &[format!("http://{addr}")]).await;
    println!("browser results: {results}");
    let switch = &results["switch"];
    assert_eq!(
        switch["bob"],
        serde_json::json!(["for bob 3", "for bob 2", "for bob 1"]),
        "{switch}"
    );
    assert_eq!(switch["bobStatus"], "connected", "{switch}");
}

// ---------------------------------------------------------------------------------------------
// 4. "lists the others as ignored"
// ---------------------------------------------------------------------------------------------

/// README: "`cargo test --all-features` runs every test that needs nothing installed and lists
/// the others as ignored ... Those need `redis-server`, Chromium and Node". Every test whose
/// body starts Redis, drives Chromium or runs cargo on the README carries `#[ignore]`.
/// (Checked on the sources; the built binaries' `--list --ignored` agree: hub_redis 17 of 18,
/// hub_redis_adversarial 26 of 26, browser 1 of 1, examples 1 of 5, readme 1 of 2.)
#[test]
fn tool_dependent_tests_are_ignored() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let needs = [
        "run_in_chromium",
        "RedisServer::start",
        "PgServer::start",
        "start_cluster",
        "Command::new(&cargo)",
    ];
    let mut offenders = Vec::new();
    let mut counted = 0;
    for file in [
        "hub_redis.rs",
        "hub_redis_adversarial.rs",
        "browser.rs",
        "examples.rs",
        "readme.rs",
        "first_hour_adversarial.rs",
        "auth_browser.rs",
        "auth.rs",
        "auth_adversarial.rs",
        "auth_adversarial2.rs",
        "hub_postgres.rs",
        "hub_postgres_adversarial.rs",
        "hub_postgres_adversarial2.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !(trimmed.starts_with("#[test]") || trimmed.starts_with("#[tokio::test")) {
                continue;
            }
            let mut j = i + 1;
            let mut ignored = false;
            while j < lines.len()
                && !lines[j].trim_start().starts_with("async fn ")
                && !lines[j].trim_start().starts_with("fn ")
            {
                ignored |= lines[j].contains("#[ignore");
                j += 1;
            }
            let end = (j + 1..lines.len())
                .find(|&k| lines[k].starts_with('}'))
                .unwrap_or(lines.len());
            let body = lines[j..end].join("\n");
            counted += 1;
            // This very test names the needles; it needs no tool.
            if body.contains("fn tool_dependent_tests_are_ignored") {
                continue;
            }
            if needs.iter().any(|n| body.contains(n)) && !ignored {
                offenders.push(format!("{file}: {}", lines[j].trim()));
            }
        }
    }
    assert!(counted > 50, "found {counted} tests");
    assert!(offenders.is_empty(), "not ignored: {offenders:#?}");
}
