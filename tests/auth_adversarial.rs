//! Hostile tests of the authorization promises (`src/auth`, `src/grants.rs`, audiences), over
//! real sockets and real servers: axum behind `Auth::layer` and `SseLayer` in both orders,
//! warp behind the same layers, HTTP/1.1 and h2c, and nodes sharing one `redis-server` (those
//! tests are `#[ignore = "needs redis-server"]`).
//!
//! Every test quotes the promise it checks. A test that fails because the library breaks its
//! promise is kept: it is the point.

mod common;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, Uri},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use common::{come_back_retry, RawClient};
use http::request::Parts;
use http_body_util::BodyExt;
use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
    time::Instant,
};
use tower_sse::{
    auth::{Auth, AuthBuilder, Authorize, Denied, TicketError, Tickets, REVOKED},
    decode::Message,
    hub::{Hub, LagPolicy, Subscription, MISSED},
    Event, Grants, LastEventId, NotGranted, SseBody, SseLayer, TopicMatch,
};

/// Long enough that only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The app: sessions (a token in a cookie or a bearer header), an authorizer, handlers.
// ---------------------------------------------------------------------------------------------

/// A random-looking unique text (a session token, a marker to grep logs for).
fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    let a = h.finish();
    h.write_u64(a);
    format!("{prefix}{a:016x}{:016x}", h.finish())
}

/// 48 lower-case hex digits that no store minted.
fn forged() -> String {
    format!("{}{}", unique(""), unique(""))[..48].to_owned()
}

#[derive(Clone, Default)]
struct Session {
    user: String,
    /// Expiry relative to each authorization.
    expires_in: Option<Duration>,
    expires_at: Option<SystemTime>,
    issued_at: Option<SystemTime>,
    /// The authorizer waits for a permit here (a slow session store).
    gate: Option<Arc<Semaphore>>,
    forbidden: bool,
    extra: Vec<TopicMatch>,
}

fn user(name: &str) -> Session {
    Session {
        user: name.into(),
        ..Session::default()
    }
}

/// The app's session store, shared by every node.
#[derive(Clone, Default)]
struct Sessions {
    map: Arc<Mutex<HashMap<String, Session>>>,
    /// Authorizations begun.
    started: Arc<AtomicUsize>,
}

impl Sessions {
    fn add(&self, session: Session) -> String {
        let token = unique("tok");
        self.map.lock().unwrap().insert(token.clone(), session);
        token
    }

    /// A cookie header value for a new session of `name`.
    fn cookie(&self, name: &str) -> String {
        format!("session={}", self.add(user(name)))
    }

    fn cookie_for(&self, session: Session) -> String {
        format!("session={}", self.add(session))
    }
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    let header = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
    header
        .split(';')
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

fn bearer(parts: &Parts) -> Option<String> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header.strip_prefix("Bearer ").map(str::to_owned)
}

/// Grants `user:<user>` and `team` (plus the session's extra rules) as the session's user.
fn authorizer(sessions: Sessions) -> impl Authorize {
    move |parts: &Parts| {
        let token = bearer(parts).or_else(|| cookie(parts, "session"));
        let found = token.and_then(|t| sessions.map.lock().unwrap().get(&t).cloned());
        let started = sessions.started.clone();
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            let session = found.ok_or(Denied::Unauthenticated)?;
            if let Some(gate) = &session.gate {
                gate.acquire().await.unwrap().forget();
            }
            if session.forbidden {
                return Err(Denied::Forbidden);
            }
            let mut grants = Grants::new()
                .subject(session.user.clone())
                .exact(format!("user:{}", session.user))
                .exact("team");
            for rule in session.extra {
                grants = grants.topic(rule);
            }
            if let Some(ttl) = session.expires_in {
                grants = grants.expires_in(ttl);
            }
            if let Some(at) = session.expires_at {
                grants = grants.expires_at(at);
            }
            if let Some(at) = session.issued_at {
                grants = grants.issued_at(at);
            }
            Ok(grants)
        }
    }
}

#[derive(Clone)]
struct App {
    hub: Hub,
    auth: Auth,
    /// Every URI the stream handlers saw.
    seen: Arc<Mutex<Vec<String>>>,
    /// `/slow/` waits for a permit here before it builds its body.
    gate: Arc<Semaphore>,
    in_handler: Arc<AtomicUsize>,
}

async fn events(
    State(app): State<App>,
    Path(topic): Path<String>,
    uri: Uri,
    grants: Grants,
    last: Option<LastEventId>,
) -> Result<SseBody<Subscription>, NotGranted> {
    app.seen.lock().unwrap().push(uri.to_string());
    let subscription = app.hub.topic(&topic).subscribe(last.as_ref());
    Ok(SseBody::new(subscription.granted(&grants)?))
}

async fn recent(
    State(app): State<App>,
    Path(topic): Path<String>,
    grants: Grants,
    last: Option<LastEventId>,
) -> Result<SseBody<Subscription>, NotGranted> {
    let subscription = app
        .hub
        .topic(&topic)
        .subscribe_with_recent(last.as_ref(), 10);
    Ok(SseBody::new(subscription.granted(&grants)?))
}

/// A handler that forgets `granted`: an anonymous subscription.
async fn anonymous(
    State(app): State<App>,
    Path(topic): Path<String>,
    last: Option<LastEventId>,
) -> SseBody<Subscription> {
    SseBody::new(app.hub.topic(&topic).subscribe(last.as_ref()))
}

/// Holds the request (its grants already made) until the test lets it go.
async fn slow(
    State(app): State<App>,
    Path(topic): Path<String>,
    grants: Grants,
) -> Result<SseBody<Subscription>, NotGranted> {
    app.in_handler.fetch_add(1, Ordering::SeqCst);
    app.gate.acquire().await.unwrap().forget();
    let subscription = app.hub.topic(&topic).subscribe(None).granted(&grants)?;
    Ok(SseBody::new(subscription))
}

async fn mint(
    State(app): State<App>,
    Path(topic): Path<String>,
    grants: Grants,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, http::StatusCode> {
    let one = grants
        .narrowed([TopicMatch::exact(topic)])
        .map_err(|_| http::StatusCode::FORBIDDEN)?;
    let ticket = app
        .auth
        .mint_ticket(&one, &headers)
        .await
        .map_err(|_| http::StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(serde_json::json!({ "ticket": ticket.value() })))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// `SseLayer` outermost, `AuthLayer` inside it.
    AuthInside,
    /// `AuthLayer` outermost, `SseLayer` inside it.
    AuthOutside,
}

fn router(app: App, order: Order, sse: SseLayer) -> Router {
    let auth = app.auth.clone();
    let routes = Router::new()
        .route("/events/{topic}", get(events))
        .route("/recent/{topic}", get(recent))
        .route("/anon/{topic}", get(anonymous))
        .route("/slow/{topic}", get(slow))
        .route("/tickets/{topic}", post(mint))
        .with_state(app);
    match order {
        Order::AuthInside => routes.layer(auth.layer()).layer(sse),
        Order::AuthOutside => routes.layer(sse).layer(auth.layer()),
    }
}

struct Node {
    addr: SocketAddr,
    hub: Hub,
    auth: Auth,
    sessions: Sessions,
    app: App,
}

fn sse() -> SseLayer {
    SseLayer::new().open_frame(false)
}

async fn start_node(
    hub: Hub,
    sessions: Sessions,
    order: Order,
    sse: SseLayer,
    configure: impl FnOnce(AuthBuilder) -> AuthBuilder,
) -> Node {
    let auth = configure(Auth::builder(authorizer(sessions.clone()))).build();
    let app = App {
        hub: hub.clone(),
        auth: auth.clone(),
        seen: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
        in_handler: Arc::default(),
    };
    let addr = common::serve(router(app.clone(), order, sse)).await;
    Node {
        addr,
        hub,
        auth,
        sessions,
        app,
    }
}

async fn memory_node(order: Order) -> Node {
    start_node(Hub::new(), Sessions::default(), order, sse(), |b| {
        b.tickets(Tickets::memory())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP: every byte of a refusal.
// ---------------------------------------------------------------------------------------------

/// A whole exchange on a fresh connection (`connection: close`): the response head, every byte
/// after it (not de-chunked), and whether the server closed the connection.
#[derive(Debug)]
struct Exchange {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    closed: bool,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    /// The headers a client sees, `date` left out, in order.
    fn shape(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect()
    }
}

fn request(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    let mut deadline = Instant::now() + PATIENCE;
    let mut closed = false;
    let mut buf = vec![0u8; 16 * 1024];
    let mut streaming = false;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        // An event stream never ends by itself: look a second longer, then stop.
        if !streaming
            && raw.windows(4).any(|w| w == b"\r\n\r\n")
            && String::from_utf8_lossy(&raw)
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream")
        {
            streaming = true;
            deadline = deadline.min(Instant::now() + Duration::from_secs(1));
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|line| {
            let (n, v) = line.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec())
        })
        .collect();
    Exchange {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
        closed,
    }
}

/// A GET that asks for an event stream (unless `accept` is among the headers).
async fn ask(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Exchange {
    let mut all: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        all.push(("accept", b"text/event-stream"));
    }
    exchange(addr, &request("GET", addr, path, &all)).await
}

/// The whole refusal promise: this status, an empty body, `Cache-Control: no-store`, nothing
/// streamed, the connection closed.
#[track_caller]
fn assert_refused(ex: &Exchange, status: u16, what: &str) {
    assert_eq!(ex.status, status, "{what}: {ex:?}");
    assert_eq!(
        ex.header("cache-control"),
        Some("no-store"),
        "{what}: {ex:?}"
    );
    assert_eq!(ex.header("content-length"), Some("0"), "{what}: {ex:?}");
    assert_ne!(
        ex.header("content-type"),
        Some("text/event-stream"),
        "{what}"
    );
    assert!(
        ex.body.is_empty(),
        "{what}: streamed {:?}",
        String::from_utf8_lossy(&ex.body)
    );
    assert!(ex.closed, "{what}: the connection stayed open");
}

/// Mints a ticket for `topic` at the app's endpoint with this cookie (and `Origin` bytes).
async fn mint_at(addr: SocketAddr, topic: &str, cookie: &str, origin: Option<&[u8]>) -> String {
    let (status, ticket) = try_mint(addr, topic, cookie, origin).await;
    assert_eq!(status, 200, "minting a ticket for {topic}");
    ticket.unwrap()
}

async fn try_mint(
    addr: SocketAddr,
    topic: &str,
    cookie: &str,
    origin: Option<&[u8]>,
) -> (u16, Option<String>) {
    let mut headers: Vec<(&str, &[u8])> =
        vec![("cookie", cookie.as_bytes()), ("content-length", b"0")];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    let ex = exchange(
        addr,
        &request("POST", addr, &format!("/tickets/{topic}"), &headers),
    )
    .await;
    if ex.status != 200 {
        return (ex.status, None);
    }
    let json: serde_json::Value = serde_json::from_slice(&ex.body).unwrap();
    (200, Some(json["ticket"].as_str().unwrap().to_owned()))
}

fn data(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.data.clone()).collect()
}

/// Reads a stream to its end, for at most the patience (a busy stream never times out a read).
async fn to_end(client: &mut RawClient) -> (Vec<u8>, Vec<Message>) {
    tokio::time::timeout(PATIENCE, client.read_to_end())
        .await
        .expect("the stream ended within the patience")
}

/// The stream ended with the revocation: its last message is `revoked`, then `: access revoked`.
async fn assert_revoked_end(client: &mut RawClient, what: &str) {
    let (raw, messages) = to_end(client).await;
    let last = messages
        .last()
        .unwrap_or_else(|| panic!("{what}: no message in {raw:?}"));
    assert_eq!(last.event, REVOKED, "{what}");
    assert_eq!(last.data, r#"{"reason":"revoked"}"#, "{what}");
    come_back_retry(&raw, "access revoked");
}

/// The stream is still open and live: a marker published now reaches it (published again
/// every half second, for a hub on Redis that is still following the topic). Only markers
/// arrive: nothing else was pending for it.
async fn assert_live(client: &mut RawClient, hub: &Hub, topic: &str, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    let mut markers = Vec::new();
    while Instant::now() < deadline {
        let marker = unique("live");
        markers.push(marker.clone());
        hub.topic(topic)
            .publish(Event::message(marker))
            .await
            .unwrap();
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(500), client.events(1)).await {
            assert!(!got.is_empty(), "{what}: the stream ended");
            for m in &got {
                assert!(
                    markers.contains(&m.data),
                    "{what}: got {:?}, not a marker",
                    m.data
                );
            }
            return;
        }
    }
    panic!("{what}: no marker arrived");
}

// ---------------------------------------------------------------------------------------------
// Log capture at TRACE (the global subscriber of this binary; `common::logs_of` stops at DEBUG).
// ---------------------------------------------------------------------------------------------

thread_local! {
    static LOG_SINK: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

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

/// Everything logged (every crate, up to TRACE) on this thread while `f` runs. Use from a
/// current-thread runtime, where the servers' tasks run on the test's thread.
async fn trace_logs_of<F: std::future::Future>(f: F) -> (F::Output, String) {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| ThreadSink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    tracing::callsite::rebuild_interest_cache();
    LOG_SINK.with(|sink| *sink.borrow_mut() = Some(Vec::new()));
    let output = f.await;
    let lines = LOG_SINK
        .with(|sink| sink.borrow_mut().take())
        .unwrap_or_default();
    (output, String::from_utf8_lossy(&lines).into_owned())
}

/// Fails if `logs` hold `secret` or either half of it (a ticket's lookup and secret halves).
#[track_caller]
fn assert_not_logged(logs: &str, secret: &str, what: &str) {
    assert!(!logs.contains(secret), "{what} is in the logs:\n{logs}");
    if secret.len() == 48 {
        let (id, key) = secret.split_at(16);
        assert!(
            !logs.contains(id),
            "{what}'s lookup half is in the logs:\n{logs}"
        );
        assert!(
            !logs.contains(key),
            "{what}'s secret half is in the logs:\n{logs}"
        );
    }
}

// =============================================================================================
// Tickets
// =============================================================================================

/// "A ticket that is malformed, unknown, spent, expired or from another origin is refused with
/// `401`" ... "an empty body, `Cache-Control: no-store`, nothing streamed; the handler never
/// runs"; "Every refusal is counted".
#[tokio::test]
async fn forged_truncated_padded_and_odd_tickets_are_refused_alike() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let real = mint_at(node.addr, "user:alice", &alice, None).await;
    let mut flipped = real.clone().into_bytes();
    flipped[47] = if flipped[47] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let mut id_only = real[..16].to_owned();
    id_only.push_str(&"0".repeat(32));
    let percent: String = real.bytes().map(|b| format!("%{b:02x}")).collect();
    let forged = forged();
    let variants = [
        ("forged", format!("ticket={forged}")),
        ("a wrong secret half", format!("ticket={flipped}")),
        (
            "the right lookup half, zero secret",
            format!("ticket={id_only}"),
        ),
        ("truncated", format!("ticket={}", &real[..47])),
        ("padded", format!("ticket={real}0")),
        ("trailing junk", format!("ticket={real}%00")),
        ("upper-case hex", format!("ticket={}", real.to_uppercase())),
        ("percent-encoded", format!("ticket={percent}")),
        ("empty", "ticket=".to_owned()),
        ("bare name", "ticket".to_owned()),
        ("a space", format!("ticket=%20{real}")),
    ];
    let mut shapes = Vec::new();
    for (what, query) in &variants {
        let ex = ask(node.addr, &format!("/events/user:alice?{query}"), &[]).await;
        assert_refused(&ex, 401, what);
        shapes.push((what, ex.shape()));
    }
    for (what, shape) in &shapes {
        assert_eq!(
            shape, &shapes[0].1,
            "{what} looks different from {}",
            shapes[0].0
        );
    }
    assert!(
        node.app.seen.lock().unwrap().is_empty(),
        "the handler never runs"
    );
    let stats = node.auth.stats();
    assert_eq!(stats.bad_tickets, variants.len() as u64);
    assert_eq!(stats.unauthenticated, variants.len() as u64);
    assert_eq!(stats.tickets_redeemed, 0);
    assert_eq!(node.hub.stats().subscribers, 0);
}

/// "spent by its first redemption, whatever its outcome"; "lives at most
/// [`lifetime`](Tickets::lifetime)"; "Grants that have expired ... are refused with `401`" (a
/// ticket carries grants: "Its grants are the request's").
#[tokio::test]
async fn spent_replayed_expired_and_wrong_origin_tickets_are_refused() {
    let sessions = Sessions::default();
    let node = start_node(
        Hub::new(),
        sessions.clone(),
        Order::AuthInside,
        sse(),
        |b| b.tickets(Tickets::memory().lifetime(Duration::from_secs(1))),
    )
    .await;
    let origin: &[u8] = b"https://app.example";
    let alice = sessions.cookie("alice");

    // Another origin spends it: the right origin then gets a 401.
    let t = mint_at(node.addr, "user:alice", &alice, Some(origin)).await;
    let path = format!("/events/user:alice?ticket={t}");
    let ex = ask(node.addr, &path, &[("origin", "https://evil.example")]).await;
    assert_refused(&ex, 401, "another origin");
    let ex = ask(node.addr, &path, &[("origin", "https://app.example")]).await;
    assert_refused(&ex, 401, "spent by the wrong-origin attempt");

    // No origin at all is another origin.
    let t = mint_at(node.addr, "user:alice", &alice, Some(origin)).await;
    let ex = ask(node.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
    assert_refused(&ex, 401, "minted with an Origin, redeemed without");
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let ex = ask(
        node.addr,
        &format!("/events/user:alice?ticket={t}"),
        &[("origin", "https://app.example")],
    )
    .await;
    assert_refused(&ex, 401, "minted without an Origin, redeemed with one");

    // Replayed after a success.
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let path = format!("/events/user:alice?ticket={t}");
    let first = RawClient::get(node.addr, &path, &[]).await;
    assert_eq!(first.status(), 200);
    assert_refused(
        &ask(node.addr, &path, &[]).await,
        401,
        "replayed while open",
    );
    drop(first);
    assert_refused(
        &ask(node.addr, &path, &[]).await,
        401,
        "replayed after close",
    );

    // Expired: the ticket's own lifetime (1 s).
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ex = ask(node.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
    assert_refused(&ex, 401, "the ticket's lifetime passed");

    // Expired: the grants it carries (the ticket itself still alive).
    let node2 = memory_node(Order::AuthInside).await;
    let short = node2.sessions.cookie_for(Session {
        expires_in: Some(Duration::from_millis(1500)),
        ..user("alice")
    });
    let t = mint_at(node2.addr, "user:alice", &short, None).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let ex = ask(node2.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
    assert_refused(&ex, 401, "the ticket's grants expired");
    assert_eq!(node2.auth.stats().expired, 1, "counted as expired");
    assert_eq!(node.auth.stats().bad_tickets, 7);
    assert_eq!(node.auth.stats().tickets_redeemed, 1);
}

/// "The handler subscribes with the grants: a topic they do not allow is a `403`"; tickets
/// carry "grants ... or [narrower](Grants::narrowed)"; `narrowed`: "[`NotGranted`] when one of
/// `rules` reaches a topic these grants do not allow".
#[tokio::test]
async fn tickets_for_another_topic_or_subject_are_forbidden() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    for topic in ["user:bob", "user:", "user:alice2", "tower-sse:revocations"] {
        let (status, _) = try_mint(node.addr, topic, &alice, None).await;
        assert_eq!(status, 403, "alice may not mint a ticket for {topic}");
    }
    let mine = mint_at(node.addr, "user:alice", &alice, None).await;
    let ex = ask(node.addr, &format!("/events/user:bob?ticket={mine}"), &[]).await;
    assert_refused(&ex, 403, "alice's ticket on bob's topic");
    let team = mint_at(node.addr, "team", &alice, None).await;
    let ex = ask(node.addr, &format!("/events/user:alice?ticket={team}"), &[]).await;
    assert_refused(&ex, 403, "a team ticket on alice's own topic");
    let ex = ask(node.addr, &format!("/events/user:alice?ticket={team}"), &[]).await;
    assert_refused(&ex, 401, "and it is spent now");
    assert_eq!(node.hub.stats().forbidden, 2);
}

/// "of two nodes redeeming it at once exactly one wins"; "spent at once" (one process, many
/// requests at once, many rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_redeemed_by_many_requests_at_once_opens_one_stream() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    for round in 0..25 {
        let t = mint_at(node.addr, "user:alice", &alice, None).await;
        let path = format!("/events/user:alice?ticket={t}");
        let clients =
            futures_util::future::join_all((0..8).map(|_| RawClient::get(node.addr, &path, &[])))
                .await;
        let mut statuses: Vec<u16> = clients.iter().map(RawClient::status).collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 401, 401, 401, 401, 401, 401, 401],
            "round {round}"
        );
    }
    assert_eq!(node.auth.stats().tickets_redeemed, 25);
}

/// "1. A stream ticket ... is redeemed ... Its grants are the request's ... 2. Otherwise the
/// app's Authorizer makes the grants": the ticket comes first, and a bad ticket is "refused
/// with `401`", not rescued by a cookie.
#[tokio::test]
async fn the_ticket_wins_over_a_cookie_and_a_bad_ticket_is_not_rescued_by_one() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let bob = node.sessions.cookie("bob");
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    // Alice's ticket with bob's cookie on bob's topic: the ticket's grants, so 403.
    let ex = ask(
        node.addr,
        &format!("/events/user:bob?ticket={t}"),
        &[("cookie", &bob)],
    )
    .await;
    assert_refused(&ex, 403, "alice's ticket and bob's cookie on bob's topic");
    // Alice's ticket with bob's cookie on alice's topic: in, as alice.
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let mut stream = RawClient::get(
        node.addr,
        &format!("/events/user:alice?ticket={t}"),
        &[("cookie", &bob)],
    )
    .await;
    assert_eq!(stream.status(), 200);
    assert_live(
        &mut stream,
        &node.hub,
        "user:alice",
        "alice's ticket reads alice's topic",
    )
    .await;
    // A spent ticket with alice's own valid cookie: still 401.
    let ex = ask(
        node.addr,
        &format!("/events/user:alice?ticket={t}"),
        &[("cookie", &alice)],
    )
    .await;
    assert_refused(&ex, 401, "a spent ticket and a valid cookie");
    let ex = ask(
        node.addr,
        "/events/user:alice?ticket=nonsense",
        &[("cookie", &alice)],
    )
    .await;
    assert_refused(&ex, 401, "a malformed ticket and a valid cookie");
}

/// "the parameter is removed from the URI before the handler sees it" — also when a hostile
/// client sends it twice (`?ticket=A&ticket=B`).
#[tokio::test]
async fn a_second_ticket_parameter_never_reaches_the_handler() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let one = mint_at(node.addr, "user:alice", &alice, None).await;
    let two = mint_at(node.addr, "user:alice", &alice, None).await;
    let path = format!("/events/user:alice?ticket={one}&lastEventId=x-1&ticket={two}");
    let stream = RawClient::get(node.addr, &path, &[]).await;
    assert_eq!(stream.status(), 200);
    let seen = node.app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("lastEventId=x-1"), "{seen:?}");
    assert!(
        !seen[0].contains("ticket") && !seen[0].contains(&two),
        "the handler saw a ticket in its URI: {}",
        seen[0]
    );
}

/// "A ticket that is malformed ... is refused with `401`" whatever the request's `Accept`
/// says (a ticket is meant for a stream); a good ticket without `Accept` still opens it.
#[tokio::test]
async fn a_bad_ticket_is_refused_whatever_the_accept_header_says() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let forged = &forged();
    for accept in [
        None,
        Some("text/html"),
        Some("*/*"),
        Some("application/json"),
    ] {
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(accept) = accept {
            headers.push(("accept", accept.as_bytes()));
        }
        let path = format!("/events/user:alice?ticket={forged}");
        let ex = exchange(node.addr, &request("GET", node.addr, &path, &headers)).await;
        assert_refused(&ex, 401, &format!("accept {accept:?}"));
    }
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let path = format!("/events/user:alice?ticket={t}");
    let ex = exchange(node.addr, &request("GET", node.addr, &path, &[])).await;
    assert_eq!(ex.status, 200, "a good ticket without Accept");
    assert_eq!(node.auth.stats().bad_tickets, 4);
}

/// A ticket is "taken only from the `Origin` that minted it": two different `Origin` values
/// that are not UTF-8 are two origins.
#[tokio::test]
async fn a_non_utf8_origin_is_not_confused_with_another() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let t = mint_at(
        node.addr,
        "user:alice",
        &alice,
        Some(b"https://app.example\xff"),
    )
    .await;
    let path = format!("/events/user:alice?ticket={t}");
    let ex = exchange(
        node.addr,
        &request(
            "GET",
            node.addr,
            &path,
            &[
                ("accept", b"text/event-stream"),
                ("origin", b"https://app.example\xfe"),
            ],
        ),
    )
    .await;
    assert_refused(
        &ex,
        401,
        "redeemed from origin ...\\xfe, minted at ...\\xff",
    );
}

/// A ticket is "taken only from the `Origin` that minted it": a request whose `Origin` (the
/// first of two) is foreign is refused. (With the minting origin first and a foreign one
/// second the ticket is taken — the first header counts; not asserted: RFC 6454 forbids two,
/// and a client that holds the ticket can send the minting origin alone anyway.)
#[tokio::test]
async fn multiple_origin_headers_do_not_smuggle_a_ticket() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let good: &[u8] = b"https://app.example";
    let evil: &[u8] = b"https://evil.example";
    let mut statuses = Vec::new();
    for origins in [[evil, good], [good, evil]] {
        let t = mint_at(node.addr, "user:alice", &alice, Some(good)).await;
        let path = format!("/events/user:alice?ticket={t}");
        let headers = [
            ("accept", &b"text/event-stream"[..]),
            ("origin", origins[0]),
            ("origin", origins[1]),
        ];
        let ex = exchange(node.addr, &request("GET", node.addr, &path, &headers)).await;
        statuses.push(ex.status);
        if origins[0] == evil {
            assert_refused(&ex, 401, "a foreign origin first, the minting one second");
        }
    }
    println!(
        "two Origin headers: evil first -> {}, good first -> {}",
        statuses[0], statuses[1]
    );
}

/// "A request that asks for an event stream ... is answered at once when refused: `401` or
/// `403`, an empty body"; a ticket is "spent by its first redemption" (a HEAD is one).
#[tokio::test]
async fn head_requests_are_refused_bodiless_and_spend_tickets() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let es: &[u8] = b"text/event-stream";
    let ex = exchange(
        node.addr,
        &request("HEAD", node.addr, "/events/user:alice", &[("accept", es)]),
    )
    .await;
    assert_eq!(ex.status, 401);
    assert_eq!(ex.header("cache-control"), Some("no-store"));
    assert!(ex.body.is_empty() && ex.closed, "{ex:?}");
    let forged = &forged();
    let ex = exchange(
        node.addr,
        &request(
            "HEAD",
            node.addr,
            &format!("/events/user:alice?ticket={forged}"),
            &[],
        ),
    )
    .await;
    assert_eq!(ex.status, 401, "a forged ticket on HEAD");
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let path = format!("/events/user:alice?ticket={t}");
    let ex = exchange(
        node.addr,
        &request("HEAD", node.addr, &path, &[("accept", es)]),
    )
    .await;
    assert_eq!(ex.status, 200, "a HEAD with a good ticket");
    assert!(ex.body.is_empty(), "{ex:?}");
    assert_refused(
        &ask(node.addr, &path, &[]).await,
        401,
        "the GET after the HEAD",
    );
}

/// Refusals carry "an empty body" and are "logged at `INFO` with its reason, never with a
/// credential's value" — also for a 100 KB cookie (and a session beside 50 KB of junk).
#[tokio::test]
async fn a_huge_cookie_is_refused_quietly() {
    let ((ex, ok, stats), logs) = trace_logs_of(async {
        let node = memory_node(Order::AuthInside).await;
        let junk = unique("junk").repeat(1500);
        let alice = node.sessions.cookie("alice");
        let huge = format!("a={junk}; b={junk}");
        let ex = ask(node.addr, "/events/user:alice", &[("cookie", &huge)]).await;
        let both = format!("a={junk}; {alice}");
        let mut ok = RawClient::get(node.addr, "/events/user:alice", &[("cookie", &both)]).await;
        let ok_status = ok.status();
        assert_live(
            &mut ok,
            &node.hub,
            "user:alice",
            "a session beside 50 KB of junk",
        )
        .await;
        ((ex, junk, alice), ok_status, node.auth.stats())
    })
    .await;
    let (ex, junk, alice) = ex;
    assert_refused(&ex, 401, "a 100 KB cookie without a session");
    assert_eq!(ok, 200);
    assert_eq!(stats.unauthenticated, 1);
    assert!(
        logs.contains("no valid credential"),
        "the reason is logged:\n{logs}"
    );
    assert!(!logs.contains(&junk[..40]), "the cookie is in the logs");
    assert_not_logged(
        &logs,
        alice.trim_start_matches("session="),
        "the session token",
    );
}

/// The refusal promise over HTTP/2 (h2c): "`401` or `403`, an empty body,
/// `Cache-Control: no-store`, nothing streamed"; a ticket "is spent by its first redemption".
#[tokio::test]
async fn refusals_over_http2_are_empty_and_tickets_work_once() {
    let node = memory_node(Order::AuthOutside).await;
    let alice = node.sessions.cookie("alice");
    let mut send = common::h2_client(node.addr).await;
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let forged = forged();
    let cases = [
        ("no credential", "/events/user:alice".to_owned(), None, 401),
        (
            "forged ticket",
            format!("/events/user:alice?ticket={forged}"),
            None,
            401,
        ),
        (
            "bob's topic",
            "/events/user:bob".to_owned(),
            Some(alice.clone()),
            403,
        ),
    ];
    for (what, path, cookie, status) in cases {
        let mut req = common::h2_get(node.addr, &path);
        if let Some(cookie) = cookie {
            req.headers_mut().insert("cookie", cookie.parse().unwrap());
        }
        let response = send.send_request(req).await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
        let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
            .await
            .expect("the refusal ends")
            .unwrap()
            .to_bytes();
        assert!(body.is_empty(), "{what}: {body:?}");
    }
    let path = format!("/events/user:alice?ticket={t}");
    let response = send
        .send_request(common::h2_get(node.addr, &path))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    node.hub
        .topic("user:alice")
        .publish(Event::message("over h2"))
        .await
        .unwrap();
    let frame = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bytes: Bytes = frame.into_data().unwrap();
    assert!(bytes.starts_with(b"data: over h2\n"), "{bytes:?}");
    let again = send
        .send_request(common::h2_get(node.addr, &path))
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "replayed over h2");
}

// =============================================================================================
// Different failures look the same
// =============================================================================================

/// A request refused in one way: its name, its path, its headers.
type Case = (&'static str, String, Vec<(&'static str, String)>);

/// "Answered with an empty body and no detail: the reason is for the server's logs and
/// counters, never the client": every 401 looks the same, every 403 looks the same; and
/// "Every refusal is counted ([`AuthStats`])".
#[tokio::test]
async fn every_refusal_of_a_kind_looks_the_same_and_is_counted_by_its_reason() {
    let node = memory_node(Order::AuthInside).await;
    let s = &node.sessions;
    let alice = s.cookie("alice");
    let carol = s.cookie("carol");
    let expired = s.cookie_for(Session {
        expires_at: Some(SystemTime::now() - Duration::from_secs(1)),
        ..user("dave")
    });
    let short = s.cookie_for(Session {
        expires_in: Some(Duration::from_millis(1500)),
        ..user("erin")
    });
    let banned = s.cookie_for(Session {
        forbidden: true,
        ..user("mallory")
    });
    let origin: &[u8] = b"https://app.example";
    let spent = mint_at(node.addr, "user:alice", &alice, None).await;
    drop(
        RawClient::get(
            node.addr,
            &format!("/events/user:alice?ticket={spent}"),
            &[],
        )
        .await,
    );
    let foreign = mint_at(node.addr, "user:alice", &alice, Some(origin)).await;
    let stale = mint_at(node.addr, "user:erin", &short, None).await;
    let other_topic = mint_at(node.addr, "team", &alice, None).await;
    let _ = node.auth.revoke("carol");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let bearer_unknown = format!("Bearer {}", unique("tok"));

    let unauthorized: Vec<Case> = vec![
        ("no credential", "/events/user:alice".into(), vec![]),
        (
            "unknown session",
            "/events/user:alice".into(),
            vec![("cookie", "session=nope".into())],
        ),
        (
            "unknown bearer",
            "/events/user:alice".into(),
            vec![("authorization", bearer_unknown)],
        ),
        (
            "malformed ticket",
            "/events/user:alice?ticket=abc".into(),
            vec![],
        ),
        (
            "unknown ticket",
            format!("/events/user:alice?ticket={}", forged()),
            vec![],
        ),
        (
            "spent ticket",
            format!("/events/user:alice?ticket={spent}"),
            vec![],
        ),
        (
            "wrong-origin ticket",
            format!("/events/user:alice?ticket={foreign}"),
            vec![("origin", "https://evil.example".into())],
        ),
        (
            "expired grants",
            "/events/user:dave".into(),
            vec![("cookie", expired)],
        ),
        (
            "ticket with expired grants",
            format!("/events/user:erin?ticket={stale}"),
            vec![],
        ),
        (
            "revoked subject",
            "/events/user:carol".into(),
            vec![("cookie", carol)],
        ),
    ];
    let mut first = None;
    for (what, path, headers) in &unauthorized {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let ex = ask(node.addr, path, &headers).await;
        assert_refused(&ex, 401, what);
        let first = first.get_or_insert_with(|| (what, ex.shape()));
        assert_eq!(
            ex.shape(),
            first.1,
            "{what} looks different from {}",
            first.0
        );
    }
    let forbidden: Vec<Case> = vec![
        (
            "the authorizer forbids",
            "/events/user:mallory".into(),
            vec![("cookie", banned)],
        ),
        (
            "another's topic",
            "/events/user:bob".into(),
            vec![("cookie", alice.clone())],
        ),
        (
            "a ticket for another topic",
            format!("/events/user:alice?ticket={other_topic}"),
            vec![],
        ),
    ];
    let mut first = None;
    for (what, path, headers) in &forbidden {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let ex = ask(node.addr, path, &headers).await;
        assert_refused(&ex, 403, what);
        let first = first.get_or_insert_with(|| (what, ex.shape()));
        assert_eq!(
            ex.shape(),
            first.1,
            "{what} looks different from {}",
            first.0
        );
    }
    let stats = node.auth.stats();
    assert_eq!(stats.unauthenticated, 10);
    assert_eq!(
        stats.forbidden, 1,
        "the authorizer's 403 (the others are the hub's)"
    );
    assert_eq!(stats.expired, 2);
    assert_eq!(stats.revoked, 1);
    assert_eq!(stats.bad_tickets, 4);
    assert_eq!(node.hub.stats().forbidden, 2);
}

// =============================================================================================
// Logs
// =============================================================================================

/// Tickets: "Its value is never logged"; refusals are "logged at `INFO` with its reason, never
/// with a credential's value" — checked at TRACE, every crate's lines, for every ticket path
/// and a bearer token.
#[tokio::test]
async fn credentials_never_reach_the_logs_even_at_trace() {
    let ((tickets, tokens), logs) = trace_logs_of(async {
        let node = memory_node(Order::AuthInside).await;
        let s = &node.sessions;
        let token = s.add(user("alice"));
        let bearer = format!("Bearer {token}");
        let revoked_token = s.add(user("carol"));
        let short = s.cookie_for(Session {
            expires_in: Some(Duration::from_millis(1500)),
            ..user("erin")
        });
        let auth = [("authorization", bearer.as_str())];
        let origin: &[u8] = b"https://app.example";
        let cookie = format!("session={token}");
        let ok = mint_at(node.addr, "user:alice", &cookie, None).await;
        let mut open =
            RawClient::get(node.addr, &format!("/events/user:alice?ticket={ok}"), &[]).await;
        assert_eq!(open.status(), 200);
        assert_live(&mut open, &node.hub, "user:alice", "by ticket").await;
        ask(node.addr, &format!("/events/user:alice?ticket={ok}"), &[]).await;
        let foreign = mint_at(node.addr, "user:alice", &cookie, Some(origin)).await;
        ask(
            node.addr,
            &format!("/events/user:alice?ticket={foreign}"),
            &[("origin", "https://evil.example")],
        )
        .await;
        let truncated = mint_at(node.addr, "user:alice", &cookie, None).await;
        ask(
            node.addr,
            &format!("/events/user:alice?ticket={}", &truncated[..47]),
            &[],
        )
        .await;
        ask(
            node.addr,
            &format!("/events/user:alice?ticket={truncated}x"),
            &[],
        )
        .await;
        let stale = mint_at(node.addr, "user:erin", &short, None).await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        ask(node.addr, &format!("/events/user:erin?ticket={stale}"), &[]).await;
        let other = mint_at(node.addr, "team", &cookie, None).await;
        ask(
            node.addr,
            &format!("/events/user:alice?ticket={other}"),
            &[],
        )
        .await;
        let mut by_bearer = RawClient::get(node.addr, "/events/user:alice", &auth).await;
        assert_eq!(by_bearer.status(), 200);
        assert_live(&mut by_bearer, &node.hub, "user:alice", "by bearer").await;
        let mut carol = RawClient::get(
            node.addr,
            "/events/user:carol",
            &[("authorization", &format!("Bearer {revoked_token}"))],
        )
        .await;
        let _ = node.auth.revoke("carol");
        assert_revoked_end(&mut carol, "carol").await;
        ask(
            node.addr,
            "/events/user:carol",
            &[("authorization", &format!("Bearer {revoked_token}"))],
        )
        .await;
        ask(
            node.addr,
            "/events/user:alice",
            &[("authorization", "Bearer nope")],
        )
        .await;
        (
            vec![ok, foreign, truncated, stale, other],
            vec![token, revoked_token, short],
        )
    })
    .await;
    for reason in [
        "unknown, spent or expired ticket",
        "ticket redeemed from another origin",
        "malformed ticket",
        "the grants have expired",
        "the subject is revoked",
        "no valid credential",
    ] {
        assert!(
            logs.contains(reason),
            "the reason {reason:?} is logged:\n{logs}"
        );
    }
    for ticket in &tickets {
        assert_not_logged(&logs, ticket, "a ticket");
    }
    for token in &tokens {
        assert_not_logged(
            &logs,
            token.trim_start_matches("session="),
            "a session token",
        );
    }
}

// =============================================================================================
// Expiry
// =============================================================================================

/// "At the grants' expiry the stream ends with a come-back block (`retry:` drawn from the
/// layer's `come_back` window, `: credential expired, reconnect`)" — also while events flow
/// without a pause, in either layer order ("inside it ... or around it, the streams of a
/// request end at its grants' expiry").
async fn busy_stream_ends_at_expiry(order: Order) {
    let node = memory_node(order).await;
    let short = node.sessions.cookie_for(Session {
        expires_in: Some(Duration::from_millis(1500)),
        ..user("alice")
    });
    let opened = Instant::now();
    let mut stream = RawClient::get(node.addr, "/events/user:alice", &[("cookie", &short)]).await;
    assert_eq!(stream.status(), 200);
    let topic = node.hub.topic("user:alice");
    let publisher = tokio::spawn(async move {
        for i in 0u64.. {
            topic
                .publish(Event::message(format!("tick {i}")))
                .await
                .unwrap();
            if i % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let (raw, messages) = to_end(&mut stream).await;
    let took = opened.elapsed();
    publisher.abort();
    assert!(messages.len() > 10, "events flowed: {}", messages.len());
    let retry = come_back_retry(&raw, "credential expired, reconnect");
    assert!((1000..=5000).contains(&retry), "{retry}");
    assert!(
        took >= Duration::from_millis(1400),
        "ended at the expiry, not before: {took:?}"
    );
    assert_eq!(node.auth.stats().authorized, 1);
}

#[tokio::test]
async fn a_busy_stream_ends_at_its_credential_expiry_auth_inside() {
    busy_stream_ends_at_expiry(Order::AuthInside).await;
}

#[tokio::test]
async fn a_busy_stream_ends_at_its_credential_expiry_auth_outside() {
    busy_stream_ends_at_expiry(Order::AuthOutside).await;
}

/// The expiry combined with `SseLayer::max_lifetime`: whichever comes first ends the stream,
/// with its own come-back block; a stream whose grants expire first says
/// `: credential expired, reconnect`.
async fn expiry_and_max_lifetime(order: Order) {
    let hub = Hub::new();
    let sessions = Sessions::default();
    let long = start_node(
        hub.clone(),
        sessions.clone(),
        order,
        sse().max_lifetime(Duration::from_secs(30)),
        |b| b,
    )
    .await;
    let short = start_node(
        hub.clone(),
        sessions.clone(),
        order,
        sse().max_lifetime(Duration::from_millis(1000)),
        |b| b,
    )
    .await;
    let expiring = sessions.cookie_for(Session {
        expires_in: Some(Duration::from_millis(1000)),
        ..user("alice")
    });
    let lasting = sessions.cookie_for(Session {
        expires_in: Some(Duration::from_secs(60)),
        ..user("bob")
    });
    let mut a = RawClient::get(long.addr, "/events/user:alice", &[("cookie", &expiring)]).await;
    let (raw, _) = to_end(&mut a).await;
    come_back_retry(&raw, "credential expired, reconnect");
    let mut b = RawClient::get(short.addr, "/events/user:bob", &[("cookie", &lasting)]).await;
    let (raw, _) = to_end(&mut b).await;
    come_back_retry(&raw, "stream lifetime reached, reconnect");
    let mut back = RawClient::get(short.addr, "/events/user:bob", &[("cookie", &lasting)]).await;
    assert_eq!(back.status(), 200, "the rotated stream comes back");
    assert_live(&mut back, &hub, "user:bob", "after the rotation").await;
    // Both about the same time: the expiry (1 s) before a drawn lifetime in [0.9, 1] s or after.
    let both = sessions.cookie_for(Session {
        expires_in: Some(Duration::from_millis(950)),
        ..user("carol")
    });
    let mut c = RawClient::get(short.addr, "/events/user:carol", &[("cookie", &both)]).await;
    let (raw, _) = to_end(&mut c).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.ends_with(": credential expired, reconnect\n\n")
            || text.ends_with(": stream lifetime reached, reconnect\n\n"),
        "{text:?}"
    );
}

#[tokio::test]
async fn expiry_and_max_lifetime_together_auth_inside() {
    expiry_and_max_lifetime(Order::AuthInside).await;
}

#[tokio::test]
async fn expiry_and_max_lifetime_together_auth_outside() {
    expiry_and_max_lifetime(Order::AuthOutside).await;
}

/// "Grants that have expired ... are refused with `401`"; `mint_ticket`:
/// "[`TicketError::Refused`] for grants that have expired or whose subject is revoked".
#[tokio::test]
async fn already_expired_grants_are_refused_and_get_no_ticket() {
    let node = memory_node(Order::AuthOutside).await;
    let old = node.sessions.cookie_for(Session {
        expires_at: Some(SystemTime::now() - Duration::from_millis(1)),
        ..user("alice")
    });
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("cookie", &old)]).await,
        401,
        "expired",
    );
    let epoch = node.sessions.cookie_for(Session {
        expires_at: Some(SystemTime::UNIX_EPOCH),
        ..user("alice")
    });
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("cookie", &epoch)]).await,
        401,
        "epoch",
    );
    let grants = Grants::new()
        .subject("alice")
        .exact("user:alice")
        .expires_at(SystemTime::now() - Duration::from_secs(1));
    assert_eq!(
        node.auth
            .mint_ticket(&grants, &HeaderMap::new())
            .await
            .unwrap_err(),
        TicketError::Refused
    );
    let _ = node.auth.revoke("bob");
    let bob = Grants::new().subject("bob").exact("user:bob");
    assert_eq!(
        node.auth
            .mint_ticket(&bob, &HeaderMap::new())
            .await
            .unwrap_err(),
        TicketError::Refused
    );
    let stats = node.auth.stats();
    assert_eq!(
        (stats.expired, stats.unauthenticated, stats.tickets_minted),
        (2, 2, 0)
    );
}

// =============================================================================================
// Revocation
// =============================================================================================

/// "`Auth::revoke` ends the subject's streams at once with a final `REVOKED` event and a
/// come-back block (`: access revoked`); the reconnect is refused with `401`" — in either
/// layer order, and only that subject's streams.
async fn revocation_in_order(order: Order) {
    let node = memory_node(order).await;
    let alice = node.sessions.cookie("alice");
    let bob = node.sessions.cookie("bob");
    let mut mine = Vec::new();
    for topic in ["user:alice", "team", "team"] {
        let c = RawClient::get(
            node.addr,
            &format!("/events/{topic}"),
            &[("cookie", &alice)],
        )
        .await;
        assert_eq!(c.status(), 200);
        mine.push(c);
    }
    let t = mint_at(node.addr, "user:alice", &alice, None).await;
    let by_ticket = RawClient::get(node.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
    mine.push(by_ticket);
    let mut bystander = RawClient::get(node.addr, "/events/team", &[("cookie", &bob)]).await;
    let revocation = node.auth.revoke("alice");
    assert_eq!(revocation.ended_here(), 4);
    revocation.shared().await.unwrap();
    for (i, c) in mine.iter_mut().enumerate() {
        assert_revoked_end(c, &format!("alice's stream {i}")).await;
    }
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("cookie", &alice)]).await,
        401,
        "the reconnect",
    );
    assert_live(&mut bystander, &node.hub, "team", "bob's stream").await;
    let stats = node.auth.stats();
    assert_eq!(
        (stats.revocations, stats.streams_revoked, stats.revoked),
        (1, 4, 1)
    );
}

#[tokio::test]
async fn revocation_ends_streams_and_refuses_the_reconnect_auth_inside() {
    revocation_in_order(Order::AuthInside).await;
}

#[tokio::test]
async fn revocation_ends_streams_and_refuses_the_reconnect_auth_outside() {
    revocation_in_order(Order::AuthOutside).await;
}

/// "Checked and watched under one lock with revoke, so a request authorized while its subject
/// is being revoked either is refused or has its stream ended" (the slow authorizer case of
/// the module's promise: "whose subject was revoked, are refused with `401`").
#[tokio::test]
async fn revoking_while_the_authorizer_is_still_thinking_refuses_the_request() {
    let node = memory_node(Order::AuthInside).await;
    let gate = Arc::new(Semaphore::new(0));
    let slow = node.sessions.cookie_for(Session {
        gate: Some(gate.clone()),
        ..user("alice")
    });
    let addr = node.addr;
    let pending =
        tokio::spawn(async move { ask(addr, "/events/user:alice", &[("cookie", &slow)]).await });
    let started = node.sessions.started.clone();
    assert!(common::eventually(PATIENCE, || started.load(Ordering::SeqCst) == 1).await);
    assert_eq!(node.auth.revoke("alice").ended_here(), 0);
    gate.add_permits(1);
    let ex = pending.await.unwrap();
    assert_refused(&ex, 401, "authorized during the revocation");
    assert_eq!(node.auth.stats().revoked, 1);
}

/// A request let in just before the revocation, whose handler builds its body after it: its
/// stream "either is refused or has its stream ended" ("ends the subject's streams at once").
#[tokio::test]
async fn revoking_while_the_handler_builds_the_body_ends_the_stream() {
    for order in [Order::AuthInside, Order::AuthOutside] {
        let node = memory_node(order).await;
        let alice = node.sessions.cookie("alice");
        let addr = node.addr;
        let pending = tokio::spawn(async move {
            let mut c = RawClient::get(addr, "/slow/user:alice", &[("cookie", &alice)]).await;
            let status = c.status();
            (status, to_end(&mut c).await)
        });
        let inside = node.app.in_handler.clone();
        assert!(common::eventually(PATIENCE, || inside.load(Ordering::SeqCst) == 1).await);
        let _ = node.auth.revoke("alice");
        node.hub
            .topic("user:alice")
            .publish(Event::message("after the revocation"))
            .await
            .unwrap();
        node.app.gate.add_permits(1);
        let (status, (raw, messages)) = pending.await.unwrap();
        assert_eq!(status, 200, "{order:?}");
        assert!(
            !data(&messages).contains(&"after the revocation".to_owned()),
            "{order:?}: a revoked stream delivered an event: {messages:?}"
        );
        assert_eq!(
            messages.last().map(|m| m.event.as_str()),
            Some(REVOKED),
            "{order:?}"
        );
        come_back_retry(&raw, "access revoked");
    }
}

/// `revoke`: "its requests are refused with `401` for remember_revocations" — also a subject
/// that has no stream open anywhere yet.
#[tokio::test]
async fn revoking_a_subject_with_no_streams_refuses_its_first_connect() {
    let node = memory_node(Order::AuthInside).await;
    let revocation = node.auth.revoke("carol");
    assert_eq!(revocation.ended_here(), 0);
    revocation.shared().await.unwrap();
    let carol = node.sessions.cookie("carol");
    assert_refused(
        &ask(node.addr, "/events/user:carol", &[("cookie", &carol)]).await,
        401,
        "first connect",
    );
    let t = node
        .auth
        .mint_ticket(
            &Grants::new().subject("carol").exact("user:carol"),
            &HeaderMap::new(),
        )
        .await;
    assert_eq!(t.unwrap_err(), TicketError::Refused);
    assert_eq!(node.auth.stats().revocations, 1);
}

/// `issued_at`: "A revocation refuses grants issued at or before it ... an issue time in the
/// future (the issuer's clock is ahead) counts as none until it has passed"; `revoke`: "(those
/// with grants issued after now excepted)"; a ticket minted before the revocation carries
/// grants from before it.
#[tokio::test]
async fn grants_issued_after_a_revocation_get_in_and_a_clock_ahead_does_not_escape_it() {
    let node = memory_node(Order::AuthInside).await;
    let s = &node.sessions;
    let hour = Duration::from_secs(3600);
    let old = s.cookie_for(Session {
        issued_at: Some(SystemTime::now() - hour),
        ..user("alice")
    });
    let future = s.cookie_for(Session {
        issued_at: Some(SystemTime::now() + hour),
        ..user("alice")
    });
    let mut old_stream = RawClient::get(node.addr, "/events/user:alice", &[("cookie", &old)]).await;
    let mut ahead_stream =
        RawClient::get(node.addr, "/events/user:alice", &[("cookie", &future)]).await;
    let ticket = mint_at(node.addr, "user:alice", &old, None).await;
    assert_eq!(node.auth.revoke("alice").ended_here(), 2);
    assert_revoked_end(&mut old_stream, "the old credential's stream").await;
    assert_revoked_end(
        &mut ahead_stream,
        "a credential stamped an hour ahead: it says nothing of the revocation",
    )
    .await;
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("cookie", &future)]).await,
        401,
        "stamped ahead",
    );
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("cookie", &old)]).await,
        401,
        "old",
    );
    let ex = ask(
        node.addr,
        &format!("/events/user:alice?ticket={ticket}"),
        &[],
    )
    .await;
    assert_refused(&ex, 401, "a ticket minted before the revocation");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let signed_in = s.cookie_for(Session {
        issued_at: Some(SystemTime::now()),
        ..user("alice")
    });
    let mut again =
        RawClient::get(node.addr, "/events/user:alice", &[("cookie", &signed_in)]).await;
    assert_eq!(again.status(), 200, "signed in again after the revocation");
    assert_live(
        &mut again,
        &node.hub,
        "user:alice",
        "after signing in again",
    )
    .await;
}

/// `remember_revocations`: "How long a revocation is remembered (its subject's requests
/// refused ...)": after it, the subject is let in again.
#[tokio::test]
async fn a_short_memory_lets_a_revoked_subject_back_in() {
    let node = start_node(
        Hub::new(),
        Sessions::default(),
        Order::AuthInside,
        sse(),
        |b| b.remember_revocations(Duration::from_secs(3)),
    )
    .await;
    let alice = node.sessions.cookie("alice");
    let mut open = RawClient::get(node.addr, "/events/user:alice", &[("cookie", &alice)]).await;
    assert_eq!(node.auth.revoke("alice").ended_here(), 1);
    assert_revoked_end(&mut open, "alice").await;
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("cookie", &alice)]).await,
        401,
        "remembered",
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut back = RawClient::get(node.addr, "/events/user:alice", &[("cookie", &alice)]).await;
    assert_eq!(back.status(), 200, "forgotten");
    assert_live(&mut back, &node.hub, "user:alice", "after the memory").await;
}

/// `Auth::revoke`: "its open streams on this node end at once with a final `REVOKED` event
/// ... The local part is done when this returns" — whatever `remember_revocations` says, here
/// zero (remember nothing: refuse nothing later, but end what is open now).
#[tokio::test]
async fn a_revocation_remembered_for_no_time_still_ends_open_streams() {
    let node = start_node(
        Hub::new(),
        Sessions::default(),
        Order::AuthInside,
        sse(),
        |b| b.remember_revocations(Duration::ZERO),
    )
    .await;
    let alice = node.sessions.cookie("alice");
    let mut open = RawClient::get(node.addr, "/events/user:alice", &[("cookie", &alice)]).await;
    assert_eq!(open.status(), 200);
    let ended = node.auth.revoke("alice").ended_here();
    node.hub
        .topic("user:alice")
        .publish(Event::message("after the revocation"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), open.events(1)).await;
    assert_eq!(
        ended,
        1,
        "revoke ended {ended} streams; the open stream then got {:?}",
        got.map(|m| data(&m))
    );
}

/// "A few hundred concurrent authorized connections then revoke one subject: only its streams
/// end" (`revoke`: "its open streams on this node end at once").
#[tokio::test]
async fn hundreds_of_streams_and_one_subject_revoked() {
    let node = memory_node(Order::AuthInside).await;
    const SUBJECTS: usize = 20;
    const EACH: usize = 12;
    let mut clients = Vec::new();
    for s in 0..SUBJECTS {
        let cookie = node.sessions.cookie(&format!("s{s}"));
        for i in 0..EACH {
            let topic = if i % 2 == 0 {
                "team".to_owned()
            } else {
                format!("user:s{s}")
            };
            let c = RawClient::get(
                node.addr,
                &format!("/events/{topic}"),
                &[("cookie", &cookie)],
            )
            .await;
            assert_eq!(c.status(), 200);
            clients.push((s, topic, c));
        }
    }
    assert!(
        common::eventually(PATIENCE, || node.hub.stats().subscribers
            == (SUBJECTS * EACH) as u64)
        .await
    );
    assert_eq!(node.auth.revoke("s7").ended_here(), EACH);
    node.hub
        .topic("team")
        .publish(Event::message("after"))
        .await
        .unwrap();
    for s in 0..SUBJECTS {
        node.hub
            .topic(&format!("user:s{s}"))
            .publish(Event::message("after"))
            .await
            .unwrap();
    }
    for (s, topic, c) in &mut clients {
        if *s == 7 {
            assert_revoked_end(c, &format!("s7 on {topic}")).await;
        } else {
            let got = tokio::time::timeout(PATIENCE, c.events(1)).await.unwrap();
            assert_eq!(data(&got), ["after"], "s{s} on {topic}");
        }
    }
    assert_eq!(node.auth.stats().streams_revoked, EACH as u64);
}
/// `issued_at`: "A revocation refuses grants issued at or before it"; `revoke`: "ends its
/// open streams ... (those with grants issued after now excepted)" — a credential issued a
/// fraction of a millisecond before the revocation is one issued before it.
#[tokio::test]
async fn a_credential_issued_in_the_same_millisecond_before_the_revocation_is_revoked() {
    let node = memory_node(Order::AuthInside).await;
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let mut held = 0;
    for attempt in 0..10 {
        let name = format!("alice{attempt}");
        let boundary = ms(SystemTime::now()) + 200;
        let issued = SystemTime::UNIX_EPOCH
            + Duration::from_millis(boundary as u64)
            + Duration::from_micros(300);
        let cookie = node.sessions.cookie_for(Session {
            issued_at: Some(issued),
            ..user(&name)
        });
        let path = format!("/events/user:{name}");
        let mut open = RawClient::get(node.addr, &path, &[("cookie", &cookie)]).await;
        assert_eq!(open.status(), 200);
        if SystemTime::now() >= issued {
            continue;
        }
        while SystemTime::now() < issued + Duration::from_micros(50) {
            std::hint::spin_loop();
        }
        let revocation = node.auth.revoke(&name);
        if ms(SystemTime::now()) != boundary {
            continue; // the revocation fell in the next millisecond: nothing to learn
        }
        held += 1;
        let ended = revocation.ended_here();
        let again = ask(node.addr, &path, &[("cookie", &cookie)]).await;
        assert!(
            ended == 1 && again.status == 401,
            "a credential issued at {boundary} ms + 300 µs, revoked after {boundary} ms + 350 µs: \
             {ended} stream(s) ended, its reconnect answered {}",
            again.status
        );
        assert_revoked_end(&mut open, &name).await;
    }
    println!("same-millisecond revocations checked: {held} of 10");
}

/// "Long-lived credentials are never taken from the URL by the crate: only tickets, which are
/// single-use and live at most a minute": a ticket (meant for a stream) must not buy the next
/// ticket at the app's own minting endpoint behind the same layer (the layout of
/// `tests/auth.rs`), or one ticket lives for ever.
#[tokio::test]
async fn a_ticket_cannot_mint_its_successor() {
    let node = start_node(
        Hub::new(),
        Sessions::default(),
        Order::AuthInside,
        sse(),
        |b| b.tickets(Tickets::memory().lifetime(Duration::from_secs(1))),
    )
    .await;
    let alice = node.sessions.cookie("alice");
    let mut ticket = mint_at(node.addr, "user:alice", &alice, None).await;
    let first_minted = Instant::now();
    let mut hops = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let path = format!("/tickets/user:alice?ticket={ticket}");
        let ex = exchange(
            node.addr,
            &request("POST", node.addr, &path, &[("content-length", b"0")]),
        )
        .await;
        hops.push(ex.status);
        if ex.status != 200 {
            break;
        }
        let json: serde_json::Value = serde_json::from_slice(&ex.body).unwrap();
        ticket = json["ticket"].as_str().unwrap().to_owned();
    }
    let stream = RawClient::get(
        node.addr,
        &format!("/events/user:alice?ticket={ticket}"),
        &[],
    )
    .await;
    assert_ne!(
        hops[0],
        200,
        "a ticket minted the next one (hops {hops:?}); the last opened a stream ({}) {:?} after \
         the first ticket, whose lifetime is 1 s",
        stream.status(),
        first_minted.elapsed()
    );
}

// =============================================================================================
// Audiences and grants on the hub
// =============================================================================================

/// `with_audience`: "a hub subscriber made with `granted` receives it, from the history or
/// live, only when its grants' subject is one of them; an anonymous subscriber ... never does
/// ... An empty audience is nobody" — live, from `Last-Event-ID`, from
/// `subscribe_with_recent`, and for a handler that forgot `granted`.
#[tokio::test]
async fn audiences_hold_live_from_history_recent_and_anonymous() {
    let node = memory_node(Order::AuthInside).await;
    let alice = node.sessions.cookie("alice");
    let bob = node.sessions.cookie("bob");
    let team = node.hub.topic("team");
    let mut a = RawClient::get(node.addr, "/events/team", &[("cookie", &alice)]).await;
    let mut b = RawClient::get(node.addr, "/events/team", &[("cookie", &bob)]).await;
    let mut anon = RawClient::get(node.addr, "/anon/team", &[("cookie", &alice)]).await;
    let first = team.publish(Event::message("all")).await.unwrap();
    team.publish(Event::message("alice only").with_audience(["alice"]))
        .await
        .unwrap();
    team.publish(Event::message("nobody").with_audience(Vec::<String>::new()))
        .await
        .unwrap();
    team.publish(Event::message("empty subject").with_audience([""]))
        .await
        .unwrap();
    team.publish(Event::message("bob only").with_audience(["bob"]))
        .await
        .unwrap();
    team.publish(
        Event::builder()
            .event("custom")
            .data("alice by builder")
            .audience(["alice", "ALICE"])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    team.publish(Event::message("end")).await.unwrap();
    let alice_view = ["all", "alice only", "alice by builder", "end"];
    let bob_view = ["all", "bob only", "end"];
    assert_eq!(data(&a.events(4).await), alice_view);
    assert_eq!(data(&b.events(3).await), bob_view);
    assert_eq!(data(&anon.events(2).await), ["all", "end"], "anonymous");
    let mut b2 = RawClient::get(
        node.addr,
        "/events/team",
        &[("cookie", &bob), ("last-event-id", &first)],
    )
    .await;
    assert_eq!(
        data(&b2.events(2).await),
        ["bob only", "end"],
        "bob from history"
    );
    let mut r = RawClient::get(node.addr, "/recent/team", &[("cookie", &bob)]).await;
    assert_eq!(data(&r.events(3).await), bob_view, "bob from recent");
    let mut r = RawClient::get(node.addr, "/recent/team", &[("cookie", &alice)]).await;
    assert_eq!(data(&r.events(4).await), alice_view, "alice from recent");
    let mut r = RawClient::get(
        node.addr,
        &format!("/anon/team?lastEventId={first}"),
        &[("cookie", &bob)],
    )
    .await;
    assert_eq!(data(&r.events(1).await), ["end"], "anonymous from history");
    // Nothing else is pending for anyone: the next event each gets is the next one.
    team.publish(Event::message("next")).await.unwrap();
    for (c, what) in [
        (&mut a, "alice"),
        (&mut b, "bob"),
        (&mut anon, "anon"),
        (&mut b2, "bob2"),
    ] {
        let got = tokio::time::timeout(PATIENCE, c.events(1)).await.unwrap();
        assert_eq!(data(&got), ["next"], "{what}");
    }
}

/// The per-user case of "`Last-Event-ID` pointing into another subject's history": an id
/// from bob's topic resumes alice's own topic only, and asking for bob's topic with it is
/// `403` ("a topic they do not allow is a `403`").
#[tokio::test]
async fn a_last_event_id_from_another_subject_s_topic_reveals_nothing() {
    let node = memory_node(Order::AuthOutside).await;
    let alice = node.sessions.cookie("alice");
    let bob_topic = node.hub.topic("user:bob");
    let alice_topic = node.hub.topic("user:alice");
    let bob_first = bob_topic.publish(Event::message("bob 1")).await.unwrap();
    bob_topic.publish(Event::message("bob 2")).await.unwrap();
    alice_topic
        .publish(Event::message("alice 1"))
        .await
        .unwrap();
    alice_topic
        .publish(Event::message("alice 2"))
        .await
        .unwrap();
    let ex = ask(
        node.addr,
        "/events/user:bob",
        &[("cookie", &alice), ("last-event-id", &bob_first)],
    )
    .await;
    assert_refused(&ex, 403, "bob's topic with bob's id");
    let ex = ask(
        node.addr,
        &format!("/recent/user:bob?lastEventId={bob_first}"),
        &[("cookie", &alice)],
    )
    .await;
    assert_refused(&ex, 403, "bob's topic by the query");
    let mut c = RawClient::get(
        node.addr,
        "/events/user:alice",
        &[("cookie", &alice), ("last-event-id", &bob_first)],
    )
    .await;
    let got = data(&c.events(1).await);
    assert!(got.iter().all(|d| !d.starts_with("bob")), "{got:?}");
    assert_live(&mut c, &node.hub, "user:alice", "alice's own topic").await;
}

/// Under `LagPolicy::Skip` ("Jump to the newest event: a MISSED event ..., then the newest
/// event, then live events") bob still never receives an event whose audience is alice.
#[tokio::test]
async fn audiences_hold_when_a_lagging_subscriber_skips() {
    use futures_util::StreamExt;
    let hub = Hub::builder()
        .max_lag(8, 1 << 20)
        .lag_policy(LagPolicy::Skip)
        .build();
    let topic = hub.topic("team");
    let bob = Grants::new().subject("bob").exact("team");
    let mut sub = topic.subscribe(None).granted(&bob).unwrap();
    sub.join();
    for i in 0..100 {
        let event = if i % 2 == 0 {
            Event::message(format!("alice {i}")).with_audience(["alice"])
        } else {
            Event::message(format!("all {i}"))
        };
        topic.publish(event).await.unwrap();
    }
    topic
        .publish(Event::message("alice newest").with_audience(["alice"]))
        .await
        .unwrap();
    topic.publish(Event::message("end")).await.unwrap();
    let mut decoder = tower_sse::decode::Decoder::new();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &Message| m.data == "end") {
        let event = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .unwrap()
            .unwrap();
        seen.extend(decoder.feed(event.as_bytes()));
    }
    assert!(
        seen.iter().any(|m| m.event == MISSED),
        "it lagged: {:?}",
        data(&seen)
    );
    assert!(
        seen.iter().all(|m| !m.data.starts_with("alice")),
        "bob got alice's events: {:?}",
        data(&seen)
    );
}

/// `TopicMatch::matches`: "never for a name that starts with `RESERVED_PREFIX`"; "no grant
/// matches" the revocations topic — not `Prefix("")`, not a ticket narrowed to it, over HTTP.
#[tokio::test]
async fn a_prefix_of_nothing_never_reaches_the_crate_s_own_topics() {
    let hub = Hub::new();
    let sessions = Sessions::default();
    let node = start_node(
        hub.clone(),
        sessions.clone(),
        Order::AuthInside,
        sse(),
        |b| b.tickets(Tickets::memory()).share_through(&hub),
    )
    .await;
    let everything = sessions.cookie_for(Session {
        extra: vec![TopicMatch::prefix(""), TopicMatch::prefix("tower-sse:")],
        ..user("root")
    });
    let _ = node.auth.revoke("someone");
    assert!(
        common::eventually(PATIENCE, || hub
            .topic("tower-sse:revocations")
            .history_len()
            > 0)
        .await
    );
    for path in [
        "/events/tower-sse:revocations",
        "/recent/tower-sse:revocations",
        "/events/tower-sse:",
        "/events/tower-sse:anything",
    ] {
        assert_refused(
            &ask(node.addr, path, &[("cookie", &everything)]).await,
            403,
            path,
        );
    }
    let (status, _) = try_mint(node.addr, "tower-sse:revocations", &everything, None).await;
    assert_eq!(status, 403, "no ticket narrowed to the revocations topic");
    let all = Grants::new().subject("root").prefix("");
    let narrowed = all.narrowed([TopicMatch::prefix("tower-sse:")]);
    if let Ok(narrowed) = narrowed {
        assert!(!narrowed.allows("tower-sse:revocations"));
        assert!(hub
            .topic("tower-sse:revocations")
            .subscribe(None)
            .granted(&narrowed)
            .is_err());
    }
    let mut other = RawClient::get(
        node.addr,
        "/events/anything-else",
        &[("cookie", &everything)],
    )
    .await;
    assert_eq!(other.status(), 200, "Prefix(\"\") reads every other topic");
    assert_live(&mut other, &hub, "anything-else", "Prefix(\"\")").await;
}

/// `with_audience`: a granted subscriber "receives it, from the history or live, only when its
/// grants' subject is one of them" — also when the event is the final event of `Hub::close`
/// ("each first delivers the events already published, then `final_event`").
#[tokio::test]
async fn a_closing_hub_s_final_event_respects_its_audience() {
    let node = memory_node(Order::AuthInside).await;
    let bob = node.sessions.cookie("bob");
    let mut b = RawClient::get(node.addr, "/events/team", &[("cookie", &bob)]).await;
    assert_eq!(b.status(), 200);
    assert!(common::eventually(PATIENCE, || node.hub.stats().subscribers == 1).await);
    node.hub.close(Some(
        Event::message("for alice only").with_audience(["alice"]),
    ));
    let (raw, messages) = to_end(&mut b).await;
    come_back_retry(&raw, "server shutting down, reconnect");
    assert!(
        !data(&messages).contains(&"for alice only".to_owned()),
        "bob received alice's event: {:?}",
        String::from_utf8_lossy(&raw)
    );
}

/// A page's resume: "opens `EventSource(url + \"?ticket=\" + t)` ... resuming after the last
/// event it saw with the `lastEventId` query parameter" — in either layer order, and the
/// handler sees no ticket.
#[tokio::test]
async fn a_ticket_and_last_event_id_resume_in_both_orders() {
    for order in [Order::AuthInside, Order::AuthOutside] {
        let node = memory_node(order).await;
        let alice = node.sessions.cookie("alice");
        let topic = node.hub.topic("user:alice");
        let first = topic.publish(Event::message("one")).await.unwrap();
        topic.publish(Event::message("two")).await.unwrap();
        let t = mint_at(node.addr, "user:alice", &alice, None).await;
        let path = format!("/events/user:alice?lastEventId={first}&ticket={t}");
        let mut c = RawClient::get(node.addr, &path, &[]).await;
        assert_eq!(c.status(), 200, "{order:?}");
        assert_eq!(data(&c.events(1).await), ["two"], "{order:?}");
        let seen = node.app.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [format!("/events/user:alice?lastEventId={first}")],
            "{order:?}"
        );
    }
}

// =============================================================================================
// warp
// =============================================================================================

mod warp_app {
    use super::*;
    use std::convert::Infallible;
    use warp::{Filter, Reply};

    pub(super) fn routes(
        hub: Hub,
    ) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
        warp::path!("events" / String)
            .and(tower_sse::warp::grants())
            .and(tower_sse::warp::last_event_id())
            .map(
                move |topic: String, grants: Grants, last: Option<LastEventId>| match hub
                    .topic(&topic)
                    .subscribe(last.as_ref())
                    .granted(&grants)
                {
                    Ok(subscription) => SseBody::new(subscription).into_response(),
                    Err(not_granted) => not_granted.into_response(),
                },
            )
            .recover(|rejection: warp::Rejection| async move {
                let response = match rejection.find::<Denied>() {
                    Some(denied) => (*denied).into_response(),
                    None => warp::http::StatusCode::NOT_FOUND.into_response(),
                };
                Ok::<_, Infallible>(response)
            })
            .unify()
    }

    pub(super) async fn serve(order: Order, hub: Hub, auth: Auth) -> SocketAddr {
        use tower::ServiceBuilder;
        let service = warp::service(routes(hub));
        match order {
            Order::AuthInside => {
                common::serve(
                    ServiceBuilder::new()
                        .layer(sse())
                        .layer(auth.layer())
                        .service(service),
                )
                .await
            }
            Order::AuthOutside => {
                common::serve(
                    ServiceBuilder::new()
                        .layer(auth.layer())
                        .layer(sse())
                        .service(service),
                )
                .await
            }
        }
    }
}

/// warp behind the layers (`grants()`: "put there by an `AuthLayer` around the warp
/// service"), in either order: refusals, expiry ("the streams of a request end at its grants'
/// expiry and on its subject's revocation"), revocation, the reconnect refused.
#[tokio::test]
async fn warp_behind_the_auth_layer_in_both_orders() {
    for order in [Order::AuthInside, Order::AuthOutside] {
        let hub = Hub::new();
        let sessions = Sessions::default();
        let auth = Auth::builder(authorizer(sessions.clone()))
            .tickets(Tickets::memory())
            .build();
        let addr = warp_app::serve(order, hub.clone(), auth.clone()).await;
        let alice = sessions.cookie("alice");
        let short = sessions.cookie_for(Session {
            expires_in: Some(Duration::from_millis(1500)),
            ..user("bob")
        });
        assert_refused(
            &ask(addr, "/events/user:alice", &[]).await,
            401,
            "warp, no credential",
        );
        assert_refused(
            &ask(addr, "/events/user:bob", &[("cookie", &alice)]).await,
            403,
            "warp, another's topic",
        );
        // Without Accept the layer passes it on; warp's `grants()` rejects with Denied.
        let ex = exchange(addr, &request("GET", addr, "/events/user:alice", &[])).await;
        assert_refused(&ex, 401, "warp, passed on without grants");
        let mut expiring = RawClient::get(addr, "/events/user:bob", &[("cookie", &short)]).await;
        assert_eq!(expiring.status(), 200, "{order:?}");
        let (raw, _) = to_end(&mut expiring).await;
        come_back_retry(&raw, "credential expired, reconnect");
        let mut revoked = RawClient::get(addr, "/events/user:alice", &[("cookie", &alice)]).await;
        assert_eq!(revoked.status(), 200);
        assert_live(&mut revoked, &hub, "user:alice", "warp").await;
        let t = auth
            .mint_ticket(
                &Grants::new().subject("alice").exact("team"),
                &HeaderMap::new(),
            )
            .await
            .unwrap();
        let mut by_ticket =
            RawClient::get(addr, &format!("/events/team?ticket={}", t.value()), &[]).await;
        assert_eq!(by_ticket.status(), 200, "warp, by ticket");
        assert_eq!(auth.revoke("alice").ended_here(), 2, "{order:?}");
        assert_revoked_end(&mut revoked, "warp, alice").await;
        assert_revoked_end(&mut by_ticket, "warp, alice by ticket").await;
        assert_refused(
            &ask(addr, "/events/user:alice", &[("cookie", &alice)]).await,
            401,
            "warp",
        );
    }
}

// =============================================================================================
// Two and three nodes on one Redis
// =============================================================================================

mod on_redis {
    use super::*;
    use common::redis::{LaggingProxy, RedisServer};

    pub(super) async fn node_on(client: redis::Client, sessions: Sessions) -> Node {
        let hub = Hub::builder().redis(client.clone()).build();
        let share = hub.clone();
        start_node(hub, sessions, Order::AuthInside, sse(), move |b| {
            b.tickets(Tickets::redis(client)).share_through(&share)
        })
        .await
    }

    /// With `share_through`: "a revocation on one ends the subject's streams on all" ("every
    /// other node does the same as soon as the hub's broker delivers it (a few milliseconds on
    /// Redis)"), "and refuses the subject's reconnects too" — for cookies and for a ticket
    /// minted before the revocation; other subjects' streams stay.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_a_revocation_on_a_ends_b_s_streams_and_b_refuses() {
        let redis = RedisServer::start().await;
        let sessions = Sessions::default();
        let a = node_on(redis.client(), sessions.clone()).await;
        let b = node_on(redis.client(), sessions.clone()).await;
        let alice = sessions.cookie("alice");
        let bob = sessions.cookie("bob");
        let mut on_b = Vec::new();
        for topic in ["user:alice", "team", "team", "user:alice", "team"] {
            let c =
                RawClient::get(b.addr, &format!("/events/{topic}"), &[("cookie", &alice)]).await;
            assert_eq!(c.status(), 200);
            on_b.push(c);
        }
        let mut bob_b = RawClient::get(b.addr, "/events/team", &[("cookie", &bob)]).await;
        let ticket = mint_at(b.addr, "user:alice", &alice, None).await;
        assert!(common::eventually(PATIENCE, || b.hub.stats().subscribers >= 7).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let revocation = a.auth.revoke("alice");
        assert_eq!(revocation.ended_here(), 0);
        revocation.shared().await.unwrap();
        for (i, c) in on_b.iter_mut().enumerate() {
            assert_revoked_end(c, &format!("alice's stream {i} on B")).await;
        }
        let took = started.elapsed();
        println!("revoke on A -> 5 streams ended on B: {took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(b.auth.stats().streams_revoked, 5);
        assert_refused(
            &ask(b.addr, "/events/user:alice", &[("cookie", &alice)]).await,
            401,
            "B, cookie",
        );
        let ex = ask(b.addr, &format!("/events/user:alice?ticket={ticket}"), &[]).await;
        assert_refused(&ex, 401, "B, a ticket minted before the revocation");
        assert_eq!(b.auth.stats().revoked, 2);
        assert_live(&mut bob_b, &a.hub, "team", "bob on B").await;
    }

    /// "a node that starts reads the ones still in that topic's history": a node started
    /// after the revocation refuses the subject.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_a_node_started_after_the_revocation_refuses() {
        let redis = RedisServer::start().await;
        let sessions = Sessions::default();
        let a = node_on(redis.client(), sessions.clone()).await;
        a.auth.revoke("alice").shared().await.unwrap();
        let c = node_on(redis.client(), sessions.clone()).await;
        assert!(
            common::eventually(PATIENCE, || c.auth.stats().revocations == 1).await,
            "C read the revocation from the history"
        );
        let alice = sessions.cookie("alice");
        assert_refused(
            &ask(c.addr, "/events/user:alice", &[("cookie", &alice)]).await,
            401,
            "C",
        );
        let bob = sessions.cookie("bob");
        let mut b = RawClient::get(c.addr, "/events/user:bob", &[("cookie", &bob)]).await;
        assert_eq!(b.status(), 200);
        assert_live(&mut b, &c.hub, "user:bob", "bob on C").await;
        drop(a);
    }

    /// `revoke`: "its requests are refused with `401` for `remember_revocations`", and with
    /// `share_through` every node "refuses the subject's reconnects too", "a node that starts
    /// reads the ones still in that topic's history" — also the requests that reach a node
    /// before that read has come back (here a node whose Redis replies lag by a second).
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_a_starting_node_refuses_before_it_has_read_the_revocations() {
        let redis = RedisServer::start().await;
        let sessions = Sessions::default();
        let a = node_on(redis.client(), sessions.clone()).await;
        a.auth.revoke("alice").shared().await.unwrap();
        let alice = sessions.cookie("alice");
        let proxy = LaggingProxy::start(redis.port(), Duration::from_secs(1)).await;
        let c = node_on(proxy.client(), sessions.clone()).await;
        let mut first = RawClient::get(c.addr, "/events/user:alice", &[("cookie", &alice)]).await;
        let status = first.status();
        let applied_then = c.auth.stats().revocations;
        if status == 200 {
            c.hub
                .topic("user:alice")
                .publish(Event::message("leaked?"))
                .await
                .ok();
            let (_, messages) = to_end(&mut first).await;
            panic!(
                "a revoked subject was let in (200) by a starting node (revocations applied \
                 then: {applied_then}); its stream then got {:?}",
                messages
                    .iter()
                    .map(|m| (&m.event, &m.data))
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(status, 401);
    }

    /// "of two nodes redeeming it at once exactly one wins (`GETDEL`)" — three nodes, many
    /// rounds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs redis-server"]
    async fn redis_one_ticket_on_three_nodes_at_once_exactly_one_wins() {
        let redis = RedisServer::start().await;
        let sessions = Sessions::default();
        let a = node_on(redis.client(), sessions.clone()).await;
        let b = node_on(redis.client(), sessions.clone()).await;
        let c = node_on(redis.client(), sessions.clone()).await;
        let alice = sessions.cookie("alice");
        for round in 0..40 {
            let t = mint_at(
                [a.addr, b.addr, c.addr][round % 3],
                "user:alice",
                &alice,
                None,
            )
            .await;
            let path = format!("/events/user:alice?ticket={t}");
            let (x, y, z) = tokio::join!(
                RawClient::get(a.addr, &path, &[]),
                RawClient::get(b.addr, &path, &[]),
                RawClient::get(c.addr, &path, &[]),
            );
            let mut statuses = [x.status(), y.status(), z.status()];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 401, 401], "round {round}");
        }
        let redeemed: u64 = [&a, &b, &c]
            .iter()
            .map(|n| n.auth.stats().tickets_redeemed)
            .sum();
        assert_eq!(redeemed, 40);
    }

    /// `Tickets::redis`: "a ticket that cannot be checked because Redis cannot be reached is
    /// refused with `503`"; "The connection is made on first use and remade when lost"; and
    /// "Its value is never logged" (also in the store's error).
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_killed_during_redemption_answers_503_then_recovers() {
        let ((ticket, ex, stats), logs) = trace_logs_of(async {
            let mut redis = RedisServer::start().await;
            let sessions = Sessions::default();
            let a = node_on(redis.client(), sessions.clone()).await;
            let alice = sessions.cookie("alice");
            let ticket = mint_at(a.addr, "user:alice", &alice, None).await;
            redis.kill();
            let ex = ask(a.addr, &format!("/events/user:alice?ticket={ticket}"), &[]).await;
            redis.restart().await;
            let mut recovered = false;
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if let (200, Some(t)) = try_mint(a.addr, "user:alice", &alice, None).await {
                    let c = RawClient::get(a.addr, &format!("/events/user:alice?ticket={t}"), &[])
                        .await;
                    if c.status() == 200 {
                        recovered = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(recovered, "tickets work again once Redis is back");
            let ex2 = ask(a.addr, &format!("/events/user:alice?ticket={ticket}"), &[]).await;
            assert_refused(&ex2, 401, "the ticket minted before the restart is gone");
            (ticket, ex, a.auth.stats())
        })
        .await;
        assert_refused(&ex, 503, "Redis down during the redemption");
        assert!(stats.bad_tickets >= 2, "{stats:?}");
        assert!(
            logs.contains("ticket store unavailable"),
            "the reason is logged"
        );
        assert_not_logged(&logs, &ticket, "the ticket");
    }

    /// Audiences "cross a broker with the event": replayed from Redis history on a node that
    /// never followed the topic (by `Last-Event-ID` and by `subscribe_with_recent`), bob never
    /// gets alice's events.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_audiences_hold_when_replayed_on_another_node() {
        let redis = RedisServer::start().await;
        let sessions = Sessions::default();
        let a = node_on(redis.client(), sessions.clone()).await;
        let team = a.hub.topic("team");
        let first = team.publish(Event::message("all")).await.unwrap();
        team.publish(Event::message("alice only").with_audience(["alice"]))
            .await
            .unwrap();
        team.publish(Event::message("nobody").with_audience(Vec::<String>::new()))
            .await
            .unwrap();
        team.publish(Event::message("bob only").with_audience(["bob"]))
            .await
            .unwrap();
        team.publish(Event::message("end")).await.unwrap();
        let b = node_on(redis.client(), sessions.clone()).await;
        let bob = sessions.cookie("bob");
        let alice = sessions.cookie("alice");
        let mut h = RawClient::get(
            b.addr,
            "/events/team",
            &[("cookie", &bob), ("last-event-id", &first)],
        )
        .await;
        assert_eq!(
            data(&h.events(2).await),
            ["bob only", "end"],
            "bob from B's history read"
        );
        let c = node_on(redis.client(), sessions.clone()).await;
        let mut r = RawClient::get(c.addr, "/recent/team", &[("cookie", &bob)]).await;
        assert_eq!(
            data(&r.events(3).await),
            ["all", "bob only", "end"],
            "bob, recent on C"
        );
        let mut r = RawClient::get(c.addr, "/recent/team", &[("cookie", &alice)]).await;
        assert_eq!(
            data(&r.events(3).await),
            ["all", "alice only", "end"],
            "alice, recent on C"
        );
        let mut anon = RawClient::get(
            c.addr,
            &format!("/anon/team?lastEventId={first}"),
            &[("cookie", &alice)],
        )
        .await;
        assert_eq!(data(&anon.events(1).await), ["end"], "anonymous on C");
    }

    /// A ticket's grants cross Redis with their expiry: "At the grants' expiry the stream ends
    /// with a come-back block ... `: credential expired, reconnect`".
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_a_ticket_minted_on_a_carries_its_expiry_to_b() {
        let redis = RedisServer::start().await;
        let sessions = Sessions::default();
        let a = node_on(redis.client(), sessions.clone()).await;
        let b = node_on(redis.client(), sessions.clone()).await;
        let short = sessions.cookie_for(Session {
            expires_in: Some(Duration::from_millis(1500)),
            ..user("alice")
        });
        let t = mint_at(a.addr, "user:alice", &short, None).await;
        let mut c = RawClient::get(b.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
        assert_eq!(c.status(), 200);
        let (raw, _) = to_end(&mut c).await;
        come_back_retry(&raw, "credential expired, reconnect");
        let t = mint_at(a.addr, "user:alice", &short, None).await;
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let ex = ask(b.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
        assert_refused(&ex, 401, "expired grants by a Redis ticket");
        assert_eq!(b.auth.stats().expired, 1);
    }
}
