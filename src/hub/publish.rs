//! A publication under way ([`Publish`]) and why one failed ([`PublishError`]).

use crate::EventError;
use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

/// Why a [`Topic::publish`](super::Topic::publish) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The event cannot take the hub's id (see [`Event::with_id_if_missing`](crate::Event::with_id_if_missing)); the history is
    /// unchanged.
    Event(EventError),
    /// The event has an `id` of its own, and this hub shares its topics through a broker, which
    /// numbers every event so that any server can resume from it. Publish it without one.
    OwnId,
    /// The broker could not be reached, or refused the event. The text is the engine's, for logs.
    Unavailable(String),
    /// The broker did not answer within this time.
    Timeout(Duration),
    /// Too many publishes are waiting for the broker already.
    Overloaded,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Event(err) => write!(f, "event cannot be published: {err}"),
            PublishError::OwnId => f.write_str(
                "a hub with a broker numbers events itself; publish the event without an id",
            ),
            PublishError::Unavailable(why) => write!(f, "hub broker unavailable: {why}"),
            PublishError::Timeout(after) => {
                write!(f, "hub broker did not answer within {after:?}")
            }
            PublishError::Overloaded => f.write_str("too many publishes waiting for the broker"),
        }
    }
}

impl StdError for PublishError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            PublishError::Event(err) => Some(err),
            _ => None,
        }
    }
}

impl From<EventError> for PublishError {
    fn from(err: EventError) -> Self {
        PublishError::Event(err)
    }
}

/// A publication under way: await it for the event's id. Returned by
/// [`Topic::publish`](super::Topic::publish).
///
/// The event is published whether or not this is awaited, so a hook or a sync caller can drop
/// it. On the in-memory hub it is done before `publish` returns. With a broker it runs on a
/// task of its own, and a failure is also logged as a warning, so none goes unseen.
#[derive(Debug)]
pub struct Publish {
    state: PublishState,
}

#[derive(Debug)]
enum PublishState {
    Ready(Option<Result<String, PublishError>>),
    Task(tokio::task::JoinHandle<Result<String, PublishError>>),
}

impl Publish {
    pub(super) fn ready(result: Result<String, PublishError>) -> Publish {
        Publish {
            state: PublishState::Ready(Some(result)),
        }
    }

    pub(super) fn spawn(
        future: impl Future<Output = Result<String, PublishError>> + Send + 'static,
    ) -> Publish {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => Publish {
                state: PublishState::Task(handle.spawn(future)),
            },
            Err(_) => Publish::ready(Err(PublishError::Unavailable(
                "no Tokio runtime to publish from".into(),
            ))),
        }
    }

    /// Lets the publication finish on its own: the event is still published, and a failure is
    /// logged (with a broker also counted in
    /// [`HubStats::publish_failed`](super::HubStats::publish_failed)). For hooks and other code
    /// that cannot wait.
    pub fn detach(self) {
        if let PublishState::Ready(Some(Err(err))) = &self.state {
            tracing::warn!(error = %err, "hub publish failed");
        }
    }

    /// The outcome, if it is known already: always on the in-memory hub. Sync code uses this.
    ///
    /// ```
    /// let hub = tower_sse::hub::Hub::new();
    /// let id = hub.topic("t").publish(tower_sse::Event::message("x")).now().unwrap().unwrap();
    /// assert!(id.ends_with("-1"));
    /// ```
    pub fn now(self) -> Option<Result<String, PublishError>> {
        match self.state {
            PublishState::Ready(result) => result,
            PublishState::Task(handle) if handle.is_finished() => {
                let waker = std::task::Waker::noop();
                let mut handle = handle;
                match Pin::new(&mut handle).poll(&mut Context::from_waker(waker)) {
                    Poll::Ready(result) => Some(joined(result)),
                    Poll::Pending => None,
                }
            }
            PublishState::Task(_) => None,
        }
    }
}

fn joined(
    result: Result<Result<String, PublishError>, tokio::task::JoinError>,
) -> Result<String, PublishError> {
    result.unwrap_or_else(|err| Err(PublishError::Unavailable(format!("publish task: {err}"))))
}

impl Future for Publish {
    type Output = Result<String, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            PublishState::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                Err(PublishError::Unavailable(
                    "publish polled after it finished".into(),
                ))
            })),
            PublishState::Task(handle) => Pin::new(handle).poll(cx).map(joined),
        }
    }
}
