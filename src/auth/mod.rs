//! Who may read which stream: an app's authorizer, one-time stream tickets, expiry and
//! revocation, in a tower layer ([`AuthLayer`]) beside [`SseLayer`](crate::SseLayer).
//!
//! # How a request is let in
//!
//! 1. A stream ticket (`?ticket=<value>`, when the [`Auth`] has [`Tickets`]) is redeemed:
//!    spent at once, and taken only from the `Origin` that minted it (a same-origin
//!    `EventSource`, which sends no `Origin`, by its `Sec-Fetch-Site: same-origin`, its host
//!    and, when the request states one, its scheme; an opaque `null` origin gets no ticket),
//!    only by a `GET` (or `HEAD`). Its grants are the request's; every `ticket` parameter is removed from the URI
//!    before the handler sees it. A ticket that is malformed, unknown, spent, expired or from
//!    another origin, or that comes with another method, is refused with `401`.
//! 2. Otherwise the app's [`Authorize`]r makes the grants from what the request carries (a
//!    same-origin cookie, which every `EventSource` reconnect sends without app code; a cookie
//!    sent cross-origin with `withCredentials`; a bearer header from a non-browser client).
//! 3. Grants that have expired, or whose subject was [revoked](Auth::revoke), are refused with
//!    `401`.
//!
//! A request that asks for an event stream (`Accept: text/event-stream`, as every
//! `EventSource` sends) is answered at once when refused: `401` or `403`, an empty body,
//! `Cache-Control: no-store`, nothing streamed; the handler never runs. Any other request
//! goes on without [`Grants`] (a sign-in page, a login form), and the handler that needs them
//! refuses it: the axum extractor with `401`. Every refusal is counted ([`AuthStats`]) and
//! logged at `INFO` with its reason, never with a credential's value.
//!
//! The handler subscribes with the grants ([`Subscription::granted`](crate::hub::Subscription::granted)):
//! a topic they do not allow is a `403`, and the subscriber receives only the events it may
//! (an event's [audience](crate::Event::with_audience)).
//!
//! # While a stream is open
//!
//! - At the grants' [expiry](Grants::expires_at) the stream ends with a come-back block
//!   (`retry:` drawn from the layer's [`come_back`](crate::SseLayer::come_back) window,
//!   `: credential expired, reconnect`), so the browser reconnects with its refreshed cookie,
//!   or the page with a new ticket.
//! - [`Auth::revoke`] ends the subject's streams at once with a final [`REVOKED`] event and a
//!   come-back block (`: access revoked`); the reconnect is refused with `401`, which makes an
//!   `EventSource` stop for good. With [`AuthBuilder::share_through`], every node on the same
//!   hub broker (Redis) does the same, and refuses the subject's reconnects too.
//!
//! # Tickets, and the page's reconnect
//!
//! A page that can send no cookie to the stream's origin mints a ticket from an authenticated
//! endpoint of the app ([`Auth::mint_ticket`]) and opens `EventSource(url + "?ticket=" + t)`.
//! The ticket is spent by that request, so the browser's own reconnect (after a server
//! restart, a lifetime, an expiry) is refused with `401` and the `EventSource` stops: the page
//! then mints a new ticket and opens a new `EventSource`, resuming after the last event it saw
//! with the `lastEventId` query parameter ([`SseLayer::last_event_id_query`](crate::SseLayer::last_event_id_query)):
//!
//! ```js
//! // `names`: the event names the page listens to; `onStop`: signed out, or revoked.
//! function follow(url, mint, names, onEvent, onStop) {
//!   let last = null;
//!   let stopped = false;
//!   async function open() {
//!     let answer;
//!     try {
//!       answer = await fetch(mint, { method: "POST", credentials: "include" });
//!     } catch {
//!       return setTimeout(open, 5000); // the server cannot be reached: try again later
//!     }
//!     if (!answer.ok) return onStop(answer.status); // no ticket for this page: signed out
//!     const { ticket } = await answer.json();
//!     const q = "?ticket=" + ticket + (last ? "&lastEventId=" + encodeURIComponent(last) : "");
//!     const source = new EventSource(url + q);
//!     for (const name of names) {
//!       source.addEventListener(name, (e) => { last = e.lastEventId || last; onEvent(e); });
//!     }
//!     source.addEventListener("revoked", () => { stopped = true; source.close(); onStop("revoked"); });
//!     source.onerror = () => {
//!       // CLOSED: the reconnect was refused (its ticket was spent); CONNECTING: the browser
//!       // is retrying by itself.
//!       if (!stopped && source.readyState === EventSource.CLOSED) setTimeout(open, 1000);
//!     };
//!   }
//!   open();
//! }
//! ```
//!
//! The `notifications` example's second page (on another origin) reads its stream this way, in
//! a Chromium test.
//!
//! Long-lived credentials are never taken from the URL by the crate: only tickets, which are
//! single-use and live at most a minute. (An app's own authorizer could read the query; do not.)
//!
//! # Example: a cookie app
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use http::{request::Parts, Request, StatusCode};
//! use http_body_util::{Either, Empty};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::{auth::{Auth, Denied}, hub::Hub, Grants, SseBody, SseLayer};
//!
//! fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
//!     let header = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
//!     header.split(';').find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
//! }
//!
//! let auth = Auth::builder(|parts: &Parts| {
//!     // A real app looks the session up in its store.
//!     let user = cookie(parts, "session").map(str::to_owned);
//!     async move {
//!         let user = user.ok_or(Denied::Unauthenticated)?;
//!         Ok(Grants::new().exact(format!("user:{user}")).subject(user))
//!     }
//! })
//! .build();
//! let hub = Hub::new();
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new())
//!     .layer(auth.layer())
//!     .service_fn(move |req: Request<()>| {
//!         let hub = hub.clone();
//!         async move {
//!             let grants = req.extensions().get::<Grants>().cloned().unwrap_or_default();
//!             let topic = req.uri().path().trim_start_matches('/');
//!             let response = match hub.topic(topic).subscribe(None).granted(&grants) {
//!                 Ok(subscription) => SseBody::from_request(&req, subscription)
//!                     .into_http_response()
//!                     .map(Either::Left),
//!                 // A `403` with an empty body (axum and warp handlers return `NotGranted`).
//!                 Err(_) => Denied::Forbidden.response().map(|()| Either::Right(Empty::<bytes::Bytes>::new())),
//!             };
//!             Ok::<_, std::convert::Infallible>(response)
//!         }
//!     });
//!
//! let ask = |path: &str, session: Option<&str>| {
//!     let mut req = Request::get(path).header("accept", "text/event-stream");
//!     if let Some(session) = session {
//!         req = req.header("cookie", format!("session={session}"));
//!     }
//!     req.body(()).unwrap()
//! };
//! let status = |req| { let s = service.clone(); async move { s.oneshot(req).await.unwrap().status() } };
//! assert_eq!(status(ask("/user:alice", Some("alice"))).await, StatusCode::OK);
//! assert_eq!(status(ask("/user:alice", Some("bob"))).await, StatusCode::FORBIDDEN);
//! assert_eq!(status(ask("/user:alice", None)).await, StatusCode::UNAUTHORIZED);
//! assert_eq!(auth.stats().unauthenticated, 1);
//! # }
//! ```

mod authorize;
mod body;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
mod jwt;
mod layer;
mod revoke;
mod service;
mod ticket;
#[cfg(feature = "redis")]
mod ticket_redis;

pub use authorize::{Authorize, Denied};
pub use body::AuthBody;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::Jwt;
pub use layer::AuthLayer;
pub use revoke::REVOKED;
pub use service::{AuthFuture, AuthService};
pub use ticket::{Ticket, TicketError, Tickets, MAX_TICKET_LIFETIME};

use crate::{
    grants::{Grants, RESERVED_PREFIX},
    hub::{Hub, Publish, PublishError, Subscription},
};
use authorize::Erased;
use http::{request::Parts, HeaderMap, Method, StatusCode};
use revoke::Revocations;
use std::{
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::{Duration, SystemTime},
};
use ticket::Spoilt;

/// The hub topic revocations cross between nodes; no grant matches it.
const REVOCATIONS_TOPIC: &str = "tower-sse:revocations";

/// Who may read which stream: the app's authorizer, the [`Tickets`] store, the revoked
/// subjects, and the counters. Cloning is cheap; every clone is the same. Made with
/// [`Auth::builder`]; its [`layer`](Auth::layer) goes beside the [`SseLayer`](crate::SseLayer),
/// in either order. See the [module docs](self).
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    authorizer: Box<dyn Erased>,
    tickets: Option<Tickets>,
    ticket_param: Box<str>,
    revocations: Revocations,
    /// The hub revocations are shared through, if any.
    hub: Option<Hub>,
    /// Whether the revocations the hub's history holds were read: until then (a round trip to
    /// the broker after the start) requests wait, so that none slips through.
    ready: tokio::sync::watch::Sender<bool>,
    counters: Counters,
}

/// How long a request waits for a starting node to read the revocations before it is refused
/// with `503`.
const READY_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    authorized: AtomicU64,
    unauthenticated: AtomicU64,
    forbidden: AtomicU64,
    passed: AtomicU64,
    expired: AtomicU64,
    revoked: AtomicU64,
    bad_tickets: AtomicU64,
    tickets_minted: AtomicU64,
    tickets_redeemed: AtomicU64,
    revocations: AtomicU64,
    streams_revoked: AtomicU64,
}

/// A snapshot of an [`Auth`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthStats {
    /// Requests let in with grants.
    pub authorized: u64,
    /// Stream requests answered `401` (no valid credential, a bad ticket, expired or revoked
    /// grants).
    pub unauthenticated: u64,
    /// Stream requests answered `403` by the authorizer.
    pub forbidden: u64,
    /// Other requests the authorizer refused, passed on without grants.
    pub passed: u64,
    /// Requests refused because their grants had expired.
    pub expired: u64,
    /// Requests refused because their subject is revoked.
    pub revoked: u64,
    /// Tickets refused: malformed, unknown, spent, expired, from another origin, or not
    /// checkable (the store unreachable, answered `503`).
    pub bad_tickets: u64,
    /// Tickets minted.
    pub tickets_minted: u64,
    /// Tickets redeemed.
    pub tickets_redeemed: u64,
    /// Revocations applied on this node (its own and, when shared, the other nodes').
    pub revocations: u64,
    /// Streams ended on this node by revocations.
    pub streams_revoked: u64,
}

/// Configures an [`Auth`]; made by [`Auth::builder`].
#[must_use]
pub struct AuthBuilder {
    authorizer: Box<dyn Erased>,
    tickets: Option<Tickets>,
    ticket_param: String,
    remember: Duration,
    hub: Option<Hub>,
}

impl fmt::Debug for AuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthBuilder")
            .field("tickets", &self.tickets)
            .field("ticket_param", &self.ticket_param)
            .field("remember", &self.remember)
            .finish_non_exhaustive()
    }
}

impl AuthBuilder {
    /// Takes stream tickets from this store (`?ticket=` by default). Default: no tickets.
    pub fn tickets(mut self, tickets: Tickets) -> Self {
        self.tickets = Some(tickets);
        self
    }

    /// The query parameter a ticket comes in. Default: `ticket`.
    pub fn ticket_param(mut self, name: impl Into<String>) -> Self {
        self.ticket_param = name.into();
        self
    }

    /// How long a revocation is remembered (its subject's requests refused, unless their
    /// grants were [issued](Grants::issued_at) after it). Make it at least as long as the
    /// longest-lived credential. Default: 24 hours.
    pub fn remember_revocations(mut self, duration: Duration) -> Self {
        self.remember = duration;
        self
    }

    /// Shares revocations with every node whose hub is on the same broker (Redis): a
    /// revocation on one ends the subject's streams on all, and each remembers it. They
    /// cross as events of the hub topic `tower-sse:revocations`, which no grant matches; a
    /// node that starts reads the ones still in that topic's history (size the hub's
    /// history for it), and holds requests until it has (a round trip to the broker); one that
    /// cannot read them within 10 s refuses stream requests with `503`, and mints no ticket.
    /// Build inside a Tokio runtime.
    pub fn share_through(mut self, hub: &Hub) -> Self {
        self.hub = Some(hub.clone());
        self
    }

    /// Creates the [`Auth`].
    pub fn build(self) -> Auth {
        let auth = Auth {
            inner: Arc::new(Inner {
                authorizer: self.authorizer,
                tickets: self.tickets,
                ticket_param: self.ticket_param.into_boxed_str(),
                revocations: Revocations::new(self.remember),
                hub: self.hub.clone(),
                ready: tokio::sync::watch::Sender::new(self.hub.is_none()),
                counters: Counters::default(),
            }),
        };
        if let Some(hub) = self.hub {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let subscription = revocations_of(&hub);
                    runtime.spawn(follow(hub, subscription, Arc::downgrade(&auth.inner)));
                }
                Err(_) => tracing::error!(
                    "Auth::share_through needs a Tokio runtime: revocations stay on this node"
                ),
            }
        }
        auth
    }
}

/// Why a request is refused, for the counters and the log.
#[derive(Debug)]
pub(crate) enum Refusal {
    Denied(Denied),
    Expired,
    Revoked,
    Ticket(Spoilt),
    /// A starting node has not read the shared revocations yet.
    NotReady,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Denied(denied) => denied.status(),
            Refusal::Ticket(Spoilt::Unavailable(_)) | Refusal::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Expired | Refusal::Revoked | Refusal::Ticket(_) => StatusCode::UNAUTHORIZED,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Refusal::Denied(Denied::Unauthenticated) => "no valid credential",
            Refusal::Denied(Denied::Forbidden) => "the authorizer forbids it",
            Refusal::Expired => "the grants have expired",
            Refusal::Revoked => "the subject is revoked",
            Refusal::Ticket(spoilt) => spoilt.reason(),
            Refusal::NotReady => "the shared revocations are not read yet",
        }
    }
}

impl Auth {
    /// Starts configuring an `Auth` around the app's authorizer.
    pub fn builder(authorizer: impl Authorize) -> AuthBuilder {
        AuthBuilder {
            authorizer: Box::new(authorizer),
            tickets: None,
            ticket_param: "ticket".into(),
            remember: Duration::from_secs(24 * 3600),
            hub: None,
        }
    }

    /// The layer that lets requests in: put it beside the [`SseLayer`](crate::SseLayer) (in
    /// either order) around the routes of the streams.
    pub fn layer(&self) -> AuthLayer {
        AuthLayer::new(self.clone())
    }

    /// Mints a one-time stream ticket for `grants` (those of the minting request, or
    /// [narrower](Grants::narrowed)), bound to the `Origin` in `headers` (the minting
    /// request's): the client opens its stream with `?ticket=<value>` from that origin within
    /// the ticket's lifetime. Call it from an endpoint that is itself authenticated.
    ///
    /// # Errors
    ///
    /// [`TicketError::NoTickets`] without a store; [`TicketError::Refused`] for grants that
    /// have expired, whose subject is revoked, or that came from a ticket (a ticket never
    /// mints its successor: the page mints with its own credential); [`Full`](TicketError::Full),
    /// [`OpaqueOrigin`](TicketError::OpaqueOrigin) when the request's `Origin` is `null`;
    /// [`Random`](TicketError::Random), [`Unavailable`](TicketError::Unavailable) when the
    /// store cannot make one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http::{HeaderMap, HeaderValue};
    /// use tower_sse::{auth::{Auth, Denied, Tickets}, Grants};
    ///
    /// let auth = Auth::builder(|_: &http::request::Parts| async { Err::<Grants, _>(Denied::Unauthenticated) })
    ///     .tickets(Tickets::memory())
    ///     .build();
    /// let mut headers = HeaderMap::new();
    /// headers.insert("origin", HeaderValue::from_static("https://app.example"));
    /// let grants = Grants::new().subject("alice").exact("user:alice");
    /// let ticket = auth.mint_ticket(&grants, &headers).await.unwrap();
    /// assert_eq!(ticket.value().len(), 48);
    /// assert_eq!(auth.stats().tickets_minted, 1);
    /// # }
    /// ```
    pub async fn mint_ticket(
        &self,
        grants: &Grants,
        headers: &HeaderMap,
    ) -> Result<Ticket, TicketError> {
        let tickets = self.inner.tickets.as_ref().ok_or(TicketError::NoTickets)?;
        if !self.ready().await {
            return Err(TicketError::Unavailable(
                "the shared revocations are not read yet".into(),
            ));
        }
        if grants.is_expired()
            || grants.came_from_ticket()
            || self.inner.revocations.admit(grants.clone()).is_none()
        {
            return Err(TicketError::Refused);
        }
        let ticket = tickets.mint(grants, headers).await?;
        self.count(&self.inner.counters.tickets_minted);
        Ok(ticket)
    }

    /// Revokes `subject`: its open streams on this node end at once with a final
    /// [`REVOKED`] event (`event: revoked`, `data: {"reason":"revoked"}`) and a come-back
    /// block; its requests are refused with `401` for
    /// [`remember_revocations`](AuthBuilder::remember_revocations) (those with grants
    /// [issued](Grants::issued_at) after now excepted, counted in whole milliseconds, so that
    /// one issued in the same millisecond is refused: see there). With
    /// [`share_through`](AuthBuilder::share_through) every other node does the same as soon
    /// as the hub's broker delivers it (a few milliseconds on Redis).
    ///
    /// The local part is done when this returns; [`Revocation::shared`] waits until the other
    /// nodes were told (which happens whether it is awaited or not).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http::{request::Parts, Request, StatusCode};
    /// use http_body_util::BodyExt;
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::{auth::{Auth, Denied}, hub::Hub, Grants, SseBody, SseLayer};
    ///
    /// let auth = Auth::builder(|_: &Parts| async {
    ///     Ok::<_, Denied>(Grants::new().subject("alice").exact("user:alice"))
    /// })
    /// .build();
    /// let hub = Hub::new();
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new().open_frame(false))
    ///     .layer(auth.layer())
    ///     .service_fn(move |req: Request<()>| {
    ///         let grants = req.extensions().get::<Grants>().unwrap().clone();
    ///         let subscription = hub.topic("user:alice").subscribe(None).granted(&grants).unwrap();
    ///         async move { Ok::<_, std::convert::Infallible>(SseBody::from_request(&req, subscription).into_http_response()) }
    ///     });
    /// let stream = |service: &_| {
    ///     let service = Clone::clone(service);
    ///     let req = Request::get("/").header("accept", "text/event-stream").body(()).unwrap();
    ///     async move { ServiceExt::<Request<()>>::oneshot(service, req).await.unwrap() }
    /// };
    /// let open = stream(&service).await;
    ///
    /// let revocation = auth.revoke("alice");
    /// assert_eq!(revocation.ended_here(), 1);
    /// let bytes = open.into_body().collect().await.unwrap().to_bytes();
    /// let text = std::str::from_utf8(&bytes).unwrap();
    /// assert!(text.starts_with("event: revoked\ndata: {\"reason\":\"revoked\"}\n\nretry: "));
    /// assert!(text.ends_with("\n: access revoked\n\n"));
    /// assert_eq!(stream(&service).await.status(), StatusCode::UNAUTHORIZED, "and refused since");
    /// # }
    /// ```
    pub fn revoke(&self, subject: &str) -> Revocation {
        // In whole milliseconds, as it crosses the hub, so that its echo is recognised; rounded
        // up, so that a credential issued earlier in the same millisecond is revoked too.
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let ms = since.as_nanos().div_ceil(1_000_000);
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64);
        let ended = self.inner.apply(subject, at);
        let shared = self.inner.hub.as_ref().map(|hub| {
            hub.topic(REVOCATIONS_TOPIC)
                .publish(revoke::to_message(subject, at))
        });
        Revocation { ended, shared }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AuthStats {
        let c = &self.inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AuthStats {
            authorized: get(&c.authorized),
            unauthenticated: get(&c.unauthenticated),
            forbidden: get(&c.forbidden),
            passed: get(&c.passed),
            expired: get(&c.expired),
            revoked: get(&c.revoked),
            bad_tickets: get(&c.bad_tickets),
            tickets_minted: get(&c.tickets_minted),
            tickets_redeemed: get(&c.tickets_redeemed),
            revocations: get(&c.revocations),
            streams_revoked: get(&c.streams_revoked),
        }
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The ticket in the request's query, if tickets are taken: the value, and the query
    /// without it.
    pub(crate) fn ticket_in(&self, query: Option<&str>) -> Option<(String, String)> {
        self.inner.tickets.as_ref()?;
        let query = query?;
        let name = &*self.inner.ticket_param;
        let mut value = None;
        let mut rest = Vec::new();
        // Every ticket parameter leaves the query (the first one counts), so that none reaches
        // the handler, or a log of it.
        // Keys are compared as a framework decodes them (`ti%63ket` is `ticket`).
        for pair in query.split('&') {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            if decoded != name {
                rest.push(pair);
            } else if value.is_none() {
                let raw = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                value = Some(raw.into_owned());
            }
        }
        Some((value?, rest.join("&")))
    }

    /// The grants of a request: from its ticket, or from the app's authorizer; checked for
    /// expiry and revocation and watched for revocation.
    pub(crate) async fn authenticate(
        &self,
        parts: &Parts,
        ticket: Option<String>,
    ) -> Result<Grants, Refusal> {
        let grants = match (ticket, &self.inner.tickets) {
            // A ticket opens a stream, nothing else: it cannot reach an endpoint that mints.
            (Some(_), Some(_)) if !matches!(parts.method, Method::GET | Method::HEAD) => {
                return Err(Refusal::Ticket(Spoilt::NotAStream));
            }
            (Some(ticket), Some(tickets)) => {
                let grants = tickets
                    .redeem(&ticket, parts)
                    .await
                    .map_err(Refusal::Ticket)?;
                self.count(&self.inner.counters.tickets_redeemed);
                grants
            }
            _ => self
                .inner
                .authorizer
                .call(parts)
                .await
                .map_err(Refusal::Denied)?,
        };
        if grants.is_expired() {
            return Err(Refusal::Expired);
        }
        if !self.ready().await {
            return Err(Refusal::NotReady);
        }
        self.inner.revocations.admit(grants).ok_or(Refusal::Revoked)
    }

    /// Waits (up to [`READY_WAIT`]) until the shared revocations were read; `false` if not.
    async fn ready(&self) -> bool {
        if *self.inner.ready.borrow() {
            return true;
        }
        let mut ready = self.inner.ready.subscribe();
        let waited = tokio::time::timeout(READY_WAIT, ready.wait_for(|ready| *ready)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Counts and logs the outcome of a request; `true` when a refusal is to be answered.
    pub(crate) fn note(&self, outcome: &Result<Grants, Refusal>, stream: bool) -> bool {
        let c = &self.inner.counters;
        let refusal = match outcome {
            Ok(_) => {
                self.count(&c.authorized);
                return false;
            }
            Err(refusal) => refusal,
        };
        match refusal {
            Refusal::Expired => self.count(&c.expired),
            Refusal::Revoked => self.count(&c.revoked),
            Refusal::Ticket(_) => self.count(&c.bad_tickets),
            Refusal::Denied(_) | Refusal::NotReady => {}
        }
        // A ticket was meant for a stream whatever the request's `Accept` says.
        let answered = stream || matches!(refusal, Refusal::Ticket(_));
        if !answered {
            self.count(&c.passed);
            tracing::debug!(
                reason = refusal.reason(),
                "request passed on without grants"
            );
            return false;
        }
        match refusal.status() {
            StatusCode::FORBIDDEN => self.count(&c.forbidden),
            StatusCode::UNAUTHORIZED => self.count(&c.unauthenticated),
            _ => {}
        }
        match refusal {
            Refusal::Ticket(Spoilt::Unavailable(why)) => tracing::warn!(
                reason = refusal.reason(),
                error = %why,
                "SSE stream refused: the ticket could not be checked"
            ),
            Refusal::NotReady => tracing::warn!(
                waited = ?READY_WAIT,
                "SSE stream refused: the revocations shared through the hub could not be read"
            ),
            _ => tracing::info!(
                reason = refusal.reason(),
                status = refusal.status().as_u16(),
                "SSE stream refused"
            ),
        }
        true
    }
}

impl Refusal {
    pub(crate) fn answer<B: Default>(&self) -> http::Response<B> {
        authorize::refusal(self.status())
    }
}

impl Inner {
    /// Applies a revocation here: remembered, the subject's streams ended.
    fn apply(&self, subject: &str, at: SystemTime) -> usize {
        let Some(ended) = self.revocations.revoke(subject, at) else {
            return 0;
        };
        self.counters.revocations.fetch_add(1, Ordering::Relaxed);
        self.counters
            .streams_revoked
            .fetch_add(ended as u64, Ordering::Relaxed);
        tracing::info!(
            subject,
            streams = ended,
            "subject revoked: its streams here are ended"
        );
        ended
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tickets", &self.inner.tickets)
            .field("shared", &self.inner.hub.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A revocation: done on this node when [`Auth::revoke`] returns. With
/// [`share_through`](AuthBuilder::share_through) the other nodes are told on a task of its
/// own, whether or not [`shared`](Revocation::shared) is awaited (a failure is logged).
#[derive(Debug)]
pub struct Revocation {
    ended: usize,
    shared: Option<Publish>,
}

impl Revocation {
    /// How many of the subject's streams it ended on this node.
    pub fn ended_here(&self) -> usize {
        self.ended
    }

    /// Waits until the other nodes were told (through the hub's broker); at once without
    /// sharing.
    ///
    /// # Errors
    ///
    /// The broker's [`PublishError`] when the other nodes could not be told.
    pub async fn shared(self) -> Result<(), PublishError> {
        match self.shared {
            None => Ok(()),
            Some(publish) => publish.await.map(drop),
        }
    }
}

/// A subscription to the revocations topic that replays what its history holds.
fn revocations_of(hub: &Hub) -> Subscription {
    debug_assert!(REVOCATIONS_TOPIC.starts_with(RESERVED_PREFIX));
    hub.topic(REVOCATIONS_TOPIC)
        .subscribe_with_recent(None, usize::MAX)
}

/// Applies every revocation the hub delivers, for as long as the `Auth` lives; follows again
/// after an eviction, stops when the hub is closed.
async fn follow(hub: Hub, mut subscription: Subscription, auth: Weak<Inner>) {
    use futures_core::Stream;
    loop {
        let next = std::future::poll_fn(|cx| {
            let next = Pin::new(&mut subscription).poll_next(cx);
            if next.is_pending() && subscription.is_caught_up() {
                // Everything the history held is applied: requests may be let in.
                if let Some(auth) = auth.upgrade() {
                    auth.ready
                        .send_if_modified(|ready| !std::mem::replace(ready, true));
                }
            }
            next
        })
        .await;
        let Some(auth) = auth.upgrade() else { return };
        match next {
            Some(event) => {
                if let Some(cause) = event.come_back() {
                    if cause == crate::come_back::Cause::Shutdown {
                        return;
                    }
                    tracing::warn!("revocations fell behind on this node: following again");
                    subscription = revocations_of(&hub);
                    continue;
                }
                if let Some((subject, at)) = revoke::from_message(&event) {
                    auth.apply(&subject, at);
                }
            }
            None => return,
        }
    }
}
