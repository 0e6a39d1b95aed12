//! [`SseContext`]: what an [`SseLayer`](crate::SseLayer) hands to the SSE body of one request.

use crate::{
    admission::Admission,
    come_back::Cause,
    disconnect::{CloseGuard, CloseReason, Disconnect},
    drain::DrainPolicy,
    grants::Grants,
    settings::Settings,
    shutdown::{Shutdown, ShutdownWatch},
    streams::Streams,
    sync::lock,
};
use std::{
    fmt,
    sync::{Arc, Mutex},
};

/// Why a request's SSE response is refused instead of streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request's `Accept` header excludes `text/event-stream`.
    NotAcceptable,
    /// A stream limit of an enclosing layer is reached.
    OverLimit,
    /// The connect-rate budget ([`Admission`]) of an enclosing layer is spent.
    Throttled,
}

impl Refusal {
    /// What the come-back block says, for the refusals that send one.
    fn cause(self) -> Option<Cause> {
        match self {
            Refusal::NotAcceptable => None,
            Refusal::OverLimit => Some(Cause::OverLimit),
            Refusal::Throttled => Some(Cause::Throttled),
        }
    }
}

/// The SSE context of one request: the settings of the [`SseLayer`](crate::SseLayer)s it went
/// through, its [`Disconnect`] handle, the layers' stream limits and their [`Shutdown`]s.
///
/// Each `SseLayer` puts one in the request's extensions. A body built from it
/// ([`SseBody::from_context`](crate::SseBody::from_context),
/// [`SseBody::from_request`](crate::SseBody::from_request), the axum extractor, the warp filter)
/// gets all of that wherever it is built: in the handler, in a task the handler spawns, behind a
/// `tower::buffer::Buffer`. [`SseBody::new`](crate::SseBody::new) finds the same context on its
/// own, but only while the layer is running the request on the current task.
///
/// Nested layers compose: an inner layer's context keeps the outer layers' stream limits and
/// shutdowns (a stream takes a slot under every limit and ends with any shutdown) and the same
/// disconnect handle; its settings are the innermost layer's.
///
/// Cloning is cheap; every clone is the same request's context.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::{convert::Infallible, time::Duration};
/// use http::Request;
/// use http_body_util::BodyExt;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{Event, SseBody, SseContext, SseLayer};
///
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new().retry(Duration::from_secs(2)))
///     .service_fn(|req: Request<()>| async move {
///         let context = req.extensions().get::<SseContext>().unwrap().clone();
///         // Built in another task, the body still gets the layer's settings.
///         let body = tokio::spawn(async move {
///             let events = futures_util::stream::iter([Event::message("from a task")]);
///             SseBody::from_context(&context, events)
///         });
///         Ok::<_, Infallible>(body.await.unwrap().into_http_response())
///     });
///
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(response.headers()["content-type"], "text/event-stream");
/// let bytes = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(bytes, "retry: 2000\ndata: from a task\n\n");
/// # }
/// ```
#[derive(Clone)]
pub struct SseContext {
    chain: Arc<Chain>,
    request: Arc<RequestState>,
}

/// What the layers a request went through configure, outermost first. A layer makes its own
/// once, shared by every request that enters no other layer.
#[derive(Debug)]
pub(crate) struct Chain {
    settings: Arc<Settings>,
    /// Shared with the disconnect guard of every stream, which gives the slots back.
    limits: Arc<[Arc<Streams>]>,
    /// Each with the drain policy of the layer it was given to.
    shutdowns: Vec<(Shutdown, DrainPolicy)>,
    admissions: Vec<Admission>,
}

impl Chain {
    /// The settings of the innermost layer.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The chain of a layer alone.
    pub(crate) fn of_layer(
        settings: Arc<Settings>,
        limit: Arc<Streams>,
        shutdown: Option<(Shutdown, DrainPolicy)>,
        admission: Option<Admission>,
    ) -> Arc<Chain> {
        Arc::new(Chain {
            settings,
            limits: Arc::new([limit]),
            shutdowns: shutdown.into_iter().collect(),
            admissions: admission.into_iter().collect(),
        })
    }
}

/// What all the layers of one request share.
struct RequestState {
    handle: Disconnect,
    /// The request's `Accept` header excludes `text/event-stream`.
    not_acceptable: bool,
    /// The request's `Accept` header asks for `text/event-stream` (as `EventSource` does).
    event_stream_client: bool,
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The body half of the disconnect handle, until a body takes it.
    guard: Option<CloseGuard>,
    /// A body was built from this context (even a refused one).
    built: bool,
    refusal: Option<Refusal>,
    /// For a `503` refusal: the `Retry-After` seconds, drawn once from the window of the
    /// innermost layer (every enclosing layer's response future writes the same).
    retry_after: Option<u64>,
    /// The response was returned: a body built now is out of the layer's reach.
    finished: bool,
    /// The request's grants ([`Auth`](crate::auth::Auth)): its streams end at their expiry
    /// and on their subject's revocation.
    grants: Option<Grants>,
}

/// What a body being built takes from its context.
pub(crate) struct BodyParts {
    pub(crate) settings: Arc<Settings>,
    pub(crate) guard: Option<CloseGuard>,
    pub(crate) shutdowns: Vec<ShutdownWatch>,
    /// The body must send nothing but `comeback`, if any: the response is a refusal.
    pub(crate) refused: bool,
    /// For an over-limit `EventSource` client: the `retry:` frame that makes it come back.
    pub(crate) comeback: Option<bytes::Bytes>,
    /// When the request's credential expires: the stream ends then.
    pub(crate) expiry: Option<tokio::time::Instant>,
}

impl BodyParts {
    /// Outside any layer: the defaults, no guard, no shutdown.
    pub(crate) fn outside() -> BodyParts {
        BodyParts {
            settings: Settings::shared_default(),
            guard: None,
            shutdowns: Vec::new(),
            refused: false,
            comeback: None,
            expiry: None,
        }
    }
}

/// How a request under a layer ended, as its response future sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    /// A body was built from the context (in reach of the layer).
    pub(crate) built: bool,
    pub(crate) refusal: Option<Refusal>,
    /// The refused client gets a `200` stream that tells it when to come back.
    pub(crate) comeback: bool,
    /// The `Retry-After` of a `503` refusal, in seconds.
    pub(crate) retry_after: Option<u64>,
}

impl SseContext {
    /// The context of a request entering a layer: a new one, or, under an enclosing layer, the
    /// enclosing one extended with this layer's limit and shutdown and its settings.
    pub(crate) fn enter(
        parent: Option<&SseContext>,
        layer: &Arc<Chain>,
        accept: (bool, bool),
    ) -> SseContext {
        let Some(parent) = parent else {
            let (handle, guard) = Disconnect::pair();
            let (acceptable, event_stream_client) = accept;
            return SseContext {
                chain: layer.clone(),
                request: Arc::new(RequestState {
                    handle,
                    not_acceptable: !acceptable,
                    event_stream_client,
                    slot: Mutex::new(Slot {
                        guard: Some(guard),
                        ..Slot::default()
                    }),
                }),
            };
        };
        let outer = &parent.chain;
        let chain = Arc::new(Chain {
            settings: layer.settings.clone(),
            limits: outer
                .limits
                .iter()
                .chain(layer.limits.iter())
                .cloned()
                .collect(),
            shutdowns: outer
                .shutdowns
                .iter()
                .chain(&layer.shutdowns)
                .cloned()
                .collect(),
            admissions: outer
                .admissions
                .iter()
                .chain(&layer.admissions)
                .cloned()
                .collect(),
        });
        SseContext {
            chain,
            request: parent.request.clone(),
        }
    }

    /// The request's disconnect handle: it completes when the SSE response ends.
    pub fn disconnect(&self) -> Disconnect {
        self.request.handle.clone()
    }

    /// What a body built now takes. The first body of the request is its stream: it takes a
    /// slot under every enclosing limit (or is refused) and carries the disconnect guard. A
    /// later one (rare) gets the settings and shutdowns only.
    pub(crate) fn take_for_body(&self) -> BodyParts {
        let chain = &self.chain;
        let mut parts = BodyParts {
            settings: chain.settings.clone(),
            guard: None,
            shutdowns: chain
                .shutdowns
                .iter()
                .map(|(shutdown, policy)| shutdown.watch(*policy))
                .collect(),
            refused: false,
            comeback: None,
            expiry: None,
        };
        let mut slot = lock(&self.request.slot);
        if let Some(grants) = &slot.grants {
            parts.expiry = grants.expiry().map(instant_of);
            if let Some(revocation) = grants.revocation() {
                parts
                    .shutdowns
                    .push(revocation.watch(DrainPolicy::Immediate));
            }
        }
        if slot.finished {
            tracing::warn!(
                "an SseBody was built after its request's response was returned: it gets the \
                 layer's settings, but no stream limit, no disconnect handle and no SSE \
                 headers; build the body before the handler returns"
            );
            return parts;
        }
        if slot.built {
            return parts;
        }
        slot.built = true;
        let Some(guard) = slot.guard.take() else {
            return parts;
        };
        let refusal = if self.request.not_acceptable {
            Some(Refusal::NotAcceptable)
        } else if !acquire_all(&chain.limits) {
            Some(Refusal::OverLimit)
        } else if !admit_all(&chain.admissions) {
            chain.limits.iter().for_each(|limit| limit.release());
            Some(Refusal::Throttled)
        } else {
            None
        };
        match refusal {
            None => {
                tracing::debug!("SSE stream opened");
                parts.guard = Some(guard.counting(chain.limits.clone()));
            }
            Some(refusal) => {
                slot.guard = Some(guard);
                slot.refusal = Some(refusal);
                parts.refused = true;
                match refusal {
                    Refusal::OverLimit => tracing::info!(
                        limit = ?chain.limits.iter().map(|l| l.max()).collect::<Vec<_>>(),
                        "SSE stream refused: a stream limit is reached"
                    ),
                    Refusal::Throttled => tracing::debug!(
                        next_token_in = ?chain.admissions.iter().map(Admission::refill_time).max(),
                        "SSE stream refused: the connect-rate budget is spent"
                    ),
                    Refusal::NotAcceptable => {}
                }
                if let Some(cause) = refusal.cause() {
                    if self.request.event_stream_client {
                        parts.comeback = Some(chain.settings.come_back(cause));
                    } else {
                        let window = &chain.settings.come_back;
                        slot.retry_after = Some(crate::come_back::retry_after_seconds(window));
                    }
                }
            }
        }
        parts
    }

    /// Binds the request's streams to its grants: they end at the grants' expiry and when
    /// their subject is revoked. The first binding counts (every layer sees the same grants).
    pub(crate) fn bind(&self, grants: &Grants) {
        grants.mark_bound();
        let mut slot = lock(&self.request.slot);
        if slot.grants.is_none() {
            slot.grants = Some(grants.clone());
        }
    }

    /// Marks the response as returned and says how the request went; closes the disconnect
    /// handle with [`CloseReason::NoStream`] when no body took it.
    pub(crate) fn finish(&self) -> Outcome {
        let mut slot = lock(&self.request.slot);
        slot.finished = true;
        if let Some(guard) = slot.guard.take() {
            guard.close(CloseReason::NoStream);
        }
        Outcome {
            built: slot.built,
            refusal: slot.refusal,
            comeback: slot.refusal.and_then(Refusal::cause).is_some()
                && self.request.event_stream_client,
            retry_after: slot.retry_after,
        }
    }
}

/// The instant on tokio's clock of a time on the system clock (now, if it has passed), at most
/// the longest delay the crate's timers take (2³¹−1 ms, about 24.8 days) from now: a stream
/// whose credential expires later ends then, early, and its client comes back.
fn instant_of(at: std::time::SystemTime) -> tokio::time::Instant {
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::Instant::now() + crate::delay::saturate(left)
}

/// Takes a slot under every limit, or none; the limit that refuses counts the refusal.
fn acquire_all(limits: &[Arc<Streams>]) -> bool {
    all_or_none(
        limits,
        |limit| {
            let taken = limit.acquire();
            if !taken {
                limit.count_refusal();
            }
            taken
        },
        |taken| taken.release(),
    )
}

/// Takes a token from every budget, or none.
fn admit_all(admissions: &[Admission]) -> bool {
    all_or_none(admissions, Admission::take, Admission::give_back)
}

/// Takes from every one of `items`, or from none: on the first refusal, what was taken is
/// given back.
fn all_or_none<T>(items: &[T], take: impl Fn(&T) -> bool, give_back: impl Fn(&T)) -> bool {
    for (i, item) in items.iter().enumerate() {
        if !take(item) {
            items[..i].iter().for_each(give_back);
            return false;
        }
    }
    true
}

impl fmt::Debug for SseContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseContext")
            .field("settings", &self.chain.settings)
            .field("layers", &self.chain.limits.len())
            .field("disconnect", &self.request.handle)
            .finish()
    }
}
