//! Telling the application when an SSE response ends, and why.

use crate::streams::Streams;
use std::{
    fmt,
    sync::{Arc, OnceLock},
};
use tokio::sync::Notify;

/// Why an SSE response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The event stream ended and the body finished.
    Completed,
    /// The body was dropped before its stream ended: the client disconnected (or the connection
    /// was closed for it, by a timeout or a server shutdown).
    Disconnected,
    /// The event stream yielded an error, which ended the response.
    Error,
    /// The request was answered without an SSE body in the layer's reach: an error status, a
    /// refusal by the layer's stream limit or `Accept` check, or a body built where the layer
    /// could not hand it this handle (with [`SseBody::new`](crate::SseBody::new) in a task the
    /// handler spawned, or behind a buffer). In that last case the stream is live although the
    /// handle says it ended, and the layer logs a warning if the response is an event stream:
    /// build the body with [`SseBody::from_request`](crate::SseBody::from_request) or
    /// [`SseBody::from_context`](crate::SseBody::from_context) instead.
    NoStream,
    /// The server's [`Shutdown`](crate::Shutdown) ended the stream.
    Shutdown,
    /// The stream reached its [`max_lifetime`](crate::SseLayer::max_lifetime) and told the
    /// client to reconnect.
    Rotated,
    /// The stream's credential expired ([`Grants::expires_at`](crate::Grants::expires_at)).
    Expired,
    /// The stream's subject was revoked ([`Auth::revoke`](crate::auth::Auth::revoke)).
    Revoked,
}

struct Shared {
    /// Set once, by the first end.
    reason: OnceLock<CloseReason>,
    notify: Notify,
}

/// A handle that completes when an SSE response ends: the client went away, or the stream ended.
///
/// [`SseLayer`](crate::SseLayer) puts one in each request's extensions before calling the inner
/// service, and hands its other half to the [`SseBody`](crate::SseBody) the handler creates; with
/// hyper 1 a client's disconnect is seen without any write, because the server drops the body
/// as soon as the connection closes (HTTP/1.1 FIN, HTTP/2 stream reset). Outside a layer, get one from
/// [`SseBody::disconnect_handle`](crate::SseBody::disconnect_handle).
///
/// Cloning is cheap; every clone sees the same end.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tower_sse::{CloseReason, Event, SseBody};
///
/// let mut body = SseBody::new(futures_util::stream::iter([Event::message("hi")]));
/// let disconnect = body.disconnect_handle();
/// drop(body); // what the server does when the client goes away
/// assert_eq!(disconnect.closed().await, CloseReason::Disconnected);
/// # }
/// ```
#[derive(Clone)]
pub struct Disconnect {
    shared: Arc<Shared>,
}

impl Disconnect {
    pub(crate) fn pair() -> (Disconnect, CloseGuard) {
        let shared = Arc::new(Shared {
            reason: OnceLock::new(),
            notify: Notify::new(),
        });
        (
            Disconnect {
                shared: shared.clone(),
            },
            CloseGuard {
                shared,
                streams: None,
            },
        )
    }

    /// Waits until the response has ended and says why. Returns at once if it already has.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Why the response ended, or `None` while it is still open.
    pub fn reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().copied()
    }

    /// Whether the response has ended.
    pub fn is_closed(&self) -> bool {
        self.reason().is_some()
    }
}

impl fmt::Debug for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disconnect")
            .field("reason", &self.reason())
            .finish()
    }
}

/// The body's half: records the end once, and `Disconnected` if dropped while still open; when
/// counted, gives the layer's stream slot back on drop.
pub(crate) struct CloseGuard {
    shared: Arc<Shared>,
    /// The stream slots this response holds, one under each enclosing layer's limit.
    streams: Option<Arc<[Arc<Streams>]>>,
}

impl CloseGuard {
    pub(crate) fn counting(mut self, streams: Arc<[Arc<Streams>]>) -> Self {
        self.streams = Some(streams);
        self
    }

    pub(crate) fn close(&self, reason: CloseReason) {
        if self.shared.reason.set(reason).is_ok() {
            tracing::debug!(?reason, "SSE response ended");
            if reason == CloseReason::Rotated {
                for streams in self.streams.iter().flat_map(|all| all.iter()) {
                    streams.count_rotation();
                }
            }
            self.shared.notify.notify_waiters();
        }
    }

    pub(crate) fn handle(&self) -> Disconnect {
        Disconnect {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.close(CloseReason::Disconnected);
        for streams in self.streams.iter().flat_map(|all| all.iter()) {
            streams.release();
        }
    }
}

impl fmt::Debug for CloseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins() {
        let (handle, guard) = Disconnect::pair();
        assert!(!handle.is_closed());
        guard.close(CloseReason::Completed);
        drop(guard);
        assert_eq!(handle.closed().await, CloseReason::Completed);
    }

    #[tokio::test]
    async fn waiters_registered_before_close_are_woken() {
        let (handle, guard) = Disconnect::pair();
        let waiter = tokio::spawn({
            let handle = handle.clone();
            async move { handle.closed().await }
        });
        tokio::task::yield_now().await;
        drop(guard);
        assert_eq!(waiter.await.unwrap(), CloseReason::Disconnected);
    }
}
