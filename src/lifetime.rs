//! The lifetime clock of one body: when a stream under
//! [`max_lifetime`](crate::SseLayer::max_lifetime) must end.

use crate::{alarm::Alarm, come_back::Cause, delay};
use std::{
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;

/// When a stream must end: a deadline drawn once, at the body's first poll, in the last tenth
/// of the lifetime, and never moved afterwards (a clock that events or keep-alives restart
/// would never end a busy stream).
#[derive(Debug, Default)]
pub(crate) struct LifetimeTimer {
    clock: Clock,
    alarm: Alarm,
}

#[derive(Debug, Default, Clone, Copy)]
enum Clock {
    /// The body has not been polled yet.
    #[default]
    NotStarted,
    /// No lifetime is set.
    Endless,
    /// The stream ends then, for its lifetime or for its credential's expiry.
    Until(Instant, Cause),
}

impl LifetimeTimer {
    /// Starts the clock, on the body's first poll; later calls change nothing. With an
    /// `expiry` (the stream's credential) before the drawn lifetime, the stream ends at the
    /// expiry instead, exactly then: a credential is never read past.
    pub(crate) fn start(&mut self, lifetime: Option<Duration>, expiry: Option<Instant>) {
        if let Clock::NotStarted = self.clock {
            let now = Instant::now();
            let rotate = lifetime.map(|lifetime| now + draw(lifetime));
            self.clock = match (rotate, expiry) {
                (Some(rotate), Some(expiry)) if expiry < rotate => {
                    Clock::Until(expiry, Cause::Expired)
                }
                (Some(rotate), _) => Clock::Until(rotate, Cause::Lifetime),
                (None, Some(expiry)) => Clock::Until(expiry, Cause::Expired),
                (None, None) => Clock::Endless,
            };
        }
    }

    /// Why the stream ends at the deadline: its lifetime, or its credential's expiry.
    pub(crate) fn cause(&self) -> Cause {
        match self.clock {
            Clock::Until(_, cause) => cause,
            Clock::NotStarted | Clock::Endless => Cause::Lifetime,
        }
    }

    /// Whether the deadline has passed. Read on every poll, so that a stream that always has
    /// an event ready (and so never lets the timer be polled) still ends.
    pub(crate) fn is_due(&self) -> bool {
        match self.clock {
            Clock::Until(deadline, _) => Instant::now() >= deadline,
            Clock::NotStarted | Clock::Endless => false,
        }
    }

    /// Ready once the deadline has passed, and until then wakes the task when it does. Polled
    /// only while the stream is pending; never ready without a lifetime.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Clock::Until(deadline, _) = self.clock else {
            return Poll::Pending;
        };
        self.alarm.poll(deadline, cx)
    }
}

/// A lifetime drawn uniformly in `[0.9 lifetime, lifetime]`, so that streams opened together
/// (after a deploy, say) do not end together; saturated, so that the deadline never
/// overflows the clock.
fn draw(lifetime: Duration) -> Duration {
    let lifetime = delay::saturate(lifetime);
    delay::between(lifetime - lifetime / 10, lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_fall_in_the_last_tenth_and_saturate() {
        let lifetime = Duration::from_secs(100);
        for _ in 0..1000 {
            let drawn = draw(lifetime);
            assert!(
                drawn >= Duration::from_secs(90) && drawn <= lifetime,
                "{drawn:?}"
            );
        }
        assert_eq!(draw(Duration::ZERO), Duration::ZERO);
        assert!(draw(Duration::MAX) <= delay::MAX_DELAY);
        assert!(draw(Duration::MAX) >= delay::MAX_DELAY - delay::MAX_DELAY / 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_starts_once_and_is_never_moved() {
        let mut timer = LifetimeTimer::default();
        timer.start(Some(Duration::from_secs(10)), None);
        let Clock::Until(deadline, Cause::Lifetime) = timer.clock else {
            panic!("not started");
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        timer.start(Some(Duration::from_secs(10)), None);
        assert!(matches!(timer.clock, Clock::Until(d, _) if d == deadline));
        assert!(!timer.is_due());
        tokio::time::sleep_until(deadline).await;
        assert!(timer.is_due());

        let mut endless = LifetimeTimer::default();
        endless.start(None, None);
        endless.start(Some(Duration::ZERO), None);
        assert!(
            !endless.is_due(),
            "a body started without a lifetime keeps none"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expiry_before_the_lifetime_ends_the_stream_exactly_then() {
        let now = Instant::now();
        let expiry = now + Duration::from_secs(3);
        let mut timer = LifetimeTimer::default();
        timer.start(Some(Duration::from_secs(10)), Some(expiry));
        assert!(matches!(timer.clock, Clock::Until(d, Cause::Expired) if d == expiry));
        let mut later = LifetimeTimer::default();
        later.start(Some(Duration::from_secs(1)), Some(expiry));
        assert!(matches!(later.clock, Clock::Until(d, Cause::Lifetime) if d < expiry));
        let mut alone = LifetimeTimer::default();
        alone.start(None, Some(expiry));
        assert_eq!(alone.cause(), Cause::Expired);
        tokio::time::sleep(Duration::from_millis(2999)).await;
        assert!(!alone.is_due());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(alone.is_due());
    }
}
