//! axum integration (feature `axum`): [`SseBody`] as a response, and extractors.
//!
//! - A handler returns an [`SseBody`] directly: it implements `IntoResponse`, with the SSE
//!   headers set.
//! - [`LastEventId`], [`Disconnect`] and [`SseContext`] are extractors (use
//!   `Option<LastEventId>` when the header may be absent). Build a body from the
//!   `SseContext` with [`SseBody::from_context`] when it is built in a task the handler spawns.
//! - `Router::new()...layer(SseLayer::new()...)` configures every SSE route under it: keep-alive,
//!   retry hint, coalescing and error policy are set in that one place.
//! - [`SendTimeoutListener`] wraps a listener for `axum::serve` so stalled clients are closed.
//!
//! For many thousands of connections, put the layer *around* the router instead of using
//! `Router::layer`: `axum::serve` then clones the wrapped router per connection as it is, instead
//! of rebuilding its route tables and re-boxing every layered route, which costs memory per
//! connection (figures in the repository's BENCHMARKS.md).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! use axum::ServiceExt;
//! use tower_layer::Layer;
//! use tower_sse::SseLayer;
//!
//! let router = axum::Router::new(); // .route(...)
//! let app = SseLayer::new().layer(router);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, ServiceExt::<axum::extract::Request>::into_make_service(app)).await
//! # }
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower::ServiceExt;
//! use tower_sse::{Event, LastEventId, SseBody, SseLayer};
//!
//! async fn events(last: Option<LastEventId>) -> SseBody<impl futures_core::Stream<Item = Event>> {
//!     let from = last.map_or("start".to_owned(), |id| id.to_string());
//!     SseBody::new(futures_util::stream::iter([Event::message(format!("after {from}"))]))
//! }
//!
//! let app = Router::new()
//!     .route("/events", get(events))
//!     .layer(SseLayer::new().retry(Duration::from_secs(1)));
//!
//! let request = http::Request::builder().uri("/events").body(axum::body::Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
//! assert_eq!(body, "retry: 1000\ndata: after start\n\n");
//! # }
//! ```

use crate::{
    body::SseItem, headers::set_sse_headers, io::SendTimeout, BoxError, Disconnect, LastEventId,
    SseBody, SseContext,
};
use axum::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
};
use futures_core::Stream;
use std::{convert::Infallible, fmt, io, time::Duration};

impl<S> IntoResponse for SseBody<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
    <S::Item as SseItem>::Error: Into<BoxError>,
{
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::new(self));
        set_sse_headers(response.headers_mut());
        response
    }
}

impl<St: Send + Sync> FromRequestParts<St> for LastEventId {
    type Rejection = StatusCode;

    /// Fails with `400 Bad Request` when the header is absent or unusable; extract
    /// `Option<LastEventId>` to accept both.
    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        <LastEventId as OptionalFromRequestParts<St>>::from_request_parts(parts, state)
            .await
            .ok()
            .flatten()
            .ok_or(StatusCode::BAD_REQUEST)
    }
}

impl<St: Send + Sync> OptionalFromRequestParts<St> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &St,
    ) -> Result<Option<Self>, Self::Rejection> {
        // The layer's parse when it ran; the header itself otherwise (same rules).
        Ok(parts
            .extensions
            .get::<LastEventId>()
            .cloned()
            .or_else(|| LastEventId::from_headers(&parts.headers)))
    }
}

/// Rejection of the [`Disconnect`] and [`SseContext`] extractors when no
/// [`SseLayer`](crate::SseLayer) is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingSseLayer;

impl fmt::Display for MissingSseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this extractor needs tower_sse::SseLayer around the route")
    }
}

impl std::error::Error for MissingSseLayer {}

impl IntoResponse for MissingSseLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// An extension the layer puts in every request, or the rejection that says it is missing.
fn put_by_the_layer<T: Clone + Send + Sync + 'static>(parts: &Parts) -> Result<T, MissingSseLayer> {
    parts.extensions.get::<T>().cloned().ok_or(MissingSseLayer)
}

impl<St: Send + Sync> FromRequestParts<St> for Disconnect {
    type Rejection = MissingSseLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        put_by_the_layer(parts)
    }
}

/// The request's [`SseContext`], for a body built where the layer cannot reach on its own (a
/// task the handler spawns). Fails with [`MissingSseLayer`] without an
/// [`SseLayer`](crate::SseLayer).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower::ServiceExt;
/// use tower_sse::{Event, SseBody, SseContext, SseLayer};
///
/// async fn events(context: SseContext) -> SseBody<futures_util::stream::Iter<std::vec::IntoIter<Event>>> {
///     // Whatever runs the work (here a spawned task) builds the body with the layer's context.
///     tokio::spawn(async move {
///         SseBody::from_context(&context, futures_util::stream::iter(vec![Event::message("done")]))
///     })
///     .await
///     .unwrap()
/// }
///
/// let app = Router::new()
///     .route("/events", get(events))
///     .layer(SseLayer::new().retry(Duration::from_secs(3)));
/// let request = http::Request::builder().uri("/events").body(axum::body::Body::empty()).unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
/// assert_eq!(body, "retry: 3000\ndata: done\n\n");
/// # }
/// ```
impl<St: Send + Sync> FromRequestParts<St> for SseContext {
    type Rejection = MissingSseLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        put_by_the_layer(parts)
    }
}

/// A listener for `axum::serve` whose connections close when the peer accepts no bytes for a
/// set time; see [`SendTimeout`]. It also sets `TCP_USER_TIMEOUT` to the same time (on Linux), so
/// a peer that vanished while its stream was idle is closed too, `TCP_NODELAY`, since events
/// are small writes, and (on Linux) a 16 KiB unsent queue
/// ([`tcp_notsent_lowat`](crate::io::tcp_notsent_lowat)), so the timeout times the client's
/// progress, not the kernel's send buffer: as with `serve::Server`, a
/// client that empties its receive buffer within every timeout is never cut. Keep the timeout
/// above the keep-alive interval.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use tower_sse::axum::SendTimeoutListener;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let app = axum::Router::new();
/// axum::serve(SendTimeoutListener::new(listener, Duration::from_secs(30)), app).await
/// # }
/// ```
#[derive(Debug)]
pub struct SendTimeoutListener {
    inner: tokio::net::TcpListener,
    timeout: Duration,
}

impl SendTimeoutListener {
    /// Wraps a TCP listener; writes pending for `timeout` fail and close the connection.
    pub fn new(inner: tokio::net::TcpListener, timeout: Duration) -> Self {
        SendTimeoutListener { inner, timeout }
    }
}

impl axum::serve::Listener for SendTimeoutListener {
    type Io = SendTimeout<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    #[cfg(any(target_os = "linux", target_os = "android"))]
                    {
                        let _ = crate::io::tcp_user_timeout(&tcp, self.timeout);
                        // A small unsent queue, so the send timeout times the client, not the
                        // kernel's buffer (see `io::tcp_notsent_lowat`).
                        let _ = crate::io::tcp_notsent_lowat(&tcp, 16 * 1024);
                    }
                    return (SendTimeout::new(tcp, self.timeout), addr);
                }
                // Out of descriptors and the like: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The request's [`Grants`](crate::Grants), put there by an
/// [`AuthLayer`](crate::auth::AuthLayer); rejects with `401` (empty body) when the request has
/// none (no layer, or a credential the layer refused).
///
/// ```
/// use axum::response::IntoResponse;
/// use tower_sse::{hub::Hub, Grants, NotGranted, SseBody};
///
/// async fn inbox(grants: Grants, axum::extract::State(hub): axum::extract::State<Hub>)
///     -> Result<impl IntoResponse, NotGranted>
/// {
///     let user = grants.subject_name().unwrap_or_default().to_owned();
///     let subscription = hub.topic(&format!("user:{user}")).subscribe(None).granted(&grants)?;
///     Ok(SseBody::new(subscription))
/// }
/// # let _: axum::Router = axum::Router::new().route("/inbox", axum::routing::get(inbox)).with_state(Hub::new());
/// ```
impl<St: Send + Sync> FromRequestParts<St> for crate::Grants {
    type Rejection = crate::auth::Denied;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<crate::Grants>()
            .cloned()
            .ok_or(crate::auth::Denied::Unauthenticated)
    }
}

impl<St: Send + Sync> OptionalFromRequestParts<St> for crate::Grants {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &St,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<crate::Grants>().cloned())
    }
}

impl IntoResponse for crate::auth::Denied {
    /// The status (`401` or `403`), an empty body, `Cache-Control: no-store`.
    fn into_response(self) -> Response {
        self.response()
    }
}

impl IntoResponse for crate::NotGranted {
    /// `403 Forbidden`, an empty body, `Cache-Control: no-store`.
    fn into_response(self) -> Response {
        crate::auth::Denied::Forbidden.response()
    }
}
