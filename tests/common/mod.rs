//! Helpers shared by the end-to-end tests: a hyper server on loopback and minimal clients.
#![allow(dead_code, unreachable_pub)]

pub mod alloc;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub mod hub;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(all(feature = "server", feature = "rustls"))]
pub mod serve;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower_sse::decode::{Decoder, Message};

/// Serves `svc` on 127.0.0.1 (HTTP/1.1 and h2c) until the runtime ends.
pub async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_wrapped(svc, |tcp| tcp).await
}

/// Like [`serve`], with each connection's IO wrapped by `wrap`.
pub async fn serve_wrapped<S, B, IO>(svc: S, wrap: fn(TcpStream) -> IO) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_counted(svc, wrap).await.0
}

/// Like [`serve_wrapped`], also returning how many connections the server holds now (a
/// connection counts until its task has finished and dropped everything it owned).
pub async fn serve_counted<S, B, IO>(
    svc: S,
    wrap: fn(TcpStream) -> IO,
) -> (SocketAddr, Arc<AtomicUsize>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let counter = live.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tcp.set_nodelay(true).unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            counter.fetch_add(1, Ordering::SeqCst);
            let counted = Counted(counter.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(wrap(tcp)), svc)
                    .await;
                drop(counted);
            });
        }
    });
    (addr, live)
}

/// Polls `check` every few milliseconds until it holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check()
}

/// A bare HTTP/1.1 client on a raw socket, so tests see (and control) every byte.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub head: String,
    chunk_left: usize,
    body: BytesMut,
    pub decoder: Decoder,
    pub ended: bool,
}

impl RawClient {
    pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::get_on(stream, addr, path, headers).await
    }

    pub async fn get_on(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawClient {
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
        {
            req.push_str("accept: text/event-stream\r\n");
        }
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut client = RawClient {
            stream,
            buf: BytesMut::new(),
            head: String::new(),
            chunk_left: 0,
            body: BytesMut::new(),
            decoder: Decoder::new(),
            ended: false,
        };
        while !client.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(
                client.read_more().await > 0,
                "connection closed before the response head"
            );
        }
        let end = client
            .buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        client.head = String::from_utf8(client.buf.split_to(end).to_vec()).unwrap();
        client
    }

    /// The value of a response header (first one), lower-cased name.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    pub fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    async fn read_more(&mut self) -> usize {
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
            .await
            .expect("read timed out")
            .unwrap();
        if n == 0 {
            self.ended = true;
        }
        n
    }

    /// Reads until at least one more body byte arrives (de-chunked); returns them.
    pub async fn next_bytes(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.dechunk() {
                return Some(bytes);
            }
            if self.ended || self.read_more().await == 0 {
                return None;
            }
        }
    }

    fn dechunk(&mut self) -> Option<Bytes> {
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"));
        if !chunked {
            let bytes = (!self.buf.is_empty()).then(|| self.buf.split().freeze());
            if let Some(length) = self.header("content-length") {
                let length: usize = length.parse().unwrap();
                self.chunk_left += bytes.as_ref().map_or(0, |b| b.len());
                if self.chunk_left >= length {
                    self.ended = true;
                }
            }
            return bytes;
        }
        loop {
            if self.chunk_left == usize::MAX {
                // the CRLF after a chunk's data
                if self.buf.len() < 2 {
                    break;
                }
                assert_eq!(&self.buf[..2], b"\r\n");
                self.buf.advance(2);
                self.chunk_left = 0;
                continue;
            }
            if self.chunk_left > 0 {
                if self.buf.is_empty() {
                    break;
                }
                let n = self.chunk_left.min(self.buf.len());
                self.body.extend_from_slice(&self.buf.split_to(n));
                self.chunk_left -= n;
                if self.chunk_left == 0 {
                    self.chunk_left = usize::MAX;
                }
                continue;
            }
            let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size = std::str::from_utf8(&self.buf[..line_end]).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            self.buf.advance(line_end + 2);
            if size == 0 {
                self.ended = true;
                break;
            }
            self.chunk_left = size;
        }
        (!self.body.is_empty()).then(|| self.body.split().freeze())
    }

    /// Reads until `n` events have been decoded (or the stream ends).
    pub async fn events(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next_bytes().await {
                Some(bytes) => out.extend(self.decoder.feed(&bytes)),
                None => break,
            }
        }
        out
    }

    /// Reads everything until the server ends the response.
    pub async fn read_to_end(&mut self) -> (Vec<u8>, Vec<Message>) {
        let mut raw = Vec::new();
        let mut messages = Vec::new();
        while let Some(bytes) = self.next_bytes().await {
            raw.extend_from_slice(&bytes);
            messages.extend(self.decoder.feed(&bytes));
            if self.ended {
                break;
            }
        }
        (raw, messages)
    }
}

/// An HTTP/2 (h2c, prior knowledge) client connection.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    // As browsers do: without it, the client's small RST_STREAM write can wait on a delayed ACK.
    tcp.set_nodelay(true).unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

pub fn h2_get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("accept", "text/event-stream")
        .body(Empty::new())
        .unwrap()
}

/// Sends a POST with a JSON body on a fresh connection; returns the status and the body.
pub async fn post_json(addr: SocketAddr, path: &str, json: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
        json.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

thread_local! {
    /// Where this thread's log lines go while `logs_of` runs on it.
    static LOG_SINK: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the current thread's sink, if one is open; elsewhere the line is dropped.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG_SINK.with(|sink| {
            if let Some(lines) = sink.borrow_mut().as_mut() {
                lines.extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged on this thread while `f` runs (up to DEBUG).
///
/// One global subscriber serves the whole test binary and writes each line to the sink of the
/// thread that logged it: with a thread-local default instead, tracing's per-call-site interest
/// cache can be computed by another test's thread while no subscriber is set there, and an
/// event is then lost.
pub async fn logs_of<F: std::future::Future>(f: F) -> (F::Output, String) {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| ThreadSink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    // A call site first met by another thread while the global subscriber was being set
    // could have cached "never": recompute them all with it in place.
    tracing::callsite::rebuild_interest_cache();
    LOG_SINK.with(|sink| *sink.borrow_mut() = Some(Vec::new()));
    let output = f.await;
    let lines = LOG_SINK
        .with(|sink| sink.borrow_mut().take())
        .unwrap_or_default();
    (output, String::from_utf8(lines).unwrap())
}

/// What the browser tests lack, if anything: Chromium, `npm ci --prefix tests/browser`, Node.
pub fn browser_tools_missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is missing (apt-get install -y chromium)"
        ));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some("playwright-core is missing (npm ci --prefix tests/browser)".into());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("node is missing".into());
    }
    None
}

/// Runs `tests/browser/<script>` with Node (it drives Chromium) and returns the JSON object it
/// prints, failing the test if a tool is missing, the run fails or takes over two minutes, or
/// the script reports an error.
pub async fn run_in_chromium(script: &str, args: &[String]) -> serde_json::Value {
    if let Some(missing) = browser_tools_missing() {
        panic!("the browser test cannot run: {missing}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let run = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser run finished in time")
        .expect("node started");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed: {stderr}\n{stdout}");
    let results: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bad output ({e}): {stdout}\n{stderr}"));
    assert!(
        results.get("error").is_none(),
        "browser run failed: {}",
        results["error"]
    );
    results
}

/// The `retry:` of the come-back block `bytes` end with, after checking the block says `why`
/// (`retry: <ms>\n: <why>\n\n`).
pub fn come_back_retry(bytes: &[u8], why: &str) -> u64 {
    let text = std::str::from_utf8(bytes).unwrap();
    let suffix = format!("\n: {why}\n\n");
    let head = text
        .strip_suffix(&suffix)
        .unwrap_or_else(|| panic!("no {why:?} block at the end of {text:?}"));
    let at = head.rfind("retry: ").expect("a retry line");
    head[at + "retry: ".len()..]
        .parse()
        .unwrap_or_else(|_| panic!("{text:?}"))
}

/// A port in 20000..32000 that nothing listens on now, different per process and call.
pub fn free_port(attempt: u64) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(attempt);
    hasher.write_u32(std::process::id());
    loop {
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        hasher.write_u16(port);
    }
}
