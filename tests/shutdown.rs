//! `Shutdown` over real sockets and frame by frame: every ready event, then the final event,
//! over HTTP/1.1 and HTTP/2; the flush limit; a body that moved to another task.

mod common;

use common::{eventually, h2_client, h2_get, RawClient};
use futures_util::{stream, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{convert::Infallible, time::Duration};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::ServiceBuilder;
use tower_sse::{decode::Decoder, Event, Shutdown, SseBody, SseLayer};

#[tokio::test]
async fn graceful_shutdown_ends_every_stream_over_http1_and_http2() {
    let shutdown = Shutdown::new();
    let (senders_tx, mut senders) = mpsc::unbounded_channel::<mpsc::UnboundedSender<Event>>();
    let layer = SseLayer::new().shutdown(&shutdown);
    let svc =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |_req: Request<Incoming>| {
                let (tx, rx) = mpsc::unbounded_channel();
                senders_tx.send(tx).unwrap();
                async move {
                    Ok::<_, Infallible>(Response::new(SseBody::new(UnboundedReceiverStream::new(
                        rx,
                    ))))
                }
            });

    // A server loop with hyper-util's graceful shutdown, as an application would write it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                Ok((tcp, _)) = listener.accept() => {
                    let conn = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc.clone()))
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move { let _ = conn.await; });
                }
                _ = &mut stop_rx => break,
            }
        }
        graceful.shutdown().await;
    });

    let mut h1_clients = Vec::new();
    for _ in 0..10 {
        h1_clients.push(RawClient::get(addr, "/", &[]).await);
    }
    let mut h2 = h2_client(addr).await;
    let mut h2_bodies = Vec::new();
    for _ in 0..10 {
        h2_bodies.push(
            h2.send_request(h2_get(addr, "/"))
                .await
                .unwrap()
                .into_body(),
        );
    }
    let mut txs = Vec::new();
    for _ in 0..20 {
        txs.push(senders.recv().await.unwrap());
    }
    assert!(eventually(Duration::from_secs(5), || layer.open_streams() == 20).await);

    // Events accepted just before the shutdown must all be delivered: 100 of 1 KiB each, far
    // more than one coalesced frame.
    let accepted: Vec<String> = (0..100)
        .map(|i| format!("{i:04}{}", "x".repeat(1020)))
        .collect();
    for tx in &txs {
        for data in &accepted {
            tx.send(Event::message(data)).unwrap();
        }
    }
    let mut expected: Vec<(&str, &str)> =
        accepted.iter().map(|d| ("message", d.as_str())).collect();
    expected.push(("shutdown", "bye"));
    let bye = Event::builder()
        .event("shutdown")
        .data("bye")
        .build()
        .unwrap();
    shutdown.trigger(Some(bye));
    stop_tx.send(()).unwrap();

    for client in &mut h1_clients {
        let (_, messages) = client.read_to_end().await;
        let got: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.event.as_str(), m.data.as_str()))
            .collect();
        assert_eq!(got, expected);
        let retry = client.decoder.retry().expect("the come-back block's retry");
        assert!((1000..=5000).contains(&retry), "{retry}");
        assert!(client.ended, "the chunked response was finished");
    }
    for body in h2_bodies {
        let bytes = body.collect().await.unwrap().to_bytes();
        let mut decoder = Decoder::new();
        let messages = decoder.feed(&bytes);
        let got: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.event.as_str(), m.data.as_str()))
            .collect();
        assert_eq!(got, expected, "over HTTP/2");
        assert!(bytes.ends_with(b"\n: server shutting down, reconnect\n\n"));
        assert!((1000..=5000).contains(&decoder.retry().unwrap()));
    }
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server exits in bounded time")
        .unwrap();
    assert_eq!(layer.open_streams(), 0);
}

/// A body under a layer with `shutdown`, over a stream of `ready` events of 1 KiB.
async fn body_under_shutdown(
    shutdown: &Shutdown,
    ready: usize,
) -> impl http_body::Body<Data = bytes::Bytes, Error = tower_sse::BoxError> {
    use tower::ServiceExt;
    let events: Vec<Event> = (0..ready)
        .map(|i| Event::message(format!("{i:04}{}", "x".repeat(1020))))
        .collect();
    let svc = ServiceBuilder::new()
        .layer(SseLayer::new().open_frame(false).shutdown(shutdown))
        .service_fn(move |_req: Request<()>| {
            let events = stream::iter(events.clone()).chain(stream::pending());
            async move { Ok::<_, Infallible>(Response::new(SseBody::new(events))) }
        });
    svc.oneshot(Request::new(())).await.unwrap().into_body()
}

#[tokio::test]
async fn shutdown_delivers_ready_events_up_to_the_flush_limit() {
    let shutdown = Shutdown::new().flush_limit(4 * 1024);
    let body = body_under_shutdown(&shutdown, 100).await;
    shutdown.trigger(Some(
        Event::builder().event("bye").data("").build().unwrap(),
    ));
    let bytes = body.collect().await.unwrap().to_bytes();
    let messages = Decoder::new().feed(&bytes);
    // Each event is 1,033 bytes on the wire: frames stop once 4 KiB have gone out, so four
    // whole events, then the final one.
    let names: Vec<&str> = messages.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(names, ["message", "message", "message", "message", "bye"]);
    assert!(messages[3].data.starts_with("0003"));
}

#[tokio::test]
async fn shutdown_wakes_a_body_that_moved_to_another_task() {
    let shutdown = Shutdown::new();
    let mut body = Box::pin(body_under_shutdown(&shutdown, 0).await);
    // First polled (and left waiting) by one task...
    let mut body = tokio::spawn(async move {
        let polled = futures_util::poll!(body.frame());
        assert!(polled.is_pending());
        body
    })
    .await
    .unwrap();
    // ...then waited on by another: the trigger must wake this one.
    let waiter = tokio::spawn(async move {
        let block = body.frame().await.map(|f| f.unwrap().into_data().unwrap());
        (block, body.frame().await.is_none())
    });
    tokio::task::yield_now().await;
    shutdown.trigger(None);
    let ended = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the trigger woke the body's new task")
        .unwrap();
    let (block, ended) = ended;
    assert!(block
        .unwrap()
        .ends_with(b"\n: server shutting down, reconnect\n\n"));
    assert!(ended, "the stream ended after its come-back block");
}
