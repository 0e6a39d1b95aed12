//! How an [`SseLayer`](crate::SseLayer) reaches the bodies built under it.
//!
//! While the layer polls its inner service, the request's scope (the layer's settings and the
//! body half of the disconnect handle) sits in a thread-local; [`SseBody::new`](crate::SseBody::new)
//! takes them from there. That is what lets one layer configure bodies built by any framework's
//! responder (axum, warp, plain hyper) without the framework knowing about it. Nested layers
//! nest: the innermost one wins.

use crate::{
    disconnect::CloseGuard,
    settings::Settings,
    shutdown::{Shutdown, ShutdownWatch},
    streams::Streams,
};
use std::{cell::RefCell, sync::Arc};

/// Why a request's SSE response is refused instead of streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request's `Accept` header excludes `text/event-stream`.
    NotAcceptable,
    /// The layer's stream limit is reached.
    OverLimit,
}

#[derive(Debug)]
pub(crate) struct Scope {
    pub(crate) settings: Arc<Settings>,
    pub(crate) guard: Option<CloseGuard>,
    pub(crate) streams: Arc<Streams>,
    pub(crate) shutdown: Option<Shutdown>,
    pub(crate) refusal: Option<Refusal>,
    pub(crate) built: bool,
}

/// What a body takes from the scope it is built in.
pub(crate) struct BodyParts {
    pub(crate) settings: Arc<Settings>,
    pub(crate) guard: Option<CloseGuard>,
    pub(crate) shutdown: Option<ShutdownWatch>,
    /// The body must send nothing: the response will be a refusal.
    pub(crate) refused: bool,
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

/// What a body being built now takes from the current scope, which it marks as having built
/// one. Outside any layer: the defaults, no guard, no shutdown.
pub(crate) fn take_for_body() -> BodyParts {
    let outside = || BodyParts {
        settings: Settings::shared_default(),
        guard: None,
        shutdown: None,
        refused: false,
    };
    CURRENT
        .try_with(|current| match current.borrow_mut().as_mut() {
            Some(scope) => scope.take_for_body(),
            None => outside(),
        })
        .unwrap_or_else(|_| outside())
}

impl Scope {
    fn take_for_body(&mut self) -> BodyParts {
        self.built = true;
        let mut parts = BodyParts {
            settings: self.settings.clone(),
            guard: None,
            shutdown: self.shutdown.as_ref().map(Shutdown::watch),
            refused: self.refusal.is_some(),
        };
        // The first body of the request is the response's stream: it is counted, and carries
        // the disconnect guard. A later one (rare) is neither.
        if !parts.refused {
            if let Some(guard) = self.guard.take() {
                if self.streams.acquire() {
                    parts.guard = Some(guard.counting(self.streams.clone()));
                } else {
                    self.guard = Some(guard);
                    self.refusal = Some(Refusal::OverLimit);
                    parts.refused = true;
                }
            }
        }
        parts
    }
}
