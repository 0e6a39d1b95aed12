//! What a connection's deadlines need to know: when a request arrives and when its response
//! ends. A service wrapper counts each request from the moment hyper hands it over until its
//! response body is dropped, and wakes the connection's task at each change.

use super::deadline::Requests;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{ready, Context, Poll},
};
use tokio::{
    sync::{futures::Notified, Notify},
    time::Instant,
};

/// The requests of one connection, shared by its service and its task.
#[derive(Debug)]
pub(super) struct Activity {
    requests: Mutex<Requests>,
    changed: Notify,
}

impl Activity {
    /// A connection accepted at `accepted`.
    pub(super) fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Activity {
            requests: Mutex::new(Requests::new(accepted)),
            changed: Notify::new(),
        })
    }

    /// The requests so far.
    pub(super) fn requests(&self) -> Requests {
        *self.lock()
    }

    /// Completes at the next change (or at once, if one came since the last wait).
    pub(super) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        // The state stays consistent whatever panicked while holding it.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Requests)) {
        change(&mut self.lock());
        // One stored permit: a change while the task is busy is seen on its next wait.
        self.changed.notify_one();
    }
}

/// One request in flight; it ends when dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.update(Requests::opened);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(|requests| requests.closed(now));
    }
}

/// A hyper service that reports its requests to an [`Activity`].
#[derive(Debug, Clone)]
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S, B> hyper::service::Service<Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        TrackedFuture {
            in_flight: Some(InFlight::new(&self.activity)),
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response of a tracked request; the request stays in flight in its body.
    pub(super) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

pin_project! {
    /// A response body that ends its request's time in flight when dropped.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::super::deadline::{Deadlines, Expiry};
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_is_dropped() {
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        let deadlines = Deadlines::new(accepted, Duration::from_secs(60));
        let in_flight = InFlight::new(&activity);
        // The change was stored for the task's next wait.
        activity.changed().await;
        assert_eq!(deadlines.next(&activity.requests()), None);
        let body = TrackedBody {
            inner: http_body_util::Empty::<bytes::Bytes>::new(),
            _in_flight: Some(in_flight),
        };
        assert!(body.is_end_stream());
        drop(body);
        activity.changed().await;
        let (_, expiry) = deadlines.next(&activity.requests()).unwrap();
        assert_eq!(expiry, Expiry::Idle);
    }
}
