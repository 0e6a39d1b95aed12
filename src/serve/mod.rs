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
//!   ([`io::SendTimeout`](crate::io::SendTimeout)) that measures the peer's progress, with
//!   `TCP_USER_TIMEOUT` and a small unsent queue (`TCP_NOTSENT_LOWAT`) on Linux, and
//!   `TCP_NODELAY`; HTTP/2 connections get keep-alive PINGs, and an HTTP/2 stream whose
//!   client stopped reading it (a frame its body has out got no flow-control window for one
//!   send timeout) is reset alone (`RST_STREAM`, its body dropped); the connection's other
//!   streams go on.
//! - **Slowloris**: the first request must arrive within one header-read timeout from accept,
//!   whatever the protocol (the preface peek, the TLS handshake and the request head or the
//!   first HTTP/2 request all draw on it); a connection with no request in flight is closed
//!   after the idle timeout.
//! - **A connection cap**: beyond it, new connections wait in the listen queue; the timeouts
//!   above bound how long a client that sends nothing useful holds a slot.
//! - **The listen backlog**: connections beyond the cap wait in the kernel's listen queue,
//!   out of reach of every server timeout. `TcpListener::bind` gives it 128 places, and a
//!   burst of connects beyond them (Linux then answers with SYN cookies) leaves clients
//!   connected to sockets the server never accepts: for bursts, bind with
//!   [`tokio::net::TcpSocket`], `bind(addr)`, then `listen(4096)` (capped by
//!   `net.core.somaxconn`).
//! - **Accept errors** (out of descriptors, say) back off instead of spinning, and are logged.
//! - **Graceful shutdown** from a signal future: stop accepting, end the SSE streams (the
//!   [`Shutdown`] given to [`Server::shutdown`], with its final event, each when its layer's
//!   [`DrainPolicy`](crate::DrainPolicy) says), let connections finish their responses, and
//!   close what is left after a deadline that starts once the drain is over.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tower_layer::Layer;
//! use tower_sse::{serve::Server, DrainPolicy, Event, Shutdown, SseLayer};
//!
//! let shutdown = Shutdown::new();
//! // Streams end spread over 10 s, so the other nodes see a flat reconnect rate.
//! let layer = SseLayer::new().shutdown(&shutdown).drain(DrainPolicy::Waves(Duration::from_secs(10)));
//! let app = layer.layer(axum::Router::new()); // .route(...)
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let bye = Event::builder().event("bye").data("").build().ok();
//! Server::new(listener)
//!     .shutdown(&shutdown, bye)
//!     .serve_with_graceful_shutdown(app, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await;
//! # Ok(()) }
//! ```

mod activity;
mod connection;
mod deadline;
mod reset;

use crate::{BoxError, Event, Shutdown};
use http::{Request, Response};
use hyper::body::Incoming;
use std::{
    fmt,
    future::{pending, Future},
    net::SocketAddr,
    pin::pin,
    sync::Arc,
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
};

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
    idle_timeout: Duration,
    max_connections: usize,
    graceful_timeout: Duration,
    http2: bool,
    http2_keep_alive_interval: Option<Duration>,
    http2_keep_alive_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            send_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: Semaphore::MAX_PERMITS,
            graceful_timeout: Duration::from_secs(10),
            http2: true,
            http2_keep_alive_interval: Some(Duration::from_secs(20)),
            http2_keep_alive_timeout: Duration::from_secs(20),
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
    /// The TLS handshake draws on the [`header_read_timeout`](Server::header_read_timeout)
    /// from accept, like everything before the first request.
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

    /// How long the peer may take in no bytes while the server has some to send before the
    /// connection is closed (a client that stopped reading, or vanished), and over HTTP/2 how
    /// long a stream's frame may wait for flow-control window before that stream alone is
    /// reset; also set as `TCP_USER_TIMEOUT` on Linux. Keep it above the keep-alive interval. Saturates at
    /// 2³¹−1 ms. Default: 30 seconds.
    ///
    /// Over HTTP/2 a client can stop reading one stream while its connection still reads the
    /// socket and answers PINGs: it grants that stream no flow-control window, and the socket
    /// shows no stall. So each stream is also timed alone: a stream whose body has had a frame
    /// out, waiting for window, for this timeout is reset (`RST_STREAM`) and its body dropped;
    /// the connection and its other streams go on. A stream with nothing to send (an idle SSE
    /// stream) is never cut by it, nor one whose client takes in each frame within the
    /// timeout, however slowly it reads (an SSE frame stops growing at the 16 KiB
    /// [`coalesce`](crate::SseLayer::coalesce) cap).
    ///
    /// On Linux each connection's unsent queue is held at 16 KiB (`TCP_NOTSENT_LOWAT`, see
    /// [`io::tcp_notsent_lowat`](crate::io::tcp_notsent_lowat)), so a write waits only while
    /// the peer's TCP window is shut, and the timeout runs only while the peer takes in
    /// nothing: a client that empties its receive buffer within every timeout is never cut,
    /// however slowly it reads (with the 30 s default and a 128 KiB buffer, 4.4 KB/s), and one
    /// that stops reading is closed one timeout after its buffers fill. Elsewhere the timeout
    /// measures the socket's writability, which also waits for the kernel's own send buffer
    /// to drain (see [`SendTimeout`](crate::io::SendTimeout)).
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.config.send_timeout = crate::delay::saturate(timeout);
        self
    }

    /// How long a client has from accept to its first request: for HTTP/1.1 until its request
    /// head is read, for HTTP/2 until its first request's headers arrive. The peek for the
    /// HTTP/2 preface and the TLS handshake draw on the same time; a client that sends nothing,
    /// part of a head, the preface alone or the preface and its settings is closed once it
    /// runs out. On HTTP/1.1 each later request head must also arrive within this time of the
    /// previous response ending. Saturates at 2³¹−1 ms. Default: 10 seconds.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = crate::delay::saturate(timeout);
        self
    }

    /// How long a connection may carry no request after its last response ended (for HTTP/2:
    /// with no stream open) before it is closed; an HTTP/2 connection is first sent a GOAWAY
    /// and dropped a second later if still open. A connection with a request in flight, such
    /// as an SSE stream, is never idle. HTTP/1.1 connections also close when the next request
    /// head is later than the [`header_read_timeout`](Server::header_read_timeout), so for
    /// them the shorter of the two applies. Saturates at 2³¹−1 ms. Default: 60 seconds.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = crate::delay::saturate(timeout);
        self
    }

    /// The most connections served at once; further ones wait in the listen queue until one
    /// closes (see the [module docs](self) for its size). A connection holds its slot until it
    /// closes: one that brings no request holds it at most the
    /// [`header_read_timeout`](Server::header_read_timeout), one with no request in flight at
    /// most the [`idle_timeout`](Server::idle_timeout) (an HTTP/2 one that ignores the GOAWAY
    /// sent then, one second more). At least 1. Default: no limit (the process's file
    /// descriptors are one).
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

    /// HTTP/2 keep-alive: a PING after `interval` with no frame from the peer, and the
    /// connection closed if the PING is not answered within `timeout`; so a peer that stops
    /// answering is closed within `interval + timeout` of its last frame, even while its
    /// streams have nothing to send. `None` sends no PINGs. Both saturate at 2³¹−1 ms.
    /// Default: every 20 seconds, answered within 20 seconds: below the idle timeouts of
    /// common NATs and load balancers, so the PINGs also keep them from dropping a quiet
    /// connection, and far above any round trip.
    pub fn http2_keep_alive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.http2_keep_alive_interval = interval.map(crate::delay::saturate);
        self.config.http2_keep_alive_timeout = crate::delay::saturate(timeout);
        self
    }

    /// At a graceful shutdown, triggers `shutdown` with `final_event`: every SSE stream under
    /// the layers given this [`Shutdown`] ends when its layer's
    /// [`DrainPolicy`](crate::DrainPolicy) says, with what it has ready, the final event and
    /// a come-back block. The [`graceful_timeout`](Server::graceful_timeout) then starts after
    /// the longest drain ([`Shutdown::drain_span`]): with `DrainPolicy::Waves(10 s)` and the
    /// default 10 s, connections still open 20 s after the signal are closed. Without it, open
    /// streams hold the shutdown until the deadline.
    pub fn shutdown(mut self, shutdown: &Shutdown, final_event: Option<Event>) -> Self {
        self.streams = Some((shutdown.clone(), final_event));
        self
    }

    /// How long a graceful shutdown waits for connections to finish before closing them,
    /// counted after the longest drain of the [`shutdown`](Server::shutdown) switch's layers.
    /// Connections that have not brought a request yet (silent, mid-preface, mid-handshake)
    /// are closed as the shutdown starts; the others finish their responses and are closed
    /// when this time is up. Saturates at 2³¹−1 ms. Default: 10 seconds.
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
        let (phase, watcher) = watch::channel(Phase::Serving);
        let spawn = |tcp: TcpStream, permit: OwnedSemaphorePermit| {
            let (service, config, watcher) = (service.clone(), config.clone(), watcher.clone());
            // Without the `rustls` feature the configuration is an `Option<Infallible>` (`Copy`).
            #[allow(clippy::clone_on_copy)]
            let tls = tls.clone();
            tokio::spawn(async move {
                connection::serve_connection(tcp, service, &config, tls.as_ref(), watcher).await;
                drop(permit);
            });
        };
        accept_until(&listener, config.max_connections, signal, spawn).await;
        drop((listener, watcher));
        // The streams end as their layers' drain policies say: the deadline starts after the
        // last of them.
        let mut deadline = config.graceful_timeout;
        if let Some((shutdown, final_event)) = streams {
            shutdown.trigger(final_event);
            deadline = deadline.saturating_add(shutdown.drain_span());
        }
        close_all(phase, deadline).await;
    }
}

/// Accepts connections and hands each to `spawn` with its slot, until `signal` completes.
async fn accept_until(
    listener: &TcpListener,
    max_connections: usize,
    signal: impl Future<Output = ()>,
    mut spawn: impl FnMut(TcpStream, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut signal = pin!(signal);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = &mut signal => return,
            accepted = accept(listener, &slots) => accepted,
        };
        match accepted {
            Ok((tcp, permit)) => {
                backoff = Duration::ZERO;
                spawn(tcp, permit);
            }
            Err(err) => {
                // Out of descriptors and the like: wait for some to free up.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                tracing::warn!(error = %err, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Tells every connection to finish, waits up to `graceful_timeout` for them, then closes
/// those left and waits for them to be gone.
async fn close_all(phase: watch::Sender<Phase>, graceful_timeout: Duration) {
    let _ = phase.send(Phase::Closing);
    if tokio::time::timeout(graceful_timeout, phase.closed())
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
) -> std::io::Result<(TcpStream, OwnedSemaphorePermit)> {
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let (tcp, _) = listener.accept().await?;
    Ok((tcp, permit))
}
