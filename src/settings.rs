//! The per-response settings an [`SseLayer`](crate::SseLayer) hands to its bodies, and the
//! setters that [`SseLayer`](crate::SseLayer) and [`SseBody`](crate::SseBody) share.

use crate::{delay, event::put_u64, keep_alive::KeepAlive, BoxError};
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
    /// The base delay after which a client turned away by a stream limit comes back.
    pub(crate) over_limit_retry: Duration,
    /// The query parameter read as the `Last-Event-ID` when the header is absent.
    pub(crate) last_event_id_query: Option<std::sync::Arc<str>>,
    /// How long a stream lives at most, before jitter; `None`: for ever.
    pub(crate) max_lifetime: Option<Duration>,
    /// The base delay after which a client whose stream reached its lifetime comes back.
    pub(crate) lifetime_retry: Duration,
}

/// Default query parameter read as the `Last-Event-ID` when the header is absent: the name of
/// the `EventSource` property a page reads it from.
pub(crate) const DEFAULT_LAST_EVENT_ID_QUERY: &str = "lastEventId";

/// Default cap of one coalesced frame, in bytes.
pub(crate) const DEFAULT_COALESCE: usize = 16 * 1024;

/// Default base delay after which a client turned away by a stream limit comes back.
pub(crate) const DEFAULT_OVER_LIMIT_RETRY: Duration = Duration::from_secs(5);

/// Default base delay after which a client whose stream reached its lifetime comes back.
pub(crate) const DEFAULT_LIFETIME_RETRY: Duration = Duration::from_secs(1);

/// The comment of the frame that ends a stream at its lifetime.
pub(crate) const LIFETIME_COMMENT: &[u8] = b": stream lifetime reached, reconnect\n";

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
            over_limit_retry: DEFAULT_OVER_LIMIT_RETRY,
            last_event_id_query: Some(DEFAULT_LAST_EVENT_ID_QUERY.into()),
            max_lifetime: None,
            lifetime_retry: DEFAULT_LIFETIME_RETRY,
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
                put_u64(&mut buf, delay::millis(retry));
                buf.put_u8(b'\n');
                buf.freeze()
            }
            None => Bytes::from_static(b":\n"),
        }
    }

    /// The whole body of a response refused by a stream limit, for an `EventSource` client: a
    /// `retry:` line with a jittered delay (it takes effect at once, with no event), a comment
    /// saying why, and the blank line that ends the block (some clients apply a `retry:` only
    /// then; with no `data`, browsers dispatch nothing). The stream then ends and the client
    /// reconnects after that delay.
    pub(crate) fn comeback_frame(&self) -> Bytes {
        comeback(self.over_limit_retry, b": over capacity, come back later\n")
    }

    /// The last frame of a stream that reached its [`max_lifetime`](crate::SseLayer::max_lifetime):
    /// like [`comeback_frame`](Settings::comeback_frame), with the lifetime's own base delay
    /// and comment.
    pub(crate) fn lifetime_frame(&self) -> Bytes {
        comeback(self.lifetime_retry, LIFETIME_COMMENT)
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

/// A block that makes an `EventSource` come back: `retry:` with a delay drawn between once and
/// twice `base`, the `comment` line, and the blank line that ends the block.
fn comeback(base: Duration, comment: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(24 + comment.len());
    buf.put_slice(b"retry: ");
    put_u64(&mut buf, delay::millis(delay::jittered(base)));
    buf.put_u8(b'\n');
    buf.put_slice(comment);
    buf.put_u8(b'\n');
    buf.freeze()
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
        /// between once and twice [`lifetime_retry`](Self::lifetime_retry), because a browser
        /// `EventSource` waits exactly `retry` ms, with no jitter of its own. The block has no
        /// `data`, so browsers dispatch nothing; the client reconnects with its
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
        /// assert!((1000..=2000).contains(&retry.parse::<u64>().unwrap()));
        /// # }
        /// ```
        pub fn max_lifetime(mut self, lifetime: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).max_lifetime = Some(lifetime);
            self
        }

        /// Sets the base of the reconnection delay sent when a stream reaches its
        /// [`max_lifetime`](Self::max_lifetime): the client is told to come back after a delay
        /// drawn between once and twice this. Saturates at 2³¹−1 ms.
        #[doc = $default]
        /// 1 second.
        pub fn lifetime_retry(mut self, delay: std::time::Duration) -> Self {
            std::sync::Arc::make_mut(&mut self.$($settings).+).lifetime_retry = delay;
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
        assert_eq!(settings.open_frame(), "retry: 1500\n");
        assert_eq!(Settings::default().open_frame(), ":\n");
        let longest = Settings {
            retry: Some(Duration::MAX),
            ..Settings::default()
        };
        assert_eq!(longest.open_frame(), "retry: 2147483647\n");
    }

    /// The `retry:` value of a come-back block, after checking the rest of its bytes.
    fn comeback_retry(frame: &[u8], comment: &str) -> u64 {
        let text = std::str::from_utf8(frame).unwrap();
        let rest = text.strip_prefix("retry: ").unwrap();
        let digits = rest.strip_suffix(&format!("\n{comment}\n\n")).unwrap();
        digits.parse().unwrap()
    }

    #[test]
    fn come_back_blocks_end_with_a_blank_line_and_jitter_their_retry() {
        let settings = Settings {
            over_limit_retry: Duration::from_secs(5),
            lifetime_retry: Duration::from_millis(300),
            ..Settings::default()
        };
        let over = comeback_retry(
            &settings.comeback_frame(),
            ": over capacity, come back later",
        );
        assert!((5000..=10_000).contains(&over), "{over}");
        let lifetime = comeback_retry(
            &settings.lifetime_frame(),
            ": stream lifetime reached, reconnect",
        );
        assert!((300..=600).contains(&lifetime), "{lifetime}");
        assert_eq!(
            Settings::default().lifetime_retry,
            Duration::from_secs(1),
            "the documented default"
        );
        let longest = Settings {
            lifetime_retry: Duration::MAX,
            ..Settings::default()
        };
        assert_eq!(
            longest.lifetime_frame(),
            "retry: 2147483647\n: stream lifetime reached, reconnect\n\n"
        );
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
