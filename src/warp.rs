//! warp 0.4 integration (feature `warp`): [`SseBody`] as a warp reply.
//!
//! A filter returns an [`SseBody`] directly: it implements `warp::Reply`, with the SSE headers
//! set. To configure every SSE route of an app in one place (and get the `Last-Event-ID`
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

use crate::{body::SseItem, headers::set_sse_headers, BoxError, SseBody};
use futures_core::Stream;
use http_body_util::BodyExt;

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
