//! The app's authorizer: from a request's parts to its [`Grants`], or a [`Denied`].

use crate::grants::Grants;
use http::{request::Parts, Response, StatusCode};
use std::{error::Error as StdError, fmt, future::Future, pin::Pin};

/// A boxed authorizer future.
pub(crate) type AuthorizeFuture = Pin<Box<dyn Future<Output = Result<Grants, Denied>> + Send>>;

/// Turns a request into what it may read, from whatever the app already uses (its session
/// cookie, a bearer header, a JWT): the app's half of an [`Auth`](super::Auth), in the style of
/// tower-http's `AsyncAuthorizeRequest`.
///
/// Implemented for every `Fn(&Parts) -> impl Future<Output = Result<Grants, Denied>>`: the
/// closure reads what it needs from the parts (clone it, the future must be `'static`) and
/// looks it up, asynchronously if it must.
///
/// ```
/// use http::request::Parts;
/// use tower_sse::{auth::{Auth, Denied}, Grants};
///
/// fn session_of(parts: &Parts) -> Option<String> {
///     let cookies = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
///     cookies.split(';').find_map(|c| c.trim().strip_prefix("session=")).map(str::to_owned)
/// }
///
/// let auth = Auth::builder(|parts: &Parts| {
///     let session = session_of(parts);
///     async move {
///         // Look the session up in the app's store; here the session is the user.
///         let user = session.ok_or(Denied::Unauthenticated)?;
///         Ok(Grants::new().exact(format!("user:{user}")).subject(user))
///     }
/// })
/// .build();
/// # drop(auth);
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// What [`authorize`](Authorize::authorize) returns.
    type Future: Future<Output = Result<Grants, Denied>> + Send + 'static;

    /// The grants of the request with these parts.
    fn authorize(&self, request: &Parts) -> Self::Future;
}

impl<F, Fut> Authorize for F
where
    F: Fn(&Parts) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Grants, Denied>> + Send + 'static,
{
    type Future = Fut;

    fn authorize(&self, request: &Parts) -> Fut {
        self(request)
    }
}

/// An authorizer behind a pointer, its future boxed.
pub(crate) trait Erased: Send + Sync + 'static {
    fn call(&self, request: &Parts) -> AuthorizeFuture;
}

impl<A: Authorize> Erased for A {
    fn call(&self, request: &Parts) -> AuthorizeFuture {
        Box::pin(self.authorize(request))
    }
}

/// Why an authorizer refuses a request. Answered with an empty body and no detail: the reason
/// is for the server's logs and counters ([`AuthStats`](super::AuthStats)), never the client.
///
/// With feature `axum` it is a response and the [`Grants`] extractor's rejection; with `warp`
/// a reply and a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// No credential, or one that is not valid: `401 Unauthorized`.
    Unauthenticated,
    /// A valid credential that may not read here: `403 Forbidden`.
    Forbidden,
}

impl Denied {
    /// The status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The response: its status, an empty body, `Cache-Control: no-store`.
    ///
    /// ```
    /// use tower_sse::auth::Denied;
    ///
    /// let response = Denied::Forbidden.response::<String>();
    /// assert_eq!(response.status(), 403);
    /// assert!(response.body().is_empty());
    /// ```
    pub fn response<B: Default>(self) -> Response<B> {
        refusal(self.status())
    }
}

/// An empty refusal with this status, never cached.
pub(crate) fn refusal<B: Default>(status: StatusCode) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denied::Unauthenticated => "no valid credential",
            Denied::Forbidden => "not allowed",
        })
    }
}

impl StdError for Denied {}
