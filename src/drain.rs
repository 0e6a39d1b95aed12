//! [`DrainPolicy`]: when each stream under a layer ends once its [`Shutdown`](crate::Shutdown)
//! is triggered, and the clock that tells one body.

use crate::{alarm::Alarm, delay};
use std::{
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;

/// When the streams under a layer end after its [`Shutdown`](crate::Shutdown) is triggered;
/// set with [`SseLayer::drain`](crate::SseLayer::drain).
///
/// Whatever the policy, a stream ends the same way when its turn comes: the events its stream
/// has ready (up to the shutdown's [`flush_limit`](crate::Shutdown::flush_limit)), the
/// shutdown's final event if one was given, and a come-back block whose `retry:` is drawn from
/// the layer's [`come_back`](crate::SseLayer::come_back) window. Until then it streams as
/// before. A stream that opens after the trigger ends at once, whatever the policy: the node is
/// going away, the client had better reconnect elsewhere.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use http_body_util::BodyExt;
/// use tokio::time::Instant;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{DrainPolicy, Event, KeepAlive, Shutdown, SseBody, SseLayer};
///
/// let shutdown = Shutdown::new();
/// let layer = SseLayer::new()
///     .open_frame(false)
///     .keep_alive(KeepAlive::disabled())
///     .shutdown(&shutdown)
///     .drain(DrainPolicy::Waves(Duration::from_secs(10)));
/// let service = ServiceBuilder::new().layer(layer).service_fn(|_req: http::Request<()>| async {
///     let endless = futures_util::stream::pending::<Event>();
///     Ok::<_, std::convert::Infallible>(http::Response::new(SseBody::new(endless)))
/// });
/// let mut bodies = Vec::new();
/// for _ in 0..3 {
///     let response = service.clone().oneshot(http::Request::new(())).await.unwrap();
///     bodies.push(tokio::spawn(response.into_body().collect()));
/// }
/// tokio::task::yield_now().await;
///
/// let start = Instant::now();
/// shutdown.trigger(None);
/// for body in bodies {
///     let bytes = body.await.unwrap().unwrap().to_bytes();
///     // Each ended at its own point of the ten seconds, told to come back.
///     assert!(start.elapsed() <= Duration::from_secs(10));
///     assert!(bytes.ends_with(b"\n: server shutting down, reconnect\n\n"));
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DrainPolicy {
    /// Every stream ends at the trigger. The default.
    #[default]
    Immediate,
    /// Each stream ends at its own point drawn uniformly over this span after the trigger, so
    /// that the clients reach the other nodes at a flat rate (10,000 streams over 10 s: about
    /// 1,000 a second) instead of all in the same second. Saturates at 2³¹−1 ms.
    Waves(Duration),
    /// Streams go on for up to this long after the trigger, for those that must complete (an
    /// export, a job's progress): one that ends by itself in that time ends normally, the
    /// others end when it passes. Saturates at 2³¹−1 ms.
    Finish(Duration),
}

impl DrainPolicy {
    /// How long after the trigger the last stream under this policy ends (before the flush and
    /// the final event): what a server's graceful timeout must add.
    pub fn span(&self) -> Duration {
        match *self {
            DrainPolicy::Immediate => Duration::ZERO,
            DrainPolicy::Waves(span) | DrainPolicy::Finish(span) => delay::saturate(span),
        }
    }

    /// The point after the trigger at which one stream ends.
    fn draw(&self) -> Duration {
        match *self {
            DrainPolicy::Immediate => Duration::ZERO,
            DrainPolicy::Waves(span) => delay::between(Duration::ZERO, delay::saturate(span)),
            DrainPolicy::Finish(span) => delay::saturate(span),
        }
    }
}

/// One body's drain clock: when it must end once a shutdown it watches is triggered.
#[derive(Debug, Default)]
pub(crate) struct DrainClock {
    /// When the body was first polled.
    opened: Option<Instant>,
    /// When the body must end, once a trigger was seen.
    due: Option<Instant>,
    alarm: Alarm,
}

impl DrainClock {
    /// Notes the body's first poll; later calls change nothing.
    pub(crate) fn open(&mut self) {
        self.opened.get_or_insert_with(Instant::now);
    }

    /// Whether the body must end now, for a shutdown triggered at `triggered`; the point is
    /// drawn on the first call and never moved. A body opened after the trigger ends at once.
    pub(crate) fn is_due(&mut self, triggered: Instant, policy: &DrainPolicy) -> bool {
        let due = *self.due.get_or_insert_with(|| match self.opened {
            Some(opened) if opened <= triggered => {
                let at = triggered.checked_add(policy.draw());
                at.unwrap_or(triggered)
            }
            _ => triggered,
        });
        Instant::now() >= due
    }

    /// Ready once the drawn point has passed, and until then wakes the task when it does.
    /// Pending for ever before a trigger was seen.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(due) = self.due else {
            return Poll::Pending;
        };
        self.alarm.poll(due, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_spread_over_their_span_and_finish_waits_all_of_it() {
        let span = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..1000).map(|_| DrainPolicy::Waves(span).draw()).collect();
        assert!(draws.iter().all(|d| *d <= span));
        // Uniform: each second of the span gets about a tenth.
        for second in 0..10 {
            let inside = draws.iter().filter(|d| d.as_secs() == second).count();
            assert!((40..=160).contains(&inside), "second {second}: {inside}");
        }
        assert_eq!(DrainPolicy::Finish(span).draw(), span);
        assert_eq!(DrainPolicy::Immediate.draw(), Duration::ZERO);
        assert_eq!(DrainPolicy::Waves(Duration::MAX).span(), delay::MAX_DELAY);
        assert!(DrainPolicy::Waves(Duration::MAX).draw() <= delay::MAX_DELAY);
        assert_eq!(DrainPolicy::Waves(Duration::ZERO).draw(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_point_is_drawn_once_and_a_late_body_ends_at_once() {
        let mut clock = DrainClock::default();
        clock.open();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let triggered = Instant::now();
        let policy = DrainPolicy::Finish(Duration::from_secs(5));
        assert!(!clock.is_due(triggered, &policy));
        // A second trigger time (another shutdown) moves nothing.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!clock.is_due(Instant::now(), &policy));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(clock.is_due(triggered, &policy));

        let mut late = DrainClock::default();
        late.open();
        assert!(late.is_due(triggered, &policy), "opened after the trigger");
    }
}
