//! Keep-alive comments, and the idle timer that sends them.

use crate::event::{check_comment, EventError};
use bytes::{BufMut, Bytes, BytesMut};
use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

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

    /// Sets the comment text. Default: `keep-alive`.
    ///
    /// # Errors
    ///
    /// [`EventError::LineBreak`] when the text holds a CR or LF.
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

/// The keep-alive clock of one body: a comment is due once the stream has been idle for the
/// interval since the last frame.
///
/// The deadline moves forward with every frame without touching the timer; the timer is only
/// re-armed when it fires early, so a busy stream costs no timer work at all.
#[derive(Debug, Default)]
pub(crate) struct IdleTimer {
    // Boxed so the body is `Unpin` when its stream is; created on the first idle poll.
    sleep: Option<Pin<Box<Sleep>>>,
    deadline: Option<Instant>,
}

impl IdleTimer {
    /// Restarts the interval: a frame was just sent.
    pub(crate) fn bump(&mut self, keep_alive: &KeepAlive) {
        if let Some(period) = keep_alive.period() {
            self.deadline = Some(Instant::now() + period);
        }
    }

    /// Ready with the keep-alive frame once the interval has passed since the last frame (or
    /// since the first poll, before any frame). Never ready when keep-alive is off.
    pub(crate) fn poll(&mut self, keep_alive: &KeepAlive, cx: &mut Context<'_>) -> Poll<Bytes> {
        let Some(period) = keep_alive.period() else {
            return Poll::Pending;
        };
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + period);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            ready!(sleep.as_mut().poll(cx));
            let now = Instant::now();
            if now >= deadline {
                self.deadline = Some(now + period);
                return Poll::Ready(keep_alive.frame().clone());
            }
        }
    }
}

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
    }
}
