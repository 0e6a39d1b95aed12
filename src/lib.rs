//! Server-Sent Events for the tower/hyper ecosystem.
//!
//! `tower-sse` turns any `Stream` of events into a correctly framed `text/event-stream` response:
//! spec-exact framing, keep-alive comments, the right headers, backpressure, and disconnect
//! detection. Add [`SseLayer`] to a hyper, axum or warp application and return an [`SseBody`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::{Event, SseBody, SseLayer};
//!
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new())
//!     .service_fn(|_req: Request<()>| async {
//!         let events = futures_util::stream::iter([
//!             Event::builder().event("greeting").id("1").data("hello\nworld").build(),
//!         ]);
//!         Ok::<_, Infallible>(Response::new(SseBody::new(events)))
//!     });
//!
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! assert_eq!(response.headers()["cache-control"], "no-cache");
//!
//! let bytes = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(bytes, ":\nevent: greeting\nid: 1\ndata: hello\ndata: world\n\n");
//! # }
//! ```
//!
//! # A small app
//!
//! A chat room on axum (feature `axum`): a POST publishes to the room's [`hub::Topic`], every
//! open stream receives it, and a client that reconnects replays what it missed from its
//! `Last-Event-ID`.
//!
//! ```no_run
//! # #[cfg(feature = "axum")] mod app {
//! use axum::{extract::{Path, State}, routing::get, Router};
//! use tower_sse::{hub::{Hub, Subscription}, Event, LastEventId, SseBody, SseLayer};
//!
//! async fn events(
//!     State(hub): State<Hub>,
//!     Path(room): Path<String>,
//!     last: Option<LastEventId>,
//! ) -> SseBody<Subscription> {
//!     // The last 20 messages for a newcomer; exactly what was missed for a reconnect.
//!     SseBody::new(hub.topic(&room).subscribe_with_recent(last.as_ref(), 20))
//! }
//!
//! async fn post(State(hub): State<Hub>, Path(room): Path<String>, text: String) -> String {
//!     match hub.topic(&room).publish(Event::message(text)).await {
//!         Ok(id) => id,
//!         Err(err) => format!("not sent: {err}"),
//!     }
//! }
//!
//! pub async fn main() {
//!     let app = Router::new()
//!         .route("/rooms/{room}", get(events).post(post))
//!         .with_state(Hub::new())
//!         .layer(SseLayer::new());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//!     axum::serve(listener, app).await.unwrap();
//! }
//! # }
//! # #[cfg(feature = "axum")] #[tokio::main] async fn main() { app::main().await }
//! # #[cfg(not(feature = "axum"))] fn main() {}
//! ```
//!
//! The repository's `examples/` are fuller programs to copy: `chat` (rooms, presence, resume,
//! many servers on Redis; `cargo run --example chat --features axum`), `notifications`
//! (per-user push on warp, with resume for a user who was offline), `live_data` (a JSON
//! dashboard feed on hyper), `hyper_ticker` (the smallest server). The README maps every item
//! of axum's `Sse` to this crate's.
//!
//! # Pieces
//!
//! - [`Event`]: one event, encoded once when built, cloned in O(1); bad names, ids and comments
//!   are typed errors ([`EventError`]), never a malformed stream.
//! - [`SseBody`]: the `http_body::Body` that writes a stream of events, with keep-alive,
//!   coalescing, an open frame, an error policy, a maximum lifetime that rotates streams, and a
//!   [`Disconnect`] handle.
//! - [`SseLayer`]: the tower layer that sets the headers, parses [`LastEventId`], configures
//!   every body under it through the request's [`SseContext`] (also explicitly, for bodies built
//!   in tasks), caps the number of open streams (clients beyond it are told to come back later)
//!   and refuses requests whose `Accept` excludes `text/event-stream` (`406`).
//! - [`Shutdown`]: ends every stream under a layer for a graceful shutdown, after the events it
//!   has ready and an optional final event; [`stop_reconnecting`] is the `204` that tells an
//!   `EventSource` to stop for good.
//! - [`hub`]: fan-out to many subscribers, with replay on `Last-Event-ID` and a slow-client
//!   policy; across many server processes through Redis with feature `redis`
//!   (`Hub::builder().redis(client)`), through PostgreSQL with feature `postgres`
//!   (`Hub::builder().postgres(pool)`, and `Topic::publish_in` inside the app's transaction),
//!   or another engine through [`hub::Broker`].
//! - [`io::SendTimeout`]: closes connections whose peer accepts no bytes for too long.
//! - [`decode`]: a client-side decoder that follows the spec's parsing algorithm.
//! - `serve::Server` (feature `server`): serves any tower service over HTTP/1.1 and h2c, and
//!   HTTPS with HTTP/2 (feature `rustls`), with the timeouts and graceful shutdown that
//!   long-lived streams need.
//!
//! # Control events
//!
//! Besides the application's own events, the crate may send these, each named so that no
//! `EventSource` built-in handler (`message`, `open`, `error`) fires for it, and none with an
//! `id` (so a client's `Last-Event-ID` always names an application event):
//!
//! | name | sent when | data |
//! |---|---|---|
//! | [`stream-error`](STREAM_ERROR) | the stream failed, under [`ErrorPolicy::Close`] (the default) or `CloseWithMessage`; it carries a `retry:` back-off and ends the stream | [`STREAM_ERROR_DATA`], or the error's text with `CloseWithMessage` |
//! | [`history-lost`](hub::HISTORY_LOST) | a hub subscriber's `Last-Event-ID` cannot be resumed from | `{"reason":"history-lost"}` |
//! | [`evicted`](hub::EVICTED) | a hub subscriber fell too far behind under [`hub::LagPolicy::Evict`]; a come-back block follows it and the stream ends | `{"behind":N}` |
//! | [`missed`](hub::MISSED) | a hub subscriber skipped events under [`hub::LagPolicy::Skip`] | `{"missed":N}` |
//! | [`revoked`](auth::REVOKED) | the stream's subject was revoked ([`auth::Auth::revoke`]); a come-back block follows it, the stream ends, and the reconnect is refused | `{"reason":"revoked"}` |
//!
//! The final event of a [`Shutdown`] or [`hub::Hub::close`] is the application's own.
//!
//! # Features
//!
//! - `json`: `Event::json` and `EventBuilder::json_data`, with serde.
//! - `axum`: `SseBody` as an axum response, `LastEventId`, `Disconnect` and `SseContext`
//!   extractors, and a send-timeout listener for `axum::serve` (module `axum`); brings `json`.
//! - `warp`: `SseBody` as a warp reply, `last_event_id()` and `context()` filters (module
//!   `warp`); brings `json`.
//! - `tcp`: `io::tcp_user_timeout` and `io::tcp_notsent_lowat`, for peers that vanish without
//!   closing and a send timeout that times the peer (Linux).
//! - `server`: `serve::Server`, which serves any tower service over HTTP/1.1 and h2c with the
//!   timeouts, connection cap and graceful shutdown that long-lived streams need.
//! - `rustls`: HTTPS for `serve::Server` (`Server::rustls`), with HTTP/2 for browsers.
//! - `redis`: the hub across server processes through Redis (`hub::redis`,
//!   `HubBuilder::redis`) and stream tickets shared by them (`auth::Tickets::redis`); needs
//!   Rust 1.88.
//! - `jwt`: `auth::Jwt`, an authorizer that makes grants from a JSON Web Token's claims.
//! - `postgres`: the hub across server processes through PostgreSQL, on sqlx (`hub::postgres`,
//!   `HubBuilder::postgres`), with publish inside the app's own transaction
//!   (`Topic::publish_in`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod admission;
mod alarm;
mod audience;
pub mod auth;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod body;
mod come_back;
mod context;
pub mod decode;
mod delay;
mod disconnect;
mod drain;
mod event;
mod future;
mod grants;
mod headers;
pub mod hub;
pub mod io;
mod keep_alive;
mod last_event_id;
mod layer;
mod lifetime;
mod scope;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod serve;
mod service;
mod settings;
mod shutdown;
mod streams;
mod sync;

#[cfg(feature = "warp")]
#[cfg_attr(docsrs, doc(cfg(feature = "warp")))]
pub mod warp;

pub use admission::Admission;
pub use body::{SseBody, SseItem};
pub use context::SseContext;
pub use disconnect::{CloseReason, Disconnect};
pub use drain::DrainPolicy;
pub use event::{Event, EventBuilder, EventError, Field};
pub use future::ResponseFuture;
pub use grants::{Grants, NotGranted, TopicMatch, RESERVED_PREFIX};
pub use keep_alive::KeepAlive;
pub use last_event_id::{LastEventId, LAST_EVENT_ID, MAX_LAST_EVENT_ID_LEN};
pub use layer::SseLayer;
pub use service::SseService;
pub use settings::{ErrorPolicy, STREAM_ERROR, STREAM_ERROR_DATA};
pub use shutdown::Shutdown;
pub use streams::StreamStats;

/// A `204 No Content` response: the documented way to make a browser's `EventSource` stop
/// reconnecting.
///
/// An `EventSource` reconnects after every end of stream or network error, for ever. The spec's
/// way out: a response that is not `200` with `text/event-stream` "fails the connection", and a
/// `204` is the conventional one for "no more events for you" (a finished job, a revoked
/// subscription). Return it from the handler instead of a stream when the client should stop.
///
/// ```
/// let response: http::Response<()> = tower_sse::stop_reconnecting();
/// assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
/// ```
pub fn stop_reconnecting<B: Default>() -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    response
}

/// A boxed error, as returned by [`SseBody`] when its stream fails under [`ErrorPolicy::Abort`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// The README's examples use every integration, so they are checked with all of them enabled.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "warp",
    feature = "redis",
    feature = "postgres"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
