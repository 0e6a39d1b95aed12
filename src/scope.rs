//! The implicit path from an [`SseLayer`](crate::SseLayer) to the bodies built under it.
//!
//! While the layer polls its inner service, the request's [`SseContext`] is also the current
//! one on this thread; [`SseBody::new`](crate::SseBody::new) takes it from there. That is what
//! lets one layer configure bodies built by any framework's responder (axum, warp, plain hyper)
//! without the framework knowing about it. Its explicit twin is the context in the request's
//! extensions, which reaches bodies built anywhere (see `SseContext`). Nested layers nest: the
//! innermost context, which carries the outer layers' limits and shutdowns, is current.

use crate::context::SseContext;
use std::cell::RefCell;

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
