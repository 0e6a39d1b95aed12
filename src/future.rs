//! The response future of [`SseService`](crate::SseService).

use crate::{
    disconnect::{CloseReason, Disconnect},
    scope::{self, Refusal, Scope},
};
use http::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Response, StatusCode,
};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

pin_project! {
    /// Response future of [`SseService`](crate::SseService).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        scope: Option<Scope>,
        handle: Disconnect,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, scope: Option<Scope>, handle: Disconnect) -> Self {
        ResponseFuture {
            inner,
            scope,
            handle,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &std::any::type_name::<F>())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut inner = this.inner;
        let result = ready!(scope::enter(this.scope, || inner.as_mut().poll(cx)));
        let Some(scope) = this.scope.take() else {
            return Poll::Ready(result);
        };
        // A body that was built and then thrown away has already closed its handle.
        let streaming = scope.built && !this.handle.is_closed();
        let refusal = scope.refusal.filter(|_| scope.built);
        let retry = scope.settings.retry;
        if let Some(guard) = scope.guard {
            guard.close(CloseReason::NoStream);
        }
        let mut response = result?;
        match refusal {
            Some(refusal) => refuse(&mut response, refusal, retry),
            None if streaming => set_sse_headers(response.headers_mut()),
            None => {}
        }
        Poll::Ready(Ok(response))
    }
}

/// Turns a response whose body was built refused (it sends nothing) into the refusal.
fn refuse<B>(response: &mut Response<B>, refusal: Refusal, retry: Option<Duration>) {
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    match refusal {
        Refusal::NotAcceptable => *response.status_mut() = StatusCode::NOT_ACCEPTABLE,
        Refusal::OverLimit => {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let seconds = retry.map_or(5, |r| crate::delay::millis(r).div_ceil(1000).max(1));
            let value = HeaderValue::from_str(&seconds.to_string())
                .unwrap_or(HeaderValue::from_static("5"));
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
}

/// Connection-specific headers, which HTTP/2 forbids and which HTTP/1.1 servers manage themselves.
const CONNECTION_HEADERS: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

pub(crate) fn set_sse_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers
        .entry(HeaderName::from_static("x-accel-buffering"))
        .or_insert(HeaderValue::from_static("no"));
    headers.remove(header::CONTENT_LENGTH);
    for name in CONNECTION_HEADERS {
        headers.remove(name);
    }
}
