//! [`Shutdown`]: end every SSE stream under a layer, for a graceful server shutdown.

use crate::{
    sync::{lock, take_wakers},
    Event,
};
use slab::Slab;
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Waker},
};

/// Ends every SSE response created under the layers it is given to, for a graceful shutdown.
///
/// An SSE response never ends by itself, so a server waiting for its connections to finish
/// would wait forever. Give a `Shutdown` to [`SseLayer::shutdown`](crate::SseLayer::shutdown),
/// and call [`trigger`](Shutdown::trigger) when the server is told to stop: every open body
/// then sends the events its stream already has ready, then the final event if one is given
/// (typically with a `retry` hint saying when to come back), then ends. Bodies created after the
/// trigger end the same way at once. Cloning is cheap; all clones are the same switch.
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

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    final_event: Option<Event>,
    waiters: Slab<Option<Waker>>,
}

impl Shutdown {
    /// A switch that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends every stream watching this switch, after the events it has ready, with
    /// `final_event` last. Only the first call's event counts.
    pub fn trigger(&self, final_event: Option<Event>) {
        let mut state = self.lock();
        if self.inner.triggered.swap(true, Ordering::AcqRel) {
            return;
        }
        state.final_event = final_event;
        let wakers = take_wakers(&mut state.waiters);
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
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
        let key = self.lock().waiters.insert(None);
        ShutdownWatch {
            shutdown: self.clone(),
            key,
            registered: false,
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
    registered: bool,
}

impl ShutdownWatch {
    pub(crate) fn is_triggered(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// The final event, once triggered.
    pub(crate) fn final_event(&self) -> Option<Event> {
        self.shutdown.lock().final_event.clone()
    }

    /// Makes sure the body's task is woken by the trigger. A connection's body is polled from one
    /// task for its whole life, so the waker is stored once rather than on every idle poll,
    /// which keeps the shared lock off the hot path.
    pub(crate) fn register(&mut self, cx: &Context<'_>) {
        if self.registered {
            return;
        }
        let mut state = self.shutdown.lock();
        if let Some(slot) = state.waiters.get_mut(self.key) {
            *slot = Some(cx.waker().clone());
        }
        self.registered = true;
        drop(state);
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
