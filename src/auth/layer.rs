//! [`AuthLayer`]: the tower layer that lets requests in with their grants.

use super::{service::AuthService, Auth};
use tower_layer::Layer;

/// Lets requests in with their [`Grants`](crate::Grants): made by [`Auth::layer`], see the
/// [module docs](super) for what it does to each request.
///
/// Put it beside the [`SseLayer`](crate::SseLayer), in either order: inside it (listed after
/// it in a `ServiceBuilder`) or around it, the streams of a request end at its grants' expiry
/// and on its subject's revocation. The service it wraps must be `Clone` (the request waits
/// for the authorizer, then goes to a ready clone), as for tower-http's async authorization.
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthLayer {
    auth: Auth,
}

impl AuthLayer {
    pub(crate) fn new(auth: Auth) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService::new(inner, self.auth.clone())
    }
}
