//! [`SseService`]: the service produced by [`SseLayer`].

use crate::{
    disconnect::Disconnect, future::ResponseFuture, keep_alive::Settings,
    last_event_id::LastEventId, layer::SseLayer, scope,
};
use http::{Request, Response};
use std::{
    sync::Arc,
    task::{Context, Poll},
};
use tower_service::Service;

/// Middleware that frames and configures SSE responses; see [`SseLayer`].
#[derive(Debug, Clone)]
pub struct SseService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> SseService<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: SseLayer) -> Self {
        SseService {
            inner,
            settings: layer.settings,
        }
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
        let extensions = req.extensions_mut();
        extensions.remove::<LastEventId>();
        if let Some(id) = LastEventId::from_headers(req.headers()) {
            req.extensions_mut().insert(id);
        }
        let (handle, guard) = Disconnect::pair();
        req.extensions_mut().insert(handle.clone());
        let mut scope = Some(scope::Scope {
            settings: self.settings.clone(),
            guard: Some(guard),
            built: false,
        });
        let inner = scope::enter(&mut scope, || self.inner.call(req));
        ResponseFuture::new(inner, scope, handle)
    }
}
