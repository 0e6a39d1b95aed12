//! Per-user push notifications with sign-in, on warp 0.4: `SseLayer` and `Auth::layer()` around
//! `warp::service`, served by `tower_sse::serve::Server`.
//!
//! ```text
//! cargo run --example notifications --features warp,server
//! ```
//!
//! Open `http://localhost:3000/`, sign in as someone and send them notifications. The sign-in is
//! a demo: a name and no password. The point is what the stream does with the session.
//!
//! - `GET /` — the page: sign in, read your notifications, send some, sign out (here or
//!   everywhere)
//! - `POST /session` — `{"user": "alice"}` signs in: an `HttpOnly`, `SameSite=Lax` session cookie
//!   (a random id, kept in memory with the user and an expiry) that lasts `SESSION_TTL_S`
//!   seconds (default 3600). `GET /session` says who and for how long (`expires_in`, in ms);
//!   `POST /session/refresh` issues a new cookie with a new expiry (the page does it half way);
//!   `DELETE /session` signs out
//! - `POST /session/revoke-all` — "sign out everywhere": every session of the user ends, and each
//!   of their open streams gets a final `revoked` event (the page shows it and stops reading)
//! - `GET /users/{id}/events` — the signed-in user's own notifications (`401` signed out, `403`
//!   for another user's id). It resumes after `Last-Event-ID` (a reconnect) or the `lastEventId`
//!   query parameter (a page opened again); a first visit gets the user's last 20
//!   notifications. A stream ends when its session expires; the browser comes back by itself
//!   with the refreshed cookie and resumes
//! - `POST /tickets` — for a page on another origin, whose `EventSource` sends no cookie: with
//!   the cookie (`fetch(…, {credentials: "include"})`), a one-time ticket for
//!   `GET /users/{id}/events?ticket=…`, as `{"ticket", "user", "expires_in"}`
//! - `POST /users/{id}/notify` — `{"title": "...", "body": "..."}` to one user
//! - `POST /notify` — the same to every user with a stream or pending notifications
//!
//! Who may notify whom: anyone may notify anyone, signed in or not. The two notify routes stand
//! in for the app's backend, which would guard them with its own means; sign-in decides who
//! *reads* a stream.
//!
//! Each user is one hub topic, so a user who was offline gets what arrived meanwhile (up to the
//! history of 100): the page keeps the notifications it showed and the id of the last one in
//! `localStorage`, and opens its stream with `?lastEventId=` so it continues exactly after it,
//! without a duplicate. One away for longer than the history is told (`history-lost`, shown on
//! the page) and gets the newest 20.
//!
//! The same stream on another origin: `http://localhost:3001/` (`WIDGET_PORT`) serves a page
//! that mints a ticket for each stream it opens. The browser's own reconnect (after a server
//! restart or the stream's lifetime) still carries the spent ticket and is refused; the page
//! then mints a new one and resumes with `lastEventId`. `ALLOW_ORIGIN` (default: that page's
//! origin) is the one other origin whose pages may read the answers (CORS, with credentials).
//! Both pages are on `localhost`, one site: the `SameSite=Lax` cookie goes with the ticket
//! request. A page on another site would need `SameSite=None; Secure`, so HTTPS.
//!
//! `STREAM_LIFETIME_S` ends every stream after that many seconds (unset: never), so that
//! clients move to other servers over time. Set `PORT` and `WIDGET_PORT` to listen elsewhere
//! (`0`: a free port); `RUST_LOG` sets what is logged (refused streams are logged at `INFO`).

#[path = "support/log.rs"]
mod log;

use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, HeaderValue, Request};
use hyper::body::Incoming;
use serde::Deserialize;
use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{
    auth::{Auth, Denied, TicketError, Tickets},
    hub::Hub,
    serve::Server,
    BoxError, Event, Grants, LastEventId, Shutdown, SseBody, SseLayer,
};
use warp::{http::StatusCode, reply::Response, Filter, Reply};

const USER_PREFIX: &str = "user:";
/// How many of a user's latest notifications a first visit shows.
const RECENT: usize = 20;
/// The session cookie; named after the app, as every app on `localhost` shares the cookie jar.
const COOKIE: &str = "notifications_session";

/// What the server is configured with; [`Config::from_env`] reads it from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a session lasts after its sign-in or its last refresh.
    pub session_ttl: Duration,
    /// The other origin whose pages may mint tickets and read the streams, if any.
    pub allow_origin: Option<HeaderValue>,
    /// When every stream ends by itself (the browser reconnects), if ever.
    pub stream_lifetime: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_ttl: Duration::from_secs(3600),
            allow_origin: None,
            stream_lifetime: None,
        }
    }
}

impl Config {
    /// `SESSION_TTL_S`, `ALLOW_ORIGIN` (default `default_origin`) and `STREAM_LIFETIME_S`.
    pub fn from_env(default_origin: &str) -> std::io::Result<Config> {
        let bad = |name: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad {name}"))
        };
        let seconds = |name: &str| -> std::io::Result<Option<Duration>> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(text) => match text.parse::<u64>() {
                    Ok(s) if s > 0 => Ok(Some(Duration::from_secs(s))),
                    _ => Err(bad(name)),
                },
            }
        };
        let origin = std::env::var("ALLOW_ORIGIN").unwrap_or_else(|_| default_origin.to_owned());
        Ok(Config {
            session_ttl: seconds("SESSION_TTL_S")?.unwrap_or(Config::default().session_ttl),
            allow_origin: Some(HeaderValue::try_from(origin).map_err(|_| bad("ALLOW_ORIGIN"))?),
            stream_lifetime: seconds("STREAM_LIFETIME_S")?,
        })
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
struct Session {
    user: String,
    /// The sign-in; a refresh keeps it, so that a revocation refuses the refreshed session too.
    created: SystemTime,
    expires: SystemTime,
}

/// The sessions, by the random id their cookie holds (a real app keeps them in its database).
#[derive(Debug, Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, Session>>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for `user`, and its id; `None` if the random source fails.
    fn open(&self, user: &str, created: SystemTime, ttl: Duration) -> Option<(String, Session)> {
        let id = random_id()?;
        let now = SystemTime::now();
        let session = Session {
            user: user.to_owned(),
            created,
            expires: now + ttl,
        };
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    fn get(&self, id: &str) -> Option<Session> {
        let sessions = self.lock();
        let session = sessions.get(id)?;
        (session.expires > SystemTime::now()).then(|| session.clone())
    }

    /// Replaces the live session `id` with a new id and a new expiry.
    fn refresh(&self, id: &str, ttl: Duration) -> Option<(String, Session)> {
        let old = self.get(id)?;
        self.close(id);
        self.open(&old.user, old.created, ttl)
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn close_all(&self, user: &str) {
        self.lock().retain(|_, s| s.user != user);
    }
}

/// 128 bits from the operating system, in hex.
fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The session id in the request's cookies, if any.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_owned)
}

/// The application: its hub, sessions and `Auth`, shared by every server that serves it (a
/// restarted one included). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct App {
    hub: Hub,
    sessions: Sessions,
    auth: Auth,
    config: Arc<Config>,
}

impl App {
    /// An app on `hub`: sessions in memory, tickets in memory (one server process).
    pub fn new(hub: Hub, config: Config) -> App {
        let sessions = Sessions::default();
        let store = sessions.clone();
        // The session cookie makes the grants: the user's own topic, until the session
        // expires, issued at its sign-in (a revocation refuses what was signed in before it).
        let auth = Auth::builder(move |parts: &Parts| {
            let session = session_id(&parts.headers).and_then(|id| store.get(&id));
            async move {
                let session = session.ok_or(Denied::Unauthenticated)?;
                Ok(Grants::new()
                    .subject(session.user.clone())
                    .exact(topic_of(&session.user))
                    .expires_at(session.expires)
                    .issued_at(session.created))
            }
        })
        .tickets(Tickets::memory())
        .build();
        App {
            hub,
            sessions,
            auth,
            config: Arc::new(config),
        }
    }

    /// The hub the notifications go through.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Who may read which stream, and its counters.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }
}

#[derive(Deserialize)]
struct Notification {
    title: String,
    body: String,
}

#[derive(Deserialize)]
struct SignIn {
    user: String,
}

fn user_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn topic_of(user: &str) -> String {
    format!("{USER_PREFIX}{user}")
}

fn notification_event(n: &Notification) -> Option<Event> {
    let data = serde_json::json!({ "title": n.title, "body": n.body });
    Event::builder()
        .event("notification")
        .data(data.to_string())
        .build()
        .ok()
}

/// Milliseconds until `at` (zero once past).
fn ms_until(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::now())
        .map_or(0, |left| left.as_millis())
}

/// The session cookie for `id` (an empty one that expires at once signs out).
fn set_cookie(response: &mut Response, id: &str, max_age: Duration) {
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    );
    if let Ok(value) = HeaderValue::try_from(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Who is signed in and for how long, with a cookie for `id` when one is issued.
fn session_reply(session: &Session, cookie: Option<(&str, Duration)>) -> Response {
    let body = serde_json::json!({
        "user": session.user,
        "expires_in": ms_until(session.expires),
    });
    let mut response = warp::reply::json(&body).into_response();
    if let Some((id, ttl)) = cookie {
        set_cookie(&mut response, id, ttl);
    }
    response
}

fn sign_in(form: SignIn, current: Option<String>, app: App) -> Response {
    if !user_id_ok(&form.user) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    // Signing in as someone else ends this browser's previous session.
    if let Some(id) = current {
        app.sessions.close(&id);
    }
    let ttl = app.config.session_ttl;
    match app.sessions.open(&form.user, SystemTime::now(), ttl) {
        Some((id, session)) => session_reply(&session, Some((&id, ttl))),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn refresh(current: Option<String>, app: App) -> Response {
    let ttl = app.config.session_ttl;
    match current.and_then(|id| app.sessions.refresh(&id, ttl)) {
        Some((id, session)) => session_reply(&session, Some((&id, ttl))),
        None => Denied::Unauthenticated.into_response(),
    }
}

fn sign_out(current: Option<String>, app: App) -> Response {
    if let Some(id) = current {
        app.sessions.close(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, "", Duration::ZERO);
    response
}

fn revoke_all(current: Option<String>, app: App) -> Response {
    let Some(session) = current.and_then(|id| app.sessions.get(&id)) else {
        return Denied::Unauthenticated.into_response();
    };
    app.sessions.close_all(&session.user);
    // Ends their open streams here with a `revoked` event; their reconnects are refused.
    let ended = app.auth.revoke(&session.user).ended_here();
    let mut response = warp::reply::json(&serde_json::json!({ "ended": ended })).into_response();
    set_cookie(&mut response, "", Duration::ZERO);
    response
}

async fn mint(grants: Grants, headers: HeaderMap, app: App) -> Response {
    // Bound to the `Origin` of this request: the page that asked is the one that may use it.
    match app.auth.mint_ticket(&grants, &headers).await {
        Ok(ticket) => warp::reply::json(&serde_json::json!({
            "ticket": ticket.value(),
            "user": grants.subject_name(),
            "expires_in": ticket.lifetime().as_millis(),
        }))
        .into_response(),
        Err(TicketError::Refused) => Denied::Unauthenticated.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The warp filter tree, without the layers.
pub fn routes(app: App) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_app = warp::any().map(move || app.clone());
    let session = warp::header::headers_cloned().map(|headers: HeaderMap| session_id(&headers));

    let page = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(PAGE).into_response());

    let signed_in = warp::path!("session")
        .and(warp::post())
        .and(warp::body::content_length_limit(1024))
        .and(warp::body::json())
        .and(session)
        .and(with_app.clone())
        .map(sign_in);
    let who = warp::path!("session")
        .and(warp::get())
        .and(session)
        .and(with_app.clone())
        .map(|current: Option<String>, app: App| {
            match current.and_then(|id| app.sessions.get(&id)) {
                Some(session) => session_reply(&session, None),
                None => Denied::Unauthenticated.into_response(),
            }
        });
    let signed_out = warp::path!("session")
        .and(warp::delete())
        .and(session)
        .and(with_app.clone())
        .map(sign_out);
    let refreshed = warp::path!("session" / "refresh")
        .and(warp::post())
        .and(session)
        .and(with_app.clone())
        .map(refresh);
    let revoked = warp::path!("session" / "revoke-all")
        .and(warp::post())
        .and(session)
        .and(with_app.clone())
        .map(revoke_all);

    let tickets = warp::path!("tickets")
        .and(warp::post())
        .and(tower_sse::warp::grants())
        .and(warp::header::headers_cloned())
        .and(with_app.clone())
        .then(mint);

    let events = warp::path!("users" / String / "events")
        .and(warp::get())
        // The header, or the `lastEventId` query parameter of a page opened again.
        .and(tower_sse::warp::last_event_id())
        // Put there by the `Auth` layer, from the session cookie or a ticket.
        .and(tower_sse::warp::grants())
        .and(with_app.clone())
        .map(
            |id: String, last: Option<LastEventId>, grants: Grants, app: App| {
                if !user_id_ok(&id) {
                    return StatusCode::BAD_REQUEST.into_response();
                }
                // Another user's topic is not granted: `403`.
                match app
                    .hub
                    .topic(&topic_of(&id))
                    .subscribe_with_recent(last.as_ref(), RECENT)
                    .granted(&grants)
                {
                    Ok(subscription) => SseBody::new(subscription).into_response(),
                    Err(not_granted) => not_granted.into_response(),
                }
            },
        );

    let notify_one = warp::path!("users" / String / "notify")
        .and(warp::post())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::json())
        .and(with_app.clone())
        .map(|id: String, n: Notification, app: App| {
            let Some(event) = notification_event(&n).filter(|_| user_id_ok(&id)) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            match app.hub.topic(&topic_of(&id)).publish(event).now() {
                Some(Ok(id)) => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({ "id": id })),
                    StatusCode::ACCEPTED,
                )
                .into_response(),
                _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        });

    let notify_all = warp::path!("notify")
        .and(warp::post())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::json())
        .and(with_app)
        .map(|n: Notification, app: App| {
            let Some(event) = notification_event(&n) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let mut users = 0;
            for name in app.hub.topic_names() {
                if name.starts_with(USER_PREFIX)
                    && app
                        .hub
                        .topic(&name)
                        .publish(event.clone())
                        .now()
                        .is_some_and(|r| r.is_ok())
                {
                    users += 1;
                }
            }
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({ "users": users })),
                StatusCode::ACCEPTED,
            )
            .into_response()
        });

    page.or(signed_in)
        .unify()
        .or(who)
        .unify()
        .or(signed_out)
        .unify()
        .or(refreshed)
        .unify()
        .or(revoked)
        .unify()
        .or(tickets)
        .unify()
        .or(events)
        .unify()
        .or(notify_one)
        .unify()
        .or(notify_all)
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            if let Some(denied) = rejection.find::<Denied>() {
                return Ok::<_, Infallible>(denied.into_response());
            }
            // A bad body first: `/session` also has routes for other methods, whose
            // "method not allowed" comes along with it.
            let bad_body = rejection
                .find::<warp::filters::body::BodyDeserializeError>()
                .is_some()
                || rejection
                    .find::<warp::reject::UnsupportedMediaType>()
                    .is_some();
            let status = if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else if bad_body {
                StatusCode::BAD_REQUEST
            } else if rejection.is_not_found() {
                StatusCode::NOT_FOUND
            } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
                StatusCode::METHOD_NOT_ALLOWED
            } else {
                StatusCode::BAD_REQUEST
            };
            Ok(status.into_response())
        })
        .unify()
}

/// The whole service: CORS for the allowed origin, around `SseLayer` and the `Auth` layer,
/// around the routes. Its streams end when `shutdown` is triggered.
pub fn service(
    app: &App,
    shutdown: &Shutdown,
) -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<
        impl http_body::Body<Data = Bytes, Error = impl Into<BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    let mut sse = SseLayer::new()
        .retry(Duration::from_secs(3))
        .shutdown(shutdown);
    if let Some(lifetime) = app.config.stream_lifetime {
        sse = sse.max_lifetime(lifetime);
    }
    let inner = ServiceBuilder::new()
        .layer(sse)
        .layer(app.auth.layer())
        .service(warp::service(routes(app.clone())));
    let allowed = app.config.allow_origin.clone();
    tower::service_fn(move |req: Request<Incoming>| {
        let origin = req.headers().get(header::ORIGIN);
        let allowed = allowed.clone().filter(|allowed| origin == Some(allowed));
        let answer = inner.clone().oneshot(req);
        async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            headers.append(header::VARY, HeaderValue::from_static("origin"));
            // On every answer, refusals included: without them the page sees a `401` as a
            // network failure, and cannot tell "signed out" (stop) from "unreachable" (retry).
            if let Some(origin) = allowed {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            Ok(response)
        }
    })
}

/// Serves the app until `signal` completes; its streams then end, each telling the browser to
/// come back (to this server started again, or another).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    signal: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let shutdown = Shutdown::new();
    Server::new(listener)
        .shutdown(&shutdown, None)
        .serve_with_graceful_shutdown(service(&app, &shutdown), signal)
        .await;
    Ok(())
}

/// Serves the page for another origin, which reads the stream of `app_origin` with tickets.
pub async fn serve_widget(
    listener: tokio::net::TcpListener,
    app_origin: String,
    signal: impl Future<Output = ()> + Send,
) {
    let page = WIDGET.replace("__APP__", &app_origin);
    let filter = warp::path::end()
        .and(warp::get())
        .map(move || warp::reply::html(page.clone()));
    Server::new(listener)
        .serve_with_graceful_shutdown(warp::service(filter), signal)
        .await;
}

async fn bind(variable: &str, default: u16) -> std::io::Result<tokio::net::TcpListener> {
    let port = std::env::var(variable).unwrap_or_else(|_| default.to_string());
    tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    log::init();
    let listener = bind("PORT", 3000).await?;
    let widget = bind("WIDGET_PORT", 3001).await?;
    // `localhost` for both: two origins of one site, so the session cookie reaches the ticket
    // endpoint from the widget's page.
    let app_origin = format!("http://localhost:{}", listener.local_addr()?.port());
    let widget_origin = format!("http://localhost:{}", widget.local_addr()?.port());
    let app = App::new(
        Hub::builder().history(100).build(),
        Config::from_env(&widget_origin)?,
    );
    println!(
        "notifications: open {app_origin}/ (on another origin, with tickets: {widget_origin}/)"
    );
    let stop = || async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let (served, ()) = tokio::join!(
        serve(listener, app, stop()),
        serve_widget(widget, app_origin.clone(), stop())
    );
    served
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>tower-sse notifications</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  #list { list-style: none; padding: 0; }
  #list li { border: 1px solid #ddd; border-radius: 6px; padding: .5rem; margin: .5rem 0; }
  #list b { display: block; }
  #status, #sent, small { color: #777; }
</style>
<h1>Notifications <small id="status">starting…</small></h1>
<p>Sign in as <input id="user" value="alice" size="10"> <button id="signin">sign in</button>
  <small>(a demo: no password)</small></p>
<p id="signedin" hidden>Reading the notifications of <b id="who"></b>.
  <button id="signout">sign out</button> <button id="everywhere">sign out everywhere</button></p>
<p><input id="title" placeholder="title"> <input id="body" placeholder="message">
  <button id="one">to this user</button> <button id="all">to everyone</button>
  <span id="sent" role="status"></span></p>
<ul id="list"></ul>
<script>
const $ = (id) => document.getElementById(id);
const list = $("list");
const say = (text) => { $("status").textContent = text; };
let source = null;   // the stream being read, if any
let watched = "";    // whose stream it is
let refresher;       // the timer that refreshes the session
// What this page showed a user, and the id of the last one, survive a closed page; kept under
// the user whose stream delivered them.
const key = (who, what) => `notifications:${who}:${what}`;
const shown = (who) => JSON.parse(localStorage.getItem(key(who, "shown")) || "[]");
const forget = (who) => ["shown", "last"].forEach((what) => localStorage.removeItem(key(who, what)));

function show(n) {
  const li = document.createElement("li");
  const b = document.createElement("b");
  b.textContent = n.title;
  li.append(b, n.body);
  list.prepend(li);
}

// Signed in: read that user's stream (unless already reading it) and keep the session fresh.
function signedIn(session) {
  $("who").textContent = session.user;
  $("signedin").hidden = false;
  refreshIn(session.expires_in / 2);
  if (session.user !== watched || !source) read(session.user);
}

function signedOut(why) {
  clearTimeout(refresher);
  if (source) source.close();
  source = null;
  watched = "";
  $("signedin").hidden = true;
  say(why);
}

function read(who) {
  if (source) source.close();
  watched = who;
  list.innerHTML = "";
  shown(who).forEach(show);
  say("connecting…");
  open();
}

function open() {
  const who = watched;
  const last = localStorage.getItem(key(who, "last"));
  const resume = last ? `?lastEventId=${encodeURIComponent(last)}` : "";
  const s = new EventSource(`/users/${encodeURIComponent(who)}/events${resume}`);
  source = s;
  const current = () => s === source;
  s.onopen = () => { if (current()) say("connected"); };
  s.onerror = () => {
    if (!current()) return;
    // CONNECTING: the browser comes back by itself (a restart, an expired session: it sends
    // the refreshed cookie and Last-Event-ID). CLOSED: that reconnect was refused.
    if (s.readyState === EventSource.CLOSED) refused();
    else say("reconnecting…");
  };
  s.addEventListener("notification", (e) => {
    if (!current()) return;
    const n = JSON.parse(e.data);
    localStorage.setItem(key(who, "shown"), JSON.stringify(shown(who).concat([n]).slice(-50)));
    localStorage.setItem(key(who, "last"), e.lastEventId);
    show(n);
  });
  s.addEventListener("history-lost", () => {
    if (current()) say("connected (you were away longer than the history: the newest are shown)");
  });
  s.addEventListener("revoked", () => {
    // Closed before the stream ends, so the browser does not even try to come back.
    s.close();
    forget(who);
    signedOut("signed out everywhere: this page stopped reading");
  });
}

// The browser's reconnect was refused (its session had ended, or was just replaced by a
// refresh): with a live session, read on after the last notification shown; else stop.
async function refused() {
  source = null;
  say("reconnecting…");
  const answer = await fetch("/session").catch(() => null);
  if (!answer) { setTimeout(refused, 1000); return; }
  if (!answer.ok) { signedOut("signed out: the session ended"); return; }
  const session = await answer.json();
  setTimeout(() => { if (!source) signedIn(session); }, 1000);
}

function refreshIn(ms) {
  clearTimeout(refresher);
  refresher = setTimeout(refresh, Math.max(ms, 1000));
}

// Half way to its expiry, the session is renewed: a new cookie, which the stream's reconnect
// at the old expiry then carries.
async function refresh() {
  const answer = await fetch("/session/refresh", { method: "POST" }).catch(() => null);
  if (!answer) refreshIn(1000);
  else if (answer.ok) refreshIn((await answer.json()).expires_in / 2);
  else signedOut("signed out: the session ended");
}

async function signIn() {
  const answer = await fetch("/session", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: $("user").value }),
  }).catch(() => null);
  if (answer && answer.ok) signedIn(await answer.json());
  else say(answer ? `not signed in (${answer.status})` : "the server cannot be reached");
}

async function signOut(path, method) {
  const reading = source !== null;
  const answer = await fetch(path, { method }).catch(() => null);
  if (!answer) { say("the server cannot be reached"); return; }
  if (method === "DELETE") {
    forget(watched);
    list.innerHTML = "";
    signedOut("signed out");
  } else if (!reading) {
    // No stream, so no `revoked` event comes to say it.
    signedOut("signed out everywhere");
  }
}

async function send(path) {
  $("sent").textContent = "sending…";
  try {
    const answer = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        title: $("title").value || "Hello",
        body: $("body").value || "(no text)",
      }),
    });
    if (!answer.ok) {
      $("sent").textContent = `not sent (${answer.status})`;
      return;
    }
    const reply = await answer.json();
    $("sent").textContent = reply.users === undefined ? "sent" : `sent to ${reply.users} user(s)`;
  } catch (err) {
    $("sent").textContent = "not sent: the server cannot be reached";
  }
}

$("signin").onclick = signIn;
$("signout").onclick = () => signOut("/session", "DELETE");
$("everywhere").onclick = () => signOut("/session/revoke-all", "POST");
$("one").onclick = () => send(`/users/${encodeURIComponent(watched || $("user").value)}/notify`);
$("all").onclick = () => send("/notify");
fetch("/session")
  .then(async (answer) => {
    if (answer.ok) signedIn(await answer.json());
    else if (!watched) say("signed out");
  })
  .catch(() => say("the server cannot be reached"));
</script>
</html>
"#;

/// The page for another origin: it cannot send the app's cookie with its `EventSource`, so it
/// mints a ticket (sending the cookie with `fetch`) for each stream it opens.
const WIDGET: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>tower-sse notifications, elsewhere</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  #list { list-style: none; padding: 0; }
  #list li { border: 1px solid #ddd; border-radius: 6px; padding: .5rem; margin: .5rem 0; }
  #list b { display: block; }
  #status { color: #777; }
</style>
<h1>Notifications of <span id="who">…</span> <small id="status">starting…</small></h1>
<p>This page is on another origin than <a id="app">the app</a>: sign in there, then reload.</p>
<ul id="list"></ul>
<script>
const APP = "__APP__";
document.getElementById("app").href = APP + "/";
const say = (text) => { document.getElementById("status").textContent = text; };

function show(n) {
  const li = document.createElement("li");
  const b = document.createElement("b");
  b.textContent = n.title;
  li.append(b, n.body);
  document.getElementById("list").prepend(li);
}

// Each stream opens with a fresh one-time ticket. The browser's own reconnect carries the
// spent one and is refused: then mint another and go on after the last event seen.
function follow(onEvent) {
  let last = null;
  let user = null;
  let stopped = false;
  async function open() {
    const answer = await fetch(APP + "/tickets", { method: "POST", credentials: "include" })
      .catch(() => null);
    if (!answer) { say("the app cannot be reached: trying again"); setTimeout(open, 1000); return; }
    if (answer.status === 401) { say("signed out: sign in on the app, then reload"); return; }
    if (!answer.ok) { say(`no ticket (${answer.status}): trying again`); setTimeout(open, 1000); return; }
    const ticket = await answer.json();
    // Another user's stream starts afresh: their ids are not this one's.
    if (ticket.user !== user) { last = null; user = ticket.user; }
    document.getElementById("who").textContent = user;
    const q = "?ticket=" + ticket.ticket + (last ? "&lastEventId=" + encodeURIComponent(last) : "");
    const source = new EventSource(`${APP}/users/${encodeURIComponent(user)}/events${q}`);
    source.onopen = () => say("connected");
    source.addEventListener("notification", (e) => {
      last = e.lastEventId || last;
      onEvent(JSON.parse(e.data));
    });
    source.addEventListener("revoked", () => {
      stopped = true;
      source.close();
      say("signed out everywhere: this page stopped reading");
    });
    source.onerror = () => {
      // CLOSED: the reconnect was refused (a spent ticket); CONNECTING: the browser retries.
      if (source.readyState === EventSource.CLOSED && !stopped) {
        say("reconnecting…");
        setTimeout(open, 1000);
      } else if (!stopped) {
        say("reconnecting…");
      }
    };
  }
  open();
}

follow(show);
</script>
</html>
"#;
