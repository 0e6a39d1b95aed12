//! Hostile tests of the deploy promises: one come-back window, drain policies (`Waves`,
//! `Finish`) alone, nested and on a real `serve::Server` over HTTP/1.1 and h2c, the admission
//! budget at its odd rates and under concurrency, the open-frame padding at its edges, and
//! clients riding a drain from one Redis node to another. Each test asserts what the docs
//! promise.
//!
//! The Redis tests start their own `redis-server`, so they are `#[ignore]`d: run with
//! `cargo test --all-features --test lifecycle_adversarial -- --include-ignored`.

mod common;

use bytes::Bytes;
use common::{
    come_back_retry, h2_client, h2_get,
    hub::{live, node, numbers, publish, MARKER},
    redis::RedisServer,
    serve::bind,
    RawClient,
};
use futures_util::{stream, stream::BoxStream, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    net::SocketAddr,
    ops::RangeInclusive,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};
use tower::{
    util::{BoxCloneService, BoxCloneSyncService},
    Layer, ServiceExt,
};
use tower_sse::{
    decode::Decoder,
    hub::{Hub, Subscription},
    serve::Server,
    Admission, CloseReason, DrainPolicy, Event, KeepAlive, LastEventId, Shutdown, SseBody,
    SseLayer,
};

// ---------------------------------------------------------------------------------------------
// Helpers.

type Events = BoxStream<'static, Event>;
type Svc = BoxCloneService<Request<()>, http::Response<SseBody<Events>>, Infallible>;

/// 2³¹−1 ms, where every duration saturates.
const MAX_MS: u64 = 2_147_483_647;

const SHUTTING_DOWN: &str = "server shutting down, reconnect";
const THROTTLED: &str = "too many new connections, come back later";
const OVER_CAPACITY: &str = "over capacity, come back later";
const LIFETIME: &str = "stream lifetime reached, reconnect";

fn ms(range: RangeInclusive<u64>) -> RangeInclusive<Duration> {
    Duration::from_millis(*range.start())..=Duration::from_millis(*range.end())
}

fn quiet() -> SseLayer {
    SseLayer::new()
        .open_frame(false)
        .keep_alive(KeepAlive::disabled())
}

fn bye() -> Option<Event> {
    Event::builder().event("bye").data("").build().ok()
}

fn pending() -> Events {
    stream::pending::<Event>().boxed()
}

fn hi() -> Events {
    stream::iter([Event::message("hi")]).boxed()
}

/// An endpoint under `layers` (outermost first) whose streams `make` builds.
fn svc<F>(layers: &[SseLayer], make: F) -> Svc
where
    F: Fn() -> Events + Clone + Send + Sync + 'static,
{
    let mut service: Svc = BoxCloneService::new(tower::service_fn(move |req: Request<()>| {
        let events = make();
        async move { Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response()) }
    }));
    for layer in layers.iter().rev() {
        service = BoxCloneService::new(layer.layer(service));
    }
    service
}

async fn open(service: &Svc, accept: &str) -> http::Response<SseBody<Events>> {
    let request = Request::get("/").header("accept", accept).body(()).unwrap();
    service.clone().oneshot(request).await.unwrap()
}

async fn whole(service: &Svc, accept: &str) -> (StatusCode, Bytes) {
    let response = open(service, accept).await;
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Reads a body to its end on a task of its own: when it ended, its bytes, why.
fn spawn_end(
    response: http::Response<SseBody<Events>>,
) -> JoinHandle<(Instant, Bytes, Option<CloseReason>)> {
    let mut body = response.into_body();
    let disconnect = body.disconnect_handle();
    tokio::spawn(async move {
        let bytes = body.collect().await.unwrap().to_bytes();
        (Instant::now(), bytes, disconnect.reason())
    })
}

/// Lets every spawned task run (on a paused clock: before any time passes).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A stream that counts how often it is polled.
struct Counted {
    inner: Events,
    polls: Arc<AtomicUsize>,
}

impl futures_core::Stream for Counted {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll_next(cx)
    }
}

/// A `serve::Server` on loopback running `app`, stopped by the returned sender.
async fn run_server<S, B>(
    app: S,
    shutdown: Option<&Shutdown>,
    graceful: Duration,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>)
where
    S: tower::Service<Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower_sse::BoxError>,
{
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = Server::new(listener).graceful_timeout(graceful);
    if let Some(shutdown) = shutdown {
        server = server.shutdown(shutdown, bye());
    }
    let task = tokio::spawn(server.serve_with_graceful_shutdown(app, async {
        let _ = stopped.await;
    }));
    (addr, stop, task)
}

/// An app under `layers` (outermost first) whose streams send `live`, then nothing.
fn live_app(
    layers: &[SseLayer],
) -> BoxCloneSyncService<Request<Incoming>, http::Response<SseBody<Events>>, Infallible> {
    let mut service =
        BoxCloneSyncService::new(tower::service_fn(|req: Request<Incoming>| async move {
            let events = stream::iter([Event::message("live")])
                .chain(stream::pending())
                .boxed();
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        }));
    for layer in layers.iter().rev() {
        service = BoxCloneSyncService::new(layer.layer(service));
    }
    service
}

/// An app under `layer` whose streams are subscriptions to topic `t` of `hub`, resumed from the
/// request's `Last-Event-ID`.
fn hub_app(
    hub: Hub,
    layer: SseLayer,
) -> BoxCloneSyncService<Request<Incoming>, http::Response<SseBody<Subscription>>, Infallible> {
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let sub = hub
            .topic("t")
            .subscribe(req.extensions().get::<LastEventId>());
        async move { Ok::<_, Infallible>(SseBody::from_request(&req, sub).into_http_response()) }
    });
    BoxCloneSyncService::new(layer.layer(service))
}

// ---------------------------------------------------------------------------------------------
// Waves and Finish on a real server.

/// `DrainPolicy::Waves` and `Server::graceful_timeout` ("counted after the longest drain"):
/// 12 HTTP/1.1 streams and 12 h2c streams (on two connections) under a 1.5 s wave and a 1 s
/// graceful timeout all end on their own, each with the final event and a come-back block
/// from the window, spread over the wave; the server then exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_on_a_server_end_every_h1_and_h2c_stream_whole_and_spread() {
    let span = Duration::from_millis(1500);
    let shutdown = Shutdown::new();
    let layer = SseLayer::new()
        .shutdown(&shutdown)
        .drain(DrainPolicy::Waves(span))
        .come_back(ms(100..=300));
    assert_eq!(shutdown.drain_span(), span);
    let (addr, stop, task) = run_server(
        live_app(std::slice::from_ref(&layer)),
        Some(&shutdown),
        Duration::from_secs(1),
    )
    .await;
    let mut h1 = Vec::new();
    for _ in 0..12 {
        let mut client = RawClient::get(addr, "/", &[]).await;
        assert_eq!(client.events(1).await[0].data, "live");
        h1.push(client);
    }
    let mut h2 = Vec::new();
    for _ in 0..2 {
        let mut conn = h2_client(addr).await;
        for _ in 0..6 {
            let mut body = conn
                .send_request(h2_get(addr, "/"))
                .await
                .unwrap()
                .into_body();
            let mut first = Vec::new();
            while !first.ends_with(b"data: live\n\n") {
                first.extend_from_slice(&body.frame().await.unwrap().unwrap().into_data().unwrap());
            }
            h2.push(body);
        }
        // The connection handle stays alive in the spawned connection task.
        drop(conn);
    }
    assert_eq!(layer.open_streams(), 24);

    let triggered = std::time::Instant::now();
    stop.send(()).unwrap();
    let mut ends = Vec::new();
    for mut client in h1 {
        ends.push(tokio::spawn(async move {
            let (bytes, _) = client.read_to_end().await;
            (triggered.elapsed(), bytes)
        }));
    }
    for body in h2 {
        ends.push(tokio::spawn(async move {
            let bytes = body.collect().await.expect("ended, not reset").to_bytes();
            (triggered.elapsed(), bytes.to_vec())
        }));
    }
    let mut at = Vec::new();
    for end in ends {
        let (when, bytes) = end.await.unwrap();
        let messages = Decoder::new().feed(&bytes);
        assert_eq!(
            messages.last().map(|m| m.event.as_str()),
            Some("bye"),
            "final event: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!((100..=300).contains(&come_back_retry(&bytes, SHUTTING_DOWN)));
        at.push(when);
    }
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the server exits once the waves are over")
        .unwrap();
    at.sort();
    println!("ends: first {:?}, last {:?}", at[0], at[23]);
    assert!(
        at[23] - at[0] >= Duration::from_millis(300),
        "spread, not together: {at:?}"
    );
    assert!(at[23] < span + Duration::from_secs(10), "{at:?}");
    assert_eq!(layer.open_streams(), 0);
}

/// `Server::shutdown`: "the graceful_timeout then starts after the longest drain
/// (`Shutdown::drain_span`)", and `SseLayer::drain`: "The policy goes with the switch". The
/// switch is given to the outer layer (Immediate), a `Waves` policy to an inner one with no
/// switch: the streams must still end whole within the server's 1 s graceful timeout (they
/// once drained as the inner layer said, over 2 s, and were cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_policy_on_an_inner_layer_is_waited_for_by_the_server() {
    let shutdown = Shutdown::new();
    let outer = SseLayer::new().shutdown(&shutdown);
    let inner = SseLayer::new().drain(DrainPolicy::Waves(Duration::from_secs(2)));
    let (addr, stop, task) = run_server(
        live_app(&[outer, inner]),
        Some(&shutdown),
        Duration::from_millis(1000),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut client = RawClient::get(addr, "/", &[]).await;
        assert_eq!(client.events(1).await[0].data, "live");
        clients.push(client);
    }
    stop.send(()).unwrap();
    let mut cut = 0;
    for mut client in clients {
        let (bytes, messages) = client.read_to_end().await;
        if messages.last().map(|m| m.event.as_str()) != Some("bye")
            || !bytes.ends_with(b"reconnect\n\n")
        {
            cut += 1;
        }
    }
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    println!("drain_span {:?}", shutdown.drain_span());
    assert_eq!(
        cut,
        0,
        "{cut} of 10 streams were cut by the graceful timeout (drain_span {:?})",
        shutdown.drain_span()
    );
}

// ---------------------------------------------------------------------------------------------
// Drain policies on a paused clock.

/// The test above with no server: after the trigger, every stream under the switch ends
/// within `Shutdown::drain_span()` ("how long after the trigger their last stream ends").
#[tokio::test(start_paused = true)]
async fn streams_end_within_the_drain_span_of_the_switch_that_ends_them() {
    let shutdown = Shutdown::new();
    let outer = SseLayer::new().shutdown(&shutdown);
    let inner = quiet().drain(DrainPolicy::Waves(Duration::from_secs(10)));
    let service = svc(&[outer, inner], pending);
    let mut ends = Vec::new();
    for _ in 0..20 {
        ends.push(spawn_end(open(&service, "*/*").await));
    }
    settle().await;
    let triggered = Instant::now();
    shutdown.trigger(None);
    let span = shutdown.drain_span();
    let mut late = Vec::new();
    for end in ends {
        let (at, bytes, _) = end.await.unwrap();
        come_back_retry(&bytes, SHUTTING_DOWN);
        if at - triggered > span {
            late.push(at - triggered);
        }
    }
    assert!(
        late.is_empty(),
        "drain_span {span:?}, yet {} of 20 ended later: {late:?}",
        late.len()
    );
}

/// `SseLayer::drain`: "Sets when the streams under this layer end once its shutdown is
/// triggered". The outer layer has the switch and `Waves(10 s)`; a plain inner layer (say, a
/// router's own `SseLayer` for settings) must not turn the drain into `Immediate` (all 20
/// streams ending at the trigger, in the same instant, the storm the wave is for).
#[tokio::test(start_paused = true)]
async fn an_outer_wave_still_spreads_streams_under_a_plain_inner_layer() {
    let shutdown = Shutdown::new();
    let outer = SseLayer::new()
        .shutdown(&shutdown)
        .drain(DrainPolicy::Waves(Duration::from_secs(10)));
    let service = svc(&[outer, quiet()], pending);
    let mut ends = Vec::new();
    for _ in 0..20 {
        ends.push(spawn_end(open(&service, "*/*").await));
    }
    settle().await;
    let triggered = Instant::now();
    shutdown.trigger(None);
    let mut at = Vec::new();
    for end in ends {
        let (when, bytes, _) = end.await.unwrap();
        come_back_retry(&bytes, SHUTTING_DOWN);
        at.push(when - triggered);
    }
    let after_a_second = at.iter().filter(|d| **d >= Duration::from_secs(1)).count();
    assert!(
        after_a_second >= 10,
        "only {after_a_second} of 20 ended a second or more into the 10 s wave: {at:?}"
    );
}

/// "Layers nest: ... its settings are the innermost layer's", and `come_back`: one
/// window for "the whole body of a refusal" and the `503`'s `Retry-After`. Refused by the outer
/// layer's limit, the `200` block and the `503`'s `Retry-After` both draw from the innermost
/// window (7 s), though every enclosing layer's response future writes the refusal.
#[tokio::test]
async fn a_nested_refusal_draws_from_the_innermost_window() {
    let outer = SseLayer::new().max_streams(0).come_back(ms(100..=100));
    let inner = quiet().come_back(ms(7000..=7000));
    let service = svc(&[outer, inner], pending);
    let (status, bytes) = whole(&service, "text/event-stream").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(come_back_retry(&bytes, OVER_CAPACITY), 7000);
    let response = open(&service, "*/*").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
}

/// `Waves(Duration::ZERO)` is `Immediate`; `Waves(Duration::MAX)` and `Finish(Duration::MAX)`
/// saturate at 2³¹−1 ms ("Saturates at 2³¹−1 ms") instead of panicking on an `Instant`
/// overflow, and their streams end within it.
#[tokio::test(start_paused = true)]
async fn waves_of_zero_and_of_duration_max() {
    let zero = Shutdown::new();
    let service = svc(
        &[quiet()
            .shutdown(&zero)
            .drain(DrainPolicy::Waves(Duration::ZERO))],
        pending,
    );
    assert_eq!(zero.drain_span(), Duration::ZERO);
    let mut ends = Vec::new();
    for _ in 0..10 {
        ends.push(spawn_end(open(&service, "*/*").await));
    }
    settle().await;
    let triggered = Instant::now();
    zero.trigger(bye());
    for end in ends {
        let (at, bytes, reason) = end.await.unwrap();
        assert_eq!(at, triggered);
        assert!(bytes.starts_with(b"event: bye\ndata: \n\nretry: "));
        come_back_retry(&bytes, SHUTTING_DOWN);
        assert_eq!(reason, Some(CloseReason::Shutdown));
    }

    let longest = Shutdown::new();
    let waves = svc(
        &[quiet()
            .shutdown(&longest)
            .drain(DrainPolicy::Waves(Duration::MAX))],
        pending,
    );
    let finish = svc(
        &[quiet()
            .shutdown(&longest)
            .drain(DrainPolicy::Finish(Duration::MAX))],
        pending,
    );
    assert_eq!(longest.drain_span(), Duration::from_millis(MAX_MS));
    let mut wave_ends = Vec::new();
    for _ in 0..10 {
        wave_ends.push(spawn_end(open(&waves, "*/*").await));
    }
    let finish_end = spawn_end(open(&finish, "*/*").await);
    settle().await;
    let triggered = Instant::now();
    longest.trigger(None);
    let mut at = Vec::new();
    for end in wave_ends {
        let (when, bytes, _) = end.await.unwrap();
        come_back_retry(&bytes, SHUTTING_DOWN);
        at.push(when - triggered);
    }
    assert!(
        at.iter().all(|d| *d <= Duration::from_millis(MAX_MS)),
        "{at:?}"
    );
    assert!(
        at.iter().any(|d| *d >= Duration::from_secs(86_400)),
        "drawn over 24.8 days, not at once: {at:?}"
    );
    let (when, bytes, _) = finish_end.await.unwrap();
    assert_eq!(when - triggered, Duration::from_millis(MAX_MS));
    come_back_retry(&bytes, SHUTTING_DOWN);
}

/// `DrainPolicy::Finish`: "one that ends by itself in that time ends normally": with no final
/// event and no come-back block, even when the shutdown has one; the other gets both at the
/// grace's end. `Finish(ZERO)` ends everything at the trigger.
#[tokio::test(start_paused = true)]
async fn finish_ends_a_completing_stream_normally_even_with_a_final_event() {
    let shutdown = Shutdown::new();
    let grace = Duration::from_secs(20);
    let job = || {
        stream::iter(0..5u32)
            .then(|i| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Event::message(format!("step {i}"))
            })
            .boxed()
    };
    let layer = quiet()
        .shutdown(&shutdown)
        .drain(DrainPolicy::Finish(grace));
    let jobs = svc(std::slice::from_ref(&layer), job);
    let feeds = svc(&[layer], move || job().chain(stream::pending()).boxed());
    let job_end = spawn_end(open(&jobs, "*/*").await);
    let feed_end = spawn_end(open(&feeds, "*/*").await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let triggered = Instant::now();
    shutdown.trigger(bye());
    let (at, bytes, reason) = job_end.await.unwrap();
    assert_eq!(at - triggered, Duration::from_secs(9));
    assert_eq!(Decoder::new().feed(&bytes).len(), 5);
    assert!(!bytes.ends_with(b"reconnect\n\n"), "{bytes:?}");
    assert!(!bytes.windows(9).any(|w| w == b"event: by"), "{bytes:?}");
    assert_eq!(reason, Some(CloseReason::Completed));
    let (at, bytes, reason) = feed_end.await.unwrap();
    assert_eq!(at - triggered, grace);
    let messages = Decoder::new().feed(&bytes);
    assert_eq!(messages.len(), 6);
    assert_eq!(messages[5].event, "bye");
    come_back_retry(&bytes, SHUTTING_DOWN);
    assert_eq!(reason, Some(CloseReason::Shutdown));

    let now = Shutdown::new();
    let service = svc(
        &[quiet()
            .shutdown(&now)
            .drain(DrainPolicy::Finish(Duration::ZERO))],
        pending,
    );
    let end = spawn_end(open(&service, "*/*").await);
    settle().await;
    let triggered = Instant::now();
    now.trigger(None);
    let (at, bytes, _) = end.await.unwrap();
    assert_eq!(at, triggered);
    come_back_retry(&bytes, SHUTTING_DOWN);
}

/// `Shutdown::trigger`: "A drain started twice is one drain: only the first call counts, its
/// event and its time." A second trigger during a `Finish` grace neither moves the end nor
/// changes the final event.
#[tokio::test(start_paused = true)]
async fn a_second_trigger_moves_nothing_and_the_first_event_wins() {
    let shutdown = Shutdown::new();
    let service = svc(
        &[quiet()
            .shutdown(&shutdown)
            .drain(DrainPolicy::Finish(Duration::from_secs(10)))],
        pending,
    );
    let mut ends = Vec::new();
    for _ in 0..5 {
        ends.push(spawn_end(open(&service, "*/*").await));
    }
    settle().await;
    let triggered = Instant::now();
    shutdown.trigger(Some(Event::message("first")));
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.trigger(Some(Event::message("second")));
    shutdown.trigger(None);
    for end in ends {
        let (at, bytes, _) = end.await.unwrap();
        assert_eq!(at - triggered, Duration::from_secs(10));
        assert!(bytes.starts_with(b"data: first\n\nretry: "), "{bytes:?}");
        come_back_retry(&bytes, SHUTTING_DOWN);
    }
}

/// `DrainPolicy`: "A stream that opens after the trigger ends at once, whatever the policy",
/// with the padding (sent once "even with open_frame off") and the shutdown's final event.
#[tokio::test(start_paused = true)]
async fn streams_opened_after_the_trigger_end_at_once_under_every_policy() {
    for policy in [
        DrainPolicy::Immediate,
        DrainPolicy::Waves(Duration::from_secs(60)),
        DrainPolicy::Finish(Duration::from_secs(60)),
        DrainPolicy::Waves(Duration::MAX),
        DrainPolicy::Finish(Duration::MAX),
    ] {
        let shutdown = Shutdown::new();
        let layer = quiet()
            .shutdown(&shutdown)
            .drain(policy)
            .open_padding(8)
            .come_back(ms(10..=10));
        shutdown.trigger(bye());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let service = svc(&[layer], pending);
        let start = Instant::now();
        let (_, bytes) = whole(&service, "*/*").await;
        assert_eq!(start.elapsed(), Duration::ZERO, "{policy:?}");
        assert_eq!(
            bytes,
            ":      \nevent: bye\ndata: \n\nretry: 10\n: server shutting down, reconnect\n\n",
            "{policy:?}"
        );
    }
}

/// `max_lifetime`: "With a Shutdown, whichever comes first ends the stream, with its own last
/// frame": under `Finish`, a lifetime that passes during the grace rotates the stream; a grace
/// that passes first ends it as a shutdown. Either way one block, never two.
#[tokio::test(start_paused = true)]
async fn a_lifetime_and_a_drain_each_end_the_stream_when_they_come_first() {
    // The lifetime (9 to 10 s) passes during a 60 s grace.
    let shutdown = Shutdown::new();
    let service = svc(
        &[quiet()
            .shutdown(&shutdown)
            .drain(DrainPolicy::Finish(Duration::from_secs(60)))
            .max_lifetime(Duration::from_secs(10))],
        pending,
    );
    let start = Instant::now();
    let end = spawn_end(open(&service, "*/*").await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.trigger(bye());
    let (at, bytes, reason) = end.await.unwrap();
    let lived = at - start;
    assert!(
        lived >= Duration::from_secs(9) && lived <= Duration::from_secs(10),
        "{lived:?}"
    );
    come_back_retry(&bytes, LIFETIME);
    let blocks = bytes.windows(11).filter(|w| *w == b"reconnect\n\n").count();
    assert_eq!(blocks, 1, "one block: {bytes:?}");
    assert_eq!(reason, Some(CloseReason::Rotated));

    // A 5 s grace passes before a 100 s lifetime.
    let shutdown = Shutdown::new();
    let service = svc(
        &[quiet()
            .shutdown(&shutdown)
            .drain(DrainPolicy::Finish(Duration::from_secs(5)))
            .max_lifetime(Duration::from_secs(100))],
        pending,
    );
    let end = spawn_end(open(&service, "*/*").await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let triggered = Instant::now();
    shutdown.trigger(bye());
    let (at, bytes, reason) = end.await.unwrap();
    assert_eq!(at - triggered, Duration::from_secs(5));
    assert!(
        bytes.starts_with(b"event: bye\ndata: \n\nretry: "),
        "{bytes:?}"
    );
    come_back_retry(&bytes, SHUTTING_DOWN);
    assert_eq!(reason, Some(CloseReason::Shutdown));
}

/// `DrainPolicy` ("Until then it streams as before", then ends at its turn) and
/// `Shutdown::flush_limit` ("A stream that keeps producing ... is cut there rather than
/// holding the shutdown up"): a stream that is always ready, read as fast as it goes (the
/// reader yields after each frame, as a server's writes do), still ends soon after its point
/// in a 300 ms wave, with the final event and the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_stream_under_waves_still_ends_at_its_turn() {
    let shutdown = Shutdown::new().flush_limit(64 * 1024);
    let service = svc(
        &[quiet()
            .shutdown(&shutdown)
            .drain(DrainPolicy::Waves(Duration::from_millis(300)))],
        || stream::repeat_with(|| Event::message("x".repeat(100))).boxed(),
    );
    let mut ends = Vec::new();
    for _ in 0..3 {
        let mut body = open(&service, "*/*").await.into_body();
        ends.push(tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                total += data.len();
                tail.extend_from_slice(&data);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
                // As a server's write does now and then: the body never yields by itself.
                tokio::task::yield_now().await;
            }
            (std::time::Instant::now(), total, tail)
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let triggered = std::time::Instant::now();
    shutdown.trigger(bye());
    for end in ends {
        let (at, total, tail) = tokio::time::timeout(Duration::from_secs(30), end)
            .await
            .expect("a busy stream ends at its turn")
            .unwrap();
        assert!(total > 0);
        assert!(
            at - triggered < Duration::from_secs(10),
            "ended {:?} after the trigger",
            at - triggered
        );
        let text = String::from_utf8_lossy(&tail);
        assert!(text.contains("data: x"), "its events up to the end");
        assert!(
            text.contains("\n\nevent: bye\ndata: \n\nretry: "),
            "{text:?}"
        );
        come_back_retry(&tail, SHUTTING_DOWN);
    }
}

/// A body waiting for its drain point (a stream with nothing to send, a long lifetime) does
/// not spin: "a shutdown's waker (which wakes at once when registered after the trigger)
/// would spin the task", so the drain clock alone wakes it. Its stream is polled a handful of
/// times over the whole drain, not thousands.
#[tokio::test]
async fn a_waiting_body_does_not_spin_before_or_during_its_drain() {
    let shutdown = Shutdown::new();
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    let service = svc(
        &[quiet()
            .shutdown(&shutdown)
            .max_lifetime(Duration::from_secs(3600))
            .drain(DrainPolicy::Waves(Duration::from_millis(1500)))],
        move || {
            Counted {
                inner: pending(),
                polls: counted.clone(),
            }
            .boxed()
        },
    );
    let mut ends = Vec::new();
    for _ in 0..5 {
        ends.push(spawn_end(open(&service, "*/*").await));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = polls.load(Ordering::Relaxed);
    assert!(before <= 10, "{before} polls of 5 idle streams");
    shutdown.trigger(None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = polls.load(Ordering::Relaxed) - before;
    assert!(during <= 15, "{during} polls in 500 ms of the drain");
    for end in ends {
        let (_, bytes, _) = tokio::time::timeout(Duration::from_secs(20), end)
            .await
            .unwrap()
            .unwrap();
        come_back_retry(&bytes, SHUTTING_DOWN);
    }
    let total = polls.load(Ordering::Relaxed);
    assert!(
        total <= 25,
        "{total} polls for 5 streams over a whole drain"
    );
}

// ---------------------------------------------------------------------------------------------
// The come-back window.

/// `come_back`: "The ends may come in either order; each saturates at 2³¹−1 ms"; a `503`
/// refusal sends a draw "rounded up to whole seconds, as Retry-After".
#[tokio::test(start_paused = true)]
#[allow(clippy::reversed_empty_ranges)] // reversed on purpose: "the ends may come in either order"
async fn come_back_windows_reversed_zero_and_huge() {
    let rotated = |window: RangeInclusive<Duration>| async move {
        let body = SseBody::new(pending())
            .open_frame(false)
            .max_lifetime(Duration::ZERO)
            .come_back(window);
        come_back_retry(&body.collect().await.unwrap().to_bytes(), LIFETIME)
    };
    let mut draws = Vec::new();
    for _ in 0..100 {
        draws.push(rotated(ms(900..=300)).await);
    }
    assert!(draws.iter().all(|d| (300..=900).contains(d)), "{draws:?}");
    let spread = draws.iter().max().unwrap() - draws.iter().min().unwrap();
    assert!(spread > 300, "reversed still spreads: {draws:?}");
    assert_eq!(rotated(Duration::ZERO..=Duration::ZERO).await, 0);
    assert_eq!(rotated(Duration::MAX..=Duration::MAX).await, MAX_MS);
    assert!(rotated(Duration::MAX..=Duration::ZERO).await <= MAX_MS);
    assert_eq!(
        rotated(Duration::from_secs(30 * 86_400)..=Duration::MAX).await,
        MAX_MS
    );

    let retry_after = |window: RangeInclusive<Duration>| async move {
        let service = svc(&[quiet().max_streams(0).come_back(window)], pending);
        let response = open(&service, "*/*").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let value = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_owned();
        value.parse::<u64>().unwrap()
    };
    assert_eq!(retry_after(ms(1..=1)).await, 1, "1 ms rounds up to 1 s");
    assert_eq!(retry_after(ms(2000..=2000)).await, 2);
    assert_eq!(retry_after(ms(2001..=2001)).await, 3);
    assert_eq!(retry_after(Duration::MAX..=Duration::MAX).await, 2_147_484);
    assert!(retry_after(ms(0..=0)).await <= 1);
    for _ in 0..50 {
        let secs = retry_after(ms(5000..=1000)).await;
        assert!((1..=5).contains(&secs), "{secs}");
    }
}

// ---------------------------------------------------------------------------------------------
// Admission.

/// What a stream under a budget got: `Some(true)` admitted (its one event), `Some(false)`
/// refused politely (`200` and the throttled block), `None` anything else.
async fn admitted(service: &Svc) -> Option<bool> {
    let (status, bytes) = whole(service, "text/event-stream").await;
    if status != StatusCode::OK {
        return None;
    }
    if bytes == "data: hi\n\n" {
        return Some(true);
    }
    come_back_retry(&bytes, THROTTLED);
    Some(false)
}

/// `Admission`: "A rate of zero (or a negative or NaN one) never refills ... after the burst,
/// every stream is refused, politely"; a burst of zero admits nothing, whatever the rate.
#[tokio::test(start_paused = true)]
async fn an_admission_rate_of_zero_nan_or_negative_never_refills_and_no_burst_admits_none() {
    for rate in [
        0.0,
        -0.0,
        -1.0,
        f64::NAN,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE / 2.0,
    ] {
        let admission = Admission::new(rate, 2);
        let service = svc(&[quiet().admission(&admission)], hi);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(admitted(&service).await);
        }
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        got.push(admitted(&service).await);
        if rate.is_nan() || rate <= 0.0 {
            assert_eq!(
                got,
                [
                    Some(true),
                    Some(true),
                    Some(false),
                    Some(false),
                    Some(false)
                ],
                "rate {rate}"
            );
            assert_eq!((admission.admitted(), admission.refused()), (2, 3));
        }
    }
    for rate in [0.0, 1e9, f64::INFINITY, f64::NAN] {
        let admission = Admission::new(rate, 0);
        let service = svc(&[quiet().admission(&admission)], hi);
        for _ in 0..3 {
            assert_eq!(
                admitted(&service).await,
                Some(false),
                "rate {rate}, burst 0"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!((admission.admitted(), admission.refused()), (0, 3));
    }
}

/// `Admission`: "an infinite one refills at once". Five streams opening in the same
/// instant (a paused clock; on a real one, two connects inside one clock tick) under
/// `Admission::new(f64::INFINITY, 1)`: all are admitted (a refill of `elapsed × rate` would
/// refill nothing in no time).
#[tokio::test(start_paused = true)]
async fn an_infinite_admission_rate_refills_at_once() {
    let admission = Admission::new(f64::INFINITY, 1);
    let service = svc(&[quiet().admission(&admission)], hi);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(admitted(&service).await);
    }
    assert_eq!(
        (admission.admitted(), admission.refused()),
        (5, 0),
        "{got:?}"
    );
}

/// `Admission`: "a token bucket of burst tokens that refills at rate tokens a second", "The
/// bucket starts full", capped at the burst; exact counts on a paused clock; `503` with
/// `Retry-After` for clients that do not ask for an event stream.
#[tokio::test(start_paused = true)]
async fn admission_tokens_refill_at_the_rate_up_to_the_burst() {
    let admission = Admission::new(4.0, 2);
    let service = svc(
        &[quiet().admission(&admission).come_back(ms(3000..=3000))],
        hi,
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(admitted(&service).await);
    }
    assert_eq!(got, [Some(true), Some(true), Some(false)]);
    tokio::time::sleep(Duration::from_millis(249)).await;
    assert_eq!(
        admitted(&service).await,
        Some(false),
        "not a whole token yet"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        admitted(&service).await,
        Some(true),
        "a quarter second: one token"
    );
    assert_eq!(admitted(&service).await, Some(false));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let mut after_an_hour = Vec::new();
    for _ in 0..4 {
        after_an_hour.push(admitted(&service).await);
    }
    assert_eq!(
        after_an_hour,
        [Some(true), Some(true), Some(false), Some(false)],
        "capped at the burst"
    );
    let curl = open(&service, "*/*").await;
    assert_eq!(curl.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(curl.headers()["retry-after"], "3");
    assert!(curl
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    assert_eq!((admission.admitted(), admission.refused()), (5, 6));
}

/// `Admission`: "A stream refused by a max_streams limit takes no token", also when the limit
/// is on another (inner) layer than the budget; and `max_streams` refusals are counted there,
/// not as admission refusals.
#[tokio::test(start_paused = true)]
async fn a_stream_refused_by_a_stream_limit_takes_no_token() {
    let admission = Admission::new(0.0, 5);
    let layer = quiet().max_streams(2).admission(&admission);
    let stats = layer.stream_stats();
    let service = svc(std::slice::from_ref(&layer), pending);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(open(&service, "text/event-stream").await);
    }
    for _ in 0..3 {
        let (status, bytes) = whole(&service, "text/event-stream").await;
        assert_eq!(status, StatusCode::OK);
        come_back_retry(&bytes, OVER_CAPACITY);
        assert_eq!(
            open(&service, "*/*").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!((admission.admitted(), admission.refused()), (2, 0));
    assert_eq!(stats.refused(), 6);
    drop(held);
    assert_eq!(stats.open(), 0);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(open(&service, "text/event-stream").await);
    }
    drop(held);
    let last = open(&service, "text/event-stream").await;
    assert_eq!((admission.admitted(), admission.refused()), (5, 0));
    drop(last);
    let (_, bytes) = whole(&service, "text/event-stream").await;
    come_back_retry(&bytes, THROTTLED);
    assert_eq!((admission.admitted(), admission.refused()), (5, 1));

    // The budget on the outer layer, the limit on the inner one.
    let budget = Admission::new(0.0, 1);
    let nested = svc(
        &[quiet().admission(&budget), quiet().max_streams(0)],
        pending,
    );
    for _ in 0..3 {
        let (_, bytes) = whole(&nested, "text/event-stream").await;
        come_back_retry(&bytes, OVER_CAPACITY);
    }
    assert_eq!((budget.admitted(), budget.refused()), (0, 0));
    let alone = svc(&[quiet().admission(&budget)], hi);
    assert_eq!(
        admitted(&alone).await,
        Some(true),
        "the token is still there"
    );
}

/// `Admission`: "A refused stream's body never polls its stream, so a hub subscription in it
/// never joins" (nor fires `on_join`), whether refused by the budget or by a stream limit.
#[tokio::test(start_paused = true)]
async fn refused_streams_leave_no_trace_in_a_hub() {
    let joins = Arc::new(AtomicUsize::new(0));
    let counted = joins.clone();
    let hub = Hub::builder()
        .on_join(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let admission = Admission::new(0.0, 2);
    let layer = quiet().max_streams(1).admission(&admission);
    let topic = hub.topic("t");
    let service = svc(std::slice::from_ref(&layer), move || {
        topic.subscribe(None).boxed()
    });
    for _ in 0..2 {
        let mut body = open(&service, "text/event-stream").await.into_body();
        let first = tokio::spawn(async move {
            let _ = body.frame().await;
            body
        });
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(hub.topic("t").subscribers(), 1);
        for accept in ["text/event-stream", "*/*"] {
            let (_, bytes) = whole(&service, accept).await;
            if accept == "text/event-stream" {
                come_back_retry(&bytes, OVER_CAPACITY);
            }
        }
        assert_eq!(hub.topic("t").subscribers(), 1);
        first.abort();
        let _ = first.await;
        settle().await;
    }
    for _ in 0..3 {
        let (_, bytes) = whole(&service, "text/event-stream").await;
        come_back_retry(&bytes, THROTTLED);
    }
    assert_eq!(
        joins.load(Ordering::Relaxed),
        2,
        "only the admitted streams joined"
    );
    assert_eq!(hub.topic("t").subscribers(), 0);
    assert_eq!(hub.stats().subscribers, 0);
    assert_eq!((admission.admitted(), admission.refused()), (2, 3));
    assert_eq!(layer.stream_stats().refused(), 4);
}

/// The budget under concurrency over real HTTP: 48 clients at once (HTTP/1.1) against
/// `Admission::new(0.0, 12)`: exactly 12 stream, 36 are told to come back, the counters and
/// the hub agree exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_under_many_clients_at_once_counts_exactly() {
    let joins = Arc::new(AtomicUsize::new(0));
    let counted = joins.clone();
    let hub = Hub::builder()
        .on_join(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let admission = Admission::new(0.0, 12);
    let layer = SseLayer::new()
        .admission(&admission)
        .come_back(ms(100..=200));
    let (addr, _stop, _task) =
        run_server(hub_app(hub.clone(), layer), None, Duration::from_secs(1)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(48));
    let clients: Vec<_> = (0..48)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                barrier.wait().await;
                let mut client = RawClient::get_on(stream, addr, "/", &[]).await;
                assert_eq!(client.status(), 200);
                let first = client.next_bytes().await.unwrap();
                if first.as_ref() == b":\n" {
                    (true, client)
                } else {
                    let mut bytes = first.to_vec();
                    if !client.ended {
                        bytes.extend(client.read_to_end().await.0);
                    }
                    come_back_retry(&bytes, THROTTLED);
                    (false, client)
                }
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for client in clients {
        let (admitted, client) = client.await.unwrap();
        if admitted {
            open.push(client);
        } else {
            refused += 1;
        }
    }
    assert_eq!((open.len(), refused), (12, 36));
    assert!(
        common::eventually(Duration::from_secs(10), || hub.topic("t").subscribers()
            == 12)
        .await
    );
    assert_eq!((admission.admitted(), admission.refused()), (12, 36));
    assert_eq!(joins.load(Ordering::Relaxed), 12);
}

// ---------------------------------------------------------------------------------------------
// Open padding.

fn padded(open_frame: bool, retry: Option<u64>, bytes: usize) -> SseBody<Events> {
    let mut body = SseBody::new(hi())
        .open_frame(open_frame)
        .open_padding(bytes);
    if let Some(retry) = retry {
        body = body.retry(Duration::from_millis(retry));
    }
    body
}

/// The padding line of `n` bytes: `:`, spaces, a line end.
fn pad(n: usize) -> String {
    format!(":{}\n", " ".repeat(n - 2))
}

/// `open_padding`: "Sends a comment of bytes bytes (at most 64 KiB) right after the open
/// frame ... even with open_frame off (then alone) ... 0 sends none": sizes 0, 2, 3, 64 KiB
/// and 64 KiB + 1, with a `retry:` open frame and without any.
#[tokio::test]
async fn padding_is_one_comment_line_of_exactly_the_size_after_a_retry_or_alone() {
    let bytes_of = |body: SseBody<Events>| async move {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    assert_eq!(bytes_of(padded(false, None, 0)).await, "data: hi\n\n");
    assert_eq!(bytes_of(padded(false, Some(1000), 0)).await, "data: hi\n\n");
    assert_eq!(bytes_of(padded(true, None, 0)).await, ":\ndata: hi\n\n");
    assert_eq!(
        bytes_of(padded(true, Some(1000), 0)).await,
        "retry: 1000\ndata: hi\n\n"
    );
    for n in [2, 3, 4, 2048, 64 * 1024] {
        assert_eq!(
            bytes_of(padded(false, None, n)).await,
            format!("{}data: hi\n\n", pad(n)),
            "{n} bytes, no open frame"
        );
        assert_eq!(
            bytes_of(padded(false, Some(1000), n)).await,
            format!("{}data: hi\n\n", pad(n)),
            "{n} bytes, no open frame: no retry either"
        );
        assert_eq!(
            bytes_of(padded(true, Some(1000), n)).await,
            format!("retry: 1000\n{}data: hi\n\n", pad(n)),
            "{n} bytes after the retry"
        );
    }
    for n in [64 * 1024 + 1, 1 << 20, usize::MAX] {
        assert_eq!(
            bytes_of(padded(false, None, n)).await,
            format!("{}data: hi\n\n", pad(64 * 1024)),
            "{n} bytes is capped at 64 KiB"
        );
    }
    // Nothing is dispatched, whatever the size.
    let bytes = padded(true, Some(5), 64 * 1024 + 1)
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let messages = Decoder::new().feed(&bytes);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, "hi");
}

/// `open_padding`: "Sends a comment of bytes bytes ... right after the open
/// frame". With the open frame on and no `retry`, the open frame is the empty comment `:\n`
/// (`open_frame`: "the retry: hint, or an empty comment"); the padding follows it: 2 + 3
/// bytes.
#[tokio::test]
async fn padding_follows_the_empty_comment_open_frame() {
    let bytes = padded(true, None, 3).collect().await.unwrap().to_bytes();
    assert_eq!(bytes, ":\n: \ndata: hi\n\n");
}

/// `open_padding(1)`: "two bytes at least, so `1` sends two": a comment line needs `:` and
/// its line end.
#[tokio::test]
async fn padding_of_one_byte_is_the_shortest_comment_line() {
    let bytes = padded(false, None, 1).collect().await.unwrap().to_bytes();
    assert_eq!(bytes, ":\ndata: hi\n\n");
}

// ---------------------------------------------------------------------------------------------
// Redis: clients moving between nodes.

/// A browser-like client: reads the stream, keeps the last id, and when the stream ends waits
/// the block's `retry` and reconnects with `Last-Event-ID`, to `next` after the first end.
/// Returns the data of the messages it received (markers and the final event left out) up to `last`, and how many ends it saw.
async fn browse(
    first: SocketAddr,
    next: SocketAddr,
    from: String,
    last: &str,
) -> (Vec<String>, usize) {
    let mut addr = first;
    let mut last_id = from;
    let mut got = Vec::new();
    let mut reconnects = 0;
    loop {
        let mut client = RawClient::get(addr, "/", &[("last-event-id", &last_id)]).await;
        assert_eq!(client.status(), 200);
        let mut decoder = Decoder::new();
        let mut raw = Vec::new();
        while let Some(bytes) = client.next_bytes().await {
            raw.extend_from_slice(&bytes);
            for message in decoder.feed(&bytes) {
                if !message.last_event_id.is_empty() {
                    last_id = message.last_event_id.clone();
                }
                if message.data == MARKER || message.event != "message" {
                    continue;
                }
                got.push(message.data.clone());
                if message.data == last {
                    return (got, reconnects);
                }
            }
            if client.ended {
                break;
            }
        }
        let retry = come_back_retry(&raw, SHUTTING_DOWN);
        tokio::time::sleep(Duration::from_millis(retry)).await;
        reconnects += 1;
        addr = next;
    }
}

/// The README's deploy story end to end: 6 browser-like clients on node A, a publisher on a
/// third node publishing 1..=300 all along, A drained in `Waves(1 s)`; each client is told to
/// come back (retry from the window), reconnects to node B with its `Last-Event-ID`, and
/// receives exactly 1..=300: no gap, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn browser_like_clients_ride_a_waves_drain_onto_another_node_with_no_gap() {
    let server = RedisServer::start().await;
    let (publisher, _) = node(&server);
    let (a, _) = node(&server);
    let (b, _) = node(&server);
    let _watch_a = live(&a, &publisher, "t").await;
    let _watch_b = live(&b, &publisher, "t").await;
    let shutdown = Shutdown::new();
    let layer_a = SseLayer::new()
        .shutdown(&shutdown)
        .drain(DrainPolicy::Waves(Duration::from_secs(1)))
        .come_back(ms(50..=150));
    let (addr_a, stop_a, task_a) = run_server(
        hub_app(a.clone(), layer_a),
        Some(&shutdown),
        Duration::from_secs(2),
    )
    .await;
    let (addr_b, _stop_b, _task_b) = run_server(
        hub_app(b.clone(), SseLayer::new().come_back(ms(50..=150))),
        None,
        Duration::from_secs(1),
    )
    .await;
    let from = publish(&publisher, "t", "0").await;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let from = from.clone();
            tokio::spawn(async move { browse(addr_a, addr_b, from, "300").await })
        })
        .collect();
    // Every client is streaming from A before the publishing starts.
    assert!(
        common::eventually(Duration::from_secs(10), || a.topic("t").subscribers() == 7).await,
        "{} subscribers on A",
        a.topic("t").subscribers()
    );
    let publishing = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for i in 1..=300u32 {
                publish(&publisher, "t", &i.to_string()).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop_a.send(()).unwrap();
    for client in clients {
        let (got, reconnects) = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("the client got everything")
            .unwrap();
        assert_eq!(reconnects, 1, "one move, A to B");
        assert_eq!(got, numbers(1..=300), "exact: no gap, no duplicate");
    }
    publishing.await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), task_a)
        .await
        .expect("A exits after its wave")
        .unwrap();
    assert_eq!(b.stats().history_lost, 0);
}

/// `HubStats::history_reads`: "the Redis engine runs one read at a time per topic, so a burst
/// of resumes shares its reads": 120 HTTP clients resume at once on a node 200 ms behind Redis,
/// from events it may not have received yet; each gets exactly what follows its id, and the
/// node makes a handful of reads, not one per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_burst_of_http_resumes_on_a_lagging_node_reads_little_and_resumes_exactly() {
    let server = RedisServer::start().await;
    let (a, _) = node(&server);
    let (b, _, _proxy) =
        common::hub::lagging_node(&server, Duration::from_millis(200), Hub::builder()).await;
    let _watcher = live(&b, &a, "t").await;
    let (addr, _stop, _task) = run_server(
        hub_app(b.clone(), SseLayer::new().keep_alive(KeepAlive::disabled())),
        None,
        Duration::from_secs(1),
    )
    .await;
    let mut ids = Vec::new();
    for i in 1..=20u32 {
        ids.push(publish(&a, "t", &i.to_string()).await);
    }
    let reads_before = b.stats().history_reads;
    let clients: Vec<_> = (0..120)
        .map(|k| {
            let from = 1 + k % 20;
            let id = ids[from as usize - 1].clone();
            tokio::spawn(async move {
                let client = RawClient::get(addr, "/", &[("last-event-id", &id)]).await;
                (from, client)
            })
        })
        .collect();
    let mut resumed = Vec::new();
    for client in clients {
        resumed.push(client.await.unwrap());
    }
    publish(&a, "t", "21").await;
    for (from, mut client) in resumed {
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("21") {
            let messages = client.events(1).await;
            assert!(!messages.is_empty(), "stream ended after {got:?}");
            got.extend(
                messages
                    .into_iter()
                    .filter(|m| m.data != MARKER)
                    .map(|m| m.data),
            );
        }
        assert_eq!(got, numbers(from + 1..=21), "resumed after {from}");
    }
    let reads = b.stats().history_reads - reads_before;
    println!("history reads for 120 HTTP resumes on a node 200 ms behind: {reads}");
    assert!(reads <= 20, "{reads} reads for 120 resumes");
    assert_eq!(b.stats().history_lost, 0);
}
