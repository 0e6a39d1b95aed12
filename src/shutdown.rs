//! [`Shutdown`]: end every SSE stream under a layer, for a graceful server shutdown.

use crate::{sync::lock, Event};
use atomic_waker::AtomicWaker;
use slab::Slab;
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::Context,
};

/// Ends every SSE response created under the layers it is given to, for a graceful shutdown.
///
/// An SSE response never ends by itself, so a server waiting for its connections to finish
/// would wait forever. Give a `Shutdown` to [`SseLayer::shutdown`](crate::SseLayer::shutdown),
/// and call [`trigger`](Shutdown::trigger) when the server is told to stop: every open body
/// then sends every event its stream already has ready (up to the
/// [`flush_limit`](Shutdown::flush_limit), 1 MiB by default), then the final event if one is
/// given (typically with a `retry` hint saying when to come back), then ends. Bodies created
/// after the trigger end the same way at once. Cloning is cheap; all clones are the same switch.
///
/// # Stopping a server gracefully
///
/// Stop accepting connections, end the streams, then wait (with a deadline) for the
/// connections to finish. To end the streams, `trigger` covers every stream under the layer,
/// hub-backed or not: a hub [`Subscription`](crate::hub::Subscription) has every event already
/// published ready, so those go out (up to the flush limit) before the final event.
/// [`Hub::close`](crate::hub::Hub::close) ends only that hub's subscriptions, after everything
/// published and its own final event, with no byte limit; an application whose every stream is
/// a hub subscription may use either. Give the final event to one of them only: with both, a
/// client receives two.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
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
/// let bye = Event::builder().event("bye").retry(Duration::from_secs(5)).data("restarting");
/// shutdown.trigger(bye.build().ok());
/// let bytes = body.collect().await.unwrap().to_bytes();
/// assert_eq!(bytes, "event: bye\nretry: 5000\ndata: restarting\n\n");
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: AtomicBool,
    flush_limit: AtomicUsize,
    state: Mutex<State>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            triggered: AtomicBool::new(false),
            flush_limit: AtomicUsize::new(DEFAULT_FLUSH_LIMIT),
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

    /// Ends every stream watching this switch, after the events it has ready, with
    /// `final_event` last. Only the first call's event counts.
    pub fn trigger(&self, final_event: Option<Event>) {
        let mut state = self.lock();
        if self.inner.triggered.swap(true, Ordering::AcqRel) {
            return;
        }
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

    pub(crate) fn watch(&self) -> ShutdownWatch {
        let waker = Arc::new(AtomicWaker::new());
        let key = self.lock().waiters.insert(waker.clone());
        ShutdownWatch {
            shutdown: self.clone(),
            key,
            waker,
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
}

impl ShutdownWatch {
    pub(crate) fn is_triggered(&self) -> bool {
        self.shutdown.is_triggered()
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
