//! In a real browser: headless Chromium (Debian's package) driven by `playwright-core`
//! (tests/browser/run.mjs) checks what its own `EventSource` makes of our streams.
//!
//! Needs `/usr/bin/chromium`, `node`, `npm ci --prefix tests/browser` and (with feature `redis`)
//! `redis-server`; `.ci/run` installs them. The test is `#[ignore]`d, so a plain `cargo test`
//! lists it as ignored; `cargo test --all-features -- --ignored` runs it, and fails it when a
//! tool is missing, naming the line that installs it.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/chat.rs"]
mod chat;
mod common;

use axum::{response::Html, routing::get, Router};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tower_sse::{hub::Hub, Event, KeepAlive, LastEventId, SseBody, SseLayer};

fn ev(builder: tower_sse::EventBuilder) -> Event {
    builder.build().unwrap()
}

/// The events whose dispatch the browser reports, with pauses for keep-alives in between.
fn framing_stream() -> impl futures_core::Stream<Item = Event> + Send {
    let first = vec![
        Event::message("line1\nline2\r\nline3\rline4"),
        Event::message(""),
        Event::message("end\n"),
        Event::message(" lead"),
        ev(Event::builder().event("custom").id("7").data("named")),
        ev(Event::builder().comment("a comment-only event")),
    ];
    let pause = stream::once(tokio::time::sleep(Duration::from_millis(150)))
        .filter_map(|()| async { None });
    let second = vec![
        // An id with no data: not dispatched, but it becomes the last event id.
        ev(Event::builder().event("other").id("8")),
        Event::message("after id"),
        ev(Event::builder().event("done").data("bye")),
    ];
    stream::iter(first)
        .chain(pause)
        .chain(stream::iter(second))
        .chain(stream::pending())
}

async fn start_test_server() -> SocketAddr {
    let hub = Hub::new();
    let topic = hub.topic("resume");
    for i in 0..10 {
        topic
            .publish(Event::message(i.to_string()))
            .now()
            .unwrap()
            .unwrap();
    }
    let publisher = topic.clone();
    tokio::spawn(async move {
        for i in 10..30 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            publisher
                .publish(Event::message(i.to_string()))
                .now()
                .unwrap()
                .unwrap();
        }
    });
    let stop_hits = Arc::new(AtomicUsize::new(0));
    let counted = stop_hits.clone();
    let app = Router::new()
        .route(
            "/stop",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { tower_sse::stop_reconnecting::<axum::body::Body>() }
            }),
        )
        .route(
            "/stop-hits",
            get(move || {
                let hits = stop_hits.load(Ordering::SeqCst);
                async move { hits.to_string() }
            }),
        )
        .route(
            "/blank",
            get(|| async { Html("<!doctype html><title>t</title>") }),
        )
        .route("/framing", get(|| async { SseBody::new(framing_stream()) }))
        .route(
            "/failing",
            get(|| async {
                // One event, then an error whose text must never reach the browser.
                let items = stream::iter([
                    Ok(Event::message("before the failure")),
                    Err(std::io::Error::other(
                        "postgres://app:hunter2@db/prod is down",
                    )),
                ]);
                SseBody::new(items)
            }),
        )
        .route(
            "/resume",
            get(move |last: Option<LastEventId>| {
                let topic = topic.clone();
                async move {
                    // Every connection ends after 4 events; the browser must come back for more.
                    SseBody::new(
                        topic
                            .subscribe_with_recent(last.as_ref(), usize::MAX)
                            .take(4),
                    )
                }
            }),
        )
        .layer(
            SseLayer::new()
                .retry(Duration::from_millis(50))
                .error_retry(Duration::from_millis(800))
                .keep_alive(KeepAlive::new().interval(Duration::from_millis(20))),
        );
    serve(app).await
}

/// A server whose one stream route admits two streams at a time; each stream waits until four
/// requests have come in (so two were surely turned away), sends three events and waits, so a
/// stream's slot frees up only when its page closes it.
async fn start_limited_server() -> (SocketAddr, tower_sse::StreamStats) {
    let layer = SseLayer::new()
        .max_streams(2)
        .come_back(Duration::from_millis(300)..=Duration::from_millis(600));
    let stats = layer.stream_stats();
    let requests = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/blank",
            get(|| async { Html("<!doctype html><title>t</title>") }),
        )
        .route(
            "/limited",
            get(move || {
                let requests = requests.clone();
                requests.fetch_add(1, Ordering::SeqCst);
                async move {
                    let all_came = stream::once(async move {
                        while requests.load(Ordering::SeqCst) < 4 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    })
                    .filter_map(|()| async { None });
                    let events = stream::iter(0..3).map(|i| Event::message(i.to_string()));
                    SseBody::new(all_came.chain(events).chain(stream::pending()))
                }
            }),
        )
        .layer(layer);
    (serve(app).await, stats)
}

/// An HTTPS server (HTTP/2 by ALPN) with a self-signed certificate for `localhost`: a page, and
/// a stream that sends one event, then stays open.
async fn start_https_server() -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let app = Router::new()
        .route(
            "/blank",
            get(|| async { Html("<!doctype html><title>t</title>") }),
        )
        .route(
            "/tls-events",
            get(|| async {
                SseBody::new(stream::iter([Event::message("over tls")]).chain(stream::pending()))
            }),
        )
        .layer(SseLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_sse::serve::Server::new(listener).rustls(std::sync::Arc::new(tls));
    tokio::spawn(server.serve(app));
    addr
}

/// Two chat servers sharing their rooms through an engine of the test's own (a Redis, a
/// Postgres), and a TCP proxy to the second that a POST to `control/switch` turns to the first,
/// cutting every connection: a load balancer moving clients to another server.
#[cfg(any(feature = "redis", feature = "postgres"))]
struct Cluster {
    _engine: Box<dyn std::any::Any + Send>,
    first: SocketAddr,
    proxy: SocketAddr,
    control: SocketAddr,
}

#[cfg(feature = "redis")]
async fn start_cluster() -> Option<Cluster> {
    let redis = common::redis::RedisServer::start().await;
    let first = chat::app(chat::redis_hub(&redis.url()).unwrap());
    let second = chat::app(chat::redis_hub(&redis.url()).unwrap());
    Some(cluster_of(Box::new(redis), first, second).await)
}

#[cfg(any(feature = "redis", feature = "postgres"))]
async fn cluster_of(
    engine: Box<dyn std::any::Any + Send>,
    first: Router,
    second: Router,
) -> Cluster {
    use std::sync::Mutex;
    let first = serve(first).await;
    let second = serve(second).await;

    let target = Arc::new(Mutex::new(second));
    let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    {
        let (target, open) = (target.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = *target.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open.lock().unwrap().push(task.abort_handle());
            }
        });
    }
    let switch = move || {
        *target.lock().unwrap() = first;
        open.lock().unwrap().drain(..).for_each(|task| task.abort());
        async { "switched" }
    };
    let control = serve(Router::new().route("/switch", axum::routing::post(switch))).await;
    Cluster {
        _engine: engine,
        first,
        proxy,
        control,
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn eventsource_in_chromium() {
    let base = start_test_server().await;
    let chat = serve(chat::app(chat::hub())).await;
    let (limited, limited_stats) = start_limited_server().await;
    let https = start_https_server().await;
    #[cfg(feature = "redis")]
    let cluster = start_cluster().await;
    #[cfg(feature = "redis")]
    let cluster_args = match &cluster {
        Some(c) => [c.first, c.proxy, c.control].map(|a| format!("http://{a}")),
        None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
    };
    #[cfg(not(feature = "redis"))]
    let cluster_args = ["-".to_owned(), "-".to_owned(), "-".to_owned()];

    let mut args = vec![
        format!("http://{base}"),
        format!("http://{chat}"),
        format!("http://{limited}"),
        format!("https://localhost:{}", https.port()),
    ];
    args.extend(cluster_args.iter().cloned());
    let results: Value = common::run_in_chromium("run.mjs", &args).await;
    println!("browser results: {results}");

    // Multi-line data intact (every break kind arrives as LF), trailing newline and leading
    // space kept, empty data dispatched as "", named events reach their listeners, ids set
    // lastEventId (also from an event without data), comments and keep-alives dispatch nothing.
    let event = |t: &str, d: &str, id: &str| json!({ "type": t, "data": d, "lastEventId": id });
    assert_eq!(
        results["framing"],
        json!([
            event("message", "line1\nline2\nline3\nline4", ""),
            event("message", "", ""),
            event("message", "end\n", ""),
            event("message", " lead", ""),
            event("custom", "named", "7"),
            event("message", "after id", "8"),
            event("done", "bye", "8"),
        ])
    );

    // A failing stream: the page gets a `stream-error` event with no detail (no secret), the
    // `onerror` handler sees only the connection closing (never a message), and the browser
    // waits for the error back-off (800 ms, not the stream's 50 ms) before coming back.
    let failing = &results["failing"];
    assert_eq!(
        failing["messages"],
        json!(["before the failure"]),
        "{failing}"
    );
    assert_eq!(
        failing["streamErrors"],
        json!([r#"{"reason":"error"}"#]),
        "{failing}"
    );
    assert!(!failing.to_string().contains("hunter2"), "{failing}");
    assert_eq!(failing["onerrorMessages"], json!(0), "{failing}");
    assert!(failing["onerrorCalls"].as_u64().unwrap() >= 1, "{failing}");
    let gap = failing["reconnectAfterMs"].as_f64().unwrap();
    assert!(gap >= 700.0, "reconnected after {gap} ms: {failing}");

    // Over the stream limit: with two streams allowed and four pages, every page eventually
    // gets its events, the refused ones by coming back on their own after the retry delay.
    let limited = &results["limited"];
    let pages = limited.as_array().expect("one result a page");
    assert_eq!(pages.len(), 4, "{limited}");
    for page in pages {
        assert_eq!(page["data"], json!(["0", "1", "2"]), "{limited}");
    }
    let reopened = pages
        .iter()
        .filter(|p| p["opens"].as_u64().unwrap() > 1)
        .count();
    assert!(
        reopened >= 2,
        "at least two pages were turned away first: {limited}"
    );
    assert!(limited_stats.refused() >= 2, "{limited_stats:?}");

    // Over HTTP/2 and TLS, ten EventSources on one page all receive their events: the six
    // connections a browser allows per host for HTTP/1.1 do not apply.
    let tls = &results["tls"];
    assert_eq!(tls["protocol"], "h2", "{tls}");
    assert_eq!(tls["data"], json!(vec!["over tls"; 10]), "{tls}");

    // A server-closed stream reconnects and resumes from Last-Event-ID: no loss, no duplicate.
    let resume = &results["resume"];
    let expected: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(resume["data"], json!(expected), "{resume}");
    assert!(
        resume["opens"].as_u64().unwrap() >= 8,
        "reconnected each time: {resume}"
    );

    // 204 No Content: the EventSource closes (readyState 2) and never comes back.
    assert_eq!(
        results["stop"],
        json!({ "readyState": 2, "errors": 1, "hits": 1, "probe": 204 })
    );

    // Chat: a message posted in one page appears in the other; closing a tab is announced.
    let ben_log = results["chat"]["ben_log"].to_string();
    assert!(ben_log.contains("ann: hello from ann"), "{ben_log}");
    let ann_log = results["chat"]["ann_log"].to_string();
    assert!(ann_log.contains("ben joined"), "{ann_log}");
    assert!(ann_log.contains("ben left"), "{ann_log}");

    // Two chat servers on one Redis: a message posted on one reaches a page on the other; when
    // that page's server goes away it reconnects to the first, resumes from its Last-Event-ID,
    // and has every message exactly once, in order (a fresh start would replay "one" again).
    if cluster_args[0] != "-" {
        let cluster = &results["cluster"];
        assert_eq!(
            cluster["messages"],
            json!([
                "carol: one",
                "carol: two while dave moves",
                "carol: three while dave moves",
                "carol: four"
            ]),
            "{cluster}"
        );
        assert!(cluster["opens"].as_u64().unwrap() >= 2, "{cluster}");
    } else {
        println!("the two-node chat check did not run: it needs feature `redis` and redis-server");
    }
}

/// Two chat servers on one Postgres, as the Redis pair above: a message posted on one reaches a
/// page on the other; that page, moved to the first server, resumes from its `Last-Event-ID`
/// with every message once, in order; and every message is in `chat_messages` with the id its
/// event had.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node, `npm ci --prefix tests/browser` and postgres"]
async fn two_chat_servers_on_one_postgres_in_chromium() {
    let server = common::postgres::PgServer::start().await;
    let (_, first) = chat::postgres_app(&server.url()).await.unwrap();
    let (_, second) = chat::postgres_app(&server.url()).await.unwrap();
    let pool = server.pool(2);
    let cluster = cluster_of(Box::new(server), first, second).await;
    let args = [cluster.first, cluster.proxy, cluster.control].map(|a| format!("http://{a}"));
    let results: Value = common::run_in_chromium("cluster.mjs", &args).await;
    println!("browser results: {results}");
    let cluster = &results["cluster"];
    let said = [
        "carol: one",
        "carol: two while dave moves",
        "carol: three while dave moves",
        "carol: four",
    ];
    assert_eq!(cluster["messages"], json!(said), "{cluster}");
    assert!(cluster["opens"].as_u64().unwrap() >= 2, "{cluster}");
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT author, body, event_id FROM chat_messages ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let lines: Vec<String> = stored.iter().map(|(a, b, _)| format!("{a}: {b}")).collect();
    assert_eq!(lines, said, "stored as delivered");
    let offsets: Vec<u64> = stored
        .iter()
        .map(|(_, _, id)| id.rsplit_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
}
