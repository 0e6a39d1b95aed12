//! [`SseService`]: the service produced by [`SseLayer`](crate::SseLayer).

use crate::{
    context::SseContext,
    future::ResponseFuture,
    headers::{accepts_event_stream, asks_for_event_stream},
    last_event_id::LastEventId,
    scope,
    settings::Settings,
    shutdown::Shutdown,
    streams::Streams,
};
use http::{Request, Response};
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// What a layer shares with every service it makes: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) settings: Arc<Settings>,
    pub(crate) streams: Arc<Streams>,
    pub(crate) shutdown: Option<Shutdown>,
}

/// Middleware that frames and configures SSE responses; made by
/// [`SseLayer`](crate::SseLayer), see there.
#[derive(Debug, Clone)]
pub struct SseService<S> {
    inner: S,
    config: Config,
}

impl<S> SseService<S> {
    pub(crate) fn new(inner: S, config: Config) -> Self {
        SseService { inner, config }
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
        let last_event_id = LastEventId::from_headers(headers);
        let accept = (
            accepts_event_stream(headers),
            asks_for_event_stream(headers),
        );
        let extensions = req.extensions_mut();
        extensions.remove::<LastEventId>();
        if let Some(id) = last_event_id {
            extensions.insert(id);
        }
        let config = &self.config;
        let context = SseContext::enter(
            extensions.get::<SseContext>(),
            &config.settings,
            &config.streams,
            config.shutdown.as_ref(),
            accept,
        );
        extensions.insert(context.disconnect());
        extensions.insert(context.clone());
        let inner = scope::enter(&context, || self.inner.call(req));
        ResponseFuture::new(inner, context)
    }
}
