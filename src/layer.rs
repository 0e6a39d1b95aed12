//! [`SseLayer`]: the tower layer that configures and frames SSE responses.

use crate::{
    service::{Config, SseService},
    settings::{settings_setters, Settings},
    shutdown::Shutdown,
    streams::Streams,
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
///   when the header is missing or unusable);
/// - puts a [`Disconnect`](crate::Disconnect) handle in the request extensions, which completes
///   when the SSE response ends, with the reason;
/// - hands its settings (keep-alive, retry hint, coalescing cap, error policy) to every
///   [`SseBody`](crate::SseBody) created while the inner service handles the request, whichever
///   framework's responder creates it;
/// - on an SSE response, sets `Content-Type: text/event-stream`, `Cache-Control: no-cache` and
///   `X-Accel-Buffering: no` (the last two unless already set), removes `Content-Length`, and
///   removes connection-specific headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
///   `Transfer-Encoding`, `Upgrade`, `TE`), which HTTP/2 forbids. Status and other headers are
///   kept;
/// - answers `406 Not Acceptable` instead of streaming when the request's `Accept` header
///   excludes `text/event-stream`, and `503 Service Unavailable` with `Retry-After` when the
///   stream limit set by [`max_streams`](SseLayer::max_streams) is reached (the body then sends
///   nothing, so no accepted connection waits for events that never come);
/// - counts the live streams ([`open_streams`](SseLayer::open_streams)) and, given a
///   [`Shutdown`], ends them all gracefully when it is triggered.
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

impl Default for SseLayer {
    fn default() -> Self {
        SseLayer {
            config: Config {
                settings: Settings::shared_default(),
                streams: Arc::new(Streams::new(usize::MAX)),
                shutdown: None,
            },
        }
    }
}

impl SseLayer {
    /// A layer with the default settings: keep-alive every 15 s, no retry hint, 16 KiB
    /// coalescing, errors closing the stream with an `error` event, an open frame.
    pub fn new() -> Self {
        Self::default()
    }

    settings_setters!("Default:", config.settings);

    /// Caps the number of SSE streams open at once under this layer (and its clones). Beyond
    /// it, requests that would stream get `503 Service Unavailable` with a `Retry-After` header
    /// (the retry hint rounded up to whole seconds, or 5 s without one), and the client's
    /// `EventSource` tries again later. Default: no limit.
    pub fn max_streams(mut self, limit: usize) -> Self {
        self.config.streams = Arc::new(Streams::new(limit));
        self
    }

    /// Ends every stream under this layer when `shutdown` is triggered; see [`Shutdown`].
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.config.shutdown = Some(shutdown.clone());
        self
    }

    /// How many SSE streams are open now under this layer and its clones.
    pub fn open_streams(&self) -> usize {
        self.config.streams.live()
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SseService::new(inner, self.config.clone())
    }
}
