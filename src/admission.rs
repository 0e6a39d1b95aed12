//! [`Admission`]: a connect-rate budget (a token bucket) for the streams under a layer.

use crate::sync::lock;
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::time::Instant;

/// How many new SSE streams a node takes per second: a token bucket of `burst` tokens that
/// refills at `rate` tokens a second; each stream that opens takes one. Give it to
/// [`SseLayer::admission`](crate::SseLayer::admission); clones share one bucket, so give the
/// same `Admission` to every layer of a node.
///
/// Over budget, a stream is refused the way a stream limit refuses it: a client that asks for
/// `text/event-stream` (every `EventSource` does) gets a `200` event stream whose whole body is
/// a come-back block (`retry: <ms>\n: too many new connections, come back later\n\n`, the delay
/// drawn from the layer's [`come_back`](crate::SseLayer::come_back) window), so it reconnects
/// after that delay (a browser gives up for good on any status but `200`); any other client
/// gets `503 Service Unavailable` with `Retry-After`. A refused stream's body never polls its
/// stream, so a hub subscription in it never joins. Refusals are counted
/// ([`refused`](Admission::refused)) and each is logged with `tracing` at `DEBUG`, not
/// higher: a line per refusal at `INFO` would flood the log in the very storm the budget is
/// for; the counter is the figure to watch.
///
/// The bucket starts full. A rate of zero (or a negative or NaN one) never refills: after the
/// burst, every stream is refused, politely. An infinite rate refills at once. A stream refused by a
/// [`max_streams`](crate::SseLayer::max_streams) limit takes no token.
///
/// ```
/// use tower_sse::{Admission, SseLayer};
///
/// // 500 new streams a second, 1,000 at once after a quiet spell.
/// let admission = Admission::new(500.0, 1_000);
/// let layer = SseLayer::new().admission(&admission);
/// assert_eq!((admission.admitted(), admission.refused()), (0, 0));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
    admitted: AtomicU64,
    refused: AtomicU64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Admission {
    /// A budget of `rate` new streams a second, with up to `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Admission {
        // NaN and negative rates mean zero.
        let rate = if rate > 0.0 { rate } else { 0.0 };
        let burst = f64::from(burst);
        Admission {
            inner: Arc::new(Inner {
                rate,
                burst,
                bucket: Mutex::new(Bucket {
                    tokens: burst,
                    at: Instant::now(),
                }),
                admitted: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Streams let in so far.
    pub fn admitted(&self) -> u64 {
        self.inner.admitted.load(Ordering::Relaxed)
    }

    /// Streams refused so far for being over budget.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Takes a token if there is one; counts the answer.
    pub(crate) fn take(&self) -> bool {
        let inner = &*self.inner;
        let taken = {
            let mut bucket = lock(&inner.bucket);
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(bucket.at);
            bucket.at = now;
            bucket.tokens = if inner.rate.is_infinite() {
                inner.burst
            } else {
                (bucket.tokens + elapsed.as_secs_f64() * inner.rate).min(inner.burst)
            };
            let taken = bucket.tokens >= 1.0;
            if taken {
                bucket.tokens -= 1.0;
            }
            taken
        };
        let counter = if taken {
            &inner.admitted
        } else {
            &inner.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        taken
    }

    /// Gives back a token taken for a stream that was refused after all (by a stream limit of
    /// another layer), so that refusal costs no budget.
    pub(crate) fn give_back(&self) {
        let inner = &*self.inner;
        let mut bucket = lock(&inner.bucket);
        bucket.tokens = (bucket.tokens + 1.0).min(inner.burst);
        inner.admitted.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long until the next token, at most a day (the rate is zero): for logs.
    pub(crate) fn refill_time(&self) -> Duration {
        if self.inner.rate == 0.0 {
            return Duration::from_secs(86_400);
        }
        Duration::from_secs_f64((1.0 / self.inner.rate).min(86_400.0))
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("rate", &self.inner.rate)
            .field("burst", &self.inner.burst)
            .field("admitted", &self.admitted())
            .field("refused", &self.refused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_lets_a_burst_in_then_refills_at_its_rate() {
        let admission = Admission::new(10.0, 5);
        assert!((0..5).all(|_| admission.take()));
        assert!(!admission.take());
        tokio::time::sleep(Duration::from_millis(250)).await;
        // A quarter second at 10 a second: two tokens.
        assert!(admission.take() && admission.take());
        assert!(!admission.take());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            (0..100).filter(|_| admission.take()).count(),
            5,
            "capped at the burst"
        );
        assert_eq!(admission.admitted(), 12);
        assert_eq!(admission.refused(), 2 + 95);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_or_nonsense_rate_never_refills() {
        for rate in [0.0, -3.0, f64::NAN, f64::NEG_INFINITY] {
            let admission = Admission::new(rate, 1);
            assert!(admission.take());
            tokio::time::sleep(Duration::from_secs(86_400)).await;
            assert!(!admission.take(), "rate {rate}");
        }
        let closed = Admission::new(f64::INFINITY, 0);
        assert!(!closed.take(), "no burst: no token, whatever the rate");
        let open = Admission::new(f64::INFINITY, 1);
        assert!(
            (0..5).all(|_| open.take()),
            "an infinite rate refills at once"
        );
        let admission = Admission::new(0.0, 2);
        assert!(admission.take());
        admission.give_back();
        assert!(admission.take() && admission.take());
        assert_eq!(admission.admitted(), 2);
    }
}
