//! [`SseLayer`]: the tower layer that configures and frames SSE responses.

use crate::{
    admission::Admission,
    context::Chain,
    drain::DrainPolicy,
    service::SseService,
    settings::{settings_setters, Settings},
    shutdown::Shutdown,
    streams::{StreamStats, Streams},
};
use std::sync::Arc;
use tower_layer::Layer;

/// Applies SSE settings, headers, `Last-Event-ID` parsing and disconnect detection to a service.
///
/// Put it around a whole application: responses that carry an [`SseBody`](crate::SseBody) get
/// the SSE treatment, every other response passes through untouched.
///
/// For each request the layer
/// - parses `Last-Event-ID` into a [`LastEventId`](crate::LastEventId) request extension (absent
///   when the header is missing or unusable); when the header is missing, it reads the
///   `lastEventId` query parameter the same way, so that a page's first connect can resume
///   ([`last_event_id_query`](SseLayer::last_event_id_query));
/// - puts the request's [`SseContext`](crate::SseContext) (its settings, disconnect handle,
///   stream limit and shutdown) and a [`Disconnect`](crate::Disconnect) handle in the request
///   extensions; the handle completes when the SSE response ends, with the reason;
/// - hands that context to the [`SseBody`](crate::SseBody) built for the request: implicitly to
///   [`SseBody::new`](crate::SseBody::new) while the layer runs the request on the current task
///   (whichever framework's responder builds it), and explicitly, wherever the body is built, to
///   [`SseBody::from_request`](crate::SseBody::from_request) and
///   [`SseBody::from_context`](crate::SseBody::from_context). A response that says it is an
///   event stream but whose body took no context was built out of reach: the layer logs a
///   `tracing` warning, and that body runs with the defaults, no limit, no shutdown;
/// - on an SSE response (a body took the context, or `Content-Type` is `text/event-stream`),
///   sets `Content-Type: text/event-stream`, `Cache-Control: no-cache` and
///   `X-Accel-Buffering: no` (the last two unless already set), removes `Content-Length`, and
///   removes connection-specific headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
///   `Transfer-Encoding`, `Upgrade`, `TE`), which HTTP/2 forbids. Status and other headers are
///   kept. The crate's responders (axum, warp, [`SseBody::into_http_response`]) set these
///   headers when the response is built, so middleware inside the layer already sees an event
///   stream (tower-http's compression then leaves it alone, in either order);
/// - answers `406 Not Acceptable` instead of streaming when the request's `Accept` header
///   excludes `text/event-stream`;
/// - beyond the stream limit set by [`max_streams`](SseLayer::max_streams), turns the client
///   away so that it comes back later by itself (see there), and counts it
///   ([`stream_stats`](SseLayer::stream_stats));
/// - given a [`Shutdown`], ends every stream under it gracefully when it is triggered.
///
/// Layers nest: a stream under two layers takes a slot under both limits and ends with either
/// shutdown; its settings are the innermost layer's, and it has one disconnect handle.
///
/// [`SseBody::into_http_response`]: crate::SseBody::into_http_response
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::{convert::Infallible, time::Duration};
/// use http::{Request, Response};
/// use http_body_util::BodyExt;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{Event, KeepAlive, LastEventId, SseBody, SseLayer};
///
/// let service = ServiceBuilder::new()
///     .layer(
///         SseLayer::new()
///             .keep_alive(KeepAlive::new().interval(Duration::from_secs(20)))
///             .retry(Duration::from_secs(5)),
///     )
///     .service_fn(|req: Request<()>| async move {
///         let after = req.extensions().get::<LastEventId>().map(|id| id.to_string());
///         let events = futures_util::stream::iter([Event::message(format!("after {after:?}"))]);
///         Ok::<_, Infallible>(Response::new(SseBody::new(events)))
///     });
///
/// let request = Request::builder().header("last-event-id", "41").body(()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.headers()["content-type"], "text/event-stream");
/// let bytes = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(bytes, "retry: 5000\ndata: after Some(\"41\")\n\n");
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SseLayer {
    config: Config,
}

/// What a layer configures, as its setters build it.
#[derive(Debug, Clone)]
struct Config {
    settings: Arc<Settings>,
    streams: Arc<Streams>,
    shutdown: Option<Shutdown>,
    drain: DrainPolicy,
    admission: Option<Admission>,
}

impl Default for SseLayer {
    fn default() -> Self {
        SseLayer {
            config: Config {
                settings: Settings::shared_default(),
                streams: Arc::new(Streams::new(usize::MAX)),
                shutdown: None,
                drain: DrainPolicy::Immediate,
                admission: None,
            },
        }
    }
}

impl SseLayer {
    /// A layer with the default settings: keep-alive every 15 s, no retry hint, 16 KiB
    /// coalescing, errors closing the stream with a `stream-error` event, an open frame.
    pub fn new() -> Self {
        Self::default()
    }

    settings_setters!("Default:", config.settings);

    /// Caps the number of SSE streams open at once under this layer (and its clones). Default:
    /// no limit.
    ///
    /// Beyond it, the stream is refused (its body never polls its stream, so a hub subscription
    /// in it never joins), and the client is told to come back later in the way it understands:
    /// - a client that asks for `text/event-stream` in `Accept` (every `EventSource` does)
    ///   gets a `200` event stream whose whole body is one block: a `retry:` line, with a delay
    ///   drawn from the [`come_back`](Self::come_back) window, a comment,
    ///   and a blank line (`retry: 3316\n: over capacity, come back later\n\n`); the stream
    ///   then ends and the client reconnects after that delay. (A browser treats any status
    ///   but `200` as fatal and never reconnects.) The block has no `data`, so browsers
    ///   dispatch nothing: `retry` only updates the reconnection delay. The blank line is there
    ///   for clients that apply a `retry:` only once its block ends.
    /// - any other client gets `503 Service Unavailable` with `Retry-After` (a delay drawn from
    ///   the same window, in whole seconds).
    ///
    /// Refusals are counted ([`StreamStats::refused`]) and logged with `tracing` at `INFO`.
    pub fn max_streams(mut self, limit: usize) -> Self {
        self.config.streams = Arc::new(Streams::new(limit));
        self
    }

    /// Ends every stream under this layer when `shutdown` is triggered, as the
    /// [`drain`](Self::drain) policy says; see [`Shutdown`].
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        shutdown.note_drain(self.config.drain.span());
        self.config.shutdown = Some(shutdown.clone());
        self
    }

    /// Sets when the streams under this layer end once this layer's own
    /// [`shutdown`](Self::shutdown) is triggered: all at once, in waves spread over a span, or
    /// after a grace period for streams that must complete; see [`DrainPolicy`]. The policy
    /// goes with the switch: with nested layers, a stream ended by an outer layer's
    /// `Shutdown` follows the outer layer's policy, whatever the inner layers set. That
    /// `Shutdown` learns the policy's span ([`Shutdown::drain_span`]), and
    /// [`serve::Server`](crate::serve::Server) waits that much longer before closing
    /// connections. A policy on a layer with no shutdown applies to nothing, and the layer
    /// logs a `tracing` warning when it wraps a service. Default: [`DrainPolicy::Immediate`].
    pub fn drain(mut self, policy: DrainPolicy) -> Self {
        self.config.drain = policy;
        if let Some(shutdown) = &self.config.shutdown {
            shutdown.note_drain(policy.span());
        }
        self
    }

    /// Limits the rate at which new SSE streams open under this layer (and every layer given
    /// the same [`Admission`]); see there. Default: no limit.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http::{Request, StatusCode};
    /// use http_body_util::BodyExt;
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::{Admission, Event, SseBody, SseLayer};
    ///
    /// let admission = Admission::new(0.0, 1); // one stream, then none
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new().admission(&admission))
    ///     .service_fn(|_req: Request<()>| async {
    ///         let events = futures_util::stream::iter([Event::message("hi")]);
    ///         Ok::<_, std::convert::Infallible>(SseBody::new(events).into_http_response())
    ///     });
    /// let browser = || Request::get("/").header("accept", "text/event-stream").body(()).unwrap();
    /// let first = service.clone().oneshot(browser()).await.unwrap();
    /// assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), ":\ndata: hi\n\n");
    ///
    /// // Over budget: an EventSource is told to come back (a 503 would make it give up) ...
    /// let second = service.clone().oneshot(browser()).await.unwrap();
    /// assert_eq!(second.status(), StatusCode::OK);
    /// let bytes = second.into_body().collect().await.unwrap().to_bytes();
    /// assert!(bytes.ends_with(b"\n: too many new connections, come back later\n\n"));
    /// // ... any other client gets a 503 with Retry-After.
    /// let curl = service.oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(curl.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// assert!(curl.headers().contains_key("retry-after"));
    /// assert_eq!(admission.refused(), 2);
    /// # }
    /// ```
    pub fn admission(mut self, admission: &Admission) -> Self {
        self.config.admission = Some(admission.clone());
        self
    }

    /// How many SSE streams are open now under this layer and its clones.
    pub fn open_streams(&self) -> usize {
        self.config.streams.live()
    }

    /// A handle to this layer's stream counts (open, refused, limit), readable without the
    /// layer; see [`StreamStats`].
    pub fn stream_stats(&self) -> StreamStats {
        StreamStats::new(self.config.streams.clone())
    }

    /// The query parameter read as the `Last-Event-ID` when a request has no such header, or
    /// `None` to read only the header. Default: `lastEventId`.
    ///
    /// A freshly constructed `EventSource` sends no `Last-Event-ID` (only its own reconnects
    /// do), so a page that was closed cannot resume by the header alone: it keeps the last id it
    /// saw and opens `new EventSource("/events?lastEventId=" + encodeURIComponent(id))`. The
    /// header, when present, wins: it is newer than the URL after the browser's reconnects.
    /// The value obeys the header's rule ([`LastEventId::from_query`](crate::LastEventId::from_query)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http::Request;
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    /// use tower_sse::{LastEventId, SseLayer};
    ///
    /// let service = ServiceBuilder::new().layer(SseLayer::new()).service(service_fn(
    ///     |req: Request<()>| async move {
    ///         let id = req.extensions().get::<LastEventId>().map(|id| id.to_string());
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(id.unwrap_or_default()))
    ///     },
    /// ));
    /// let req = Request::get("/events?lastEventId=e1-42").body(()).unwrap();
    /// assert_eq!(service.clone().oneshot(req).await.unwrap().body(), "e1-42");
    /// let req = Request::get("/events?lastEventId=e1-42").header("last-event-id", "e1-50").body(()).unwrap();
    /// assert_eq!(service.oneshot(req).await.unwrap().body(), "e1-50", "the header wins");
    /// # }
    /// ```
    pub fn last_event_id_query(mut self, name: Option<&str>) -> Self {
        Arc::make_mut(&mut self.config.settings).last_event_id_query = name.map(Arc::from);
        self
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let config = &self.config;
        if config.shutdown.is_none() && config.drain != DrainPolicy::Immediate {
            tracing::warn!(
                policy = ?config.drain,
                "SseLayer::drain is set on a layer with no shutdown: it applies to the streams \
                 this layer's own Shutdown ends, and there is none"
            );
        }
        let chain = Chain::of_layer(
            config.settings.clone(),
            config.streams.clone(),
            config
                .shutdown
                .clone()
                .map(|shutdown| (shutdown, config.drain)),
            config.admission.clone(),
        );
        SseService::new(inner, chain)
    }
}
