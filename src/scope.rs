//! The implicit path from an [`SseLayer`](crate::SseLayer) to the bodies built under it.
//!
//! While the layer polls its inner service, the request's [`SseContext`] is also the current
//! one on this thread; [`SseBody::new`](crate::SseBody::new) takes it from there. That is what
//! lets one layer configure bodies built by any framework's responder (axum, warp, plain hyper)
//! without the framework knowing about it. Its explicit twin is the context in the request's
//! extensions, which reaches bodies built anywhere (see `SseContext`). Nested layers nest: the
//! innermost context, which carries the outer layers' limits and shutdowns, is current.

use crate::context::SseContext;
use std::{
    cell::RefCell,
    sync::atomic::{AtomicBool, Ordering},
};

/// Set once any layer has made a service in this process.
static LAYER_IN_USE: AtomicBool = AtomicBool::new(false);
/// Set once the warning below has been logged.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Notes that a layer is in use, so that a body built out of its reach is reported.
pub(crate) fn layer_in_use() {
    LAYER_IN_USE.store(true, Ordering::Relaxed);
}

/// Reports, once per process, a body built with no context while a layer is in use: almost
/// always a body built out of the layer's reach.
pub(crate) fn no_context_found() {
    if LAYER_IN_USE.load(Ordering::Relaxed) && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "SseBody::new found no SseContext although an SseLayer is in use: a body built \
             out of the layer's reach (in a spawned task, behind a Buffer) gets the default \
             settings, no stream limit, no shutdown and no disconnect handle; build it with \
             SseBody::from_request or SseBody::from_context (logged once)"
        );
    }
}

thread_local! {
    static CURRENT: RefCell<Option<SseContext>> = const { RefCell::new(None) };
}

/// Runs `f` with `context` current, then restores whatever was current before (also when `f`
/// panics).
pub(crate) fn enter<R>(context: &SseContext, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SseContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            let _ = CURRENT.try_with(|current| current.replace(previous));
        }
    }
    let previous = CURRENT.with(|current| current.replace(Some(context.clone())));
    let _restore = Restore(previous);
    f()
}

/// The context current on this thread, if a layer is running a request here.
pub(crate) fn current() -> Option<SseContext> {
    CURRENT
        .try_with(|current| current.borrow().clone())
        .ok()
        .flatten()
}
