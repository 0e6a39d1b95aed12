//! The response future of [`SseService`](crate::SseService).

use crate::{
    disconnect::{CloseReason, Disconnect},
    headers::{refuse, set_sse_headers},
    scope::{self, Scope},
};
use http::Response;
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
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
