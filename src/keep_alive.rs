//! Keep-alive comments and the other per-response settings.

use crate::event::{check_comment, EventError};
use bytes::{BufMut, Bytes, BytesMut};
use std::{sync::Arc, sync::OnceLock, time::Duration};

/// Keep-alive comments sent when a stream has been idle for a while.
///
/// An idle SSE connection is closed by many proxies and load balancers after some seconds
/// without traffic; a periodic comment keeps it open and lets the server notice a peer that
/// vanished without closing (the write fails). The interval restarts after every frame sent,
/// so a busy stream sends no keep-alives at all.
///
/// The comment is written as a single comment line *without* a following blank line: a spec
/// client ignores comment lines, and since no blank line follows, even clients that treat every
/// blank-line-terminated block as an event never see an empty one.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::KeepAlive;
///
/// let keep_alive = KeepAlive::new().interval(Duration::from_secs(10)).text("ping").unwrap();
/// assert_eq!(keep_alive.period(), Some(Duration::from_secs(10)));
/// assert!(KeepAlive::new().text("bad\nvalue").is_err());
/// assert_eq!(KeepAlive::disabled().period(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct KeepAlive {
    period: Option<Duration>,
    frame: Bytes,
}

impl KeepAlive {
    /// Keep-alive every 15 seconds with the comment `: keep-alive`.
    pub fn new() -> Self {
        Self::default()
    }

    /// No keep-alive comments.
    pub fn disabled() -> Self {
        KeepAlive {
            period: None,
            ..Self::default()
        }
    }

    /// Sets how long a stream may stay idle before a comment is sent. Default: 15 seconds.
    /// A zero interval turns keep-alive off; intervals saturate at 2³¹−1 ms (about 24.8 days).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.period = (!interval.is_zero()).then_some(crate::delay::saturate(interval));
        self
    }

    /// Sets the comment text. Default: `keep-alive`. It must not contain CR or LF.
    pub fn text(mut self, text: impl AsRef<str>) -> Result<Self, EventError> {
        let text = text.as_ref();
        check_comment(text)?;
        self.frame = comment_line(text);
        Ok(self)
    }

    /// The idle interval, or `None` when keep-alive is off.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    pub(crate) fn frame(&self) -> &Bytes {
        &self.frame
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            period: Some(Duration::from_secs(15)),
            frame: Bytes::from_static(b": keep-alive\n"),
        }
    }
}

fn comment_line(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 3);
    buf.put_u8(b':');
    if !text.is_empty() {
        buf.put_u8(b' ');
        buf.put_slice(text.as_bytes());
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// What an [`SseBody`](crate::SseBody) does when its stream yields an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// End the response normally after a final event named `error` whose data is the error's
    /// `Display` text. The client's `EventSource` receives it (listeners for `error` see a
    /// `MessageEvent`), then reconnects as it does after any end of stream. This is the default:
    /// the client learns why the stream ended. Keep secrets out of the error's `Display`.
    #[default]
    Close,
    /// Return the error from the body, which makes the server abort the response (HTTP/1.1 closes
    /// the connection mid-body, HTTP/2 resets the stream). Events sent before the error are
    /// delivered first.
    Abort,
}

/// The settings an [`SseLayer`](crate::SseLayer) hands to the bodies created under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) keep_alive: KeepAlive,
    pub(crate) retry: Option<Duration>,
    pub(crate) coalesce: usize,
    pub(crate) on_error: ErrorPolicy,
    pub(crate) open_frame: bool,
}

/// Default cap of one coalesced frame, in bytes.
pub(crate) const DEFAULT_COALESCE: usize = 16 * 1024;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_alive: KeepAlive::default(),
            retry: None,
            coalesce: DEFAULT_COALESCE,
            on_error: ErrorPolicy::default(),
            open_frame: true,
        }
    }
}

impl Settings {
    /// The shared default settings, allocated once per process.
    pub(crate) fn shared_default() -> Arc<Settings> {
        static DEFAULT: OnceLock<Arc<Settings>> = OnceLock::new();
        DEFAULT.get_or_init(Arc::default).clone()
    }

    /// The first frame of a stream: the retry hint when one is set, else an empty comment. Either
    /// way a single line with no blank line after it, so no client dispatches anything.
    pub(crate) fn open_frame(&self) -> Bytes {
        match self.retry {
            Some(retry) => {
                let mut buf = BytesMut::with_capacity(28);
                buf.put_slice(b"retry: ");
                crate::event::put_u64(&mut buf, crate::delay::millis(retry));
                buf.put_u8(b'\n');
                buf.freeze()
            }
            None => Bytes::from_static(b":\n"),
        }
    }
}

/// Setters shared by [`SseLayer`](crate::SseLayer) and [`SseBody`](crate::SseBody).
macro_rules! settings_setters {
    ($($settings:ident).+) => {
        /// Sets the keep-alive comments. Default: [`KeepAlive::new`](crate::KeepAlive::new), every
        /// 15 seconds.
        pub fn keep_alive(mut self, keep_alive: $crate::KeepAlive) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).keep_alive = keep_alive;
            self
        }

        /// Sets the reconnection time sent to the client as a `retry:` line in the first frame of
        /// the stream, in whole milliseconds, saturating at 2³¹−1 ms (about 24.8 days). Default:
        /// none (the client keeps its own, about 3 s in browsers).
        pub fn retry(mut self, retry: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).retry = Some(retry);
            self
        }

        /// Sets the most bytes gathered into one frame when several events are ready at once.
        /// Events are never split: a frame stops growing once it reaches the cap, so it may exceed
        /// it by one event. `0` sends each event in a frame of its own. Default: 16 KiB.
        pub fn coalesce(mut self, max_bytes: usize) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).coalesce = max_bytes;
            self
        }

        /// Sets what happens when the stream yields an error. Default:
        /// [`ErrorPolicy::Close`](crate::ErrorPolicy::Close).
        pub fn on_error(mut self, policy: $crate::ErrorPolicy) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).on_error = policy;
            self
        }

        /// Sets whether a first frame is sent as soon as the stream opens (the `retry:` hint, or
        /// an empty comment), so that the response headers and first bytes pass buffering
        /// proxies at once. Default: `true`.
        pub fn open_frame(mut self, enabled: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).open_frame = enabled;
            self
        }
    };
}
pub(crate) use settings_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frame_is_a_single_comment_line() {
        assert_eq!(
            KeepAlive::new().frame(),
            &Bytes::from_static(b": keep-alive\n")
        );
        assert_eq!(KeepAlive::new().text("").unwrap().frame(), ":\n");
    }

    #[test]
    fn text_refuses_line_breaks() {
        for bad in ["a\nb", "\r", "x\r\n"] {
            assert!(KeepAlive::new().text(bad).is_err());
        }
    }

    #[test]
    fn zero_interval_disables() {
        assert_eq!(KeepAlive::new().interval(Duration::ZERO).period(), None);
    }

    #[test]
    fn durations_saturate_at_the_setter() {
        assert_eq!(
            KeepAlive::new().interval(Duration::MAX).period(),
            Some(Duration::from_millis(2_147_483_647))
        );
        let settings = Settings {
            retry: Some(Duration::MAX),
            ..Settings::default()
        };
        assert_eq!(settings.open_frame(), "retry: 2147483647\n");
    }

    #[test]
    fn open_frame_carries_retry_in_millis() {
        let settings = Settings {
            retry: Some(Duration::from_millis(1500)),
            ..Settings::default()
        };
        assert_eq!(settings.open_frame(), "retry: 1500\n");
        assert_eq!(Settings::default().open_frame(), ":\n");
    }
}
