//! The longest delay any setting takes, and the one rule that saturates every duration at it.
//!
//! A `retry:` value is read by clients into a 32-bit signed timer (JavaScript's `setTimeout`
//! overflows above 2³¹−1 ms and fires at once), and adding `Duration::MAX` to an `Instant`
//! panics. So every duration the crate is given saturates at 2³¹−1 ms, about 24.8 days, which
//! is exact for the spec and no practical limit for a keep-alive or a timeout.

use std::time::Duration;

/// 2³¹−1 milliseconds, about 24.8 days.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(i32::MAX as u64);

/// `delay`, or [`MAX_DELAY`] if it is longer.
pub(crate) fn saturate(delay: Duration) -> Duration {
    delay.min(MAX_DELAY)
}

/// Whole milliseconds of `delay`, saturated at [`MAX_DELAY`].
pub(crate) fn millis(delay: Duration) -> u64 {
    saturate(delay).as_millis() as u64
}

/// A delay drawn at random between `base` and twice `base`, so that clients told to come back
/// later do not all come back at once.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn jittered(base: Duration) -> Duration {
    let base = saturate(base);
    saturate(between(base, base.saturating_mul(2)))
}

/// A reconnection back-off's bounds as a setting takes them: `min` at least 1 ms, `max` at least
/// `min`, both saturated.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) fn backoff_bounds(min: Duration, max: Duration) -> (Duration, Duration) {
    let min = saturate(min.max(Duration::from_millis(1)));
    (min, saturate(max).max(min))
}

/// A delay drawn uniformly in `[low, high]` (`low` when the range is empty), so that timers
/// armed together do not all fire together.
pub(crate) fn between(low: Duration, high: Duration) -> Duration {
    use std::{
        cell::Cell,
        hash::{BuildHasher, Hasher},
    };
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(0x5EED);
            hasher.finish() | 1
        });
    }
    // xorshift64: plenty for spreading reconnections.
    let r = STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    let span = high.saturating_sub(low);
    low.saturating_add(span.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_one_and_two_times_the_base() {
        let base = Duration::from_millis(1000);
        let draws: Vec<Duration> = (0..1000).map(|_| jittered(base)).collect();
        assert!(draws.iter().all(|d| *d >= base && *d <= base * 2));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 900, "spread out: {}", distinct.len());
        assert_eq!(jittered(Duration::MAX), MAX_DELAY);
    }

    #[test]
    fn draws_fill_their_window_and_never_leave_it() {
        let (low, high) = (Duration::from_millis(900), Duration::from_millis(1000));
        let draws: Vec<Duration> = (0..1000).map(|_| between(low, high)).collect();
        assert!(draws.iter().all(|d| *d >= low && *d <= high));
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*max - *min > Duration::from_millis(80), "{min:?}..{max:?}");
        assert_eq!(between(high, low), high, "an empty window gives its start");
        assert_eq!(between(Duration::ZERO, Duration::ZERO), Duration::ZERO);
        assert!(between(MAX_DELAY - MAX_DELAY / 10, MAX_DELAY) <= MAX_DELAY);
    }

    #[test]
    fn every_delay_saturates_at_two_to_the_31_minus_one_ms() {
        assert_eq!(millis(Duration::MAX), 2_147_483_647);
        assert_eq!(millis(MAX_DELAY + Duration::from_millis(1)), 2_147_483_647);
        assert_eq!(millis(Duration::from_micros(1_999)), 1);
        assert_eq!(saturate(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(saturate(Duration::MAX), MAX_DELAY);
    }
}
