//! What authorization adds to an idle stream, in live allocations (a counting global allocator
//! in this test binary), which no load on the machine can change: 1,000 hub streams through
//! `SseLayer` alone, against 1,000 through `SseLayer` and `Auth::layer`, each of its own
//! subject (the worst case: nothing is shared between subjects), each body polled once so that
//! it has joined its topic and registered its wakers, as an idle connection has.

mod common;

use common::alloc::{Counting, Live};
use futures_util::task::noop_waker_ref;
use http::{request::Parts, Request, Response};
use http_body::Body;
use std::{convert::Infallible, pin::Pin, task::Context};
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{
    auth::{Auth, Denied},
    hub::Hub,
    Grants, SseBody, SseLayer,
};

#[global_allocator]
static ALLOC: Counting = Counting;

const STREAMS: usize = 1_000;

fn user_of(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

type Boxed = Pin<Box<dyn Body<Data = bytes::Bytes, Error = tower_sse::BoxError> + Send>>;

/// Opens `STREAMS` idle streams of `hub`, with or without auth, and returns their bodies.
async fn open(hub: &Hub, auth: Option<&Auth>) -> Vec<Boxed> {
    let mut bodies = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let user = format!("user-{i:04}");
        let request = Request::get("/")
            .header("accept", "text/event-stream")
            .header("x-user", &user)
            .body(())
            .unwrap();
        let hub = hub.clone();
        let service = move |req: Request<()>| {
            let hub = hub.clone();
            async move {
                let user = req.headers()["x-user"].to_str().unwrap().to_owned();
                let subscription = hub.topic(&format!("user:{user}")).subscribe(None);
                let subscription = match req.extensions().get::<Grants>() {
                    Some(grants) => subscription.granted(grants).unwrap(),
                    None => subscription,
                };
                Ok::<_, Infallible>(SseBody::from_request(&req, subscription).into_http_response())
            }
        };
        let mut body: Boxed = match auth {
            Some(auth) => {
                let response: Response<_> = ServiceBuilder::new()
                    .layer(SseLayer::new())
                    .layer(auth.layer())
                    .service_fn(service)
                    .oneshot(request)
                    .await
                    .unwrap();
                Box::pin(response.into_body())
            }
            None => {
                let response = ServiceBuilder::new()
                    .layer(SseLayer::new())
                    .service_fn(service)
                    .oneshot(request)
                    .await
                    .unwrap();
                Box::pin(response.into_body())
            }
        };
        let mut cx = Context::from_waker(noop_waker_ref());
        // The open frame, then pending: the body now waits as an idle connection does.
        assert!(body.as_mut().poll_frame(&mut cx).is_ready());
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        bodies.push(body);
    }
    bodies
}

#[tokio::test(flavor = "current_thread")]
async fn an_authorised_idle_stream_costs_at_most_half_a_kib_more() {
    let auth = Auth::builder(|parts: &Parts| {
        let user = user_of(parts);
        async move {
            let user = user.ok_or(Denied::Unauthenticated)?;
            Ok(Grants::new()
                .exact(format!("user:{user}"))
                .subject(user)
                .expires_in(std::time::Duration::from_secs(3600)))
        }
    })
    .build();
    // Warm-up: one-time allocations (tracing's callsites, the runtime's) happen here.
    drop(open(&Hub::new(), Some(&auth)).await);
    drop(open(&Hub::new(), None).await);

    let plain_hub = Hub::new();
    let before = Live::now();
    let plain = open(&plain_hub, None).await;
    let plain_bytes = Live::now().since(before).bytes;

    let auth_hub = Hub::new();
    let before = Live::now();
    let authorised = open(&auth_hub, Some(&auth)).await;
    let auth_bytes = Live::now().since(before).bytes;

    let per_plain = plain_bytes as f64 / STREAMS as f64;
    let per_auth = auth_bytes as f64 / STREAMS as f64;
    println!(
        "live bytes per idle stream: {per_plain:.0} plain, {per_auth:.0} authorised (+{:.0})",
        per_auth - per_plain
    );
    assert_eq!(plain_hub.stats().subscribers, STREAMS as u64);
    assert_eq!(auth_hub.stats().subscribers, STREAMS as u64);
    assert!(
        per_auth - per_plain <= 512.0,
        "{per_auth:.0} bytes against {per_plain:.0}"
    );
    drop((plain, authorised));
}
