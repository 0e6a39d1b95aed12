//! A body built with no context while a layer is in use is reported once per process. Alone in
//! its own test binary, because the report is once per process.

mod common;

use common::logs_of;
use futures_util::stream;
use tower::ServiceBuilder;
use tower_sse::{Event, SseBody, SseLayer};

#[tokio::test(flavor = "current_thread")]
async fn a_body_built_with_no_context_under_a_layer_in_use_is_reported_once() {
    // No layer in use yet: a standalone body is nobody's mistake.
    let (_, logs) = logs_of(async { SseBody::new(stream::iter([Event::message("x")])) }).await;
    assert!(logs.is_empty(), "{logs}");

    let _service =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(|_req: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            });
    // Now a body with no context (as one built in a spawned task would be) is reported...
    let (_, logs) = logs_of(async { SseBody::new(stream::iter([Event::message("x")])) }).await;
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("SseBody::new found no SseContext"), "{logs}");
    // ...once.
    let (_, logs) = logs_of(async { SseBody::new(stream::iter([Event::message("x")])) }).await;
    assert!(logs.is_empty(), "{logs}");
}
