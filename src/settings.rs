//! The per-response settings an [`SseLayer`](crate::SseLayer) hands to its bodies, and the
//! setters that [`SseLayer`](crate::SseLayer) and [`SseBody`](crate::SseBody) share.

use crate::{
    come_back::{self, Cause, Window},
    delay,
    event::put_u64,
    keep_alive::KeepAlive,
    BoxError,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::{
    fmt,
    panic::{self, AssertUnwindSafe},
    sync::{Arc, OnceLock},
    time::Duration,
};

/// Name of the final event an [`SseBody`](crate::SseBody) sends when its stream fails under
/// [`ErrorPolicy::Close`] or [`ErrorPolicy::CloseWithMessage`].
///
/// Not `error`: an event named `error` is delivered to `EventSource.onerror`, the handler that
/// applications use for network failures.
pub const STREAM_ERROR: &str = "stream-error";

/// The data of the [`STREAM_ERROR`] event under [`ErrorPolicy::Close`]: it names no detail.
pub const STREAM_ERROR_DATA: &str = r#"{"reason":"error"}"#;

/// What an [`SseBody`](crate::SseBody) does when its stream yields an error (or panics).
///
/// Whatever the policy, the error is reported on the server first: to the
/// [`on_stream_error`](crate::SseLayer::on_stream_error) hook if one is set, and as a `tracing`
/// warning; the response's [`Disconnect`](crate::Disconnect) ends with
/// [`CloseReason::Error`](crate::CloseReason::Error).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use http_body_util::BodyExt;
/// use tower_sse::{ErrorPolicy, Event, SseBody};
///
/// let items = vec![Ok(Event::message("a")), Err(std::io::Error::other("db password=hunter2"))];
/// let body = SseBody::new(futures_util::stream::iter(items)).open_frame(false);
/// let bytes = body.collect().await.unwrap().to_bytes();
/// // The default policy tells the client that the stream failed, never why.
/// assert_eq!(
///     bytes,
///     "data: a\n\nevent: stream-error\nretry: 5000\ndata: {\"reason\":\"error\"}\n\n"
/// );
/// # let _ = ErrorPolicy::Close;
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// End the response normally after a final [`STREAM_ERROR`] event whose data is
    /// [`STREAM_ERROR_DATA`], with a `retry:` back-off
    /// ([`error_retry`](crate::SseLayer::error_retry)), so clients come back later instead of
    /// reconnecting into the same error at once. No error text reaches the client. The default.
    #[default]
    Close,
    /// Like [`Close`](ErrorPolicy::Close), but the event's data is the error's `Display` text
    /// (line breaks handled as for any data). An explicit opt-in: error messages often name
    /// hosts, queries or credentials.
    CloseWithMessage,
    /// Return the error from the body, which makes the server abort the response (HTTP/1.1 closes
    /// the connection without the final chunk, HTTP/2 resets the stream), so the client sees a
    /// network error. Events the stream yielded before the error are handed to the server
    /// first, and the body yields to the scheduler before the error, so that the server writes
    /// them out before it aborts (hyper 1 drops what it has buffered but not written).
    ///
    /// Those bytes reach the client, but a browser may not show them: Chromium can drop event
    /// data it has received but not yet parsed when a transfer ends abnormally (an aborted body
    /// after 2 MiB lost its last events in most runs). For browsers, use
    /// [`Close`](ErrorPolicy::Close): it ends the response normally, so every event before the
    /// error is dispatched.
    Abort,
}

/// Called with a stream's error on the server; see
/// [`on_stream_error`](crate::SseLayer::on_stream_error).
#[derive(Clone)]
pub(crate) struct ErrorHook(Arc<dyn Fn(&StreamError) + Send + Sync>);

/// The error a stream failed with, as the error hook sees it.
type StreamError = dyn std::error::Error + Send + Sync;

impl ErrorHook {
    pub(crate) fn new(hook: impl Fn(&StreamError) + Send + Sync + 'static) -> Self {
        ErrorHook(Arc::new(hook))
    }
}

impl fmt::Debug for ErrorHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorHook")
    }
}

impl PartialEq for ErrorHook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ErrorHook {}

/// The settings an [`SseLayer`](crate::SseLayer) hands to the bodies created under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) keep_alive: KeepAlive,
    pub(crate) retry: Option<Duration>,
    pub(crate) coalesce: usize,
    pub(crate) on_error: ErrorPolicy,
    pub(crate) error_retry: Duration,
    pub(crate) error_hook: Option<ErrorHook>,
    pub(crate) open_frame: bool,
    /// The window every come-back `retry:` is drawn from.
    pub(crate) come_back: Window,
    /// The query parameter read as the `Last-Event-ID` when the header is absent.
    pub(crate) last_event_id_query: Option<std::sync::Arc<str>>,
    /// How long a stream lives at most, before jitter; `None`: for ever.
    pub(crate) max_lifetime: Option<Duration>,
    /// Bytes of the padding comment sent with the open frame; 0: none.
    pub(crate) open_padding: usize,
}

/// Default query parameter read as the `Last-Event-ID` when the header is absent: the name of
/// the `EventSource` property a page reads it from.
pub(crate) const DEFAULT_LAST_EVENT_ID_QUERY: &str = "lastEventId";

/// Default cap of one coalesced frame, in bytes.
pub(crate) const DEFAULT_COALESCE: usize = 16 * 1024;

/// The most bytes [`open_padding`](crate::SseLayer::open_padding) sends: 64 KiB.
pub(crate) const MAX_OPEN_PADDING: usize = 64 * 1024;

/// Default back-off sent with the final [`STREAM_ERROR`] event.
pub(crate) const DEFAULT_ERROR_RETRY: Duration = Duration::from_secs(5);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep_alive: KeepAlive::default(),
            retry: None,
            coalesce: DEFAULT_COALESCE,
            on_error: ErrorPolicy::default(),
            error_retry: DEFAULT_ERROR_RETRY,
            error_hook: None,
            open_frame: true,
            come_back: come_back::DEFAULT_WINDOW,
            last_event_id_query: Some(DEFAULT_LAST_EVENT_ID_QUERY.into()),
            max_lifetime: None,
            open_padding: 0,
        }
    }
}

impl Settings {
    /// The shared default settings, allocated once per process.
    pub(crate) fn shared_default() -> Arc<Settings> {
        static DEFAULT: OnceLock<Arc<Settings>> = OnceLock::new();
        DEFAULT.get_or_init(Arc::default).clone()
    }

    /// The first frame of a stream: the retry hint when one is set, else an empty comment (when
    /// [`open_frame`](crate::SseLayer::open_frame) is on), then the padding comment if one is
    /// set. No blank line follows, so no client dispatches anything. `None`: no first frame.
    pub(crate) fn open_frame(&self) -> Option<Bytes> {
        let padding = self.open_padding.min(MAX_OPEN_PADDING);
        if padding == 0 {
            return self.open_frame.then(|| match self.retry {
                Some(retry) => {
                    let mut buf = BytesMut::with_capacity(28);
                    put_retry_line(&mut buf, retry);
                    buf.freeze()
                }
                None => Bytes::from_static(b":\n"),
            });
        }
        let mut buf = BytesMut::with_capacity(28 + padding);
        if self.open_frame {
            match self.retry {
                Some(retry) => put_retry_line(&mut buf, retry),
                None => buf.put_slice(b":\n"),
            }
        }
        // One comment line of exactly `padding` bytes (two at least: `:` and the line end).
        buf.put_u8(b':');
        buf.put_bytes(b' ', padding.saturating_sub(2));
        buf.put_u8(b'\n');
        Some(buf.freeze())
    }

    /// The block that tells a client to come back, for `cause`, its `retry:` drawn from the
    /// [`come_back`](crate::SseLayer::come_back) window.
    pub(crate) fn come_back(&self, cause: Cause) -> Bytes {
        come_back::block(&self.come_back, cause)
    }

    /// Tells the server about a stream's error: the hook (a panic in it is contained) and
    /// `tracing`.
    pub(crate) fn report(&self, err: &BoxError) {
        tracing::warn!(error = %err, policy = ?self.on_error, "SSE event stream failed");
        if let Some(ErrorHook(hook)) = &self.error_hook {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| hook(&**err)));
        }
    }

    /// The final event of a stream that failed, under the `Close` policies.
    pub(crate) fn error_event(&self, err: &BoxError) -> Bytes {
        let builder = crate::Event::builder()
            .event(STREAM_ERROR)
            .retry(self.error_retry);
        let builder = match self.on_error {
            ErrorPolicy::CloseWithMessage => builder.data(err.to_string()),
            _ => builder.data(STREAM_ERROR_DATA),
        };
        builder
            .build()
            .map(crate::Event::into_bytes)
            .unwrap_or_else(|_| Bytes::from_static(b"event: stream-error\ndata: \n\n"))
    }
}

/// A `retry:` line, in whole milliseconds, saturated.
fn put_retry_line(buf: &mut BytesMut, retry: Duration) {
    buf.put_slice(b"retry: ");
    put_u64(buf, delay::millis(retry));
    buf.put_u8(b'\n');
}

/// Setters shared by [`SseLayer`](crate::SseLayer) and [`SseBody`](crate::SseBody). `$default`
/// says where a setting not set comes from.
macro_rules! settings_setters {
    ($default:literal, $($settings:ident).+) => {
        /// Sets the keep-alive comments.
        #[doc = $default]
        /// [`KeepAlive::new`](crate::KeepAlive::new), every 15 seconds.
        pub fn keep_alive(mut self, keep_alive: $crate::KeepAlive) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).keep_alive = keep_alive;
            self
        }

        /// Sets the reconnection time sent to the client as a `retry:` line in the first frame of
        /// the stream, in whole milliseconds, saturating at 2³¹−1 ms (about 24.8 days).
        #[doc = $default]
        /// none (the client keeps its own, about 3 s in browsers).
        pub fn retry(mut self, retry: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).retry = Some(retry);
            self
        }

        /// Sets the most bytes gathered into one frame when several events are ready at once.
        /// Events are never split: a frame stops growing once it reaches the cap, so it may exceed
        /// it by one event. `0` sends each event in a frame of its own.
        #[doc = $default]
        /// 16 KiB.
        pub fn coalesce(mut self, max_bytes: usize) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).coalesce = max_bytes;
            self
        }

        /// Sets what happens when the stream yields an error.
        #[doc = $default]
        /// [`ErrorPolicy::Close`](crate::ErrorPolicy::Close): a final `stream-error` event
        /// with no detail.
        pub fn on_error(mut self, policy: $crate::ErrorPolicy) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).on_error = policy;
            self
        }

        /// Sets the reconnection delay sent (as `retry:`) with the final `stream-error` event,
        /// so clients do not reconnect into the same error at once; saturates at 2³¹−1 ms.
        #[doc = $default]
        /// 5 seconds.
        pub fn error_retry(mut self, delay: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).error_retry = delay;
            self
        }

        /// Calls `hook` on the server with the error whenever a stream fails (also when it
        /// panics), whatever the [`ErrorPolicy`](crate::ErrorPolicy). A panic in the hook is
        /// contained. The error is also logged with `tracing` at level `WARN`.
        #[doc = $default]
        /// none.
        pub fn on_stream_error(
            mut self,
            hook: impl Fn(&(dyn std::error::Error + Send + Sync + 'static)) + Send + Sync + 'static,
        ) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).error_hook =
                Some($crate::settings::ErrorHook::new(hook));
            self
        }

        /// Sets whether a first frame is sent as soon as the stream opens (the `retry:` hint, or
        /// an empty comment), so that the response headers and first bytes pass buffering
        /// proxies at once.
        #[doc = $default]
        /// `true`.
        pub fn open_frame(mut self, enabled: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).open_frame = enabled;
            self
        }

        /// Ends the stream after at most `lifetime`, telling the client to reconnect, so that
        /// long-lived connections rotate (across the instances behind a load balancer, or off
        /// an instance being deployed).
        ///
        /// Each stream ends at a point drawn uniformly between 0.9 × `lifetime` and `lifetime`
        /// after its first poll, independently of every other stream, so streams opened
        /// together do not end together. An idle stream sees that point when Tokio's timer
        /// fires, which it does on whole milliseconds: it may end up to 1 ms after it (a
        /// lifetime under a millisecond ends at the first one). The clock starts at the body's first poll and is
        /// never reset: not by events, not by keep-alives; it runs whether the stream is idle
        /// or busy. At that point the body ends the way a [`Shutdown`](crate::Shutdown) does:
        /// it sends the events its stream has ready (up to one [`coalesce`](Self::coalesce)d
        /// frame), then a last block and ends:
        ///
        /// ```text
        /// retry: <ms>
        /// : stream lifetime reached, reconnect
        ///
        /// ```
        ///
        /// (`retry: <ms>\n: stream lifetime reached, reconnect\n\n`), where `<ms>` is drawn
        /// from the [`come_back`](Self::come_back) window, because a browser `EventSource`
        /// waits exactly `retry` ms, with no jitter of its own. The block has no `data`, so
        /// browsers dispatch nothing; the client reconnects with its
        /// `Last-Event-ID` and resumes where it was (with a hub subscription, with no gap).
        /// The stream's [`Disconnect`](crate::Disconnect) ends with
        /// [`CloseReason::Rotated`](crate::CloseReason::Rotated); each end is counted in
        /// [`StreamStats::rotated`](crate::StreamStats::rotated) and logged with `tracing` at
        /// `DEBUG`.
        ///
        /// With a [`Shutdown`](crate::Shutdown), whichever comes first ends the stream, with
        /// its own last frame (a shutdown's final event, or the block above). Durations
        /// saturate at 2³¹−1 ms (about 24.8 days); zero ends the stream right after its first
        /// poll (after the open frame, if any), with the block above.
        #[doc = $default]
        /// none: streams last as long as their stream and the client.
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
        /// use std::time::Duration;
        /// use http_body_util::BodyExt;
        /// use tokio::time::Instant;
        /// use tower_sse::{Event, KeepAlive, SseBody};
        ///
        /// let endless = futures_util::stream::pending::<Event>();
        /// let body = SseBody::new(endless)
        ///     .open_frame(false)
        ///     .keep_alive(KeepAlive::disabled())
        ///     .max_lifetime(Duration::from_secs(600));
        /// let start = Instant::now();
        /// let bytes = body.collect().await.unwrap().to_bytes();
        /// let lived = start.elapsed();
        /// assert!(lived >= Duration::from_secs(540) && lived <= Duration::from_secs(600));
        ///
        /// let text = std::str::from_utf8(&bytes).unwrap();
        /// let retry = text.strip_prefix("retry: ").unwrap();
        /// let retry = retry.strip_suffix("\n: stream lifetime reached, reconnect\n\n").unwrap();
        /// assert!((1000..=5000).contains(&retry.parse::<u64>().unwrap()));
        /// # }
        /// ```
        pub fn max_lifetime(mut self, lifetime: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).max_lifetime = Some(lifetime);
            self
        }

        /// Sets the window from which the `retry:` of every come-back block is drawn: the
        /// block that ends a stream on purpose (its [`max_lifetime`](Self::max_lifetime), a
        /// [`Shutdown`](crate::Shutdown), a hub closing or evicting it) and the whole body of
        /// a refusal (a stream limit, the [`Admission`](crate::Admission) budget). A browser
        /// `EventSource` has no jitter of its own: it waits exactly `retry` ms, so streams cut
        /// together come back together unless each is told a different delay. Each block
        /// draws its own, uniformly in the window; a `503` refusal sends one, rounded up to
        /// whole seconds, as `Retry-After`. The ends may come in either order; each saturates
        /// at 2³¹−1 ms. (A stream that fails sends [`error_retry`](Self::error_retry) instead:
        /// an error is not an end on purpose.)
        #[doc = $default]
        /// 1 to 5 seconds.
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
        /// use std::time::Duration;
        /// use http_body_util::BodyExt;
        /// use tower_sse::{Event, SseBody};
        ///
        /// let endless = futures_util::stream::pending::<Event>();
        /// let body = SseBody::new(endless)
        ///     .open_frame(false)
        ///     .max_lifetime(Duration::ZERO)
        ///     .come_back(Duration::from_millis(200)..=Duration::from_millis(800));
        /// let bytes = body.collect().await.unwrap().to_bytes();
        /// let text = std::str::from_utf8(&bytes).unwrap();
        /// let ms: u64 = text["retry: ".len()..text.find('\n').unwrap()].parse().unwrap();
        /// assert!((200..=800).contains(&ms));
        /// # }
        /// ```
        pub fn come_back(mut self, window: std::ops::RangeInclusive<std::time::Duration>) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).come_back =
                $crate::come_back::Window::new(window);
            self
        }

        /// Sends a comment of `bytes` bytes (at most 64 KiB) right after the open frame, for
        /// proxies that hold a response until they have a few KiB of it: some corporate and
        /// antivirus HTTP proxies, and old browsers reading through the `XDomainRequest`
        /// polyfills, which is why `EventSource` polyfills pad their streams with 2 KiB. A stream
        /// that only sends a 13-byte keep-alive every 15 s can otherwise sit unseen in such a
        /// buffer until the proxy's own time-out. The padding is one comment line (`:`,
        /// spaces, a line end: two bytes at least, so `1` sends two), so no client dispatches
        /// anything; it is sent once, even with
        /// [`open_frame`](Self::open_frame) off (then alone), and costs nothing on the
        /// connections after it is written. `0` sends none. Keep-alives are unchanged.
        #[doc = $default]
        /// `0`.
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread")] async fn main() {
        /// use http_body_util::BodyExt;
        /// use tower_sse::{Event, SseBody};
        ///
        /// let events = futures_util::stream::iter([Event::message("hi")]);
        /// let body = SseBody::new(events).open_frame(false).open_padding(2048);
        /// let bytes = body.collect().await.unwrap().to_bytes();
        /// assert_eq!(bytes.len(), 2048 + "data: hi\n\n".len());
        /// assert!(bytes.starts_with(b":   ") && bytes.ends_with(b" \ndata: hi\n\n"));
        /// # }
        /// ```
        pub fn open_padding(mut self, bytes: usize) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).open_padding = bytes;
            self
        }
    };
}
pub(crate) use settings_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_frame_carries_retry_in_millis() {
        let settings = Settings {
            retry: Some(Duration::from_millis(1500)),
            ..Settings::default()
        };
        assert_eq!(settings.open_frame().unwrap(), "retry: 1500\n");
        assert_eq!(Settings::default().open_frame().unwrap(), ":\n");
        let longest = Settings {
            retry: Some(Duration::MAX),
            ..Settings::default()
        };
        assert_eq!(longest.open_frame().unwrap(), "retry: 2147483647\n");
    }

    #[test]
    fn padding_is_one_comment_line_of_the_size_asked_for() {
        let padded = |open_frame: bool, bytes: usize, retry: Option<Duration>| {
            Settings {
                open_frame,
                open_padding: bytes,
                retry,
                ..Settings::default()
            }
            .open_frame()
        };
        assert_eq!(
            padded(true, 4, None).unwrap(),
            ":\n:  \n",
            "after the empty comment"
        );
        assert_eq!(
            padded(true, 3, Some(Duration::from_secs(1))).unwrap(),
            "retry: 1000\n: \n"
        );
        assert_eq!(padded(false, 1, None).unwrap(), ":\n", "two bytes at least");
        assert_eq!(padded(false, 0, None), None);
        assert_eq!(
            padded(false, usize::MAX, None).unwrap().len(),
            MAX_OPEN_PADDING
        );
        let big = padded(false, 2048, None).unwrap();
        assert_eq!(big.len(), 2048);
        assert_eq!(big.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn error_event_names_no_detail_unless_asked() {
        let err: BoxError = "secret: postgres://u:pw@db".into();
        let settings = Settings::default();
        assert_eq!(
            settings.error_event(&err),
            "event: stream-error\nretry: 5000\ndata: {\"reason\":\"error\"}\n\n"
        );
        let settings = Settings {
            on_error: ErrorPolicy::CloseWithMessage,
            error_retry: Duration::from_secs(30),
            ..Settings::default()
        };
        assert_eq!(
            settings.error_event(&err),
            "event: stream-error\nretry: 30000\ndata: secret: postgres://u:pw@db\n\n"
        );
    }

    #[test]
    fn a_panicking_hook_is_contained() {
        let settings = Settings {
            error_hook: Some(ErrorHook::new(|_| panic!("hook failed"))),
            ..Settings::default()
        };
        settings.report(&BoxError::from("boom"));
    }
}
