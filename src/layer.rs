//! [`SseLayer`]: the tower layer that configures and frames SSE responses.

use crate::{keep_alive::settings_setters, keep_alive::Settings, service::SseService};
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
///   kept.
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
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct SseLayer {
    pub(crate) settings: Arc<Settings>,
}

impl SseLayer {
    /// A layer with the default settings: keep-alive every 15 s, no retry hint, 16 KiB
    /// coalescing, errors closing the stream with an `error` event, an open frame.
    pub fn new() -> Self {
        SseLayer {
            settings: Settings::shared_default(),
        }
    }

    settings_setters!(settings);
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SseService::new(inner, self.clone())
    }
}
