//! [`SseService`]: the service produced by [`SseLayer`](crate::SseLayer).

use crate::{
    context::{Chain, SseContext},
    future::ResponseFuture,
    grants::Grants,
    headers::{accepts_event_stream, asks_for_event_stream},
    last_event_id::LastEventId,
    scope,
};
use http::{Request, Response};
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Middleware that frames and configures SSE responses; made by
/// [`SseLayer`](crate::SseLayer), see there.
#[derive(Debug, Clone)]
pub struct SseService<S> {
    inner: S,
    /// What the layer configures, shared by every request and every clone.
    chain: Arc<Chain>,
}

impl<S> SseService<S> {
    pub(crate) fn new(inner: S, chain: Arc<Chain>) -> Self {
        scope::layer_in_use();
        SseService { inner, chain }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let headers = req.headers();
        let last_event_id = if headers.contains_key(crate::last_event_id::LAST_EVENT_ID) {
            LastEventId::from_headers(headers)
        } else {
            let name = self.chain.settings().last_event_id_query.as_deref();
            name.and_then(|name| LastEventId::from_query(req.uri().query(), name))
        };
        let accept = (
            accepts_event_stream(headers),
            asks_for_event_stream(headers),
        );
        let extensions = req.extensions_mut();
        extensions.remove::<LastEventId>();
        if let Some(id) = last_event_id {
            extensions.insert(id);
        }
        let context = SseContext::enter(extensions.get::<SseContext>(), &self.chain, accept);
        // Grants made by an `AuthLayer` outside this one: its streams end with them.
        if let Some(grants) = extensions.get::<Grants>() {
            context.bind(grants);
        }
        extensions.insert(context.disconnect());
        extensions.insert(context.clone());
        let inner = scope::enter(&context, || self.inner.call(req));
        ResponseFuture::new(inner, context)
    }
}
