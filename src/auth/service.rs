//! [`AuthService`]: the service made by [`AuthLayer`](super::AuthLayer), and its future.

use super::{body::AuthBody, Auth};
use crate::{
    context::SseContext,
    grants::Grants,
    headers::{asks_for_event_stream, is_event_stream},
};
use http::{uri::PathAndQuery, Request, Response, Uri};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tower_service::Service;

/// Middleware that lets requests in with their grants; made by
/// [`AuthLayer`](super::AuthLayer), see there.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

impl<S> AuthService<S> {
    pub(crate) fn new(inner: S, auth: Auth) -> AuthService<S> {
        AuthService { inner, auth }
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

impl<S, B, ResBody> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = S::Error;
    type Future = AuthFuture<Response<AuthBody<ResBody>>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was made ready goes with the request; a fresh clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        AuthFuture {
            inner: Box::pin(async move {
                let (mut parts, body) = req.into_parts();
                let ticket = auth.ticket_in(parts.uri.query()).map(|(ticket, rest)| {
                    parts.uri = without_query(&parts.uri, &rest);
                    ticket
                });
                let stream = asks_for_event_stream(&parts.headers);
                let outcome = auth.authenticate(&parts, ticket).await;
                let answer = auth.note(&outcome, stream);
                let mut granted = None;
                match outcome {
                    Ok(grants) => {
                        let grants = grants.with_binding_flag();
                        if let Some(context) = parts.extensions.get::<SseContext>() {
                            context.bind(&grants);
                        }
                        granted = Some(grants.clone());
                        parts.extensions.insert(grants);
                    }
                    Err(refusal) => {
                        parts.extensions.remove::<Grants>();
                        if answer {
                            return Ok(refusal.answer().map(|()| AuthBody::refused()));
                        }
                    }
                }
                let response = inner.call(Request::from_parts(parts, body)).await?;
                if granted.is_some_and(|g| !g.is_bound()) && is_event_stream(response.headers()) {
                    tracing::warn!(
                        "an event stream was authorized without an SseLayer around or inside \
                         the AuthLayer: it will not end at its grants' expiry nor on its \
                         subject's revocation; add SseLayer beside Auth::layer()"
                    );
                }
                Ok(response.map(AuthBody::inner))
            }),
        }
    }
}

/// `uri` with `query` in place of its query (none when empty).
fn without_query(uri: &Uri, query: &str) -> Uri {
    let path = uri.path();
    let text = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(text).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// Response future of [`AuthService`]: the authorizer (or the ticket store), then the inner
/// service.
#[must_use = "futures do nothing unless polled"]
pub struct AuthFuture<R, E> {
    inner: Pin<Box<dyn Future<Output = Result<R, E>> + Send>>,
}

impl<R, E> fmt::Debug for AuthFuture<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFuture").finish_non_exhaustive()
    }
}

impl<R, E> Future for AuthFuture<R, E> {
    type Output = Result<R, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_leaves_the_uri() {
        let uri: Uri = "/events?ticket=abc&lastEventId=7".parse().unwrap();
        assert_eq!(
            without_query(&uri, "lastEventId=7"),
            "/events?lastEventId=7"
        );
        assert_eq!(without_query(&uri, ""), "/events");
    }
}
