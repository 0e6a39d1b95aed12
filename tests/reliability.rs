//! Faults over real sockets: panics in a stream, keep-alive over HTTP/2.
//! (Churn has its own test binary, since it counts the process's allocations; the layer's
//! refusals and header handling are in tests/layer.rs, shutdown in tests/shutdown.rs.)

mod common;

use common::{h2_client, h2_get, serve, RawClient};
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{convert::Infallible, time::Duration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::ServiceBuilder;
use tower_sse::{decode::Decoder, Event, KeepAlive, SseBody, SseLayer};

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
