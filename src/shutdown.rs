//! [`Shutdown`]: end every SSE stream under a layer, for a graceful server shutdown.

use crate::{come_back::Cause, drain::DrainPolicy, sync::lock, Event};
use atomic_waker::AtomicWaker;
use slab::Slab;
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    task::Context,
    time::Duration,
};
use tokio::time::Instant;

/// Ends every SSE response created under the layers it is given to, for a graceful shutdown.
///
/// An SSE response never ends by itself, so a server waiting for its connections to finish
/// would wait forever. Give a `Shutdown` to [`SseLayer::shutdown`](crate::SseLayer::shutdown),
/// and call [`trigger`](Shutdown::trigger) when the server is told to stop: every open body
/// then, when its layer's [`DrainPolicy`](crate::DrainPolicy) says (at once by default), sends
/// every event its stream already has ready (up to the [`flush_limit`](Shutdown::flush_limit),
/// 1 MiB by default), then the final event if one is given, then a come-back block
/// (`retry: <ms>\n: server shutting down, reconnect\n\n`, its delay drawn from the layer's
/// [`come_back`](crate::SseLayer::come_back) window, so that the clients do not all come back
/// in the same second), then ends. The block comes last, so its `retry` is the one the client
/// keeps. Bodies created after the trigger end the same way at once. Cloning is cheap; all
/// clones are the same switch.
///
/// # Stopping a server gracefully
///
/// Stop accepting connections, end the streams, then wait (with a deadline) for the
/// connections to finish. To end the streams, `trigger` covers every stream under the layer,
/// hub-backed or not: a hub [`Subscription`](crate::hub::Subscription) has every event already
/// published ready, so those go out (up to the flush limit) before the final event.
/// [`Hub::close`](crate::hub::Hub::close) ends only that hub's subscriptions, after everything
/// published and its own final event, with no byte limit; an application whose every stream is
/// a hub subscription may use either (each ends with a come-back block). Give the final event
/// to one of them only: with both, a client receives two.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use http_body_util::BodyExt;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{Event, Shutdown, SseBody, SseLayer};
///
/// let shutdown = Shutdown::new();
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new().open_frame(false).shutdown(&shutdown))
///     .service_fn(|_req: http::Request<()>| async {
///         let endless = futures_util::stream::pending::<Event>();
///         Ok::<_, std::convert::Infallible>(http::Response::new(SseBody::new(endless)))
///     });
/// let body = service.oneshot(http::Request::new(())).await.unwrap().into_body();
///
/// let bye = Event::builder().event("bye").data("restarting");
/// shutdown.trigger(bye.build().ok());
/// let bytes = body.collect().await.unwrap().to_bytes();
/// let text = std::str::from_utf8(&bytes).unwrap();
/// let come_back = text.strip_prefix("event: bye\ndata: restarting\n\nretry: ").unwrap();
/// let ms: u64 = come_back.strip_suffix("\n: server shutting down, reconnect\n\n").unwrap().parse().unwrap();
/// assert!((1000..=5000).contains(&ms), "drawn from the default window");
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: AtomicBool,
    /// When it was triggered; set before `triggered`.
    triggered_at: OnceLock<Instant>,
    flush_limit: AtomicUsize,
    /// The longest [`DrainPolicy::span`](crate::DrainPolicy::span) of the layers given this
    /// switch, in milliseconds.
    drain_span_ms: AtomicU64,
    state: Mutex<State>,
    /// What the come-back block says: a server shutdown, or a revocation.
    cause: Cause,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            cause: Cause::Shutdown,
            triggered: AtomicBool::new(false),
            triggered_at: OnceLock::new(),
            flush_limit: AtomicUsize::new(DEFAULT_FLUSH_LIMIT),
            drain_span_ms: AtomicU64::new(0),
            state: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct State {
    final_event: Option<Event>,
    waiters: Slab<Arc<AtomicWaker>>,
}

/// Default of [`Shutdown::flush_limit`].
const DEFAULT_FLUSH_LIMIT: usize = 1024 * 1024;

impl Shutdown {
    /// A switch that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many bytes of ready events each body may still send after the trigger, before
    /// its final event. Events are never split: the body stops once it has sent this much, so
    /// it may exceed it by one frame. A stream that keeps producing (a busy producer, a large
    /// backlog) is cut there rather than holding the shutdown up. Default: 1 MiB. Applies to
    /// every clone of this switch.
    pub fn flush_limit(self, bytes: usize) -> Self {
        self.inner.flush_limit.store(bytes, Ordering::Relaxed);
        self
    }

    /// Ends every stream watching this switch, each when its layer's
    /// [`DrainPolicy`](crate::DrainPolicy) says, after the events it has ready, with
    /// `final_event` and then a come-back block last. A drain started twice is one drain: only
    /// the first call counts, its event and its time.
    pub fn trigger(&self, final_event: Option<Event>) {
        let mut state = self.lock();
        if self.inner.triggered.load(Ordering::Acquire) {
            return;
        }
        self.inner.triggered_at.get_or_init(Instant::now);
        self.inner.triggered.store(true, Ordering::Release);
        state.final_event = final_event;
        let wakers: Vec<_> = state.waiters.iter().map(|(_, w)| w.clone()).collect();
        drop(state);
        wakers.iter().for_each(|waker| waker.wake());
    }

    /// Whether [`trigger`](Shutdown::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// How many bodies are watching now.
    pub fn watchers(&self) -> usize {
        self.lock().waiters.len()
    }

    /// The longest [`DrainPolicy::span`](crate::DrainPolicy::span) of the layers this switch
    /// was given to: how long after the trigger their last stream ends (before its flush).
    /// [`serve::Server`](crate::serve::Server) adds it to its graceful timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::{DrainPolicy, Shutdown, SseLayer};
    ///
    /// let shutdown = Shutdown::new();
    /// let _waves = SseLayer::new().shutdown(&shutdown).drain(DrainPolicy::Waves(Duration::from_secs(10)));
    /// let _plain = SseLayer::new().shutdown(&shutdown);
    /// assert_eq!(shutdown.drain_span(), Duration::from_secs(10));
    /// ```
    pub fn drain_span(&self) -> Duration {
        Duration::from_millis(self.inner.drain_span_ms.load(Ordering::Relaxed))
    }

    /// A layer with this drain policy was given this switch.
    pub(crate) fn note_drain(&self, span: Duration) {
        let ms = crate::delay::millis(span);
        self.inner.drain_span_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The switch that ends one subject's streams when it is revoked: at once, with nothing
    /// more of what is ready, its come-back block saying why.
    pub(crate) fn revocation() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                cause: Cause::Revoked,
                flush_limit: AtomicUsize::new(0),
                ..Inner::default()
            }),
        }
    }

    /// Whether anything but this handle holds the switch (a body watching it, a request's
    /// grants): a revocation registry keeps only those.
    pub(crate) fn is_held(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// A body's registration, for a layer with this drain `policy`.
    pub(crate) fn watch(&self, policy: DrainPolicy) -> ShutdownWatch {
        let waker = Arc::new(AtomicWaker::new());
        let key = self.lock().waiters.insert(waker.clone());
        ShutdownWatch {
            shutdown: self.clone(),
            key,
            waker,
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

/// One body's registration with a [`Shutdown`].
pub(crate) struct ShutdownWatch {
    shutdown: Shutdown,
    key: usize,
    waker: Arc<AtomicWaker>,
    /// The drain policy of the layer that was given this switch.
    policy: DrainPolicy,
}

impl ShutdownWatch {
    pub(crate) fn is_triggered(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// When the body ends after the trigger: the policy of the layer given this switch.
    pub(crate) fn policy(&self) -> &DrainPolicy {
        &self.policy
    }

    /// When the switch was triggered (now, if it was not).
    pub(crate) fn triggered_at(&self) -> Instant {
        self.shutdown
            .inner
            .triggered_at
            .get()
            .copied()
            .unwrap_or_else(Instant::now)
    }

    /// Why the streams end: the cause of their come-back block.
    pub(crate) fn cause(&self) -> Cause {
        self.shutdown.inner.cause
    }

    /// The final event, once triggered.
    pub(crate) fn final_event(&self) -> Option<Event> {
        self.shutdown.lock().final_event.clone()
    }

    /// How many bytes a body may still send after the trigger, before its final event.
    pub(crate) fn flush_limit(&self) -> usize {
        self.shutdown.inner.flush_limit.load(Ordering::Relaxed)
    }

    /// Makes sure the task polling the body now is woken by the trigger. A body may move
    /// between tasks, so the waker is refreshed on every idle poll; the shared lock stays off
    /// that path.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
        // Triggered between the caller's check and the registration: wake at once.
        if self.is_triggered() {
            cx.waker().wake_by_ref();
        }
    }
}

impl Drop for ShutdownWatch {
    fn drop(&mut self) {
        self.shutdown.lock().waiters.try_remove(self.key);
    }
}

impl fmt::Debug for ShutdownWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownWatch")
            .field("key", &self.key)
            .finish()
    }
}
