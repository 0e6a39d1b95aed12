//! [`SseService`]: the service produced by [`SseLayer`].

use crate::{
    disconnect::Disconnect,
    future::ResponseFuture,
    last_event_id::LastEventId,
    layer::SseLayer,
    scope::{self, Refusal},
};
use http::{header, HeaderMap, Request, Response};
use std::task::{Context, Poll};
use tower_service::Service;

/// Middleware that frames and configures SSE responses; see [`SseLayer`].
#[derive(Debug, Clone)]
pub struct SseService<S> {
    inner: S,
    layer: SseLayer,
}

impl<S> SseService<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: SseLayer) -> Self {
        SseService { inner, layer }
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
        let refusal = (!accepts_event_stream(req.headers())).then_some(Refusal::NotAcceptable);
        let mut scope = Some(scope::Scope {
            settings: self.layer.settings.clone(),
            guard: Some(guard),
            streams: self.layer.streams.clone(),
            shutdown: self.layer.shutdown.clone(),
            refusal,
            built: false,
        });
        let inner = scope::enter(&mut scope, || self.inner.call(req));
        ResponseFuture::new(inner, scope, handle)
    }
}

/// Whether the `Accept` header allows `text/event-stream` (no header allows anything).
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            // An unreadable Accept header says nothing usable: do not refuse on it.
            return true;
        };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if media.is_empty() {
                continue;
            }
            any = true;
            let zero_q = parts.any(|p| {
                let p = p.trim();
                p.len() > 2
                    && p[..2].eq_ignore_ascii_case("q=")
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            let matches = media.eq_ignore_ascii_case("text/event-stream")
                || media.eq_ignore_ascii_case("text/*")
                || media == "*/*";
            if matches && !zero_q {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, v.parse().unwrap());
        }
        accepts_event_stream(&headers)
    }

    #[test]
    fn accept_header_rules() {
        assert!(accepts(&[]));
        assert!(accepts(&["text/event-stream"]));
        assert!(accepts(&["Text/Event-Stream"]));
        assert!(accepts(&["application/json, */*;q=0.1"]));
        assert!(accepts(&["text/*"]));
        assert!(accepts(&["application/json", "text/event-stream"]));
        assert!(accepts(&[""]));
        assert!(!accepts(&["application/json"]));
        assert!(!accepts(&["text/html, application/xhtml+xml"]));
        assert!(!accepts(&["text/event-stream;q=0"]));
        assert!(!accepts(&["text/event-stream; q=0.0, application/json"]));
    }
}
