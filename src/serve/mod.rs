//! [`Server`]: serves any tower service (an axum `Router`, `warp::service(filter)`, a hyper
//! `service_fn`) over HTTP/1.1 and HTTP/2 on one port, with what long-lived SSE connections
//! need (feature `server`).
//!
//! - **HTTP/1.1 and h2c on one port**, told apart by peeking at the first bytes for the HTTP/2
//!   preface, then handed to hyper's HTTP/1.1 or HTTP/2 connection alone: no buffering layer
//!   stays in between for the life of the connection, so detection costs nothing per idle
//!   connection.
//! - **HTTPS** with rustls (feature `rustls`, [`Server::rustls`]): HTTP/2 for clients that
//!   negotiate it (browsers), which lifts the six-connections-per-host limit browsers keep
//!   for HTTP/1.1, so a seventh SSE tab still loads.
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
    tls: Option<Tls>,
}

/// What accepts TLS on the listener (feature `rustls`).
#[cfg(feature = "rustls")]
type Tls = tokio_rustls::TlsAcceptor;
/// Without the `rustls` feature there is no TLS to accept.
#[cfg(not(feature = "rustls"))]
type Tls = std::convert::Infallible;

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
            tls: None,
        }
    }

    /// Serves HTTPS with this rustls configuration (feature `rustls`): HTTP/2 for clients
    /// that negotiate `h2` with ALPN (every browser does), HTTP/1.1 for the others. Browsers
    /// open at most six HTTP/1.1 connections per host, so a seventh SSE tab never loads;
    /// over HTTP/2 all streams share one connection and that limit is gone. When the
    /// configuration names no ALPN protocols, `h2` and `http/1.1` are offered.
    ///
    /// The TLS handshake must finish within the
    /// [`header_read_timeout`](Server::header_read_timeout).
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn rustls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        let config = if config.alpn_protocols.is_empty() {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(config)
        } else {
            config
        };
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
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
            tls,
        } = self;
        let config = Arc::new(config);
        let tls = tls.map(Arc::new);
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
            let tls = tls.clone();
            tokio::spawn(async move {
                serve_connection(tcp, service, &config, tls.as_deref(), watcher).await;
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
            .field("tls", &self.tls.is_some())
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
    tls: Option<&Tls>,
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
    let io = SendTimeout::new(tcp, config.send_timeout);
    if let Some(tls) = tls {
        // Boxed, like HTTP/2 below: TLS state is large, and plain connections should not
        // carry room for it.
        return Box::pin(serve_tls(io, tls, service, config, watcher)).await;
    }
    let h2 = config.http2 && speaks_h2(io.get_ref(), config.header_read_timeout).await;
    serve_http(io, h2, service, config, watcher).await;
}

/// The TLS handshake, then HTTP/2 or HTTP/1.1 as ALPN says.
#[cfg(feature = "rustls")]
async fn serve_tls<S, B>(
    io: SendTimeout<TcpStream>,
    tls: &Tls,
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
    let handshake = tokio::time::timeout(config.header_read_timeout, tls.accept(io)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return tracing::debug!(error = %err, "TLS handshake failed"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(stream, h2, service, config, watcher).await;
}

#[cfg(not(feature = "rustls"))]
async fn serve_tls<S>(
    _io: SendTimeout<TcpStream>,
    tls: &Tls,
    _service: S,
    _config: &Config,
    _watcher: watch::Receiver<Phase>,
) {
    match *tls {}
}

/// HTTP/2 or HTTP/1.1 on an established connection, until it ends or the server closes it.
async fn serve_http<I, S, B>(
    io: I,
    h2: bool,
    service: S,
    config: &Config,
    watcher: watch::Receiver<Phase>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let io = TokioIo::new(io);
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
