//! The come-back block: the last bytes of every stream the crate ends on purpose, and of every
//! `200` refusal, telling the client when to reconnect. One window, set with
//! [`come_back`](crate::SseLayer::come_back), spreads all of them.

use crate::delay;
use bytes::{BufMut, Bytes, BytesMut};
use std::{fmt::Write, ops::RangeInclusive, time::Duration};

/// Default window of [`come_back`](crate::SseLayer::come_back): 1 to 5 seconds.
pub(crate) const DEFAULT_WINDOW: Window = Window {
    low: Duration::from_secs(1),
    high: Duration::from_secs(5),
};

/// The delays a come-back `retry:` is drawn from, saturated and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    low: Duration,
    high: Duration,
}

impl Window {
    /// The window between the range's ends, whichever is larger, each saturated at 2³¹−1 ms.
    pub(crate) fn new(range: RangeInclusive<Duration>) -> Window {
        let (a, b) = range.into_inner();
        let (a, b) = (delay::saturate(a), delay::saturate(b));
        Window {
            low: a.min(b),
            high: a.max(b),
        }
    }

    /// A delay drawn uniformly in the window.
    pub(crate) fn draw(&self) -> Duration {
        delay::between(self.low, self.high)
    }
}

/// Why a stream is told to come back; each cause has its own comment, so a person reading the
/// bytes (or a client's debug log) sees why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Refused: a stream limit ([`max_streams`](crate::SseLayer::max_streams)) is reached.
    OverLimit,
    /// Refused: the connect rate ([`Admission`](crate::Admission)) is spent.
    Throttled,
    /// The stream reached its [`max_lifetime`](crate::SseLayer::max_lifetime).
    Lifetime,
    /// A [`Shutdown`](crate::Shutdown) ended it (or the hub it reads was closed).
    Shutdown,
    /// The hub evicted the subscriber for falling behind.
    Evicted,
    /// The stream's credential expired ([`Grants::expires_at`](crate::Grants::expires_at)).
    Expired,
    /// The stream's subject was revoked ([`Auth::revoke`](crate::auth::Auth::revoke)); its
    /// reconnect is refused.
    Revoked,
}

impl Cause {
    /// The comment line of this cause's block.
    pub(crate) fn comment(self) -> &'static [u8] {
        match self {
            Cause::OverLimit => b": over capacity, come back later\n",
            Cause::Throttled => b": too many new connections, come back later\n",
            Cause::Lifetime => b": stream lifetime reached, reconnect\n",
            Cause::Shutdown => b": server shutting down, reconnect\n",
            Cause::Evicted => b": fell behind, reconnect\n",
            Cause::Expired => b": credential expired, reconnect\n",
            Cause::Revoked => b": access revoked\n",
        }
    }
}

/// The block that makes an `EventSource` come back: `retry:` with a delay drawn from `window`,
/// the cause's comment line, and the blank line that ends the block (some clients apply a
/// `retry:` only then). It has no `data`, so no client dispatches anything.
pub(crate) fn block(window: &Window, cause: Cause) -> Bytes {
    let comment = cause.comment();
    let mut buf = BytesMut::with_capacity(24 + comment.len());
    // Writing to a `BytesMut` cannot fail.
    let _ = writeln!(buf, "retry: {}", delay::millis(window.draw()));
    buf.put_slice(comment);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The whole seconds of a delay drawn from `window`, at least one: a `Retry-After` value.
pub(crate) fn retry_after_seconds(window: &Window) -> u64 {
    delay::millis(window.draw()).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `retry:` value of `frame`, after checking the rest of its bytes.
    fn retry_of(frame: &[u8], cause: Cause) -> u64 {
        let text = std::str::from_utf8(frame).unwrap();
        let rest = text.strip_prefix("retry: ").unwrap();
        let comment = std::str::from_utf8(cause.comment()).unwrap();
        rest.strip_suffix(&format!("\n{comment}\n"))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn blocks_draw_their_retry_from_the_window_and_end_with_a_blank_line() {
        let window = Window::new(Duration::from_millis(300)..=Duration::from_millis(900));
        let draws: Vec<u64> = (0..500)
            .map(|_| retry_of(&block(&window, Cause::Lifetime), Cause::Lifetime))
            .collect();
        assert!(draws.iter().all(|ms| (300..=900).contains(ms)), "{draws:?}");
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(max - min > 400, "spread over the window: {min}..{max}");
        for cause in [
            Cause::OverLimit,
            Cause::Throttled,
            Cause::Lifetime,
            Cause::Shutdown,
            Cause::Evicted,
            Cause::Expired,
            Cause::Revoked,
        ] {
            let frame = block(&DEFAULT_WINDOW, cause);
            assert!(frame.ends_with(b"\n\n"));
            assert!((1000..=5000).contains(&retry_of(&frame, cause)));
        }
    }

    #[test]
    fn windows_saturate_and_take_their_ends_in_any_order() {
        let window = Window::new(Duration::MAX..=Duration::ZERO);
        assert_eq!(
            (window.low, window.high),
            (Duration::ZERO, delay::MAX_DELAY)
        );
        let frame = block(&Window::new(Duration::MAX..=Duration::MAX), Cause::Shutdown);
        assert_eq!(
            frame,
            "retry: 2147483647\n: server shutting down, reconnect\n\n"
        );
        let zero = Window::new(Duration::ZERO..=Duration::ZERO);
        assert_eq!(retry_of(&block(&zero, Cause::Evicted), Cause::Evicted), 0);
        assert_eq!(retry_after_seconds(&zero), 1, "Retry-After is never 0");
        let two = Window::new(Duration::from_millis(1500)..=Duration::from_millis(1500));
        assert_eq!(retry_after_seconds(&two), 2, "rounded up");
    }
}
