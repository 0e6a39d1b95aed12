//! `serve::Server` against hostile clients over real loopback sockets: each test quotes the
//! promise it attacks (from `src/serve/mod.rs`, `src/io.rs` and `src/axum.rs`) and checks it
//! with generous upper bounds; tight figures are printed, not asserted.

mod common;

use common::{
    serve::{bind, live_app, plain_and_tls, plain_app, SelfSigned, PREFACE_AND_SETTINGS},
    RawClient,
};
use futures_util::{stream, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};
use tower::ServiceBuilder;
use tower_sse::{decode::Decoder, serve::Server, Event, Shutdown, SseBody, SseLayer};

// ---------------------------------------------------------------------------------------------
// Apps
// ---------------------------------------------------------------------------------------------

fn ticker_app(
    layer: SseLayer,
) -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<SseBody<impl futures_core::Stream<Item = Event> + Send + 'static>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Incoming>| async move {
            let data = "t".repeat(4096);
            let events = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                Duration::from_millis(5),
            ))
            .map(move |_| Event::message(data.clone()));
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        })
}

/// Answers every request with a short body.
/// Fires its sender when dropped.
struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Endless 16 KiB events, produced as fast as they are taken, holding `guard` until the server
/// drops the stream.
fn endless(guard: OnDrop) -> impl futures_core::Stream<Item = Event> + Send + 'static {
    let data = "x".repeat(16 * 1024);
    stream::repeat_with(move || {
        let _ = &guard;
        Event::message(data.clone())
    })
}

/// A firehose app; the receiver fires when the server drops the (first) stream.
#[allow(clippy::type_complexity)]
fn firehose() -> (
    impl tower::Service<
            Request<Incoming>,
            Response = http::Response<
                SseBody<impl futures_core::Stream<Item = Event> + Send + 'static>,
            >,
            Error = Infallible,
            Future = impl Send + 'static,
        > + Clone
        + Send
        + 'static,
    oneshot::Receiver<()>,
) {
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let app =
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service_fn(move |req: Request<Incoming>| {
                let guard = OnDrop(tx.lock().unwrap().take());
                async move {
                    Ok::<_, Infallible>(
                        SseBody::from_request(&req, endless(guard)).into_http_response(),
                    )
                }
            });
    (app, rx)
}

/// A firehose behind `axum::serve` with [`tower_sse::axum::SendTimeoutListener`].
async fn axum_firehose(timeout: Duration) -> (SocketAddr, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let router = axum::Router::new().route(
        "/events",
        axum::routing::get(move || {
            let guard = OnDrop(tx.lock().unwrap().take());
            async move { SseBody::new(endless(guard)) }
        }),
    );
    let (listener, addr) = bind().await;
    let listener = tower_sse::axum::SendTimeoutListener::new(listener, timeout);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, rx)
}

fn stop_signal() -> (
    oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

// ---------------------------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------------------------

/// The HTTP/2 preface alone.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HEADERS (END_STREAM | END_HEADERS) for `GET /` on `stream`, static-table HPACK.
fn get_on(stream: u32) -> Vec<u8> {
    frame(0x1, 0x5, stream, b"\x82\x86\x84\x41\x01x")
}

fn ping(payload: [u8; 8]) -> Vec<u8> {
    frame(0x6, 0, 0, &payload)
}

/// The preface, SETTINGS with the largest stream window, and the largest connection window:
/// the server may send as much as the socket takes.
fn preface_with_open_windows() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    let mut settings = vec![0x00, 0x04];
    settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    out.extend(frame(0x4, 0, 0, &settings));
    out.extend(frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    out
}

/// A frame read from the server.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// Reads HTTP/2 frames off a raw connection.
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader { buf: Vec::new() }
    }

    /// The next frame, or `None` once the connection is closed.
    async fn next<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Some(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                    });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match io.read(&mut chunk).await {
                Ok(n @ 1..) => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// Reads and drops whatever `io` receives until the peer closes it; the time since `since`,
/// or `None` if still open `limit` after `since`.
async fn closed_within<I: AsyncRead + Unpin>(
    io: &mut I,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async { while let Ok(1..) = io.read(&mut buf).await {} };
    tokio::time::timeout(limit.saturating_sub(since.elapsed()), read_all)
        .await
        .ok()
        .map(|()| since.elapsed())
}

/// Like [`closed_within`], also keeping what was read.
async fn read_until_closed<I: AsyncRead + Unpin>(
    io: &mut I,
    since: Instant,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    };
    let closed = tokio::time::timeout(limit.saturating_sub(since.elapsed()), read_all)
        .await
        .ok()
        .map(|()| since.elapsed());
    (closed, seen)
}

/// Writes `bytes` one at a time, `pause` apart, stopping at the first failed write.
async fn dribble<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8], pause: Duration) {
    for byte in bytes {
        if io.write_all(&[*byte]).await.is_err() || io.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// A client whose receive buffer is small (64 KiB asked, the kernel doubles it), so its reads
/// open the window.
async fn small_window_tcp(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

const SSE_GET: &[u8] = b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n";

/// An h2c client (hyper) and a handle that finishes when its connection closes.
async fn h2c_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    h2_on(tcp).await
}

async fn h2_on<I>(
    io: I,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn get(uri: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
    Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// The first event's data on a response body.
async fn first_event(mut body: Incoming) -> String {
    let mut decoder = Decoder::new();
    loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            if let Some(message) = decoder.feed(&data).pop() {
                return message.data;
            }
        }
    }
}

/// Reads a response body to its end; the raw bytes.
async fn body_to_end(body: Incoming, limit: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(limit, body.collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|collected| collected.to_bytes().to_vec())
}

/// Reads at no more than `rate` bytes a second for `how_long`; `Err` says when the
/// connection was cut (the server dropped the stream, or the data ended).
async fn read_at_rate<R: AsyncRead + Unpin>(
    io: &mut R,
    rate: f64,
    how_long: Duration,
    dropped: &mut oneshot::Receiver<()>,
) -> Result<(usize, Duration), String> {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let (mut total, mut longest_gap, mut last) = (0usize, Duration::ZERO, Instant::now());
    while start.elapsed() < how_long {
        if (total as f64) > rate * start.elapsed().as_secs_f64() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let n = match tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => return Err(format!("no data for 10 s after {total} bytes")),
        };
        if dropped.try_recv().is_ok() {
            return Err(format!(
                "cut after {:?} having read {total} bytes",
                start.elapsed()
            ));
        }
        if n == 0 {
            return Err(format!(
                "ended after {:?} having read {total} bytes",
                start.elapsed()
            ));
        }
        total += n;
        longest_gap = longest_gap.max(last.elapsed());
        last = Instant::now();
    }
    Ok((total, longest_gap))
}

/// Panics seen on each thread, so a test can tell that none happened in the server's
/// connection tasks (which run on the test's own thread under `#[tokio::test]`).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            PANICS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("{thread}: {info}"));
            previous(info);
        }));
    });
}

fn panics_on_this_thread() -> Vec<String> {
    let me = std::thread::current().name().unwrap_or("?").to_owned();
    PANICS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|p| p.starts_with(&format!("{me}:")))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The first-request budget
// ---------------------------------------------------------------------------------------------

/// Attacks: "the first request must arrive within one header-read timeout from accept,
/// whatever the protocol (the preface peek, the TLS handshake and the request head or the
/// first HTTP/2 request all draw on it)" (module docs), and "a client that sends nothing, part
/// of a head, the preface alone or the preface and its settings is closed once it runs out"
/// (`header_read_timeout`). Each client keeps sending a byte (or a frame) every 150 ms, so a
/// timer that restarts on progress would never fire.
#[tokio::test]
async fn slowloris_dribbles_are_cut_one_header_read_timeout_after_accept() {
    const T: Duration = Duration::from_secs(2);
    const PAUSE: Duration = Duration::from_millis(150);
    let limit = T + Duration::from_secs(2);
    let tls = SelfSigned::new();
    let (plain, https) = plain_and_tls(&tls, T).await;

    // Writes with `feed` while reading until the server closes; what it answered.
    async fn attack<F>(addr: SocketAddr, feed: F) -> (Option<Duration>, Vec<u8>)
    where
        F: FnOnce(tokio::net::tcp::OwnedWriteHalf) -> futures_util::future::BoxFuture<'static, ()>,
    {
        let since = Instant::now();
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (mut read, write) = tcp.into_split();
        let writer = tokio::spawn(feed(write));
        let result = read_until_closed(&mut read, since, T + Duration::from_secs(2)).await;
        writer.abort();
        result
    }
    let head = b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nx-pad: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let hello = tls.client_hello();
    let (h1_head, preface, client_hello, pings, header_lines) = tokio::join!(
        attack(plain, |mut w| Box::pin(async move {
            dribble(&mut w, head, PAUSE).await
        })),
        attack(plain, |mut w| Box::pin(async move {
            dribble(&mut w, PREFACE_AND_SETTINGS, PAUSE).await
        })),
        attack(https, move |mut w| Box::pin(async move {
            dribble(&mut w, &hello, PAUSE).await
        })),
        attack(plain, |mut w| Box::pin(async move {
            let _ = w.write_all(PREFACE_AND_SETTINGS).await;
            for i in 0..100u8 {
                if w.write_all(&ping([i; 8])).await.is_err() {
                    return;
                }
                tokio::time::sleep(PAUSE).await;
            }
        })),
        attack(plain, |mut w| Box::pin(async move {
            // A whole header line every 150 ms: the head never ends.
            let _ = w.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n").await;
            for _ in 0..100 {
                if w.write_all(b"x-more: y\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(PAUSE).await;
            }
        })),
    );
    for (what, (closed, answered)) in [
        ("HTTP/1.1 head, a byte per 150 ms", h1_head),
        ("h2c preface + SETTINGS, a byte per 150 ms", preface),
        ("TLS ClientHello, a byte per 150 ms", client_hello),
        ("h2c preface, then a PING every 150 ms", pings),
        ("HTTP/1.1 head, a header line per 150 ms", header_lines),
    ] {
        eprintln!(
            "{what}: closed after {closed:?}, server sent {} bytes",
            answered.len()
        );
        assert!(
            closed.is_some(),
            "{what}: still open after T + 2 s ({limit:?})"
        );
        assert!(!answered.starts_with(b"HTTP/1.1 200"), "{what}: was served");
    }
}

/// Attacks: "How long a client has from accept to its first request" (`header_read_timeout`):
/// a request that arrives at 0.9 T, over every protocol, is served, and its stream stays open
/// past T.
#[tokio::test]
async fn a_first_request_at_nine_tenths_of_the_budget_is_served() {
    const T: Duration = Duration::from_secs(2);
    let late = T * 9 / 10;
    let tls = SelfSigned::new();
    let (plain, https) = plain_and_tls(&tls, T).await;

    let h1_silent_then_whole = async {
        let since = Instant::now();
        let tcp = TcpStream::connect(plain).await.unwrap();
        tokio::time::sleep(late.saturating_sub(since.elapsed())).await;
        let mut client = RawClient::get_on(tcp, plain, "/events", &[]).await;
        client.events(1).await.first().map(|m| m.data.clone())
    };
    let h1_dribbled_to_0_9_t = async {
        let since = Instant::now();
        let mut tcp = TcpStream::connect(plain).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (head, last) = SSE_GET.split_at(SSE_GET.len() - 1);
        // The head spread over 0.8 T, its last byte at 0.9 T.
        dribble(&mut tcp, head, T * 8 / 10 / head.len() as u32).await;
        tokio::time::sleep(late.saturating_sub(since.elapsed())).await;
        tcp.write_all(last).await.unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|_| String::from_utf8_lossy(&buf).into_owned())
    };
    let h2c_late_headers = async {
        let since = Instant::now();
        let (mut send, _conn) = h2c_client(plain).await;
        tokio::time::sleep(late.saturating_sub(since.elapsed())).await;
        let response = send
            .send_request(get(&format!("http://{plain}/events")))
            .await
            .ok()?;
        Some(first_event(response.into_body()).await)
    };
    let tls_h1_late_head = async {
        let since = Instant::now();
        let stream = tls.connect(https, b"http/1.1").await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        tokio::time::sleep(late.saturating_sub(since.elapsed())).await;
        let response = send.send_request(get("/events")).await.ok()?;
        Some(first_event(response.into_body()).await)
    };
    let tls_h2_late_headers = async {
        let since = Instant::now();
        let stream = tls.connect(https, b"h2").await;
        let (mut send, _conn) = h2_on(stream).await;
        tokio::time::sleep(late.saturating_sub(since.elapsed())).await;
        let response = send
            .send_request(get(&format!("https://localhost:{}/events", https.port())))
            .await
            .ok()?;
        Some(first_event(response.into_body()).await)
    };
    let tls_late_handshake = async {
        // The ClientHello at 0.6 T, the request right after the handshake.
        let tcp = TcpStream::connect(https).await.unwrap();
        tokio::time::sleep(T * 6 / 10).await;
        let stream = tls.connect_on(tcp, b"h2").await;
        let (mut send, _conn) = h2_on(stream).await;
        let response = send
            .send_request(get(&format!("https://localhost:{}/events", https.port())))
            .await
            .ok()?;
        Some(first_event(response.into_body()).await)
    };
    let (a, b, c, d, e, f) = tokio::join!(
        h1_silent_then_whole,
        h1_dribbled_to_0_9_t,
        h2c_late_headers,
        tls_h1_late_head,
        tls_h2_late_headers,
        tls_late_handshake
    );
    eprintln!("{a:?} {b:?} {c:?} {d:?} {e:?} {f:?}");
    assert_eq!(a.as_deref(), Some("live"), "HTTP/1.1 head whole at 0.9 T");
    assert_eq!(
        b.as_deref(),
        Some("HTTP/1.1 200"),
        "HTTP/1.1 head ending at 0.9 T"
    );
    assert_eq!(c.as_deref(), Some("live"), "h2c HEADERS at 0.9 T");
    assert_eq!(
        d.as_deref(),
        Some("live"),
        "HTTP/1.1 over TLS, head at 0.9 T"
    );
    assert_eq!(e.as_deref(), Some("live"), "h2 over TLS, HEADERS at 0.9 T");
    assert_eq!(f.as_deref(), Some("live"), "TLS handshake from 0.6 T");
}

/// Attacks: "On HTTP/1.1 each later request head must also arrive within this time of the
/// previous response ending" (`header_read_timeout`): after a valid first request, a second
/// head that stalls, or is dribbled a byte per 150 ms, over plain TCP and TLS.
#[tokio::test]
async fn a_stalled_or_dribbled_second_head_is_cut_one_header_read_timeout_after_the_response() {
    const T: Duration = Duration::from_secs(2);
    let limit = T + Duration::from_secs(2);
    let tls = SelfSigned::new();
    let (listener, plain) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(T)
            .serve(plain_app()),
    );
    let (listener, https) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .header_read_timeout(T)
            .serve(plain_app()),
    );

    /// One request, its whole response, then `second` fed to the connection; when it closed
    /// after the first response ended, and whether a second response came.
    async fn second_head<I>(mut io: I, dribbled: bool) -> (Option<Duration>, bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        io.write_all(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        io.flush().await.unwrap();
        let mut response = Vec::new();
        while !response.ends_with(b"plain") {
            let mut buf = [0u8; 256];
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the first response ended");
            response.extend_from_slice(&buf[..n]);
        }
        let since = Instant::now();
        let (mut read, mut write) = tokio::io::split(io);
        let writer = tokio::spawn(async move {
            let second =
                b"GET /plain HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            if dribbled {
                dribble(&mut write, second, Duration::from_millis(150)).await;
            } else {
                let _ = write.write_all(&second[..20]).await;
                let _ = write.flush().await;
                std::future::pending::<()>().await;
            }
        });
        let (closed, rest) = read_until_closed(&mut read, since, T + Duration::from_secs(2)).await;
        writer.abort();
        (closed, rest.windows(5).any(|w| w == b"plain"))
    }
    let (stalled, dribbled, tls_stalled, tls_dribbled) = tokio::join!(
        async { second_head(TcpStream::connect(plain).await.unwrap(), false).await },
        async { second_head(TcpStream::connect(plain).await.unwrap(), true).await },
        async { second_head(tls.connect(https, b"http/1.1").await, false).await },
        async { second_head(tls.connect(https, b"http/1.1").await, true).await },
    );
    for (what, (closed, served)) in [
        ("second head stalled", stalled),
        ("second head dribbled", dribbled),
        ("TLS, second head stalled", tls_stalled),
        ("TLS, second head dribbled", tls_dribbled),
    ] {
        eprintln!("{what}: closed {closed:?} after the first response");
        assert!(closed.is_some(), "{what}: open after T + 2 s ({limit:?})");
        assert!(!served, "{what}: a second response came");
    }
}

// ---------------------------------------------------------------------------------------------
// The idle timeout
// ---------------------------------------------------------------------------------------------

/// Attacks: "HTTP/1.1 connections also close when the next request head is later than the
/// header_read_timeout, so for them the shorter of the two applies" (`idle_timeout`): with the
/// idle timeout the shorter, a silent keep-alive connection and one with part of a second head
/// are closed one idle timeout (and the one-second grace) after the response.
#[tokio::test]
async fn http1_the_idle_timeout_applies_when_it_is_the_shorter() {
    const IDLE: Duration = Duration::from_secs(1);
    const T: Duration = Duration::from_secs(20);
    let limit = IDLE + Duration::from_secs(1) + Duration::from_secs(2);
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(T)
            .idle_timeout(IDLE)
            .serve(plain_app()),
    );
    async fn after_one_request(
        addr: SocketAddr,
        then: &'static [u8],
        limit: Duration,
    ) -> Option<Duration> {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        while !response.ends_with(b"plain") {
            let mut buf = [0u8; 256];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            response.extend_from_slice(&buf[..n]);
        }
        let since = Instant::now();
        tcp.write_all(then).await.unwrap();
        closed_within(&mut tcp, since, limit).await
    }
    let (silent, partial) = tokio::join!(
        after_one_request(addr, b"", limit),
        after_one_request(addr, b"GET /plain HTTP/1.1\r\nho", limit),
    );
    eprintln!(
        "idle keep-alive closed after {silent:?}; with part of a second head after {partial:?}"
    );
    assert!(silent.is_some(), "silent: open after idle + 1 s + 2 s");
    assert!(
        partial.is_some(),
        "partial second head: open after idle + 1 s + 2 s"
    );
}

/// Attacks: "How long a connection may carry no request after its last response ended (for
/// HTTP/2: with no stream open) before it is closed; an HTTP/2 connection is first sent a
/// GOAWAY and dropped a second later if still open" (`idle_timeout`). A raw h2c client that
/// keeps sending PINGs, WINDOW_UPDATEs and SETTINGS (none of them a request) and ignores the
/// GOAWAY; beside it, a client that opens and ends a stream every 400 ms is never idle, and is
/// closed once it stops.
#[tokio::test]
async fn http2_frames_that_are_not_requests_do_not_hold_an_idle_connection_open() {
    const IDLE: Duration = Duration::from_secs(1);
    let limit = IDLE + Duration::from_secs(1) + Duration::from_secs(2);
    let (listener, addr) = bind().await;
    tokio::spawn(Server::new(listener).idle_timeout(IDLE).serve(plain_app()));

    let chatter = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (mut read, mut write) = tcp.into_split();
        write
            .write_all(&[PREFACE_AND_SETTINGS, &get_on(1)].concat())
            .await
            .unwrap();
        let mut frames = FrameReader::new();
        // The response, to its end.
        loop {
            let f = frames.next(&mut read).await.expect("the response");
            if f.stream == 1 && f.flags & 0x1 != 0 && (f.kind == DATA || f.kind == HEADERS) {
                break;
            }
        }
        let since = Instant::now();
        let writer = tokio::spawn(async move {
            for i in 0..100u8 {
                let mut burst = ping([i; 8]);
                burst.extend(frame(0x8, 0, 0, &1u32.to_be_bytes()));
                burst.extend(frame(0x4, 0, 0, &[]));
                if write.write_all(&burst).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        let mut goaway = None;
        let read_all = async {
            while let Some(f) = frames.next(&mut read).await {
                if f.kind == GOAWAY && goaway.is_none() {
                    goaway = Some(since.elapsed());
                }
            }
        };
        let closed = tokio::time::timeout(limit, read_all)
            .await
            .ok()
            .map(|()| since.elapsed());
        writer.abort();
        (goaway, closed)
    };

    let busy = async {
        let (mut send, conn) = h2c_client(addr).await;
        let since = Instant::now();
        let mut open_throughout = true;
        while since.elapsed() < IDLE * 3 {
            let response = send
                .send_request(get(&format!("http://{addr}/plain")))
                .await;
            let Ok(response) = response else {
                open_throughout = false;
                break;
            };
            let _ = response.into_body().collect().await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        open_throughout &= !conn.is_finished();
        let stopped = Instant::now();
        let closed = tokio::time::timeout(limit, conn)
            .await
            .ok()
            .map(|_| stopped.elapsed());
        (open_throughout, closed)
    };
    let ((goaway, closed), (open_throughout, busy_closed)) = tokio::join!(chatter, busy);
    eprintln!(
        "chatty idle client: GOAWAY after {goaway:?}, closed after {closed:?}; busy client closed {busy_closed:?} after its last request"
    );
    assert!(
        goaway.is_some(),
        "an idle HTTP/2 connection is sent a GOAWAY"
    );
    assert!(
        closed.is_some(),
        "dropped within idle + 1 s + 2 s although it keeps chattering"
    );
    assert!(
        open_throughout,
        "a connection that keeps bringing requests is not idle"
    );
    assert!(busy_closed.is_some(), "closed once its requests stop");
}

// ---------------------------------------------------------------------------------------------
// The send timeout
// ---------------------------------------------------------------------------------------------

/// Attacks: "a stream whose body has had a frame out, waiting for window, for this timeout is
/// reset (`RST_STREAM`) and its body dropped" (`send_timeout`) and "an HTTP/2 stream whose
/// client stopped reading it (a frame its body has out got no flow-control window for one send
/// timeout) is reset alone" (module docs), over h2c and h2 over TLS.
///
/// An HTTP/2 client whose connection task keeps reading the socket and answering PINGs, but
/// whose application stopped reading the stream: it grants no more flow-control window, so the
/// server has bytes to send that the peer never takes in. No socket write is pending (the
/// socket's send timeout never arms), the PINGs are answered and the stream is in flight: only
/// the stream's own timing can cut it.
#[tokio::test]
async fn http2_a_stream_the_client_stops_reading_is_cut_by_the_send_timeout() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(1);
    let limit = SEND_TIMEOUT + Duration::from_secs(4);
    let tls = SelfSigned::new();
    let (app, h2c_dropped) = firehose();
    let (listener, h2c) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .send_timeout(SEND_TIMEOUT)
            .http2_keep_alive(Some(Duration::from_millis(500)), Duration::from_secs(1))
            .serve(app),
    );
    let (app, tls_dropped) = firehose();
    let (listener, https) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .send_timeout(SEND_TIMEOUT)
            .http2_keep_alive(Some(Duration::from_millis(500)), Duration::from_secs(1))
            .serve(app),
    );
    // hyper's client: its connection task reads every frame and answers PINGs; the body is
    // held and never polled, so no WINDOW_UPDATE goes out for it.
    let (mut send, h2c_conn) = h2c_client(h2c).await;
    let h2c_body = send
        .send_request(get(&format!("http://{h2c}/events")))
        .await
        .unwrap()
        .into_body();
    let (mut send_tls, tls_conn) = h2_on(tls.connect(https, b"h2").await).await;
    let tls_body = send_tls
        .send_request(get(&format!("https://localhost:{}/events", https.port())))
        .await
        .unwrap()
        .into_body();
    let since = Instant::now();
    let (h2c_cut, tls_cut) = tokio::join!(
        tokio::time::timeout(limit, h2c_dropped),
        tokio::time::timeout(limit, tls_dropped),
    );
    eprintln!(
        "h2c: stream dropped {:?}; h2 over TLS: {:?} (waited up to {limit:?}); connections still open: {} {}",
        h2c_cut.is_ok().then(|| since.elapsed()),
        tls_cut.is_ok().then(|| since.elapsed()),
        !h2c_conn.is_finished(),
        !tls_conn.is_finished(),
    );
    drop((h2c_body, tls_body));
    assert!(
        h2c_cut.is_ok(),
        "h2c: a stream whose reader stopped is still served {limit:?} later"
    );
    assert!(
        tls_cut.is_ok(),
        "h2 over TLS: a stream whose reader stopped is still served {limit:?} later"
    );
}

/// Attacks: "one that stops reading is closed one timeout after its buffers fill"
/// (`send_timeout`), over HTTP/1.1 over TLS, raw h2c and h2 over TLS with open windows, and
/// `axum::SendTimeoutListener`: "A listener for axum::serve whose connections close when the
/// peer accepts no bytes for a set time".
#[tokio::test]
async fn stalled_readers_are_cut_within_the_send_timeout_over_every_protocol() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(1);
    let limit = SEND_TIMEOUT + Duration::from_secs(4);
    let tls = SelfSigned::new();
    let mut cuts = Vec::new();
    let mut clients: Vec<Box<dyn std::any::Any + Send>> = Vec::new();

    // HTTP/1.1 over TLS.
    let (app, dropped) = firehose();
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .send_timeout(SEND_TIMEOUT)
            .serve(app),
    );
    let mut stream = tls
        .connect_on(small_window_tcp(addr).await, b"http/1.1")
        .await;
    stream.write_all(SSE_GET).await.unwrap();
    stream.flush().await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    clients.push(Box::new(stream));
    cuts.push(("HTTP/1.1 over TLS", dropped));

    // Raw h2c, windows wide open, then the socket is never read again.
    let (app, dropped) = firehose();
    let (listener, addr) = bind().await;
    tokio::spawn(Server::new(listener).send_timeout(SEND_TIMEOUT).serve(app));
    let mut tcp = small_window_tcp(addr).await;
    tcp.write_all(&[preface_with_open_windows(), get_on(1)].concat())
        .await
        .unwrap();
    clients.push(Box::new(tcp));
    cuts.push(("h2c, windows open", dropped));

    // h2 over TLS, the same.
    let (app, dropped) = firehose();
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .send_timeout(SEND_TIMEOUT)
            .serve(app),
    );
    let mut stream = tls.connect_on(small_window_tcp(addr).await, b"h2").await;
    stream
        .write_all(&[preface_with_open_windows(), get_on(1)].concat())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    clients.push(Box::new(stream));
    cuts.push(("h2 over TLS, windows open", dropped));

    // axum::serve behind SendTimeoutListener.
    let (addr, dropped) = axum_firehose(SEND_TIMEOUT).await;
    let mut tcp = small_window_tcp(addr).await;
    tcp.write_all(SSE_GET).await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    clients.push(Box::new(tcp));
    cuts.push(("axum::serve + SendTimeoutListener", dropped));

    let since = Instant::now();
    let results =
        futures_util::future::join_all(cuts.into_iter().map(|(what, dropped)| async move {
            (what, tokio::time::timeout(limit, dropped).await)
        }))
        .await;
    for (what, cut) in results {
        eprintln!(
            "{what}: stalled reader cut: {}, by {:?}",
            cut.is_ok(),
            since.elapsed()
        );
        assert!(
            cut.is_ok(),
            "{what}: a reader that stopped is still served {limit:?} later"
        );
    }
    drop(clients);
}

/// Attacks: "a client that empties its receive buffer within every timeout is never cut,
/// however slowly it reads" (`send_timeout`, `io::SendTimeout`) and "as with serve::Server, a
/// client that empties its receive buffer within every timeout is never cut"
/// (`SendTimeoutListener`): readers at 1.5x and 3x the floor (receive buffer / timeout) over
/// HTTP/1.1, at 2x over TLS, and at 1.5x behind `SendTimeoutListener`. A trickle reader far
/// below the floor is reported, not judged (no promise covers it).
#[tokio::test]
async fn slow_but_live_readers_above_the_floor_are_never_cut() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(2);
    let run_for = SEND_TIMEOUT * 3;
    let tls = SelfSigned::new();

    async fn plain_server(tls: Option<&SelfSigned>) -> (SocketAddr, oneshot::Receiver<()>) {
        let (app, dropped) = firehose();
        let (listener, addr) = bind().await;
        let mut server = Server::new(listener).send_timeout(SEND_TIMEOUT);
        if let Some(tls) = tls {
            server = server.rustls(tls.server.clone());
        }
        tokio::spawn(server.serve(app));
        (addr, dropped)
    }

    async fn reader(
        what: &'static str,
        addr: SocketAddr,
        mut dropped: oneshot::Receiver<()>,
        factor: f64,
        tls: Option<Arc<SelfSigned>>,
        run_for: Duration,
    ) -> (&'static str, Result<(usize, Duration), String>, f64) {
        let tcp = small_window_tcp(addr).await;
        let buffer = socket2::SockRef::from(&tcp).recv_buffer_size().unwrap() as f64;
        let rate = factor * buffer / SEND_TIMEOUT.as_secs_f64();
        let result = match tls {
            Some(tls) => {
                let mut stream = tls.connect_on(tcp, b"http/1.1").await;
                stream.write_all(SSE_GET).await.unwrap();
                stream.flush().await.unwrap();
                read_at_rate(&mut stream, rate, run_for, &mut dropped).await
            }
            None => {
                let mut tcp = tcp;
                tcp.write_all(SSE_GET).await.unwrap();
                read_at_rate(&mut tcp, rate, run_for, &mut dropped).await
            }
        };
        (what, result, rate)
    }

    let (a, a_dropped) = plain_server(None).await;
    let (b, b_dropped) = plain_server(None).await;
    let (c, c_dropped) = plain_server(Some(&tls)).await;
    let (d, d_dropped) = axum_firehose(SEND_TIMEOUT).await;
    let (e, e_dropped) = plain_server(None).await;
    let trickle = async {
        let mut dropped = e_dropped;
        let mut tcp = small_window_tcp(e).await;
        tcp.write_all(SSE_GET).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 10];
        while start.elapsed() < run_for {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if dropped.try_recv().is_ok() {
                return Some(start.elapsed());
            }
            let _ = tcp.read(&mut buf).await;
        }
        None
    };
    let (ra, rb, rc, rd, trickled) = tokio::join!(
        reader(
            "HTTP/1.1 at 1.5x the floor",
            a,
            a_dropped,
            1.5,
            None,
            run_for
        ),
        reader("HTTP/1.1 at 3x the floor", b, b_dropped, 3.0, None, run_for),
        reader(
            "HTTP/1.1 over TLS at 2x the floor",
            c,
            c_dropped,
            2.0,
            Some(tls.clone()),
            run_for
        ),
        reader(
            "SendTimeoutListener at 1.5x the floor",
            d,
            d_dropped,
            1.5,
            None,
            run_for
        ),
        trickle,
    );
    eprintln!(
        "a reader taking 100 B/s (far below the floor) was cut after {trickled:?} (not judged)"
    );
    for (what, result, rate) in [ra, rb, rc, rd] {
        eprintln!("{what} ({rate:.0} B/s): {result:?}");
        let (total, _) = result.unwrap_or_else(|cut| panic!("{what}: {cut}"));
        assert!(total > 0);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 keep-alive
// ---------------------------------------------------------------------------------------------

/// Attacks: "a peer that stops answering is closed within interval + timeout of its last
/// frame, even while its streams have nothing to send" (`http2_keep_alive`), over TLS, for a
/// peer that keeps its TCP alive (the kernel ACKs, the socket is read) but writes nothing.
#[tokio::test]
async fn http2_over_tls_a_peer_silent_to_pings_is_closed() {
    const INTERVAL: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(1);
    let limit = INTERVAL + TIMEOUT + Duration::from_secs(3);
    let tls = SelfSigned::new();
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .http2_keep_alive(Some(INTERVAL), TIMEOUT)
            .serve(live_app(SseLayer::new())),
    );
    let mut mute = tls.connect(addr, b"h2").await;
    mute.write_all(&[PREFACE_AND_SETTINGS, &get_on(1)].concat())
        .await
        .unwrap();
    mute.flush().await.unwrap();
    let since = Instant::now();
    let mut frames = FrameReader::new();
    let mut pings = 0;
    let read_all = async {
        while let Some(f) = frames.next(&mut mute).await {
            if f.kind == PING && f.flags & 1 == 0 {
                pings += 1;
            }
        }
    };
    let closed = tokio::time::timeout(limit, read_all)
        .await
        .ok()
        .map(|()| since.elapsed());
    eprintln!("mute h2-over-TLS peer: {pings} PINGs, closed after {closed:?}");
    assert!(pings > 0, "the server PINGs a quiet peer");
    assert!(closed.is_some(), "closed within interval + timeout + 3 s");
}

// ---------------------------------------------------------------------------------------------
// The connection cap
// ---------------------------------------------------------------------------------------------

/// Attacks: "A connection holds its slot until it closes: one that brings no request holds it
/// at most the header_read_timeout, one with no request in flight at most the idle_timeout (an
/// HTTP/2 one that ignores the GOAWAY sent then, one second more)" (`max_connections`) and "the
/// timeouts above bound how long a client that sends nothing useful holds a slot" (module
/// docs). Round 1: every slot taken by a silent TCP client, a TLS ClientHello dribbled, an
/// HTTP/1.1 head dribbled. Round 2: every slot taken by an h2c client that brought one request
/// and now chatters PINGs and ignores the GOAWAY.
#[tokio::test]
async fn max_connections_squatters_hold_their_slots_only_for_the_timeouts() {
    const T: Duration = Duration::from_millis(1500);
    const IDLE: Duration = Duration::from_millis(1500);
    let tls = SelfSigned::new();

    // Round 1: no request ever.
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .max_connections(3)
            .header_read_timeout(T)
            .rustls(tls.server.clone())
            .serve(live_app(SseLayer::new())),
    );
    let mut squatters = Vec::new();
    let silent = TcpStream::connect(addr).await.unwrap();
    squatters.push(tokio::spawn(async move {
        let _silent = silent;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    let hello = tls.client_hello();
    let mut hello_tcp = TcpStream::connect(addr).await.unwrap();
    squatters.push(tokio::spawn(async move {
        dribble(&mut hello_tcp, &hello, Duration::from_millis(100)).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    let mut head_tcp = TcpStream::connect(addr).await.unwrap();
    squatters.push(tokio::spawn(async move {
        // Plain bytes on a TLS port: as good as junk, and dribbled.
        dribble(&mut head_tcp, SSE_GET, Duration::from_millis(100)).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let since = Instant::now();
    let served = tokio::time::timeout(T + Duration::from_secs(3), async {
        let stream = tls.connect(addr, b"h2").await;
        let (mut send, _conn) = h2_on(stream).await;
        let response = send
            .send_request(get(&format!("https://localhost:{}/events", addr.port())))
            .await
            .unwrap();
        first_event(response.into_body()).await
    })
    .await;
    eprintln!(
        "round 1: a real client was served after {:?}",
        since.elapsed()
    );
    squatters.iter().for_each(|s| s.abort());
    assert_eq!(
        served.as_deref().ok(),
        Some("live"),
        "round 1: a slot frees up within T + 3 s"
    );

    // Round 2: one request each, then idle chatter.
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .max_connections(2)
            .header_read_timeout(T)
            .idle_timeout(IDLE)
            .serve(plain_app()),
    );
    let mut squatters = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = tcp.into_split();
        write
            .write_all(&[PREFACE_AND_SETTINGS, &get_on(1)].concat())
            .await
            .unwrap();
        let mut frames = FrameReader::new();
        loop {
            let f = frames.next(&mut read).await.expect("the response");
            if f.stream == 1 && f.flags & 0x1 != 0 {
                break;
            }
        }
        squatters.push(tokio::spawn(async move {
            let _read = read;
            for i in 0..200u8 {
                if write.write_all(&ping([i; 8])).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }));
    }
    let since = Instant::now();
    let served = tokio::time::timeout(
        IDLE + Duration::from_secs(1) + Duration::from_secs(3),
        async {
            let (mut send, _conn) = h2c_client(addr).await;
            let response = send
                .send_request(get(&format!("http://{addr}/plain")))
                .await
                .unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        },
    )
    .await;
    eprintln!(
        "round 2: a real client was served after {:?} (idle timeout {IDLE:?})",
        since.elapsed()
    );
    squatters.iter().for_each(|s| s.abort());
    assert_eq!(
        served.as_ref().ok().map(|b| &b[..]),
        Some(&b"plain"[..]),
        "round 2: a slot frees up within idle + 1 s + 3 s"
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

/// Attacks: "Graceful shutdown from a signal future: stop accepting, end the SSE streams (the
/// Shutdown given to Server::shutdown, with its final event), let connections finish their
/// responses" (module docs) and "Connections that have not brought a request yet (silent,
/// mid-preface, mid-handshake) are closed as the shutdown starts" (`graceful_timeout`), with
/// streams that are mid-flow (an event every 5 ms) over HTTP/1.1, h2c, and both over TLS, and
/// a TLS connection whose ClientHello was answered but that never finishes its handshake. The
/// graceful timeout is 30 s: the server must return long before it.
#[tokio::test]
async fn graceful_shutdown_mid_event_and_mid_handshake_ends_every_stream_cleanly() {
    const GRACE: Duration = Duration::from_secs(30);
    let tls = SelfSigned::new();
    let shutdown = Shutdown::new();
    let bye = || {
        Event::builder()
            .event("bye")
            .data("restarting")
            .build()
            .ok()
    };
    let (stop_plain, signal_plain) = stop_signal();
    let (stop_tls, signal_tls) = stop_signal();
    let (listener, plain) = bind().await;
    let plain_server = tokio::spawn(
        Server::new(listener)
            .shutdown(&shutdown, bye())
            .graceful_timeout(GRACE)
            .serve_with_graceful_shutdown(
                ticker_app(SseLayer::new().shutdown(&shutdown)),
                signal_plain,
            ),
    );
    let tls_shutdown = Shutdown::new();
    let (listener, https) = bind().await;
    let tls_server = tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .shutdown(&tls_shutdown, bye())
            .graceful_timeout(GRACE)
            .serve_with_graceful_shutdown(
                ticker_app(SseLayer::new().shutdown(&tls_shutdown)),
                signal_tls,
            ),
    );

    // Streams, each already flowing.
    let mut h1 = RawClient::get(plain, "/events", &[]).await;
    assert_eq!(h1.events(1).await.len(), 1);
    let (mut h2c, _h2c_conn) = h2c_client(plain).await;
    let mut h2c_body = h2c
        .send_request(get(&format!("http://{plain}/events")))
        .await
        .unwrap()
        .into_body();
    let h2c_first = h2c_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    let (mut h2, _h2_conn) = h2_on(tls.connect(https, b"h2").await).await;
    let mut h2_body = h2
        .send_request(get(&format!("https://localhost:{}/events", https.port())))
        .await
        .unwrap()
        .into_body();
    let h2_first = h2_body.frame().await.unwrap().unwrap().into_data().unwrap();
    let (mut h1_tls, h1_tls_conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls.connect(https, b"http/1.1").await))
            .await
            .unwrap();
    tokio::spawn(h1_tls_conn);
    let mut h1_tls_body = h1_tls
        .send_request(get("/events"))
        .await
        .unwrap()
        .into_body();
    let h1_tls_first = h1_tls_body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();

    // Mid-handshake: the ClientHello sent, the server's flight read, no Finished ever.
    let mut half_tls = TcpStream::connect(https).await.unwrap();
    half_tls.write_all(&tls.client_hello()).await.unwrap();
    let mut flight = [0u8; 512];
    let n = half_tls.read(&mut flight).await.unwrap();
    assert!(
        n > 0 && flight[0] == 0x16,
        "the server answered the ClientHello"
    );
    // Mid-preface and silent, on the plain port.
    let mut half_preface = TcpStream::connect(plain).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut silent = TcpStream::connect(plain).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let since = Instant::now();
    stop_plain.send(()).unwrap();
    stop_tls.send(()).unwrap();
    let limit = Duration::from_secs(5);
    let (_, h1_messages) = h1.read_to_end().await;
    let h1_raw_ok = h1.ended;
    let mut h2c_bytes = h2c_first.to_vec();
    h2c_bytes.extend(body_to_end(h2c_body, limit).await.expect("h2c body ends"));
    let mut h2_bytes = h2_first.to_vec();
    h2_bytes.extend(
        body_to_end(h2_body, limit)
            .await
            .expect("h2 over TLS body ends"),
    );
    let mut h1_tls_bytes = h1_tls_first.to_vec();
    h1_tls_bytes.extend(
        body_to_end(h1_tls_body, limit)
            .await
            .expect("h1 over TLS body ends"),
    );
    for (what, bytes) in [
        ("h2c", &h2c_bytes),
        ("h2 over TLS", &h2_bytes),
        ("HTTP/1.1 over TLS", &h1_tls_bytes),
    ] {
        assert!(bytes.ends_with(b"\n\n"), "{what}: ends on a whole event");
        let messages = Decoder::new().feed(bytes);
        assert_eq!(
            messages.last().map(|m| m.event.as_str()),
            Some("bye"),
            "{what}"
        );
        assert!(
            messages[..messages.len() - 1]
                .iter()
                .all(|m| m.data.len() == 4096 && m.event == "message"),
            "{what}: every event before the last is whole"
        );
    }
    assert!(h1_raw_ok, "HTTP/1.1: the response was finished");
    assert_eq!(
        h1_messages.last().map(|m| m.event.as_str()),
        Some("bye"),
        "HTTP/1.1"
    );
    for (what, io) in [
        ("mid-TLS-handshake", &mut half_tls),
        ("mid-preface", &mut half_preface),
        ("silent", &mut silent),
    ] {
        let closed = closed_within(io, since, limit).await;
        eprintln!("{what}: closed {closed:?} after the signal");
        assert!(closed.is_some(), "{what}: closed as the shutdown starts");
    }
    let returned = tokio::time::timeout(limit, async {
        plain_server.await.unwrap();
        tls_server.await.unwrap();
    })
    .await;
    eprintln!(
        "both servers returned {:?} after the signal",
        since.elapsed()
    );
    assert!(
        returned.is_ok(),
        "the servers return well before the 30 s graceful timeout"
    );
}

/// Attacks: "tells every connection to finish its responses and take no more requests, and
/// returns once they are all closed" (`serve_with_graceful_shutdown`): keep-alive connections
/// with no response in flight (HTTP/1.1, h2c, h2 over TLS, all from well-behaved clients) have
/// nothing to finish; the server must not sit out its 30 s graceful timeout for them.
#[tokio::test]
async fn graceful_shutdown_does_not_wait_for_idle_keep_alive_connections() {
    const GRACE: Duration = Duration::from_secs(30);
    let tls = SelfSigned::new();
    let (stop, signal) = stop_signal();
    let (listener, plain) = bind().await;
    let plain_server = tokio::spawn(
        Server::new(listener)
            .graceful_timeout(GRACE)
            .serve_with_graceful_shutdown(plain_app(), signal),
    );
    let (stop_tls, signal_tls) = stop_signal();
    let (listener, https) = bind().await;
    let tls_server = tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .graceful_timeout(GRACE)
            .serve_with_graceful_shutdown(plain_app(), signal_tls),
    );
    let (mut h1, h1_conn) = hyper::client::conn::http1::handshake(TokioIo::new(
        TcpStream::connect(plain).await.unwrap(),
    ))
    .await
    .unwrap();
    let h1_conn = tokio::spawn(h1_conn);
    let body = h1.send_request(get("/plain")).await.unwrap().into_body();
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"plain");
    let (mut h2c, h2c_conn) = h2c_client(plain).await;
    let body = h2c
        .send_request(get(&format!("http://{plain}/plain")))
        .await
        .unwrap()
        .into_body();
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"plain");
    let (mut h2, h2_conn) = h2_on(tls.connect(https, b"h2").await).await;
    let body = h2
        .send_request(get(&format!("https://localhost:{}/plain", https.port())))
        .await
        .unwrap()
        .into_body();
    assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"plain");

    let since = Instant::now();
    stop.send(()).unwrap();
    stop_tls.send(()).unwrap();
    let returned = tokio::time::timeout(Duration::from_secs(5), async {
        plain_server.await.unwrap();
        tls_server.await.unwrap();
    })
    .await;
    eprintln!(
        "servers with only idle keep-alive connections returned after {:?}; client connections finished: {} {} {}",
        since.elapsed(),
        h1_conn.is_finished(),
        h2c_conn.is_finished(),
        h2_conn.is_finished()
    );
    assert!(
        returned.is_ok(),
        "returned within 5 s of the signal (graceful timeout 30 s)"
    );
}

/// Attacks `graceful_timeout`'s "Saturates at 2³¹−1 ms" and "How long a graceful shutdown
/// waits for connections to finish before closing them", `shutdown`'s "Without it, open
/// streams hold the shutdown until the deadline", and a shutdown signalled twice over (two
/// servers sharing one `Shutdown`, and a signal that is ready at once).
#[tokio::test]
async fn graceful_shutdown_with_zero_and_huge_timeouts_and_twice() {
    let limit = Duration::from_secs(4);

    // Zero: the streams are closed at once, no final event needed.
    let shutdown = Shutdown::new();
    let (stop, signal) = stop_signal();
    let (listener, addr) = bind().await;
    let server = tokio::spawn(
        Server::new(listener)
            .shutdown(&shutdown, None)
            .graceful_timeout(Duration::ZERO)
            .serve_with_graceful_shutdown(ticker_app(SseLayer::new().shutdown(&shutdown)), signal),
    );
    let mut zero_client = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(zero_client.events(1).await.len(), 1);
    let since = Instant::now();
    stop.send(()).unwrap();
    let zero = tokio::time::timeout(limit, server).await;
    eprintln!("graceful_timeout(0): returned after {:?}", since.elapsed());
    assert!(
        matches!(zero, Ok(Ok(()))),
        "graceful_timeout(0) returns (no panic) within 4 s"
    );
    assert!(closed_within(&mut zero_client.stream, since, limit)
        .await
        .is_some());

    // Duration::MAX with a Shutdown: the streams end, so the server returns without waiting
    // 24.8 days.
    let shutdown = Shutdown::new();
    let (stop, signal) = stop_signal();
    let (listener, addr) = bind().await;
    let server = tokio::spawn(
        Server::new(listener)
            .shutdown(
                &shutdown,
                Event::builder().event("bye").data("").build().ok(),
            )
            .graceful_timeout(Duration::MAX)
            .serve_with_graceful_shutdown(live_app(SseLayer::new().shutdown(&shutdown)), signal),
    );
    let mut client = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(client.events(1).await[0].data, "live");
    let since = Instant::now();
    stop.send(()).unwrap();
    let (_, messages) = client.read_to_end().await;
    let huge = tokio::time::timeout(limit, server).await;
    eprintln!(
        "graceful_timeout(MAX): returned after {:?}",
        since.elapsed()
    );
    assert_eq!(messages.last().map(|m| m.event.as_str()), Some("bye"));
    assert!(
        matches!(huge, Ok(Ok(()))),
        "graceful_timeout(MAX) returns once streams end"
    );

    // Duration::MAX without a Shutdown: the stream holds the server; once the client leaves,
    // the server returns.
    let (stop, signal) = stop_signal();
    let (listener, addr) = bind().await;
    let server = tokio::spawn(
        Server::new(listener)
            .graceful_timeout(Duration::MAX)
            .serve_with_graceful_shutdown(live_app(SseLayer::new()), signal),
    );
    let mut client = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(client.events(1).await[0].data, "live");
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!server.is_finished(), "an open stream holds the shutdown");
    drop(client);
    let since = Instant::now();
    let left = tokio::time::timeout(limit, server).await;
    eprintln!(
        "the held server returned {:?} after its last client left",
        since.elapsed()
    );
    assert!(
        matches!(left, Ok(Ok(()))),
        "returns once the last connection closes"
    );

    // Two servers on one Shutdown, stopped one after the other: the switch is pulled twice.
    let shutdown = Shutdown::new();
    let mut servers = Vec::new();
    let mut stops = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, signal) = stop_signal();
        let (listener, addr) = bind().await;
        servers.push(tokio::spawn(
            Server::new(listener)
                .shutdown(
                    &shutdown,
                    Event::builder().event("bye").data("").build().ok(),
                )
                .graceful_timeout(Duration::from_secs(30))
                .serve_with_graceful_shutdown(
                    live_app(SseLayer::new().shutdown(&shutdown)),
                    signal,
                ),
        ));
        let mut client = RawClient::get(addr, "/events", &[]).await;
        assert_eq!(client.events(1).await[0].data, "live");
        clients.push(client);
        stops.push(stop);
    }
    let since = Instant::now();
    for stop in stops {
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let (_, messages) = client.read_to_end().await;
        assert_eq!(
            messages.last().map(|m| m.event.as_str()),
            Some("bye"),
            "server {i}"
        );
    }
    for (i, server) in servers.into_iter().enumerate() {
        let done = tokio::time::timeout(limit.saturating_sub(since.elapsed()), server).await;
        assert!(
            matches!(done, Ok(Ok(()))),
            "server {i} returns after a shared trigger"
        );
    }

    // A signal that is ready at once: nothing is served, the server returns.
    let (listener, addr) = bind().await;
    let server = tokio::spawn(
        Server::new(listener).serve_with_graceful_shutdown(live_app(SseLayer::new()), async {}),
    );
    let done = tokio::time::timeout(limit, server).await;
    assert!(
        matches!(done, Ok(Ok(()))),
        "a ready signal: the server returns"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "and no longer accepts"
    );
}

// ---------------------------------------------------------------------------------------------
// Extremes
// ---------------------------------------------------------------------------------------------

/// Attacks every "Saturates at 2³¹−1 ms" (`send_timeout`, `header_read_timeout`,
/// `idle_timeout`, `http2_keep_alive`, `graceful_timeout`) and "At least 1"
/// (`max_connections`): zero and `Duration::MAX` everywhere, and connection caps of 0 and
/// `usize::MAX`, never panic; with `Duration::MAX` everything is served, and a cap of 0 acts
/// as 1.
#[tokio::test]
async fn extreme_durations_never_panic() {
    record_panics();
    let tls = SelfSigned::new();
    let limit = Duration::from_secs(5);
    for extreme in [Duration::ZERO, Duration::MAX] {
        let (stop, signal) = stop_signal();
        let (listener, addr) = bind().await;
        let configure = |server: Server| {
            server
                .send_timeout(extreme)
                .header_read_timeout(extreme)
                .idle_timeout(extreme)
                .http2_keep_alive(Some(extreme), extreme)
                .graceful_timeout(extreme)
        };
        let server = tokio::spawn(
            configure(Server::new(listener).max_connections(usize::MAX))
                .serve_with_graceful_shutdown(live_app(SseLayer::new()), signal),
        );
        let (listener, https) = bind().await;
        let tls_server = tokio::spawn(
            configure(Server::new(listener).rustls(tls.server.clone()))
                .serve(live_app(SseLayer::new())),
        );
        // HTTP/1.1, h2c, h2 over TLS; with zero timeouts the server may close them at once.
        let h1 = tokio::time::timeout(limit, async {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(SSE_GET).await.ok()?;
            let mut buf = [0u8; 12];
            tcp.read_exact(&mut buf).await.ok()?;
            Some(buf.to_vec())
        })
        .await
        .ok()
        .flatten();
        let h2c = tokio::time::timeout(limit, async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let response = send
                .send_request(get(&format!("http://{addr}/events")))
                .await
                .ok()?;
            Some(first_event(response.into_body()).await)
        })
        .await
        .ok()
        .flatten();
        let h2 = tokio::time::timeout(limit, async {
            let tcp = TcpStream::connect(https).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = tokio_rustls::TlsConnector::from(tls.client_config(b"h2"))
                .connect(name, tcp)
                .await
                .ok()?;
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let response = send
                .send_request(get(&format!("https://localhost:{}/events", https.port())))
                .await
                .ok()?;
            Some(first_event(response.into_body()).await)
        })
        .await
        .ok()
        .flatten();
        eprintln!(
            "all timeouts {extreme:?}: HTTP/1.1 {:?}, h2c {h2c:?}, h2 over TLS {h2:?}",
            h1.as_deref().map(String::from_utf8_lossy)
        );
        if extreme == Duration::MAX {
            assert_eq!(
                h1.as_deref(),
                Some(&b"HTTP/1.1 200"[..]),
                "MAX: HTTP/1.1 served"
            );
            assert_eq!(h2c.as_deref(), Some("live"), "MAX: h2c served");
            assert_eq!(h2.as_deref(), Some("live"), "MAX: h2 over TLS served");
        }
        assert!(
            !tls_server.is_finished(),
            "{extreme:?}: the TLS server still runs"
        );
        tls_server.abort();
        stop.send(()).unwrap();
        if extreme == Duration::ZERO {
            let done = tokio::time::timeout(limit, server).await;
            assert!(
                matches!(done, Ok(Ok(()))),
                "zero: the shutdown returns without panicking"
            );
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                !server.is_finished() || server.await.is_ok(),
                "MAX: no panic"
            );
        }
    }

    // max_connections(0) is 1: a second connection waits while the first is held.
    let (listener, addr) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .max_connections(0)
            .serve(live_app(SseLayer::new())),
    );
    let mut first = RawClient::get(addr, "/events", &[]).await;
    assert_eq!(first.events(1).await[0].data, "live");
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(SSE_GET).await.unwrap();
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read_exact(&mut buf)).await;
    assert!(
        early.is_err(),
        "max_connections(0): the single slot is taken"
    );
    drop(first);
    let later = tokio::time::timeout(limit, second.read_exact(&mut buf)).await;
    assert!(
        matches!(later, Ok(Ok(_))) && &buf == b"HTTP/1.1 200",
        "then served"
    );

    let panics = panics_on_this_thread();
    assert!(
        panics.is_empty(),
        "panics in the server's tasks: {panics:?}"
    );
}

/// Attacks: "every connection gets a send timeout ... HTTP/2 connections get keep-alive
/// PINGs" and "the first request must arrive within one header-read timeout from accept"
/// (module docs) at scale: 500 SSE clients at once are all served, and 500 silent
/// connections at once are all closed within the header-read timeout plus slack, while the
/// server keeps serving.
#[tokio::test]
async fn five_hundred_connections_at_once() {
    const N: usize = 500;
    const T: Duration = Duration::from_secs(1);
    // A listen queue that holds the whole burst: with a short one (`TcpListener::bind` may
    // give 128), the kernel answers the overflow with SYN cookies and drops the handshake's
    // last ACK, so a silent client believes it is connected to a socket the server never
    // accepts, and no server timeout can reach it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(2048).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(T)
            .serve(live_app(SseLayer::new())),
    );
    let since = Instant::now();
    let served = futures_util::future::join_all((0..N).map(|_| async move {
        let mut client = RawClient::get(addr, "/events", &[]).await;
        let data = client.events(1).await.first().map(|m| m.data.clone());
        (client, data)
    }))
    .await;
    eprintln!("{N} SSE clients served in {:?}", since.elapsed());
    assert!(served
        .iter()
        .all(|(_, data)| data.as_deref() == Some("live")));

    let since = Instant::now();
    let limit = T + Duration::from_secs(4);
    let silent = futures_util::future::join_all((0..N).map(|_| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut tcp, since, limit).await
    }))
    .await;
    let open = silent.iter().filter(|c| c.is_none()).count();
    let slowest = silent.iter().flatten().max();
    eprintln!("{N} silent connections: slowest closed after {slowest:?}, {open} still open");
    assert_eq!(open, 0, "every silent connection is closed within T + 4 s");
    // The streams opened first are untouched by it all.
    let (mut client, _) = served.into_iter().next().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut probe = [0u8; 1];
    let still =
        tokio::time::timeout(Duration::from_millis(200), client.stream.read(&mut probe)).await;
    assert!(
        still.is_err(),
        "the first SSE stream is still open and quiet"
    );
}
