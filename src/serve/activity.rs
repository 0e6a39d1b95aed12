//! What a connection's deadlines need to know: when a request arrives and when its response
//! ends, and (HTTP/2) since when each stream's body has had a frame out that the peer has not
//! taken. A service wrapper counts each request from the moment hyper hands it over until its
//! response body is dropped, and wakes the connection's task at each change; the body wrapper
//! notes the time on the task it runs in, which the connection can reset.

use super::deadline::{Requests, SendCheck};
use atomic_waker::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{ready, Context, Poll, Waker},
};
use tokio::{
    sync::{futures::Notified, Notify},
    task,
    time::Instant,
};

/// The requests of one connection, shared by its service and its task.
#[derive(Debug)]
pub(super) struct Activity {
    requests: Mutex<Requests>,
    changed: Notify,
    /// The tasks hyper runs the connection's HTTP/2 streams in (empty for HTTP/1.1).
    streams: Mutex<Vec<Arc<StreamTask>>>,
    /// What the streams' times count from.
    epoch: Instant,
}

impl Activity {
    /// A connection accepted at `accepted`.
    pub(super) fn new(accepted: Instant) -> Arc<Self> {
        Arc::new(Activity {
            requests: Mutex::new(Requests::new(accepted)),
            changed: Notify::new(),
            streams: Mutex::new(Vec::new()),
            epoch: accepted,
        })
    }

    /// The current task runs one of the connection's streams; `None` outside a task.
    pub(super) fn stream_started(&self) -> Option<Arc<StreamTask>> {
        let stream = Arc::new(StreamTask {
            id: task::try_id()?,
            epoch: self.epoch,
            waiting_since: AtomicU64::new(0),
            reset: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        lock(&self.streams).push(stream.clone());
        Some(stream)
    }

    /// The stream's task is over.
    pub(super) fn stream_ended(&self, stream: &Arc<StreamTask>) {
        lock(&self.streams).retain(|other| !Arc::ptr_eq(other, stream));
    }

    /// The stream whose task is polling the caller, if the connection runs one there.
    fn current_stream(&self) -> Option<Arc<StreamTask>> {
        let id = task::try_id()?;
        let streams = lock(&self.streams);
        streams.iter().find(|stream| stream.id == id).cloned()
    }

    /// Resets the streams whose frame `check` finds stalled; how many.
    pub(super) fn reset_stalled(&self, check: &mut SendCheck) -> usize {
        let streams = lock(&self.streams);
        let stalled = streams.iter().filter(|stream| {
            let since = stream.waiting_since();
            since.is_some_and(|since| check.stalled(since))
        });
        stalled.map(|stream| stream.reset()).count()
    }

    /// The requests so far.
    pub(super) fn requests(&self) -> Requests {
        *self.lock()
    }

    /// Completes at the next change (or at once, if one came since the last wait).
    pub(super) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    fn lock(&self) -> MutexGuard<'_, Requests> {
        lock(&self.requests)
    }

    fn update(&self, change: impl FnOnce(&mut Requests)) {
        change(&mut self.lock());
        // One stored permit: a change while the task is busy is seen on its next wait.
        self.changed.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent whatever panicked while holding it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The task one HTTP/2 stream runs in: since when its body's last frame waits for the peer,
/// and the switch that resets the stream.
#[derive(Debug)]
pub(super) struct StreamTask {
    id: task::Id,
    epoch: Instant,
    /// Nanoseconds from `epoch`, plus one, to when the body handed over a frame and was not
    /// polled again since; 0 while no frame waits.
    waiting_since: AtomicU64,
    reset: AtomicBool,
    waker: AtomicWaker,
}

impl StreamTask {
    /// The body handed over a frame at `at`.
    fn frame_out(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.waiting_since.store(nanos, Ordering::Relaxed);
    }

    /// The body is polled again: its last frame was taken.
    fn frame_taken(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    fn waiting_since(&self) -> Option<Instant> {
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.epoch + std::time::Duration::from_nanos(nanos - 1)),
        }
    }

    fn reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the stream is to be reset; until then `waker` is woken when it is.
    pub(super) fn is_reset(&self, waker: &Waker) -> bool {
        self.waker.register(waker);
        self.reset.load(Ordering::Acquire)
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
            in_flight,
            stream: Stream::Unknown,
        })))
    }
}

/// The stream task a body is polled in, found at its first poll.
#[derive(Debug)]
enum Stream {
    Unknown,
    /// Not in a stream's task (HTTP/1.1 polls bodies in the connection's task).
    None,
    In(Arc<StreamTask>),
}

impl Stream {
    fn find(&mut self, in_flight: Option<&InFlight>) -> Option<&StreamTask> {
        if let Stream::Unknown = self {
            *self = match in_flight.and_then(|in_flight| in_flight.0.current_stream()) {
                Some(stream) => Stream::In(stream),
                None => Stream::None,
            };
        }
        match self {
            Stream::In(stream) => Some(stream),
            _ => None,
        }
    }
}

pin_project! {
    /// A response body that ends its request's time in flight when dropped, and tells its
    /// stream's task since when a frame it handed over waits.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
        stream: Stream,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let stream = this.stream.find(this.in_flight.as_ref());
        // hyper polls a body again only once the frame before has capacity to go; a body
        // that returns `Pending` has nothing to send and waits for nobody.
        if let Some(stream) = stream {
            stream.frame_taken();
        }
        let polled = this.inner.poll_frame(cx);
        if let (Some(stream), Poll::Ready(Some(Ok(_)))) = (stream, &polled) {
            stream.frame_out(Instant::now());
        }
        polled
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
            in_flight: Some(in_flight),
            stream: Stream::Unknown,
        };
        assert!(body.is_end_stream());
        drop(body);
        activity.changed().await;
        let (_, expiry) = deadlines.next(&activity.requests()).unwrap();
        assert_eq!(expiry, Expiry::Idle);
    }

    /// A stream task that polls its body once, then holds it as hyper does while the peer
    /// grants no window; reports on `dropped` when the task drops it.
    fn stream_task(
        exec: &super::super::reset::StreamExecutor,
        activity: &Arc<Activity>,
        ready: bool,
    ) -> tokio::sync::oneshot::Receiver<()> {
        use futures_util::{stream, StreamExt};
        use http_body_util::BodyExt;
        let (guard, dropped) = tokio::sync::oneshot::channel::<()>();
        let frames = stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            bytes::Bytes::from_static(b"data: x\n\n"),
        ))])
        .filter(move |_| std::future::ready(ready))
        .chain(stream::pending());
        let mut body = TrackedBody {
            inner: http_body_util::StreamBody::new(frames),
            in_flight: Some(InFlight::new(activity)),
            stream: Stream::Unknown,
        };
        hyper::rt::Executor::execute(exec, async move {
            let _guard = guard;
            let _ = body.frame().await;
            std::future::pending::<()>().await;
        });
        dropped
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_with_a_frame_out_for_the_send_timeout_is_reset_alone() {
        const SEND: Duration = Duration::from_secs(30);
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        let exec = super::super::reset::StreamExecutor::new(activity.clone());
        let deadlines = Deadlines::new(accepted, SEND).watch_sends(SEND, accepted);
        let stalled = stream_task(&exec, &activity, true);
        let mut idle = stream_task(&exec, &activity, false);
        tokio::task::yield_now().await;
        let check_at = |after| {
            let mut check = deadlines.check_sends(accepted + after).unwrap();
            (activity.reset_stalled(&mut check), check.next())
        };
        let (reset, next) = check_at(SEND - Duration::from_millis(1));
        assert_eq!(reset, 0, "one millisecond early");
        assert_eq!(
            next,
            accepted + SEND,
            "the next look is when the frame is due"
        );
        assert_eq!(check_at(SEND).0, 1, "the stalled stream, not the idle one");
        assert!(stalled.await.is_err(), "its task dropped the body");
        tokio::time::advance(SEND * 10).await;
        assert!(idle.try_recv().is_err(), "the idle stream is still served");
        assert_eq!(check_at(SEND * 10).0, 0, "nothing waits on the idle stream");
        assert_eq!(
            activity.streams.lock().unwrap().len(),
            1,
            "the reset task is gone"
        );
    }
}
