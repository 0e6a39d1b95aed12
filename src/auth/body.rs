//! [`AuthBody`]: the body of a response that went through an [`AuthLayer`](super::AuthLayer).

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

pin_project! {
    /// The body of a response that went through an [`AuthLayer`](super::AuthLayer): the inner
    /// service's, or nothing at all for a refusal (`401`, `403`, `503`).
    ///
    /// ```
    /// use http_body::Body;
    /// use tower_sse::auth::AuthBody;
    ///
    /// let refused = AuthBody::<String>::refused();
    /// assert!(refused.is_end_stream());
    /// assert_eq!(refused.size_hint().exact(), Some(0));
    /// ```
    #[derive(Debug)]
    pub struct AuthBody<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<B> {
        Inner { #[pin] body: B },
        Refused,
    }
}

impl<B> AuthBody<B> {
    /// The inner service's body.
    pub fn inner(body: B) -> AuthBody<B> {
        AuthBody {
            state: State::Inner { body },
        }
    }

    /// An empty body.
    pub fn refused() -> AuthBody<B> {
        AuthBody {
            state: State::Refused,
        }
    }
}

impl<B: Body> Body for AuthBody<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().state.project() {
            StateProj::Inner { body } => body.poll_frame(cx),
            StateProj::Refused => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Inner { body } => body.is_end_stream(),
            State::Refused => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Inner { body } => body.size_hint(),
            State::Refused => SizeHint::with_exact(0),
        }
    }
}
