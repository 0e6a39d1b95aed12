//! One connection from accept to close: its first bytes (the peek for the HTTP/2 preface, or
//! the TLS handshake), then hyper's HTTP/1.1 or HTTP/2 connection, all under one budget from
//! accept for the first request, the idle timer, and the server's shutdown phase.

use super::{
    activity::{Activity, Tracked},
    deadline::{Deadlines, Expiry},
    reset::StreamExecutor,
    Config, Phase, Tls,
};
use crate::{io::SendTimeout, BoxError};
use http::{Request, Response};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use std::{
    future::{pending, Future},
    pin::{pin, Pin},
    time::Duration,
};
use tokio::{net::TcpStream, sync::watch, time::Instant};

/// What a client sends first on an HTTP/2 connection with prior knowledge (h2c).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The unsent bytes a connection's kernel queue may hold (`TCP_NOTSENT_LOWAT`). Small, so a
/// write waits only while the peer's window is shut and the send timeout measures the peer;
/// large enough for a burst of events in one write.
#[cfg(any(target_os = "linux", target_os = "android"))]
const UNSENT_LOW_WATER: u32 = 16 * 1024;

/// The tower services the server runs.
pub(super) trait App<B>:
    tower_service::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> App<B> for S where
    S: tower_service::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The response bodies they answer with.
pub(super) trait AppBody:
    http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> AppBody for B where B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// What every stage of a connection answers to.
struct Stage<'a> {
    config: &'a Config,
    watcher: watch::Receiver<Phase>,
    accepted: Instant,
}

impl Stage<'_> {
    /// When the first request is due: one header-read timeout after accept, whatever the
    /// protocol turns out to be.
    fn first_request_by(&self) -> Instant {
        self.accepted + self.config.header_read_timeout
    }

    /// Runs a stage before the first request (the preface peek, the TLS handshake): `None`
    /// when the budget runs out or the server starts shutting down first; no request has
    /// been taken, so there is nothing to finish.
    async fn first_bytes<T>(&mut self, stage: impl Future<Output = T>) -> Option<T> {
        let budget = self.first_request_by();
        tokio::select! {
            done = stage => Some(done),
            () = tokio::time::sleep_until(budget) => {
                tracing::debug!("no request within the header-read timeout");
                None
            }
            _ = self.watcher.wait_for(|phase| *phase != Phase::Serving) => None,
        }
    }
}

/// Serves one accepted connection until it ends or the server closes it.
pub(super) async fn serve_connection<S, B>(
    tcp: TcpStream,
    service: S,
    config: &Config,
    tls: Option<&Tls>,
    watcher: watch::Receiver<Phase>,
) where
    S: App<B>,
    B: AppBody,
{
    let mut stage = Stage {
        config,
        watcher,
        accepted: Instant::now(),
    };
    configure(&tcp, config);
    let io = SendTimeout::new(tcp, config.send_timeout);
    if let Some(tls) = tls {
        // Boxed, like HTTP/2 below: TLS state is large, and plain connections should not
        // carry room for it.
        return Box::pin(serve_tls(io, tls, service, stage)).await;
    }
    let h2 = if config.http2 {
        match stage.first_bytes(speaks_h2(io.get_ref())).await {
            Some(h2) => h2,
            None => return,
        }
    } else {
        false
    };
    serve_http(io, h2, service, stage).await;
}

/// The socket options every connection gets; failures only lose the option.
fn configure(tcp: &TcpStream, config: &Config) {
    let _ = tcp.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = crate::io::tcp_user_timeout(tcp, config.send_timeout);
        let _ = crate::io::tcp_notsent_lowat(tcp, UNSENT_LOW_WATER);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = config;
}

/// The TLS handshake, then HTTP/2 or HTTP/1.1 as ALPN says.
#[cfg(feature = "rustls")]
async fn serve_tls<S, B>(io: SendTimeout<TcpStream>, tls: &Tls, service: S, mut stage: Stage<'_>)
where
    S: App<B>,
    B: AppBody,
{
    let stream = match stage.first_bytes(tls.accept(io)).await {
        Some(Ok(stream)) => stream,
        Some(Err(err)) => return tracing::debug!(error = %err, "TLS handshake failed"),
        None => return,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(stream, h2, service, stage).await;
}

#[cfg(not(feature = "rustls"))]
async fn serve_tls<S>(_io: SendTimeout<TcpStream>, tls: &Tls, _service: S, _stage: Stage<'_>) {
    match *tls {}
}

/// HTTP/2 or HTTP/1.1 on an established connection, until it ends or the server closes it.
async fn serve_http<I, S, B>(io: I, h2: bool, service: S, stage: Stage<'_>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: App<B>,
    B: AppBody,
{
    let deadlines = Deadlines::new(stage.first_request_by(), stage.config.idle_timeout);
    let activity = Activity::new(stage.accepted);
    let Stage {
        config,
        watcher,
        accepted: stage_accepted,
    } = stage;
    let io = TokioIo::new(io);
    let service = Tracked::new(TowerToHyperService::new(service), activity.clone());
    let result = if h2 {
        // hyper stops polling a stream's body while the peer grants it no window, and PINGs
        // keep the connection alive: each stream's frames are timed on their own.
        let deadlines = deadlines.watch_sends(config.send_timeout, stage_accepted);
        let mut builder = http2::Builder::new(StreamExecutor::new(activity.clone()));
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(config.http2_keep_alive_interval)
            .keep_alive_timeout(config.http2_keep_alive_timeout);
        let conn = builder.serve_connection(io, service);
        // Boxed: an HTTP/2 connection's state is far larger than an HTTP/1.1 one's, and a
        // future holds room for its largest branch, so unboxed every connection would pay it.
        drive(Box::pin(conn).as_mut(), watcher, &activity, deadlines).await
    } else {
        // hyper's timer covers the heads after the first; the first is due by our deadline.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .serve_connection(io, service);
        drive(pin!(conn), watcher, &activity, deadlines).await
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// Runs a connection, finishing it gracefully or closing it as the server's phase and the
/// connection's deadlines say.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    mut watcher: watch::Receiver<Phase>,
    activity: &Activity,
    mut deadlines: Deadlines,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    loop {
        // Taken before the state is read, so no change between the two is missed.
        let changed = activity.changed();
        let next = deadlines.next(&activity.requests());
        tokio::select! {
            result = conn.as_mut() => return result,
            phase = watcher.changed() => match (phase, *watcher.borrow_and_update()) {
                (Ok(()), Phase::Serving) => {}
                // No request taken yet (a partial head, an HTTP/2 preface): nothing to finish.
                (Ok(()), Phase::Closing) if !activity.requests().any() => return Ok(()),
                (Ok(()), Phase::Closing) => conn.as_mut().graceful_shutdown(),
                // Closed, or the server is gone: drop the connection.
                _ => return Ok(()),
            },
            () = changed => {}
            expiry = expire(next) => match expiry {
                Expiry::Idle => {
                    conn.as_mut().graceful_shutdown();
                    deadlines.go_away(Instant::now());
                }
                Expiry::FirstRequest => {
                    tracing::debug!("no request within the header-read timeout");
                    return Ok(());
                }
                Expiry::Gone => return Ok(()),
                Expiry::Sends => reset_stalled(activity, &mut deadlines),
            },
        }
    }
}

/// Resets the streams whose frame has waited the whole send timeout for the peer to take it.
fn reset_stalled(activity: &Activity, deadlines: &mut Deadlines) {
    let Some(mut check) = deadlines.check_sends(Instant::now()) else {
        return;
    };
    let reset = activity.reset_stalled(&mut check);
    if reset > 0 {
        tracing::debug!(
            streams = reset,
            "HTTP/2 stream reset: the peer took none of its data within the send timeout"
        );
    }
    deadlines.sends_checked(&check);
}

/// Sleeps until the deadline, if there is one, and says what it was.
async fn expire(next: Option<(Instant, Expiry)>) -> Expiry {
    match next {
        Some((at, expiry)) => {
            tokio::time::sleep_until(at).await;
            expiry
        }
        None => pending().await,
    }
}

/// Whether the client opens with the HTTP/2 preface, read with `peek` so the bytes stay for
/// the connection. Waits for as many bytes as it takes to tell; the caller bounds the wait.
async fn speaks_h2(tcp: &TcpStream) -> bool {
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
}
