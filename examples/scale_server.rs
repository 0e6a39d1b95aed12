//! The server side of the connection-scale benchmark (see `loadgen.rs` and BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example scale_server --features axum,server -- tower-sse
//! ```
//!
//! One app, three ways to serve it, so they can be measured side by side:
//!
//! - `tower-sse`: axum routes, `SseBody` over a hub subscription, `SseLayer`, `axum::serve`;
//! - `tower-sse-wrapped`: the same, with the layer around the router
//!   (`SseLayer::new().layer(router)`) instead of `Router::layer`;
//! - `tower-sse-hyper`: the same service on hyper's HTTP/1.1 connection builder, without axum's
//!   serve loop (what a hyper user runs);
//! - `tower-sse-serve`: the same, layer around the router, served by `tower_sse::serve::Server`
//!   (HTTP/1.1 and h2c on the port, send timeouts, TCP_USER_TIMEOUT);
//! - `axum`: the baseline, the usual pattern with axum's own `Sse`: a `tokio::sync::broadcast`
//!   channel, a `BroadcastStream` per client, an `Event` built per client, `axum::serve`;
//! - `floor`: what the kernel alone costs: blocking sockets, no runtime, no HTTP library; each
//!   published event is encoded once and written to every client socket in turn, one write
//!   each (its memory figure means nothing: it keeps no per-connection state but the socket).
//!
//! Routes: `GET /sse` (the stream, keep-alive on at 15 s), `POST /publish` (the body is sent to
//! every client as one event's data), `GET /stats` (open streams). It prints `LISTENING <addr>`
//! once ready. Set `PORT` to choose the port (default: a free one).

use axum::{
    body::Bytes,
    extract::State,
    response::sse::{self as axum_sse, Sse},
    routing::{get, post},
    Router,
};
use futures_util::StreamExt;
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tower_sse::{hub::Hub, Event, LastEventId, SseBody, SseLayer};

/// The ways the benchmark app can be served.
pub const IMPLS: [&str; 6] = [
    "axum",
    "tower-sse",
    "tower-sse-wrapped",
    "tower-sse-hyper",
    "tower-sse-serve",
    "floor",
];

/// The tower-sse routes, without the layer.
fn tower_sse_routes(layer: &SseLayer) -> Router {
    let hub = Hub::new();
    let stats_layer = layer.clone();
    Router::new()
        .route(
            "/sse",
            get(
                |State(hub): State<Hub>, last: Option<LastEventId>| async move {
                    SseBody::new(hub.topic("all").subscribe(last.as_ref()))
                },
            ),
        )
        .route(
            "/publish",
            post(|State(hub): State<Hub>, body: String| async move {
                hub.topic("all").publish(Event::message(body)).detach();
                "ok"
            }),
        )
        .route(
            "/stats",
            get(move || {
                let open = stats_layer.open_streams();
                async move { format!("{{\"streams\":{open}}}") }
            }),
        )
        .with_state(hub)
}

fn tower_sse_app() -> (Router, SseLayer) {
    let layer = SseLayer::new();
    (tower_sse_routes(&layer).layer(layer.clone()), layer)
}

/// Counts the baseline's open streams the way an application would: a guard in the stream.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn axum_app() -> Router {
    let (tx, _) = broadcast::channel::<Bytes>(1024);
    let open = Arc::new(AtomicUsize::new(0));
    let (sse_tx, sse_open, stats_open) = (tx.clone(), open.clone(), open);
    Router::new()
        .route(
            "/sse",
            get(move || {
                let rx = sse_tx.subscribe();
                sse_open.fetch_add(1, Ordering::Relaxed);
                let guard = Open(sse_open.clone());
                async move {
                    let stream = BroadcastStream::new(rx).filter_map(move |message| {
                        let _alive = &guard;
                        let event = message.ok().map(|data| {
                            let text = String::from_utf8_lossy(&data).into_owned();
                            Ok::<_, Infallible>(axum_sse::Event::default().data(text))
                        });
                        std::future::ready(event)
                    });
                    Sse::new(stream).keep_alive(axum_sse::KeepAlive::default())
                }
            }),
        )
        .route(
            "/publish",
            post(move |body: Bytes| {
                let _ = tx.send(body);
                async { "ok" }
            }),
        )
        .route(
            "/stats",
            get(move || {
                let open = stats_open.load(Ordering::Relaxed);
                async move { format!("{{\"streams\":{open}}}") }
            }),
        )
}

/// Serves `which` on `listener` until the process is killed.
pub async fn run(which: &str, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    println!("LISTENING {}", listener.local_addr()?);
    match which {
        "axum" => {
            let listener = listener.tap_io(|tcp| drop(tcp.set_nodelay(true)));
            axum::serve(listener, axum_app()).await
        }
        "tower-sse" => {
            let listener = listener.tap_io(|tcp| drop(tcp.set_nodelay(true)));
            axum::serve(listener, tower_sse_app().0).await
        }
        "tower-sse-wrapped" => {
            use axum::ServiceExt;
            use tower_layer::Layer;
            let listener = listener.tap_io(|tcp| drop(tcp.set_nodelay(true)));
            let layer = SseLayer::new();
            let app = layer.layer(tower_sse_routes(&layer));
            let app = ServiceExt::<axum::extract::Request>::into_make_service(app);
            axum::serve(listener, app).await
        }
        "tower-sse-hyper" => {
            use hyper_util::{rt::TokioIo, service::TowerToHyperService};
            let app = tower_sse_app().0;
            loop {
                let (tcp, _) = listener.accept().await?;
                tcp.set_nodelay(true)?;
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }
        "tower-sse-serve" => {
            use tower_layer::Layer;
            let layer = SseLayer::new();
            let app = layer.layer(tower_sse_routes(&layer));
            tower_sse::serve::Server::new(listener).serve(app).await;
            Ok(())
        }
        "floor" => {
            let listener = listener.into_std()?;
            listener.set_nonblocking(false)?;
            tokio::task::spawn_blocking(move || floor::run(listener)).await?
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown implementation {other:?}; pick one of {IMPLS:?}"),
        )),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let which = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tower-sse".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    run(&which, listener).await
}

/// The floor: blocking sockets and one write per event per client, with just enough HTTP for the
/// load generator (`GET /sse`, `POST /publish`, `GET /stats`).
mod floor {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::{TcpListener, TcpStream},
        sync::{Arc, Mutex},
    };

    type Clients = Arc<Mutex<Vec<TcpStream>>>;

    /// The request line and the `content-length` of a request head.
    fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<(String, usize)> {
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        Ok((first, length))
    }

    fn answer(tcp: &mut TcpStream, body: &str) -> std::io::Result<()> {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        tcp.write_all(head.as_bytes())?;
        tcp.write_all(body.as_bytes())
    }

    /// Serves one connection's requests until it closes; a `GET /sse` hands the socket over to
    /// the clients list.
    fn connection(tcp: TcpStream, clients: Clients) -> std::io::Result<()> {
        tcp.set_nodelay(true)?;
        let mut reader = BufReader::new(tcp.try_clone()?);
        let mut tcp = tcp;
        loop {
            let (first, length) = read_head(&mut reader)?;
            if first.is_empty() {
                return Ok(());
            }
            if first.starts_with("GET /sse") {
                tcp.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n",
                )?;
                clients.lock().unwrap().push(tcp);
                return Ok(());
            } else if first.starts_with("POST /publish") {
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                let mut event = b"data: ".to_vec();
                event.extend_from_slice(&body);
                event.extend_from_slice(b"\n\n");
                for client in clients.lock().unwrap().iter_mut() {
                    let _ = client.write_all(&event);
                }
                answer(&mut tcp, "ok")?;
            } else {
                let open = clients.lock().unwrap().len();
                answer(&mut tcp, &format!("{{\"streams\":{open}}}"))?;
            }
        }
    }

    pub(super) fn run(listener: TcpListener) -> std::io::Result<()> {
        let clients = Clients::default();
        loop {
            let (tcp, _) = listener.accept()?;
            let clients = clients.clone();
            // A short-lived thread per connection: SSE connections hand their socket over at
            // once; only the publisher's connection keeps its thread.
            std::thread::spawn(move || connection(tcp, clients));
        }
    }
}
