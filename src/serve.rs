//! [`Server`]: serves any tower service (an axum `Router`, `warp::service(filter)`, a hyper
//! `service_fn`) over HTTP/1.1 and HTTP/2 on one port, with what long-lived SSE connections
//! need (feature `server`).
//!
//! - **HTTP/1.1 and h2c on one port**, told apart by peeking at the first bytes for the HTTP/2
//!   preface, then handed to hyper's HTTP/1.1 or HTTP/2 connection alone: no buffering layer
//!   stays in between for the life of the connection, so detection costs nothing per idle
//!   connection.
//! - **Stalled and vanished peers**: every connection gets a send timeout
//!   ([`io::SendTimeout`](crate::io::SendTimeout)), `TCP_USER_TIMEOUT` (Linux) and
//!   `TCP_NODELAY`.
//! - **Slowloris**: a request head must arrive within the header-read timeout.
//! - **A connection cap**: beyond it, new connections wait in the listen queue.
//! - **Accept errors** (out of descriptors, say) back off instead of spinning, and are logged.
//! - **Graceful shutdown** from a signal future: stop accepting, end the SSE streams (the
//!   [`Shutdown`] given to [`Server::shutdown`], with its final event), let connections finish
//!   their responses, and close what is left after a deadline.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tower_layer::Layer;
//! use tower_sse::{serve::Server, Event, Shutdown, SseLayer};
//!
//! let shutdown = Shutdown::new();
//! let app = SseLayer::new().shutdown(&shutdown).layer(axum::Router::new()); // .route(...)
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let bye = Event::builder().event("bye").retry(Duration::from_secs(5)).data("").build().ok();
//! Server::new(listener)
//!     .shutdown(&shutdown, bye)
//!     .serve_with_graceful_shutdown(app, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await;
//! # Ok(()) }
//! ```

use crate::{io::SendTimeout, BoxError, Event, Shutdown};
use http::{Request, Response};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use std::{
    fmt,
    future::{pending, Future},
    net::SocketAddr,
    pin::{pin, Pin},
    sync::Arc,
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};

/// What a client sends first on an HTTP/2 connection with prior knowledge (h2c).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves a tower service on a TCP listener; see the [module docs](self).
#[must_use = "a server does nothing until `serve` is awaited"]
pub struct Server {
    listener: TcpListener,
    config: Config,
    streams: Option<(Shutdown, Option<Event>)>,
}

#[derive(Debug, Clone)]
struct Config {
    send_timeout: Duration,
    header_read_timeout: Duration,
    max_connections: usize,
    graceful_timeout: Duration,
    http2: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: Semaphore::MAX_PERMITS,
            graceful_timeout: Duration::from_secs(10),
            http2: true,
        }
    }
}

/// Where a connection's task is told to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the responses in flight, take no new requests.
    Closing,
    /// The deadline passed: close now.
    Closed,
}

impl Server {
    /// A server on `listener`, with the defaults below.
    pub fn new(listener: TcpListener) -> Self {
        Server {
            listener,
            config: Config::default(),
            streams: None,
        }
    }

    /// How long a write may make no progress before the connection is closed (a client that
    /// stopped reading, or vanished); also set as `TCP_USER_TIMEOUT` on Linux. Keep it above
    /// the keep-alive interval. Saturates at 2³¹−1 ms. Default: 30 seconds.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.config.send_timeout = crate::delay::saturate(timeout);
        self
    }

    /// How long a client may take to send a request's head (HTTP/1.1), or to show it speaks
    /// HTTP/2, before the connection is closed. Saturates at 2³¹−1 ms. Default: 10 seconds.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = crate::delay::saturate(timeout);
        self
    }

    /// The most connections served at once; further ones wait in the listen queue until one
    /// closes. At least 1. Default: no limit (the process's file descriptors are one).
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.config.max_connections = limit.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Whether clients may speak HTTP/2 with prior knowledge (h2c) on this port, beside
    /// HTTP/1.1. Default: `true`.
    pub fn http2(mut self, enabled: bool) -> Self {
        self.config.http2 = enabled;
        self
    }

    /// At a graceful shutdown, triggers `shutdown` with `final_event`: every SSE stream under
    /// the layers given this [`Shutdown`] sends what it has ready, then the final event, and
    /// ends. Without it, open streams hold the shutdown until the deadline.
    pub fn shutdown(mut self, shutdown: &Shutdown, final_event: Option<Event>) -> Self {
        self.streams = Some((shutdown.clone(), final_event));
        self
    }

    /// How long a graceful shutdown waits for connections to finish before closing them.
    /// Default: 10 seconds.
    pub fn graceful_timeout(mut self, timeout: Duration) -> Self {
        self.config.graceful_timeout = crate::delay::saturate(timeout);
        self
    }

    /// The address the server listens on.
    ///
    /// # Errors
    ///
    /// The listener's, when the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `service` for as long as the process runs.
    pub async fn serve<S, B>(self, service: S)
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_with_graceful_shutdown(service, pending()).await;
    }

    /// Serves `service` until `signal` completes, then shuts down gracefully: stops accepting,
    /// triggers the [`shutdown`](Server::shutdown) switch, tells every connection to finish
    /// its responses and take no more requests, and returns once they are all closed, closing
    /// those still open after the [`graceful_timeout`](Server::graceful_timeout).
    pub async fn serve_with_graceful_shutdown<S, B, F>(self, service: S, signal: F)
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()> + Send,
    {
        let Server {
            listener,
            config,
            streams,
        } = self;
        let config = Arc::new(config);
        let (phase, watcher) = watch::channel(Phase::Serving);
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let mut signal = pin!(signal);
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                () = &mut signal => break,
                accepted = accept(&listener, &slots) => accepted,
            };
            let (tcp, permit) = match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(err) => {
                    // Out of descriptors and the like: wait for some to free up.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(error = %err, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let service = service.clone();
            let config = config.clone();
            let watcher = watcher.clone();
            tokio::spawn(async move {
                serve_connection(tcp, service, &config, watcher).await;
                drop(permit);
            });
        }

        drop((listener, watcher));
        if let Some((shutdown, final_event)) = streams {
            shutdown.trigger(final_event);
        }
        let _ = phase.send(Phase::Closing);
        let all_closed = phase.closed();
        if tokio::time::timeout(config.graceful_timeout, all_closed)
            .await
            .is_err()
        {
            tracing::warn!(
                open = phase.receiver_count(),
                "graceful shutdown deadline passed; closing the connections left"
            );
            let _ = phase.send(Phase::Closed);
            phase.closed().await;
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener.local_addr().ok())
            .field("config", &self.config)
            .field("shutdown", &self.streams.is_some())
            .finish()
    }
}

/// Waits for a connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let (tcp, _) = listener.accept().await?;
    Ok((tcp, permit))
}

async fn serve_connection<S, B>(
    tcp: TcpStream,
    service: S,
    config: &Config,
    watcher: watch::Receiver<Phase>,
) where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let _ = tcp.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = crate::io::tcp_user_timeout(&tcp, config.send_timeout);
    let h2 = config.http2 && speaks_h2(&tcp, config.header_read_timeout).await;
    let io = TokioIo::new(SendTimeout::new(tcp, config.send_timeout));
    let service = TowerToHyperService::new(service);
    let result = if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        // Boxed: an HTTP/2 connection's state is far larger than an HTTP/1.1 one's, and a
        // future holds room for its largest branch, so unboxed every connection would pay it.
        drive(Box::pin(conn).as_mut(), watcher).await
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .serve_connection(io, service);
        drive(pin!(conn), watcher).await
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Runs a connection, finishing it gracefully or closing it as the server's phase says.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    mut watcher: watch::Receiver<Phase>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            changed = watcher.changed() => match (changed, *watcher.borrow_and_update()) {
                (Ok(()), Phase::Serving) => {}
                (Ok(()), Phase::Closing) => conn.as_mut().graceful_shutdown(),
                // Closed, or the server is gone: drop the connection.
                _ => return Ok(()),
            },
        }
    }
}

/// Whether the client opens with the HTTP/2 preface, read with `peek` so the bytes stay for
/// the connection. A client silent for `timeout` is handed to HTTP/1.1, whose own header-read
/// timeout then closes it.
async fn speaks_h2(tcp: &TcpStream, timeout: Duration) -> bool {
    let read = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // Part of the preface so far (rare: clients send it in one write).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(false)
}
