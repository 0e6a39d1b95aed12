//! [`SseBody`]: an `http_body::Body` that writes a stream of events as an SSE response.

use crate::{
    come_back::Cause,
    context::{BodyParts, SseContext},
    disconnect::{CloseGuard, CloseReason, Disconnect},
    drain::DrainClock,
    event::{Event, EventBuilder, EventError},
    keep_alive::IdleTimer,
    lifetime::LifetimeTimer,
    scope,
    settings::{settings_setters, ErrorPolicy, Settings},
    shutdown::ShutdownWatch,
    BoxError,
};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    fmt,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use sync_wrapper::SyncWrapper;

/// An item of an event stream: an [`Event`], or a `Result` of anything that converts into one.
///
/// Implemented for `Event`, `String` and `&str` (infallible streams; text becomes an event's data),
/// for [`EventBuilder`] (built as the body reads it: axum's `Event::default().data(..)` chains
/// work as they are), and for `Result<T, E>` where `T: Into<Event>` (so `Result<Event, E>`,
/// `Result<String, E>` and the `Result<Event, EventError>` returned by
/// [`EventBuilder::build`] all work) or `T` is an [`EventBuilder`]. A builder that fails to build
/// fails the stream, which the body's [`ErrorPolicy`](crate::ErrorPolicy) then handles.
///
/// A stream of anything else is refused where the body is made, with a message that lists
/// what works (`` `u32` is not an item of an event stream ``):
///
/// ```compile_fail,E0277
/// let body = tower_sse::SseBody::new(futures_util::stream::iter([1u32, 2]));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an item of an event stream",
    label = "the stream yields `{Self}`",
    note = "a stream of `Event`, `EventBuilder`, `String`, `&str`, or `Result` of one of them works",
    note = "`Event::json(&value)` or `Event::builder().json_data(value)` make JSON events (feature `json`)"
)]
pub trait SseItem {
    /// The stream's error type.
    type Error;

    /// Converts the item into an event or an error.
    fn into_event(self) -> Result<Event, Self::Error>;
}

impl SseItem for Event {
    type Error = Infallible;

    fn into_event(self) -> Result<Event, Infallible> {
        Ok(self)
    }
}

impl SseItem for String {
    type Error = Infallible;

    fn into_event(self) -> Result<Event, Infallible> {
        Ok(Event::message(self))
    }
}

impl SseItem for &str {
    type Error = Infallible;

    fn into_event(self) -> Result<Event, Infallible> {
        Ok(Event::message(self))
    }
}

impl<T: Into<Event>, E> SseItem for Result<T, E> {
    type Error = E;

    fn into_event(self) -> Result<Event, E> {
        self.map(Into::into)
    }
}

impl SseItem for EventBuilder {
    type Error = EventError;

    fn into_event(self) -> Result<Event, EventError> {
        self.build()
    }
}

impl<E: Into<BoxError>> SseItem for Result<EventBuilder, E> {
    type Error = BoxError;

    fn into_event(self) -> Result<Event, BoxError> {
        match self {
            Ok(builder) => builder.build().map_err(Into::into),
            Err(err) => Err(err.into()),
        }
    }
}

pin_project! {
    /// An `http_body::Body` that writes a stream of events as a Server-Sent Events response.
    ///
    /// - **Framing**: each event's bytes are written exactly as encoded by [`Event`].
    /// - **Open frame**: the first frame is sent as soon as the body is polled (a `retry:` hint
    ///   or an empty comment), so headers pass buffering proxies at once.
    /// - **Coalescing**: events that are ready together go out in one frame, up to a byte cap;
    ///   a lone event is sent without being copied.
    /// - **Keep-alive**: a comment after an idle interval, restarted after every frame.
    /// - **Lifetime**: with [`max_lifetime`](SseBody::max_lifetime), the stream ends after a
    ///   jittered lifetime with a block that tells the client to reconnect.
    /// - **Backpressure**: the stream is polled only when the server polls the body, so a client
    ///   that stops reading stalls the producer; nothing is buffered beyond one frame.
    /// - **Disconnect**: dropping the body drops the stream and completes its [`Disconnect`].
    /// - **Errors**: see [`ErrorPolicy`].
    ///
    /// Created with [`SseBody::new`], which takes the request's [`SseContext`] (the settings of
    /// the innermost [`SseLayer`](crate::SseLayer) the request went through, its limits and
    /// shutdowns) while the layer runs the request on the current task, or the defaults outside
    /// any; with [`from_request`](SseBody::from_request) or [`from_context`](SseBody::from_context)
    /// wherever it is built. The setters here override the settings for one body.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http_body_util::BodyExt;
    /// use tower_sse::{Event, SseBody};
    ///
    /// let events = futures_util::stream::iter([Event::message("one"), Event::message("two")]);
    /// let body = SseBody::new(events).open_frame(false);
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(bytes, "data: one\n\ndata: two\n\n");
    /// # }
    /// ```
    #[must_use = "bodies do nothing unless polled"]
    pub struct SseBody<S> {
        #[pin]
        stream: SyncWrapper<S>,
        idle: IdleTimer,
        lifetime: LifetimeTimer,
        drain: DrainClock,
        settings: Arc<Settings>,
        state: State,
        guard: Option<CloseGuard>,
        // One per enclosing layer with a shutdown; the first triggered one ends the stream.
        shutdowns: Vec<ShutdownWatch>,
        // When the stream's credential expires, if it has one.
        expiry: Option<tokio::time::Instant>,
    }
}

#[derive(Debug)]
enum State {
    /// Refused by the layer: sends only this frame, if any (the `retry:` that makes an
    /// over-limit `EventSource` come back), then ends.
    Refused(Option<Bytes>),
    /// Not polled yet: the open frame goes first.
    Opening,
    Streaming,
    /// Shutdown was triggered, or the lifetime has passed: ready events go out up to the byte
    /// budget left, then the last frame of that cause.
    Draining {
        budget: usize,
        cause: Drain,
    },
    /// [`ErrorPolicy::Abort`]: the error waits while the body yields to the scheduler, so the
    /// server writes out what came before it.
    Aborting {
        error: BoxError,
        yields: u8,
    },
    Done,
}

/// Why a stream is draining, which says what its last frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// The final event of the [`Shutdown`](crate::Shutdown) that was triggered.
    Shutdown,
    /// The block that tells the client to come back
    /// ([`max_lifetime`](SseBody::max_lifetime)).
    Lifetime,
}

/// How often an aborting body yields before returning its error: once lets an HTTP/1.1
/// connection flush its buffer, and a second time lets an HTTP/2 connection task, woken by the
/// last data frame, write it before the stream is reset.
const ABORT_YIELDS: u8 = 2;

/// Why gathering a frame stopped.
enum Gathered {
    /// The frame reached the coalescing cap; more may be ready.
    Full,
    /// The stream has nothing ready now.
    Pending,
    /// The stream ended.
    Ended,
    /// The stream failed (or panicked).
    Failed(BoxError),
    /// The stream's last event, after which it must be told to come back (a hub evicted the
    /// subscriber or was closed); nothing is read after it.
    Last { event: Event, cause: Cause },
}

impl<S> SseBody<S> {
    /// Wraps a stream of events, with the settings of the enclosing
    /// [`SseLayer`](crate::SseLayer) (or the defaults outside any).
    ///
    /// The layer's [`SseContext`] (settings, disconnect handle, stream limit, shutdown) is found
    /// while the layer runs the request on the current task: in an axum handler, a warp filter,
    /// a hyper service's `call` or its future. A body built out of that reach (in a task the
    /// handler spawns, or behind a `tower::buffer::Buffer`) gets the defaults instead, no
    /// stream limit, no shutdown, and its own [`disconnect_handle`](SseBody::disconnect_handle).
    /// That is never silent: the layer logs a `tracing` warning when such a response says it
    /// is an event stream, and the first body built with no context while a layer is in use in
    /// the process logs one too.
    /// Build those with [`from_request`](SseBody::from_request) or
    /// [`from_context`](SseBody::from_context).
    pub fn new(stream: S) -> Self
    where
        S: Stream,
        S::Item: SseItem,
    {
        let parts = match scope::current() {
            Some(context) => context.take_for_body(),
            None => {
                scope::no_context_found();
                BodyParts::outside()
            }
        };
        Self::from_parts(stream, parts)
    }

    /// Wraps a stream of events with the settings, limits, shutdowns and disconnect handle of a
    /// request's [`SseContext`], wherever the body is built.
    pub fn from_context(context: &SseContext, stream: S) -> Self
    where
        S: Stream,
        S::Item: SseItem,
    {
        Self::from_parts(stream, context.take_for_body())
    }

    /// Wraps a stream of events with the [`SseContext`] that the enclosing
    /// [`SseLayer`](crate::SseLayer) put in the request's extensions (as
    /// [`new`](SseBody::new) does, when there is none). Borrow the request before handing it
    /// to a task: the body may then be built anywhere.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::{convert::Infallible, time::Duration};
    /// use http::Request;
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::{Event, SseBody, SseLayer};
    ///
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new().retry(Duration::from_secs(1)))
    ///     // A buffer runs the inner service on a task of its own: out of the layer's reach.
    ///     .buffer(8)
    ///     .service_fn(|req: Request<()>| async move {
    ///         let events = futures_util::stream::iter([Event::message("hi")]);
    ///         Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
    ///     });
    /// let response = service.oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(response.headers()["content-type"], "text/event-stream");
    /// # }
    /// ```
    pub fn from_request<B>(request: &http::Request<B>, stream: S) -> Self
    where
        S: Stream,
        S::Item: SseItem,
    {
        match request.extensions().get::<SseContext>() {
            Some(context) => Self::from_context(context, stream),
            None => Self::new(stream),
        }
    }

    fn from_parts(stream: S, parts: BodyParts) -> Self {
        SseBody {
            stream: SyncWrapper::new(stream),
            idle: IdleTimer::default(),
            lifetime: LifetimeTimer::default(),
            drain: DrainClock::default(),
            settings: parts.settings,
            state: if parts.refused {
                State::Refused(parts.comeback)
            } else {
                State::Opening
            },
            guard: parts.guard,
            shutdowns: parts.shutdowns,
            expiry: parts.expiry,
        }
    }

    /// This body in an `http::Response` that already carries the SSE headers
    /// (`Content-Type: text/event-stream`, `Cache-Control: no-cache`, `X-Accel-Buffering: no`),
    /// so middleware inside the layer (a compression layer, say) sees an event stream.
    pub fn into_http_response(self) -> http::Response<Self> {
        let mut response = http::Response::new(self);
        crate::headers::set_sse_headers(response.headers_mut());
        response
    }

    settings_setters!(
        "Default: the enclosing [`SseLayer`](crate::SseLayer)'s setting, whose own default is",
        settings
    );

    /// A handle that completes when this response ends. Under an
    /// [`SseLayer`](crate::SseLayer) it is the same handle the layer put in the request's
    /// extensions.
    pub fn disconnect_handle(&mut self) -> Disconnect {
        match &self.guard {
            Some(guard) => guard.handle(),
            None => {
                let (handle, guard) = Disconnect::pair();
                self.guard = Some(guard);
                handle
            }
        }
    }

    /// A mutable reference to the stream.
    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    /// Takes the stream out of the body.
    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }
}

impl<S> fmt::Debug for SseBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("stream", &std::any::type_name::<S>())
            .field("settings", &self.settings)
            .field("state", &self.state)
            .finish()
    }
}

/// Gathers the bytes of one frame: a lone event is kept as is, more are copied together.
struct FrameBuf {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    len: usize,
}

impl FrameBuf {
    fn new() -> Self {
        FrameBuf {
            first: None,
            joined: None,
            len: 0,
        }
    }

    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&bytes);
        } else if let Some(first) = self.first.take() {
            let mut joined = BytesMut::with_capacity(self.len.max(256));
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&bytes);
            self.joined = Some(joined);
        } else {
            self.first = Some(bytes);
        }
    }

    fn take(self) -> Option<Bytes> {
        match self.joined {
            Some(joined) => Some(joined.freeze()),
            None => self.first,
        }
    }
}

/// The error reported when the application's stream panics.
#[derive(Debug)]
struct StreamPanicked;

impl fmt::Display for StreamPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event stream panicked")
    }
}

impl std::error::Error for StreamPanicked {}

/// Polls the stream for events that are ready now, into `frame`, up to `cap` bytes (at least
/// one event). A panic in the application's stream becomes an error instead of unwinding
/// through the server's connection task.
fn gather<S>(
    mut stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    cap: usize,
    frame: &mut FrameBuf,
) -> Gathered
where
    S: Stream,
    S::Item: SseItem,
    <S::Item as SseItem>::Error: Into<BoxError>,
{
    while frame.len == 0 || frame.len < cap {
        let polled = panic::catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll_next(cx)));
        match polled {
            Ok(Poll::Ready(Some(item))) => match item.into_event() {
                Ok(event) => {
                    if let Some(cause) = event.come_back() {
                        return Gathered::Last { event, cause };
                    }
                    if !event.is_empty() {
                        frame.push(event.into_bytes());
                    }
                }
                Err(err) => return Gathered::Failed(err.into()),
            },
            Ok(Poll::Ready(None)) => return Gathered::Ended,
            Ok(Poll::Pending) => return Gathered::Pending,
            Err(_) => return Gathered::Failed(BoxError::from(StreamPanicked)),
        }
    }
    Gathered::Full
}

/// What `poll_frame` returns.
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// The states in which the stream is not read: ended, aborting, or opening with an open frame.
/// `None` when the stream is to be read now.
fn before_streaming(
    state: &mut State,
    settings: &Settings,
    idle: &mut IdleTimer,
    cx: &mut Context<'_>,
) -> Option<Polled> {
    match state {
        State::Done => Some(Poll::Ready(None)),
        State::Refused(comeback) => {
            let frame = comeback.take();
            *state = State::Done;
            Some(Poll::Ready(frame.map(|bytes| Ok(Frame::data(bytes)))))
        }
        State::Aborting { yields, .. } if *yields > 0 => {
            *yields -= 1;
            cx.waker().wake_by_ref();
            Some(Poll::Pending)
        }
        State::Aborting { .. } => match std::mem::replace(state, State::Done) {
            State::Aborting { error, .. } => Some(Poll::Ready(Some(Err(error)))),
            _ => Some(Poll::Ready(None)),
        },
        State::Opening => {
            *state = State::Streaming;
            settings.open_frame().map(|frame| {
                idle.bump(&settings.keep_alive);
                Poll::Ready(Some(Ok(Frame::data(frame))))
            })
        }
        State::Streaming | State::Draining { .. } => None,
    }
}

/// A streaming body's next state: draining when a shutdown was triggered and the body's turn
/// under the drain policy has come, or when its lifetime has passed (the shutdown's final event
/// wins when both happen at once), else still streaming.
fn drain_if_ending(
    shutdown: Option<&ShutdownWatch>,
    drain: &mut DrainClock,
    lifetime: &LifetimeTimer,
    settings: &Settings,
) -> State {
    let shutdown = shutdown.filter(|s| drain.is_due(s.triggered_at(), s.policy()));
    match shutdown {
        Some(shutdown) => State::Draining {
            budget: shutdown.flush_limit(),
            cause: Drain::Shutdown,
        },
        // One coalesced frame of what is ready (one event at least): the client resumes the
        // rest from its `Last-Event-ID`, and a rotation never waits on a backlog.
        None if lifetime.is_due() => State::Draining {
            budget: settings.coalesce.max(1),
            cause: Drain::Lifetime,
        },
        None => State::Streaming,
    }
}

/// What ends a stream: the disconnect guard to close with a reason, the error policy, and the
/// final event of the shutdown that was triggered.
struct Ends<'a> {
    guard: Option<&'a CloseGuard>,
    settings: &'a Settings,
    shutdown: Option<&'a ShutdownWatch>,
    /// Why the lifetime clock ends the stream: its lifetime, or its credential's expiry.
    lifetime: Cause,
}

impl Ends<'_> {
    /// The state after gathering a frame, adding any last event to the frame.
    fn next_state(&self, state: State, gathered: Gathered, frame: &mut FrameBuf) -> State {
        match gathered {
            Gathered::Ended => {
                self.close(CloseReason::Completed);
                State::Done
            }
            Gathered::Last { event, cause } => {
                frame.push(event.into_bytes());
                frame.push(self.settings.come_back(cause));
                self.close(CloseReason::Completed);
                State::Done
            }
            Gathered::Failed(error) => {
                self.close(CloseReason::Error);
                self.settings.report(&error);
                if self.settings.on_error == ErrorPolicy::Abort {
                    return State::Aborting {
                        error,
                        yields: ABORT_YIELDS,
                    };
                }
                frame.push(self.settings.error_event(&error));
                State::Done
            }
            Gathered::Full | Gathered::Pending => match state {
                State::Draining { budget, cause } => {
                    let budget = budget.saturating_sub(frame.len);
                    if matches!(gathered, Gathered::Full) && budget > 0 {
                        return State::Draining { budget, cause };
                    }
                    // Everything that was ready went out (or the budget is spent): the last
                    // frame ends the stream, in the same frame.
                    self.last_frame(cause, frame);
                    State::Done
                }
                state => state,
            },
        }
    }

    /// The lifetime passed, or the body's drain point under a shutdown, while the stream had
    /// nothing ready, so nothing is left to drain: the last frame goes out now.
    fn reached(&self, state: &mut State, cause: Drain) -> Polled {
        let mut frame = FrameBuf::new();
        let draining = State::Draining { budget: 0, cause };
        *state = self.next_state(draining, Gathered::Pending, &mut frame);
        Poll::Ready(frame.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    /// Adds the last frame of a drain and records why the stream ended.
    fn last_frame(&self, cause: Drain, frame: &mut FrameBuf) {
        match cause {
            Drain::Shutdown => {
                if let Some(event) = self.shutdown.and_then(ShutdownWatch::final_event) {
                    frame.push(event.into_bytes());
                }
                let cause = self.shutdown.map_or(Cause::Shutdown, ShutdownWatch::cause);
                frame.push(self.settings.come_back(cause));
                self.close(match cause {
                    Cause::Revoked => CloseReason::Revoked,
                    _ => CloseReason::Shutdown,
                });
            }
            Drain::Lifetime if self.lifetime == Cause::Expired => {
                tracing::debug!("SSE stream credential expired: the client is told to reconnect");
                frame.push(self.settings.come_back(Cause::Expired));
                self.close(CloseReason::Expired);
            }
            Drain::Lifetime => {
                tracing::debug!(
                    max_lifetime = ?self.settings.max_lifetime,
                    "SSE stream lifetime reached: the client is told to reconnect"
                );
                frame.push(self.settings.come_back(Cause::Lifetime));
                self.close(CloseReason::Rotated);
            }
        }
    }

    fn close(&self, reason: CloseReason) {
        if let Some(guard) = self.guard {
            guard.close(reason);
        }
    }
}

impl<S> Body for SseBody<S>
where
    S: Stream,
    S::Item: SseItem,
    <S::Item as SseItem>::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.project();
        let settings = &**this.settings;
        // The first poll starts the lifetime; nothing restarts it.
        this.lifetime.start(settings.max_lifetime, *this.expiry);
        this.drain.open();
        if let Some(poll) = before_streaming(this.state, settings, this.idle, cx) {
            return poll;
        }
        let triggered = this.shutdowns.iter().find(|s| s.is_triggered());
        if let State::Streaming = this.state {
            *this.state = drain_if_ending(triggered, this.drain, this.lifetime, settings);
        }

        let mut frame = FrameBuf::new();
        let stream = this.stream.get_pin_mut();
        let gathered = match *this.state {
            // A drain with no budget left: straight to the last frame.
            State::Draining { budget: 0, .. } => Gathered::Pending,
            State::Draining { budget, .. } => {
                gather(stream, cx, settings.coalesce.min(budget), &mut frame)
            }
            _ => gather(stream, cx, settings.coalesce, &mut frame),
        };
        let ends = Ends {
            guard: this.guard.as_ref(),
            settings,
            shutdown: triggered,
            lifetime: this.lifetime.cause(),
        };
        let state = std::mem::replace(this.state, State::Done);
        *this.state = ends.next_state(state, gathered, &mut frame);

        if let Some(bytes) = frame.take() {
            this.idle.bump(&settings.keep_alive);
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        match this.state {
            State::Done => return Poll::Ready(None),
            // Aborting with nothing to send first: yield all the same, for earlier frames.
            State::Aborting { .. } => {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            _ => {}
        }
        // The stream is pending: wake up for a shutdown, and for the lifetime and keep-alive
        // timers, which are polled nowhere else.
        // Once a trigger is seen, the drain clock says when to end: a shutdown's waker (which
        // wakes at once when registered after the trigger) would spin the task.
        if triggered.is_none() {
            for shutdown in this.shutdowns.iter() {
                shutdown.register(cx);
            }
        }
        if this.lifetime.poll(cx).is_ready() {
            return ends.reached(this.state, Drain::Lifetime);
        }
        if triggered.is_some() && this.drain.poll(cx).is_ready() {
            return ends.reached(this.state, Drain::Shutdown);
        }
        this.idle
            .poll(&settings.keep_alive, cx)
            .map(|comment| Some(Ok(Frame::data(comment))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventError, KeepAlive};
    use futures_util::stream;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::{sync::mpsc, time::Instant};
    use tokio_stream::wrappers::UnboundedReceiverStream;

    async fn next(
        body: &mut (impl Body<Data = Bytes, Error = BoxError> + Unpin),
    ) -> Option<String> {
        let frame = body.frame().await?;
        let data = frame.unwrap().into_data().unwrap();
        Some(String::from_utf8(data.to_vec()).unwrap())
    }

    fn channel_body() -> (
        mpsc::UnboundedSender<Event>,
        SseBody<UnboundedReceiverStream<Event>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, SseBody::new(UnboundedReceiverStream::new(rx)))
    }

    #[test]
    fn body_is_send_and_sync_without_sync_stream() {
        fn assert_send_sync<T: Send + Sync>() {}
        // A stream that is Send but not Sync.
        struct NotSync(std::cell::Cell<u8>);
        impl Stream for NotSync {
            type Item = Event;
            fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Event>> {
                Poll::Ready(None)
            }
        }
        assert_send_sync::<SseBody<NotSync>>();
        let _ = NotSync(std::cell::Cell::new(0)).0.get();
    }

    #[tokio::test]
    async fn open_frame_first_then_events() {
        let body = SseBody::new(stream::iter([Event::message("a")]));
        let mut body = std::pin::pin!(body);
        assert_eq!(next(&mut body).await.unwrap(), ":\n");
        assert_eq!(next(&mut body).await.unwrap(), "data: a\n\n");
        assert!(next(&mut body).await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn open_frame_carries_retry() {
        let body = SseBody::new(stream::iter(Vec::<Event>::new())).retry(Duration::from_secs(2));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "retry: 2000\n");
    }

    #[tokio::test]
    async fn ready_events_are_coalesced_up_to_the_cap() {
        let events: Vec<Event> = (0..10).map(|i| Event::message(i.to_string())).collect();
        // Each event is 9 bytes; a 20-byte cap closes a frame after the third.
        let body = SseBody::new(stream::iter(events))
            .open_frame(false)
            .coalesce(20);
        let mut body = std::pin::pin!(body);
        let mut frames = Vec::new();
        while let Some(frame) = next(&mut body).await {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], "data: 0\n\ndata: 1\n\ndata: 2\n\n");
        assert_eq!(frames[3], "data: 9\n\n");
    }

    #[tokio::test]
    async fn zero_cap_sends_one_event_per_frame() {
        let events: Vec<Event> = (0..3).map(|i| Event::message(i.to_string())).collect();
        let body = SseBody::new(stream::iter(events))
            .open_frame(false)
            .coalesce(0);
        let mut body = std::pin::pin!(body);
        let mut count = 0;
        while next(&mut body).await.is_some() {
            count += 1;
        }
        assert_eq!(count, 3);
    }

    #[tokio::test]
    async fn a_lone_event_is_not_copied() {
        let event = Event::message("zero-copy");
        let ptr = event.as_bytes().as_ptr();
        let body = SseBody::new(stream::iter([event])).open_frame(false);
        let mut body = std::pin::pin!(body);
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.as_ptr(), ptr);
    }

    #[tokio::test]
    async fn streams_of_text_are_data_events() {
        let body = SseBody::new(stream::iter(["a", "b\nc"])).open_frame(false);
        assert_eq!(
            body.collect().await.unwrap().to_bytes(),
            "data: a\n\ndata: b\ndata: c\n\n"
        );
        let body = SseBody::new(stream::iter(vec![String::from("s")])).open_frame(false);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "data: s\n\n");
    }

    #[tokio::test]
    async fn comment_only_and_empty_events_pass_or_vanish() {
        let events = vec![
            Event::builder().build().unwrap(),
            Event::builder().comment("c").build().unwrap(),
        ];
        let body = SseBody::new(stream::iter(events)).open_frame(false);
        assert_eq!(body.collect().await.unwrap().to_bytes(), ": c\n");
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_after_idle_interval_and_reset_by_events() {
        let (tx, body) = channel_body();
        let body = body.keep_alive(KeepAlive::new().interval(Duration::from_secs(10)));
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ":\n");
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n");
        assert_eq!(start.elapsed(), Duration::from_secs(10));

        // An event at t=15 restarts the interval: the next keep-alive is at t=25, not t=20.
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(Event::message("x")).unwrap();
        assert_eq!(next(&mut body).await.unwrap(), "data: x\n\n");
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n");
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n");
        assert_eq!(start.elapsed(), Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_without_open_frame_counts_from_first_poll() {
        let (_tx, body) = channel_body();
        let body = body
            .open_frame(false)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(3)));
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_keep_alive_interval_never_overflows_the_clock() {
        let (_tx, body) = channel_body();
        let body = body
            .open_frame(false)
            .keep_alive(KeepAlive::new().interval(Duration::MAX));
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        // The first poll arms the timer: it must not panic adding the interval to the clock.
        let idle = tokio::time::timeout(Duration::from_secs(3600), next(&mut body)).await;
        assert!(idle.is_err());
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n");
        assert_eq!(start.elapsed(), Duration::from_millis(i32::MAX as u64));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_disabled_sends_nothing() {
        let (tx, body) = channel_body();
        let body = body.keep_alive(KeepAlive::disabled());
        let mut body = std::pin::pin!(body);
        assert_eq!(next(&mut body).await.unwrap(), ":\n");
        let idle = tokio::time::timeout(Duration::from_secs(3600), next(&mut body)).await;
        assert!(idle.is_err(), "no frame in an hour of idleness");
        drop(tx);
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn error_close_policy_sends_error_event_and_ends() {
        let items: Vec<Result<Event, std::io::Error>> = vec![
            Ok(Event::message("before")),
            Err(std::io::Error::other("db gone\nreally")),
            Ok(Event::message("after")),
        ];
        let mut body = SseBody::new(stream::iter(items)).open_frame(false);
        let disconnect = body.disconnect_handle();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            bytes,
            "data: before\n\nevent: stream-error\nretry: 5000\ndata: {\"reason\":\"error\"}\n\n"
        );
        assert_eq!(disconnect.reason(), Some(CloseReason::Error));
    }

    #[tokio::test]
    async fn error_text_reaches_the_client_only_when_asked() {
        let items: Vec<Result<Event, std::io::Error>> =
            vec![Err(std::io::Error::other("db gone\nreally"))];
        let body = SseBody::new(stream::iter(items))
            .open_frame(false)
            .on_error(ErrorPolicy::CloseWithMessage)
            .error_retry(Duration::from_secs(60));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            bytes,
            "event: stream-error\nretry: 60000\ndata: db gone\ndata: really\n\n"
        );
    }

    #[tokio::test]
    async fn every_error_is_reported_on_the_server() {
        use std::sync::Mutex;
        let seen = Arc::new(Mutex::new(Vec::new()));
        for policy in [
            ErrorPolicy::Close,
            ErrorPolicy::CloseWithMessage,
            ErrorPolicy::Abort,
        ] {
            let items: Vec<Result<Event, std::io::Error>> =
                vec![Err(std::io::Error::other(format!("{policy:?} failed")))];
            let log = seen.clone();
            let body = SseBody::new(stream::iter(items))
                .on_error(policy)
                .on_stream_error(move |err| log.lock().unwrap().push(err.to_string()));
            let _ = body.collect().await;
        }
        assert_eq!(
            *seen.lock().unwrap(),
            ["Close failed", "CloseWithMessage failed", "Abort failed"]
        );
    }

    #[tokio::test]
    async fn error_abort_policy_flushes_then_fails() {
        let items: Vec<Result<Event, std::io::Error>> = vec![
            Ok(Event::message("before")),
            Err(std::io::Error::other("boom")),
            Ok(Event::message("after")),
        ];
        let body = SseBody::new(stream::iter(items))
            .open_frame(false)
            .on_error(ErrorPolicy::Abort);
        let mut body = std::pin::pin!(body);
        assert_eq!(next(&mut body).await.unwrap(), "data: before\n\n");
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn builder_errors_in_the_stream_are_stream_errors() {
        let items: Vec<Result<Event, EventError>> = vec![Event::builder().id("a\nb").build()];
        let body = SseBody::new(stream::iter(items))
            .open_frame(false)
            .on_error(ErrorPolicy::CloseWithMessage);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            bytes,
            "event: stream-error\nretry: 5000\ndata: line break in the id field\n\n"
        );
    }

    #[tokio::test]
    async fn normal_end_and_drop_are_reported() {
        let mut body = SseBody::new(stream::iter([Event::message("x")]));
        let ended = body.disconnect_handle();
        body.collect().await.unwrap();
        assert_eq!(ended.reason(), Some(CloseReason::Completed));

        let (_tx, mut body) = channel_body();
        let gone = body.disconnect_handle();
        assert!(!gone.is_closed());
        drop(body);
        assert_eq!(gone.closed().await, CloseReason::Disconnected);
    }

    #[tokio::test]
    async fn stream_is_polled_only_when_the_body_is() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = pulled.clone();
        use futures_util::StreamExt;
        let events = stream::iter(0..).map(move |i: u32| {
            counter.fetch_add(1, Ordering::SeqCst);
            Event::message(format!("{i:03}"))
        });
        // Each event is 11 bytes: a 110-byte cap bounds one frame to 10 events.
        let body = SseBody::new(events).open_frame(false).coalesce(110);
        let mut body = std::pin::pin!(body);
        assert_eq!(pulled.load(Ordering::SeqCst), 0);
        next(&mut body).await.unwrap();
        assert_eq!(pulled.load(Ordering::SeqCst), 10);
        next(&mut body).await.unwrap();
        assert_eq!(pulled.load(Ordering::SeqCst), 20);
    }

    /// The `retry:` of the block that ends a stream at its lifetime, after checking every
    /// other byte of it.
    fn lifetime_retry(frame: &str) -> u64 {
        let rest = frame
            .strip_prefix("retry: ")
            .unwrap_or_else(|| panic!("{frame:?}"));
        let digits = rest
            .strip_suffix("\n: stream lifetime reached, reconnect\n\n")
            .unwrap_or_else(|| panic!("{frame:?}"));
        digits.parse().unwrap()
    }

    /// The next frame, which must come by `deadline` (a stream that outlives it fails the test
    /// instead of hanging it).
    async fn by(
        deadline: Instant,
        body: &mut (impl Body<Data = Bytes, Error = BoxError> + Unpin),
    ) -> String {
        let frame = tokio::time::timeout_at(deadline, next(body)).await;
        frame.expect("the stream outlived its lifetime").unwrap()
    }

    /// Whether `elapsed` lies in the window a stream of `lifetime` ends in.
    fn in_window(elapsed: Duration, lifetime: Duration) -> bool {
        elapsed >= lifetime - lifetime / 10 && elapsed <= lifetime
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_ends_in_its_window_with_the_come_back_block() {
        let lifetime = Duration::from_secs(100);
        let (_tx, body) = channel_body();
        let mut body = body
            .keep_alive(KeepAlive::disabled())
            .max_lifetime(lifetime);
        let ended = body.disconnect_handle();
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ":\n");
        let last = by(start + lifetime * 2, &mut body).await;
        assert!(
            in_window(start.elapsed(), lifetime),
            "{:?}",
            start.elapsed()
        );
        assert!((1000..=5000).contains(&lifetime_retry(&last)), "{last:?}");
        assert!(next(&mut body).await.is_none());
        assert!(body.is_end_stream());
        assert_eq!(ended.reason(), Some(CloseReason::Rotated));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_ends_in_its_window_after_every_event_before_the_end() {
        let lifetime = Duration::from_secs(10);
        let (tx, body) = channel_body();
        let body = body.open_frame(false).max_lifetime(lifetime);
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        // An event every tenth of the lifetime, on and on: a clock that events restart would
        // never end this stream.
        tokio::spawn(async move {
            for i in 1.. {
                tokio::time::sleep_until(start + lifetime / 10 * i).await;
                if tx.send(Event::message(i.to_string())).is_err() {
                    break;
                }
            }
        });
        let mut delivered = Vec::new();
        let last = loop {
            let frame = by(start + lifetime * 3, &mut body).await;
            match frame.strip_prefix("data: ") {
                Some(data) => delivered.push(data.trim_end().parse::<u32>().unwrap()),
                None => break frame,
            }
        };
        let ended = start.elapsed();
        assert!(in_window(ended, lifetime), "{ended:?}");
        lifetime_retry(&last);
        assert!(next(&mut body).await.is_none());
        // Every event sent before the end was delivered, in order, none after it.
        let k = delivered.len() as u32;
        assert_eq!(delivered, (1..=k).collect::<Vec<_>>());
        assert!(lifetime / 10 * k <= ended && ended <= lifetime / 10 * (k + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_never_pending_still_ends_and_drains_one_frame_first() {
        let lifetime = Duration::from_secs(10);
        let events = stream::iter((0u32..).map(|i| Event::message(i.to_string())));
        // Each event is 9 or 10 bytes: a 20-byte cap closes a frame after two or three.
        let body = SseBody::new(events)
            .open_frame(false)
            .coalesce(20)
            .max_lifetime(lifetime);
        let mut body = std::pin::pin!(body);
        let mut frames = 0;
        let last = loop {
            let frame = next(&mut body).await.unwrap();
            if frame.contains("retry: ") {
                break frame;
            }
            frames += 1;
            assert!(frames < 100, "the stream outlived its lifetime");
            // The stream is always ready, so only the clock moves it towards its end.
            tokio::time::advance(Duration::from_secs(1)).await;
        };
        assert!(frames >= 9, "ended early, after {frames} frames");
        // The events that were ready go out first, in the same frame as the block.
        let (events, block) = last.split_at(last.find("retry: ").unwrap());
        assert!(
            events.starts_with("data: ") && events.len() >= 20,
            "{last:?}"
        );
        lifetime_retry(block);
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn streams_opened_together_end_at_spread_out_points_in_the_window() {
        use futures_util::future::join_all;
        let lifetime = Duration::from_secs(10);
        let start = Instant::now();
        let ends = (0..100).map(|_| async move {
            let body = SseBody::new(stream::pending::<Event>())
                .keep_alive(KeepAlive::disabled())
                .max_lifetime(lifetime);
            let bytes = tokio::time::timeout(lifetime * 2, body.collect()).await;
            let bytes = bytes.expect("outlived its lifetime").unwrap().to_bytes();
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            lifetime_retry(text.strip_prefix(":\n").unwrap());
            start.elapsed()
        });
        let ends = join_all(ends).await;
        assert!(ends.iter().all(|end| in_window(*end, lifetime)), "{ends:?}");
        let (min, max) = (ends.iter().min().unwrap(), ends.iter().max().unwrap());
        // 100 uniform draws over a 1 s window span far more than half of it.
        assert!(*max - *min >= lifetime / 20, "{min:?}..{max:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alives_neither_restart_nor_outlast_the_lifetime() {
        // Shorter than the keep-alive interval: no keep-alive at all.
        let (_tx, body) = channel_body();
        let body = body
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
            .max_lifetime(Duration::from_secs(2));
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ":\n");
        lifetime_retry(&by(start + Duration::from_secs(4), &mut body).await);
        assert!(in_window(start.elapsed(), Duration::from_secs(2)));
        assert!(next(&mut body).await.is_none());

        // Longer: keep-alives at 5, 10 and 15 s, then the end, on the first poll's clock.
        let (_tx, body) = channel_body();
        let lifetime = Duration::from_secs(20);
        let body = body
            .open_frame(false)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
            .max_lifetime(lifetime);
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n");
        }
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        lifetime_retry(&by(start + lifetime * 2, &mut body).await);
        assert!(
            in_window(start.elapsed(), lifetime),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_and_the_longest_lifetimes_saturate() {
        // Zero: the open frame, then the block, at once.
        let (_tx, body) = channel_body();
        let body = body.max_lifetime(Duration::ZERO);
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ":\n");
        lifetime_retry(&by(start + Duration::from_secs(1), &mut body).await);
        assert!(next(&mut body).await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);

        // Zero with no open frame: the block is the whole body.
        let body = SseBody::new(stream::pending::<Event>())
            .open_frame(false)
            .max_lifetime(Duration::ZERO)
            .come_back(Duration::ZERO..=Duration::ZERO);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "retry: 0\n: stream lifetime reached, reconnect\n\n");

        // The longest: no overflow on the first poll, and the end in the saturated window.
        let (_tx, body) = channel_body();
        let body = body
            .open_frame(false)
            .keep_alive(KeepAlive::disabled())
            .max_lifetime(Duration::MAX)
            .come_back(Duration::MAX..=Duration::MAX);
        let mut body = std::pin::pin!(body);
        let start = Instant::now();
        let early = tokio::time::timeout(Duration::from_secs(86_400), next(&mut body)).await;
        assert!(early.is_err(), "nothing within a day");
        let last = by(start + crate::delay::MAX_DELAY * 2, &mut body).await;
        assert_eq!(lifetime_retry(&last), 2_147_483_647);
        assert!(in_window(start.elapsed(), crate::delay::MAX_DELAY));
    }

    /// A layer-built body of an endless stream, with the layer's stream counts.
    async fn under_layer(
        layer: crate::SseLayer,
        lifetime: Option<Duration>,
    ) -> (SseBody<stream::Pending<Event>>, crate::StreamStats) {
        use tower::{ServiceBuilder, ServiceExt};
        let stats = layer.stream_stats();
        let service = ServiceBuilder::new().layer(layer).service_fn(
            move |_req: http::Request<()>| async move {
                let body = SseBody::new(stream::pending::<Event>()).open_frame(false);
                let body = match lifetime {
                    Some(lifetime) => body.max_lifetime(lifetime),
                    None => body,
                };
                Ok::<_, Infallible>(http::Response::new(body))
            },
        );
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        (response.into_body(), stats)
    }

    #[tokio::test(start_paused = true)]
    async fn the_bodys_lifetime_overrides_the_layers_and_ends_are_counted() {
        let layer = crate::SseLayer::new()
            .keep_alive(KeepAlive::disabled())
            .max_lifetime(Duration::from_secs(1000))
            .come_back(Duration::from_secs(30)..=Duration::from_secs(60));
        let (mut body, stats) = under_layer(layer.clone(), Some(Duration::from_secs(10))).await;
        let ended = body.disconnect_handle();
        let start = Instant::now();
        let bytes = tokio::time::timeout(Duration::from_secs(20), body.collect()).await;
        let bytes = bytes.expect("outlived its lifetime").unwrap().to_bytes();
        assert!(in_window(start.elapsed(), Duration::from_secs(10)));
        // The layer's other lifetime setting still applies.
        let retry = lifetime_retry(std::str::from_utf8(&bytes).unwrap());
        assert!((30_000..=60_000).contains(&retry), "{retry}");
        assert_eq!(ended.reason(), Some(CloseReason::Rotated));
        assert_eq!(stats.rotated(), 1);

        // Without its own, a body takes the layer's.
        let (body, stats) = under_layer(layer, None).await;
        let start = Instant::now();
        let collected = tokio::time::timeout(Duration::from_secs(2000), body.collect()).await;
        collected.expect("outlived its lifetime").unwrap();
        assert!(in_window(start.elapsed(), Duration::from_secs(1000)));
        assert_eq!(
            stats.rotated(),
            2,
            "the count is shared by the layer's clones"
        );
    }

    /// A waker that counts its wake-ups.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_for_its_drain_turn_sleeps_instead_of_spinning() {
        let shutdown = crate::Shutdown::new();
        let layer = crate::SseLayer::new()
            .keep_alive(KeepAlive::disabled())
            .shutdown(&shutdown)
            .drain(crate::DrainPolicy::Finish(Duration::from_secs(60)));
        let (body, _) = under_layer(layer, None).await;
        let mut body = Box::pin(body);
        let counter = Arc::new(CountingWaker(Default::default()));
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        shutdown.trigger(None);
        let woken = counter.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(woken, 1, "the trigger wakes the body");
        // Its turn is a minute away: polled now, it must wait without waking itself.
        for _ in 0..3 {
            assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        }
        tokio::task::yield_now().await;
        let woken = counter.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(woken, 1, "no wake-up before its turn");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            counter.0.load(std::sync::atomic::Ordering::SeqCst) > 1,
            "woken at its turn"
        );
        let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("the block at its turn");
        };
        assert!(frame
            .into_data()
            .unwrap()
            .ends_with(b": server shutting down, reconnect\n\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_before_the_lifetime_wins() {
        let shutdown = crate::Shutdown::new();
        let layer = crate::SseLayer::new()
            .keep_alive(KeepAlive::disabled())
            .max_lifetime(Duration::from_secs(10))
            .shutdown(&shutdown);
        let (mut body, stats) = under_layer(layer, None).await;
        let ended = body.disconnect_handle();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            trigger.trigger(Event::builder().event("bye").data("").build().ok());
        });
        let start = Instant::now();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let block = text.strip_prefix("event: bye\ndata: \n\n").unwrap();
        assert!(
            block.ends_with("\n: server shutting down, reconnect\n\n"),
            "{block:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(ended.reason(), Some(CloseReason::Shutdown));
        assert_eq!(stats.rotated(), 0);
    }

    #[test]
    fn body_is_unpin_when_the_stream_is() {
        fn assert_unpin<T: Unpin>() {}
        assert_unpin::<SseBody<stream::Iter<std::vec::IntoIter<Event>>>>();
    }

    #[test]
    fn debug_names_the_stream_type() {
        let body = SseBody::new(stream::iter(Vec::<Event>::new()));
        assert!(format!("{body:?}").contains("Iter"));
    }
}
