//! The SSE header policy: the headers of an SSE response, the refusals, and the `Accept` check.

use crate::scope::Refusal;
use http::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap, Response, StatusCode,
};
use std::time::Duration;

/// Turns a response whose body was built refused (it sends nothing) into the refusal.
pub(crate) fn refuse<B>(response: &mut Response<B>, refusal: Refusal, retry: Option<Duration>) {
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    match refusal {
        Refusal::NotAcceptable => *response.status_mut() = StatusCode::NOT_ACCEPTABLE,
        Refusal::OverLimit => {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let seconds = retry.map_or(5, |r| crate::delay::millis(r).div_ceil(1000).max(1));
            let value = HeaderValue::from_str(&seconds.to_string())
                .unwrap_or(HeaderValue::from_static("5"));
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
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
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            // An unreadable Accept header says nothing usable: do not refuse on it.
            return true;
        };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if media.is_empty() {
                continue;
            }
            any = true;
            let zero_q = parts.any(|p| {
                let p = p.trim();
                p.len() > 2
                    && p[..2].eq_ignore_ascii_case("q=")
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            let matches = media.eq_ignore_ascii_case("text/event-stream")
                || media.eq_ignore_ascii_case("text/*")
                || media == "*/*";
            if matches && !zero_q {
                return true;
            }
        }
    }
    !any
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
}
