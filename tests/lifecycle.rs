//! Deploys without reconnect storms: one come-back window for every end on purpose, drain
//! policies (`Waves`, `Finish`) on a real `serve::Server` over HTTP/1.1 and HTTP/2, the
//! admission budget over HTTP, and the open-frame padding.

mod common;

use common::{come_back_retry, h2_client, h2_get, serve::bind, RawClient};
use futures_util::{stream, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{
    decode::Decoder,
    hub::{Hub, LagPolicy, EVICTED},
    serve::Server,
    Admission, CloseReason, DrainPolicy, Event, KeepAlive, Shutdown, SseBody, SseLayer,
};

const WINDOW_MS: std::ops::RangeInclusive<u64> = 200..=400;

fn window() -> std::ops::RangeInclusive<Duration> {
    Duration::from_millis(*WINDOW_MS.start())..=Duration::from_millis(*WINDOW_MS.end())
}

/// The whole body of one request to a service of `layer` whose stream is `events`.
async fn body_of<S>(layer: SseLayer, events: S, accept: &str) -> (StatusCode, bytes::Bytes)
where
    S: futures_core::Stream<Item = Event> + Send + Clone + 'static,
{
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |req: Request<()>| {
                let events = events.clone();
                async move {
                    Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
                }
            });
    let request = Request::get("/").header("accept", accept).body(()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// "the `retry:` of every come-back block is drawn from the window": a lifetime, a shutdown,
/// a hub evicting and a hub closing, a stream limit and the admission budget, each many times.
#[tokio::test(start_paused = true)]
async fn every_end_on_purpose_draws_its_retry_from_the_one_window() {
    let quiet = || {
        SseLayer::new()
            .open_frame(false)
            .keep_alive(KeepAlive::disabled())
            .come_back(window())
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let endless = stream::pending::<Event>();
        let layer = quiet().max_lifetime(Duration::from_secs(1));
        let (_, bytes) = body_of(layer, endless.clone(), "*/*").await;
        seen.insert(come_back_retry(
            &bytes,
            "stream lifetime reached, reconnect",
        ));

        let shutdown = Shutdown::new();
        shutdown.trigger(None);
        let (_, bytes) = body_of(quiet().shutdown(&shutdown), endless.clone(), "*/*").await;
        assert!(
            bytes.starts_with(b"retry: "),
            "nothing but the block: {bytes:?}"
        );
        seen.insert(come_back_retry(&bytes, "server shutting down, reconnect"));

        let (status, bytes) =
            body_of(quiet().max_streams(0), endless.clone(), "text/event-stream").await;
        assert_eq!(status, StatusCode::OK);
        seen.insert(come_back_retry(&bytes, "over capacity, come back later"));

        let layer = quiet().admission(&Admission::new(0.0, 0));
        let (status, bytes) = body_of(layer, endless.clone(), "text/event-stream").await;
        assert_eq!(status, StatusCode::OK);
        seen.insert(come_back_retry(
            &bytes,
            "too many new connections, come back later",
        ));
    }
    // A hub's own ends, through a body under the layer.
    for _ in 0..20 {
        let hub = Hub::builder()
            .max_lag(2, u64::MAX)
            .lag_policy(LagPolicy::Evict)
            .build();
        let topic = hub.topic("t");
        let mut sub = topic.subscribe(None);
        sub.join();
        for i in 0..10 {
            topic.publish(Event::message(i.to_string())).await.unwrap();
        }
        let body = SseBody::new(sub).open_frame(false).come_back(window());
        let bytes = body.collect().await.unwrap().to_bytes();
        let messages = Decoder::new().feed(&bytes);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].event, EVICTED);
        seen.insert(come_back_retry(&bytes, "fell behind, reconnect"));

        let hub = Hub::new();
        let sub = hub.topic("t").subscribe(None);
        hub.close(Some(
            Event::builder().event("bye").data("").build().unwrap(),
        ));
        let body = SseBody::new(sub).open_frame(false).come_back(window());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(
            bytes.starts_with(b"event: bye\ndata: \n\nretry: "),
            "{bytes:?}"
        );
        seen.insert(come_back_retry(&bytes, "server shutting down, reconnect"));
        // Closed with no final event: the block alone.
        let hub = Hub::new();
        let sub = hub.topic("t").subscribe(None);
        hub.close(None);
        let body = SseBody::new(sub).open_frame(false).come_back(window());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(bytes.starts_with(b"retry: "), "{bytes:?}");
        seen.insert(come_back_retry(&bytes, "server shutting down, reconnect"));
    }
    assert!(seen.iter().all(|ms| WINDOW_MS.contains(ms)), "{seen:?}");
    assert!(
        seen.len() > 50,
        "drawn, not fixed: {} distinct of 200",
        seen.len()
    );
}

/// "a `503` refusal sends one, rounded up to whole seconds, as `Retry-After`".
#[tokio::test]
async fn a_503_refusal_says_retry_after_from_the_window() {
    let layer = SseLayer::new()
        .max_streams(0)
        .come_back(Duration::from_millis(2001)..=Duration::from_millis(2999));
    let (status, bytes) = body_of(layer.clone(), stream::pending::<Event>(), "*/*").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(bytes.is_empty());
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(
                SseBody::from_request(&req, stream::pending::<Event>()).into_http_response(),
            )
        });
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.headers()["retry-after"], "3");
}

/// A `serve::Server` whose streams (under `layer`) each send one event, then nothing; stopped
/// by the returned sender, triggering `shutdown`.
async fn server(
    layer: SseLayer,
    shutdown: &Shutdown,
    graceful: Duration,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (listener, addr) = bind().await;
    let app = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Incoming>| async move {
            let events = stream::iter([Event::message("live")]).chain(stream::pending());
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new(listener)
        .shutdown(
            shutdown,
            Some(Event::builder().event("bye").data("").build().unwrap()),
        )
        .graceful_timeout(graceful);
    let task = tokio::spawn(server.serve_with_graceful_shutdown(app, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// `DrainPolicy::Waves`: "each stream ends at its own point drawn uniformly over this span
/// after the trigger", and `Server`'s graceful timeout "starts after the longest drain": with
/// a 4 s wave and a 1.5 s graceful timeout (slack for a busy machine), 40 HTTP/1.1 and 20 HTTP/2 streams all end on
/// their own, spread out, each with the final event and a come-back block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_spread_the_ends_and_the_server_waits_for_them_over_http1_and_http2() {
    let span = Duration::from_secs(4);
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .shutdown(&shutdown)
        .drain(DrainPolicy::Waves(span))
        .come_back(window());
    assert_eq!(shutdown.drain_span(), span);
    let (addr, stop, task) = server(layer.clone(), &shutdown, Duration::from_millis(1500)).await;

    let mut h1 = Vec::new();
    for _ in 0..40 {
        let mut client = RawClient::get(addr, "/", &[]).await;
        assert_eq!(client.events(1).await[0].data, "live");
        h1.push(client);
    }
    let mut h2 = h2_client(addr).await;
    let mut h2_bodies = Vec::new();
    for _ in 0..20 {
        let mut body = h2
            .send_request(h2_get(addr, "/"))
            .await
            .unwrap()
            .into_body();
        let mut first = Vec::new();
        while !first.ends_with(b"data: live\n\n") {
            first.extend_from_slice(&body.frame().await.unwrap().unwrap().into_data().unwrap());
        }
        h2_bodies.push(body);
    }

    let triggered = Instant::now();
    stop.send(()).unwrap();
    let mut ends = Vec::new();
    let h1_ends = h1.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let (bytes, messages) = client.read_to_end().await;
            assert!(client.ended, "ended on its own, not cut");
            (
                triggered.elapsed(),
                bytes,
                messages.last().map(|m| m.event.clone()),
            )
        })
    });
    let h2_ends = h2_bodies.into_iter().map(|body| {
        tokio::spawn(async move {
            let bytes = body
                .collect()
                .await
                .expect("ended on its own, not reset")
                .to_bytes();
            let last = Decoder::new().feed(&bytes).last().map(|m| m.event.clone());
            (triggered.elapsed(), bytes.to_vec(), last)
        })
    });
    for end in h1_ends
        .collect::<Vec<_>>()
        .into_iter()
        .chain(h2_ends.collect::<Vec<_>>())
    {
        let (at, bytes, last) = end.await.unwrap();
        assert_eq!(last.as_deref(), Some("bye"));
        let retry = come_back_retry(&bytes, "server shutting down, reconnect");
        assert!(WINDOW_MS.contains(&retry), "{retry}");
        ends.push(at);
    }
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the server exits once the waves are over")
        .unwrap();
    ends.sort();
    println!(
        "ends after the trigger: first {:?}, median {:?}, last {:?}",
        ends[0], ends[30], ends[59]
    );
    // An end can come late on a busy machine, never early: the later half of the span must
    // hold about half of them (binomially, fewer than a fifth is out of reach).
    let late = ends.iter().filter(|at| **at >= span / 2).count();
    assert!(
        late >= 12,
        "only {late} of 60 ended in the second half of the wave"
    );
    assert!(
        ends[59] < span + Duration::from_secs(10),
        "the last ended after {:?}",
        ends[59]
    );
    assert_eq!(layer.open_streams(), 0);
}

/// `DrainPolicy::Finish`: "one that ends by itself in that time ends normally, the others end
/// when it passes".
#[tokio::test(start_paused = true)]
async fn finish_lets_streams_complete_and_ends_the_others_when_it_passes() {
    let grace = Duration::from_secs(30);
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .open_frame(false)
        .keep_alive(KeepAlive::disabled())
        .shutdown(&shutdown)
        .drain(DrainPolicy::Finish(grace))
        .come_back(window());
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<()>| async move {
            // `/job` ends by itself after 10 s of progress events; `/feed` never does.
            let job = req.uri().path() == "/job";
            let ticks = stream::iter(0..10u32).then(|i| async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Event::message(format!("step {i}"))
            });
            let events = if job {
                ticks.boxed()
            } else {
                ticks.chain(stream::pending()).boxed()
            };
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        });
    let start = tokio::time::Instant::now();
    let mut ends = Vec::new();
    for path in ["/job", "/feed"] {
        let response = service
            .clone()
            .oneshot(Request::get(path).body(()).unwrap())
            .await
            .unwrap();
        let mut body = response.into_body();
        let disconnect = body.disconnect_handle();
        ends.push(tokio::spawn(async move {
            let bytes = body.collect().await.unwrap().to_bytes();
            (tokio::time::Instant::now(), bytes, disconnect.reason())
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    shutdown.trigger(None);
    let triggered = tokio::time::Instant::now();
    let (job_end, job, job_reason) = ends.remove(0).await.unwrap();
    assert_eq!(
        job_end - start,
        Duration::from_secs(10),
        "the job finished its ten steps"
    );
    assert_eq!(Decoder::new().feed(&job).len(), 10);
    assert!(
        !job.ends_with(b"reconnect\n\n"),
        "a stream that completes is not told to come back"
    );
    assert_eq!(job_reason, Some(CloseReason::Completed));
    let (feed_end, feed, feed_reason) = ends.remove(0).await.unwrap();
    assert_eq!(
        feed_end - triggered,
        grace,
        "the endless one ends when the grace passes"
    );
    assert_eq!(
        Decoder::new().feed(&feed).len(),
        10,
        "its events up to then"
    );
    come_back_retry(&feed, "server shutting down, reconnect");
    assert_eq!(feed_reason, Some(CloseReason::Shutdown));
}

/// "A stream that opens after the trigger ends at once, whatever the policy", and a drain
/// triggered twice is one drain.
#[tokio::test(start_paused = true)]
async fn a_stream_opened_during_a_drain_ends_at_once_and_a_second_trigger_changes_nothing() {
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .open_frame(false)
        .keep_alive(KeepAlive::disabled())
        .shutdown(&shutdown)
        .drain(DrainPolicy::Waves(Duration::from_secs(60)))
        .come_back(window());
    shutdown.trigger(Some(Event::message("first")));
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.trigger(Some(Event::message("second")));
    let start = tokio::time::Instant::now();
    let (_, bytes) = body_of(layer, stream::pending::<Event>(), "*/*").await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(bytes.starts_with(b"data: first\n\nretry: "), "{bytes:?}");
    come_back_retry(&bytes, "server shutting down, reconnect");
}

/// The admission budget over real HTTP: within the burst, streams open; beyond it an
/// `EventSource` client gets `200` and a come-back block, another client `503` with
/// `Retry-After`; refusals are counted and never reach the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_clients_are_refused_politely_and_never_join_the_hub() {
    let hub = Hub::new();
    let admission = Admission::new(0.0, 3);
    let layer = SseLayer::new().admission(&admission).come_back(window());
    let (listener, addr) = bind().await;
    let topic = hub.topic("t");
    let app = ServiceBuilder::new().layer(layer).service_fn(move |req: Request<Incoming>| {
        let sub = topic.subscribe(None);
        async move { Ok::<_, Infallible>(SseBody::from_request(&req, sub).into_http_response()) }
    });
    tokio::spawn(Server::new(listener).serve(app));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut client = RawClient::get(addr, "/", &[]).await;
        assert_eq!(client.status(), 200);
        assert!(client.next_bytes().await.is_some());
        open.push(client);
    }
    assert!(common::eventually(Duration::from_secs(5), || hub.topic("t").subscribers() == 3).await);
    for _ in 0..5 {
        let mut refused = RawClient::get(addr, "/", &[]).await;
        assert_eq!(refused.status(), 200);
        let (bytes, messages) = refused.read_to_end().await;
        assert!(messages.is_empty() && refused.ended);
        let retry = come_back_retry(&bytes, "too many new connections, come back later");
        assert!(WINDOW_MS.contains(&retry));
    }
    let curl = RawClient::get(addr, "/", &[("accept", "*/*")]).await;
    assert_eq!(curl.status(), 503);
    assert_eq!(curl.header("retry-after").as_deref(), Some("1"));
    // HTTP/2 too.
    let mut h2 = h2_client(addr).await;
    let mut request = h2_get(addr, "/");
    request
        .headers_mut()
        .insert("accept", "text/event-stream".parse().unwrap());
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    come_back_retry(&bytes, "too many new connections, come back later");
    assert_eq!(admission.refused(), 7);
    assert_eq!(admission.admitted(), 3);
    assert_eq!(hub.topic("t").subscribers(), 3, "no refused stream joined");
    assert_eq!(hub.stats().subscribers, 3);
}

/// "Sends a comment of `bytes` bytes right after the open frame": the first bytes a client
/// reads are the open frame and the padding, before any event, and nothing is dispatched.
#[tokio::test]
async fn the_padding_reaches_the_client_before_the_first_event() {
    let (listener, addr) = bind().await;
    let layer = SseLayer::new()
        .retry(Duration::from_secs(3))
        .open_padding(4096);
    let app = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Incoming>| async move {
            let events = stream::iter([Event::message("hi")]).chain(stream::pending());
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        });
    tokio::spawn(Server::new(listener).serve(app));
    let mut client = RawClient::get(addr, "/", &[]).await;
    let mut got = Vec::new();
    while got.len() < "retry: 3000\n".len() + 4096 + "data: hi\n\n".len() {
        got.extend_from_slice(&client.next_bytes().await.unwrap());
    }
    let (head, event) = got.split_at(got.len() - "data: hi\n\n".len());
    assert_eq!(event, b"data: hi\n\n");
    assert!(head.starts_with(b"retry: 3000\n:"));
    assert_eq!(head.len(), 12 + 4096);
    assert!(head[13..4107].iter().all(|b| *b == b' ') && head[4107] == b'\n');
    let messages = Decoder::new().feed(&got);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, "hi");
}

/// A tiny load balancer: forwards each connection to the node `to` says, at connect time.
async fn switchable_proxy(
    nodes: [std::net::SocketAddr; 2],
    to: Arc<AtomicUsize>,
) -> std::net::SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let node = nodes[to.load(Ordering::SeqCst)];
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(node).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    addr
}

/// A node of the browser test: `/events` streams the shared hub's topic, `/blank` is a page.
async fn browser_node(
    hub: &Hub,
    layer: SseLayer,
    shutdown: &Shutdown,
) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    use axum::{extract::State, routing::get, Router};
    let app = Router::new()
        .route(
            "/blank",
            get(|| async { axum::response::Html("<!doctype html><title>t</title>") }),
        )
        .route(
            "/events",
            get(
                |State(hub): State<Hub>, last: Option<tower_sse::LastEventId>| async move {
                    SseBody::new(hub.topic("t").subscribe(last.as_ref()))
                },
            ),
        )
        .with_state(hub.clone());
    let app = tower_layer::Layer::layer(&layer, app);
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new(listener).shutdown(shutdown, None);
    tokio::spawn(server.serve_with_graceful_shutdown(app, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Twenty Chromium `EventSource` pages through a node that drains with `Waves`, over the
/// admission budget, and through a lifetime rotation: all come back, none ends `CLOSED`, and
/// every page's messages are exact (consecutive, none twice) up to the last one published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn twenty_browser_pages_come_back_through_waves_admission_and_rotation_with_exact_messages() {
    use axum::{routing::post, Router};
    let hub = Hub::new();
    let layer = |shutdown: &Shutdown, admission: &Admission| {
        SseLayer::new()
            .come_back(window())
            .admission(admission)
            .shutdown(shutdown)
            .drain(DrainPolicy::Waves(Duration::from_secs(2)))
    };
    let (shutdown_a, shutdown_b) = (Shutdown::new(), Shutdown::new());
    // Twenty pages opening within a few seconds, three let in at once and four a second after:
    // the others are told to come back. B takes the wave at up to ten a second.
    let (admission_a, admission_b) = (Admission::new(4.0, 3), Admission::new(10.0, 5));
    let layer_a = layer(&shutdown_a, &admission_a);
    let layer_b = layer(&shutdown_b, &admission_b).max_lifetime(Duration::from_secs(3));
    let (a, stop_a) = browser_node(&hub, layer_a, &shutdown_a).await;
    let (b, _stop_b) = browser_node(&hub, layer_b, &shutdown_b).await;
    let to = Arc::new(AtomicUsize::new(0));
    let proxy = switchable_proxy([a, b], to.clone()).await;

    let published = Arc::new(AtomicUsize::new(0));
    let publishing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    {
        let (hub, published, publishing) = (hub.clone(), published.clone(), publishing.clone());
        tokio::spawn(async move {
            while publishing.load(Ordering::SeqCst) {
                let n = published.load(Ordering::SeqCst) + 1;
                hub.topic("t")
                    .publish(Event::message(n.to_string()))
                    .await
                    .unwrap();
                published.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let stop_a = Arc::new(std::sync::Mutex::new(Some(stop_a)));
    let control = Router::new()
        .route(
            "/drain",
            post({
                let to = to.clone();
                move || async move {
                    to.store(1, Ordering::SeqCst);
                    if let Some(stop) = stop_a.lock().unwrap().take() {
                        let _ = stop.send(());
                    }
                    "draining"
                }
            }),
        )
        .route(
            "/stop",
            post({
                let (published, publishing) = (published.clone(), publishing.clone());
                move || async move {
                    publishing.store(false, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    published.load(Ordering::SeqCst).to_string()
                }
            }),
        );
    let (listener, control_addr) = bind().await;
    tokio::spawn(async move { axum::serve(listener, control).await.unwrap() });

    let args = [
        format!("http://{proxy}"),
        format!("http://{control_addr}"),
        "20".into(),
    ];
    let results = common::run_in_chromium("lifecycle.mjs", &args).await;
    let last: u64 = results["last"].as_str().unwrap().parse().unwrap();
    let pages = results["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 20);
    for (i, page) in pages.iter().enumerate() {
        let data: Vec<u64> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().parse().unwrap())
            .collect();
        let first = data[0];
        let want: Vec<u64> = (first..=last).collect();
        assert_eq!(
            data, want,
            "page {i}: exact, from its first message to the last"
        );
        assert_ne!(page["readyState"], 2, "page {i} ended CLOSED");
        let opens = page["opens"].as_u64().unwrap();
        assert!(
            opens >= 3,
            "page {i} came back through the drain and a rotation: {opens} opens"
        );
    }
    assert!(
        admission_a.refused() > 0,
        "the budget turned some pages away first"
    );
    println!(
        "20 pages: last {last}, admission refused {} on A and {} on B, opens {:?}",
        admission_a.refused(),
        admission_b.refused(),
        pages
            .iter()
            .map(|p| p["opens"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
}

/// "Refusals are counted ... and logged with `tracing` at `DEBUG`", and "A policy on a layer
/// with no shutdown applies to nothing, and the layer logs a `tracing` warning".
#[tokio::test]
async fn refusals_and_a_drain_that_cannot_apply_are_logged() {
    let ((status, _), logs) = common::logs_of(async {
        let layer = SseLayer::new().admission(&Admission::new(0.0, 0));
        body_of(layer, stream::pending::<Event>(), "*/*").await
    })
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        logs.contains("DEBUG") && logs.contains("the connect-rate budget is spent"),
        "{logs}"
    );

    let (_, logs) = common::logs_of(async {
        let layer = SseLayer::new().drain(DrainPolicy::Waves(Duration::from_secs(5)));
        body_of(layer, stream::iter([Event::message("x")]), "*/*").await
    })
    .await;
    assert!(
        logs.contains("WARN") && logs.contains("a layer with no shutdown"),
        "{logs}"
    );
}

/// `Subscription`: "read by hand, that last item may be an empty event (one that writes
/// nothing) when the hub closed with no final event".
#[tokio::test]
async fn a_closed_hub_subscription_read_by_hand_ends_with_an_empty_item() {
    let hub = Hub::new();
    let topic = hub.topic("t");
    let mut sub = topic.subscribe(None);
    sub.join();
    topic.publish(Event::message("a")).await.unwrap();
    hub.close(None);
    let first = sub.next().await.unwrap();
    assert!(first.as_bytes().starts_with(b"data: a\n"));
    let last = sub.next().await.unwrap();
    assert!(last.is_empty(), "{last:?}");
    assert!(sub.next().await.is_none());
}

/// The window reaches bodies an axum handler builds: a rotation and a shutdown under an axum
/// `Router` draw from the layer's window.
#[tokio::test(start_paused = true)]
async fn an_axum_handlers_streams_draw_from_the_layers_window() {
    use axum::{routing::get, Router};
    let shutdown = Shutdown::new();
    let app = Router::new()
        .route(
            "/rotating",
            get(|| async { SseBody::new(stream::pending::<Event>()).max_lifetime(Duration::ZERO) }),
        )
        .route(
            "/endless",
            get(|| async { SseBody::new(stream::pending::<Event>()) }),
        );
    let layer = SseLayer::new()
        .open_frame(false)
        .shutdown(&shutdown)
        .come_back(window());
    let app = tower_layer::Layer::layer(&layer, app);
    let get_body = |path: &'static str| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        }
    };
    let rotated = get_body("/rotating").await;
    assert!(WINDOW_MS.contains(&come_back_retry(
        &rotated,
        "stream lifetime reached, reconnect"
    )));
    let endless = tokio::spawn(get_body("/endless"));
    tokio::task::yield_now().await;
    shutdown.trigger(None);
    let ended = endless.await.unwrap();
    assert!(WINDOW_MS.contains(&come_back_retry(&ended, "server shutting down, reconnect")));
}
