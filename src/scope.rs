//! How an [`SseLayer`](crate::SseLayer) reaches the bodies built under it.
//!
//! While the layer polls its inner service, the request's scope (the layer's settings and the
//! body half of the disconnect handle) sits in a thread-local; [`SseBody::new`](crate::SseBody::new)
//! takes them from there. That is what lets one layer configure bodies built by any framework's
//! responder (axum, warp, plain hyper) without the framework knowing about it. Nested layers
//! nest: the innermost one wins.

use crate::{disconnect::CloseGuard, keep_alive::Settings};
use std::{cell::RefCell, sync::Arc};

#[derive(Debug)]
pub(crate) struct Scope {
    pub(crate) settings: Arc<Settings>,
    pub(crate) guard: Option<CloseGuard>,
    pub(crate) built: bool,
}

thread_local! {
    static CURRENT: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Runs `f` with `slot`'s scope installed as the current one, then puts it back into `slot`
/// (also when `f` panics), restoring whatever scope was current before.
pub(crate) fn enter<R>(slot: &mut Option<Scope>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a> {
        slot: &'a mut Option<Scope>,
        previous: Option<Scope>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            *self.slot = CURRENT.with(|current| current.replace(previous));
        }
    }
    let previous = CURRENT.with(|current| current.replace(slot.take()));
    let _restore = Restore { slot, previous };
    f()
}

/// The settings and disconnect guard for a body being built now, and marks the scope as having
/// built one. Outside any layer: the defaults and no guard.
pub(crate) fn take_for_body() -> (Arc<Settings>, Option<CloseGuard>) {
    CURRENT
        .try_with(|current| match current.borrow_mut().as_mut() {
            Some(scope) => {
                scope.built = true;
                (scope.settings.clone(), scope.guard.take())
            }
            None => (Settings::shared_default(), None),
        })
        .unwrap_or_else(|_| (Settings::shared_default(), None))
}
