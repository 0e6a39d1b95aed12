//! warp 0.4 integration (feature `warp`): [`SseBody`] as a warp reply.
//!
//! A filter returns an [`SseBody`] directly: it implements `warp::Reply`, with the SSE headers
//! set. [`context`] extracts the request's [`SseContext`], for bodies built in a task. To configure every SSE route of an app in one place (and get the `Last-Event-ID`
//! extension and the [`Disconnect`](crate::Disconnect) handle), put [`SseLayer`](crate::SseLayer)
//! around `warp::service(filter)` and serve that with hyper-util; warp's own reply body type is
//! private, which is why the layer goes around the service rather than inside a filter.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::{Event, SseBody, SseLayer};
//! use warp::Filter;
//!
//! let filter = warp::path("events").map(|| {
//!     SseBody::new(futures_util::stream::iter([Event::message("from warp")]))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new().retry(Duration::from_millis(500)))
//!     .service(warp::service(filter));
//!
//! let request = http::Request::builder().uri("/events").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! use http_body_util::BodyExt;
//! let bytes = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(bytes, "retry: 500\ndata: from warp\n\n");
//! # }
//! ```

use crate::{body::SseItem, headers::set_sse_headers, BoxError, LastEventId, SseBody, SseContext};
use futures_core::Stream;
use http_body_util::BodyExt;
use warp::Filter;

/// A filter that extracts the request's [`SseContext`], for a body built where the layer cannot
/// reach on its own (a task the filter spawns): build it with [`SseBody::from_context`]. Rejects
/// the request (not found) without an [`SseLayer`](crate::SseLayer) around the service.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{Event, SseBody, SseLayer};
/// use warp::Filter;
///
/// let filter = warp::path("events")
///     .and(tower_sse::warp::context())
///     .and_then(|context: tower_sse::SseContext| async move {
///         let body = tokio::spawn(async move {
///             SseBody::from_context(&context, futures_util::stream::iter([Event::message("done")]))
///         });
///         Ok::<_, std::convert::Infallible>(body.await.unwrap())
///     });
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new().retry(Duration::from_millis(250)))
///     .service(warp::service(filter));
/// let request = http::Request::builder().uri("/events").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// use http_body_util::BodyExt;
/// let bytes = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(bytes, "retry: 250\ndata: done\n\n");
/// # }
/// ```
pub fn context() -> impl Filter<Extract = (SseContext,), Error = warp::Rejection> + Clone {
    warp::ext::get::<SseContext>()
}

/// A filter that extracts the request's [`LastEventId`]: what [`SseLayer`](crate::SseLayer) read
/// from the `Last-Event-ID` header or, when that is absent, the `lastEventId` query parameter;
/// without a layer, the header alone. `None` when there is none or it is unusable.
///
/// ```
/// use tower_sse::{hub::Hub, LastEventId, SseBody};
/// use warp::Filter;
///
/// let hub = Hub::new();
/// let events = warp::path("events")
///     .and(tower_sse::warp::last_event_id())
///     .map(move |last: Option<LastEventId>| SseBody::new(hub.topic("news").subscribe(last.as_ref())));
/// # let _ = events;
/// ```
pub fn last_event_id(
) -> impl Filter<Extract = (Option<LastEventId>,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<LastEventId>()
        .and(warp::header::headers_cloned())
        .map(|found: Option<LastEventId>, headers: http::HeaderMap| {
            found.or_else(|| LastEventId::from_headers(&headers))
        })
}

impl<S> warp::Reply for SseBody<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
    <S::Item as SseItem>::Error: Into<BoxError>,
{
    fn into_response(self) -> warp::reply::Response {
        let mut response = warp::reply::stream(self.into_data_stream()).into_response();
        set_sse_headers(response.headers_mut());
        response
    }
}

/// A filter that extracts the request's [`Grants`](crate::Grants), put there by an
/// [`AuthLayer`](crate::auth::AuthLayer) around the warp service; rejects with
/// [`Denied::Unauthenticated`](crate::auth::Denied) when there are none. `Denied` is a
/// `warp::reject::Reject` and a `Reply`: answer it in the app's `recover` with
/// `rejection.find::<Denied>()`.
///
/// ```
/// use tower_sse::{hub::Hub, Grants, SseBody};
/// use warp::{Filter, Reply};
///
/// let hub = Hub::new();
/// let events = warp::path("inbox")
///     .and(tower_sse::warp::grants())
///     .map(move |grants: Grants| {
///         let topic = format!("user:{}", grants.subject_name().unwrap_or_default());
///         match hub.topic(&topic).subscribe(None).granted(&grants) {
///             Ok(subscription) => SseBody::new(subscription).into_response(),
///             Err(not_granted) => not_granted.into_response(),
///         }
///     });
/// # let _ = events;
/// ```
pub fn grants() -> impl Filter<Extract = (crate::Grants,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<crate::Grants>().and_then(|grants: Option<crate::Grants>| async move {
        grants.ok_or_else(|| warp::reject::custom(crate::auth::Denied::Unauthenticated))
    })
}

impl warp::reject::Reject for crate::auth::Denied {}

impl warp::Reply for crate::auth::Denied {
    /// The status (`401` or `403`), an empty body, `Cache-Control: no-store`.
    fn into_response(self) -> warp::reply::Response {
        self.response()
    }
}

impl warp::Reply for crate::NotGranted {
    /// `403 Forbidden`, an empty body, `Cache-Control: no-store`.
    fn into_response(self) -> warp::reply::Response {
        crate::auth::Denied::Forbidden.response()
    }
}
