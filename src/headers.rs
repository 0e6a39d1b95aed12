//! The SSE header policy: the headers of an SSE response, the refusals, and the `Accept` check.

use crate::context::Refusal;
use http::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Response, StatusCode,
};

/// Turns a response whose body was built refused into the refusal: `406`; for an over-limit
/// or throttled `EventSource` client, a `200` event stream (whose body only says when to come
/// back); for any other such client, `503` with `Retry-After` drawn from the come-back window.
pub(crate) fn refuse<B>(
    response: &mut Response<B>,
    refusal: Refusal,
    comeback: bool,
    retry_after: Option<u64>,
) {
    if comeback {
        *response.status_mut() = StatusCode::OK;
        set_sse_headers(response.headers_mut());
        return;
    }
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    match refusal {
        Refusal::NotAcceptable => *response.status_mut() = StatusCode::NOT_ACCEPTABLE,
        Refusal::OverLimit | Refusal::Throttled => {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let seconds = retry_after.unwrap_or(1);
            let value = HeaderValue::from_str(&seconds.to_string())
                .unwrap_or(HeaderValue::from_static("5"));
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
}

/// Whether the response says it is an event stream (set by the crate's responders, and by
/// [`SseBody::into_http_response`](crate::SseBody::into_http_response)).
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Connection-specific headers, which HTTP/2 forbids and which HTTP/1.1 servers manage themselves.
const CONNECTION_HEADERS: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

pub(crate) fn set_sse_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers
        .entry(HeaderName::from_static("x-accel-buffering"))
        .or_insert(HeaderValue::from_static("no"));
    headers.remove(header::CONTENT_LENGTH);
    for name in CONNECTION_HEADERS {
        headers.remove(name);
    }
}

/// Whether the `Accept` header allows `text/event-stream` (no header allows anything).
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let mut any = false;
    let mut allowed = false;
    let readable = accept_ranges(headers, |media, positive| {
        any = true;
        let matches = media.eq_ignore_ascii_case("text/event-stream")
            || media.eq_ignore_ascii_case("text/*")
            || media == "*/*";
        allowed |= matches && positive;
    });
    // An unreadable Accept header says nothing usable: do not refuse on it.
    !readable || allowed || !any
}

/// Whether the `Accept` header names `text/event-stream` itself, as `EventSource` clients do.
pub(crate) fn asks_for_event_stream(headers: &HeaderMap) -> bool {
    let mut asks = false;
    accept_ranges(headers, |media, positive| {
        asks |= positive && media.eq_ignore_ascii_case("text/event-stream");
    });
    asks
}

/// Calls `f` with each media range of the `Accept` header and whether its quality is above
/// zero; `false` when a value is not readable text.
fn accept_ranges(headers: &HeaderMap, mut f: impl FnMut(&str, bool)) -> bool {
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if media.is_empty() {
                continue;
            }
            let zero_q = parts.any(|p| {
                let p = p.trim();
                p.len() > 2
                    && p[..2].eq_ignore_ascii_case("q=")
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            f(media, !zero_q);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, v.parse().unwrap());
        }
        accepts_event_stream(&headers)
    }

    #[test]
    fn accept_header_rules() {
        assert!(accepts(&[]));
        assert!(accepts(&["text/event-stream"]));
        assert!(accepts(&["Text/Event-Stream"]));
        assert!(accepts(&["application/json, */*;q=0.1"]));
        assert!(accepts(&["text/*"]));
        assert!(accepts(&["application/json", "text/event-stream"]));
        assert!(accepts(&[""]));
        assert!(!accepts(&["application/json"]));
        assert!(!accepts(&["text/html, application/xhtml+xml"]));
        assert!(!accepts(&["text/event-stream;q=0"]));
        assert!(!accepts(&["text/event-stream; q=0.0, application/json"]));
    }

    #[test]
    fn event_stream_clients_name_it() {
        let asks = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().unwrap());
            asks_for_event_stream(&headers)
        };
        assert!(asks("text/event-stream"));
        assert!(asks("application/json, Text/Event-Stream;q=0.5"));
        assert!(!asks("*/*"));
        assert!(!asks("text/event-stream;q=0"));
        assert!(!asks_for_event_stream(&HeaderMap::new()));
    }
}
