//! The response future of [`SseService`](crate::SseService).

use crate::{
    context::SseContext,
    headers::{is_event_stream, refuse, set_sse_headers},
    scope,
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
        // Taken when the response is ready.
        context: Option<SseContext>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, context: SseContext) -> Self {
        ResponseFuture {
            inner,
            context: Some(context),
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
        let result = match this.context {
            Some(context) => ready!(scope::enter(context, || inner.as_mut().poll(cx))),
            None => ready!(inner.poll(cx)),
        };
        let Some(context) = this.context.take() else {
            return Poll::Ready(result);
        };
        let outcome = context.finish();
        let mut response = result?;
        if let Some(refusal) = outcome.refusal {
            refuse(
                &mut response,
                refusal,
                outcome.comeback,
                outcome.retry_after,
            );
            return Poll::Ready(Ok(response));
        }
        // A body that was built and then thrown away has already closed the handle.
        let streaming = outcome.built && !context.disconnect().is_closed();
        let labelled = is_event_stream(response.headers());
        if labelled && !outcome.built {
            tracing::warn!(
                "an event-stream response came back with no SseBody built in reach of the \
                 SseLayer (in a spawned task, or behind a Buffer?): its body has the default \
                 settings, no stream limit, no shutdown and no disconnect handle; build it with \
                 SseBody::from_request or from the request's SseContext"
            );
        }
        if streaming || labelled {
            set_sse_headers(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}
