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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delay_saturates_at_two_to_the_31_minus_one_ms() {
        assert_eq!(millis(Duration::MAX), 2_147_483_647);
        assert_eq!(millis(MAX_DELAY + Duration::from_millis(1)), 2_147_483_647);
        assert_eq!(millis(Duration::from_micros(1_999)), 1);
        assert_eq!(saturate(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(saturate(Duration::MAX), MAX_DELAY);
    }
}
