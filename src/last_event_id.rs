//! The `Last-Event-ID` request header, parsed into a typed value.

use http::{HeaderMap, HeaderName};
use std::{fmt, ops::Deref};

/// The `Last-Event-ID` header name.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The longest `Last-Event-ID` value that is accepted, in bytes; longer values are ignored.
pub const MAX_LAST_EVENT_ID_LEN: usize = 1024;

/// The id of the last event a reconnecting client received, from its `Last-Event-ID` header.
///
/// [`SseLayer`](crate::SseLayer) parses the header and puts this value in the request's
/// extensions. Absent, empty, repeated, non-UTF-8, longer than [`MAX_LAST_EVENT_ID_LEN`] bytes or
/// control-character-bearing values (tab excepted) are all treated as absent: a client following
/// the spec never sends them, so they carry no position to resume from.
///
/// ```
/// use http::HeaderMap;
/// use tower_sse::LastEventId;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("last-event-id", "42".parse().unwrap());
/// assert_eq!(LastEventId::from_headers(&headers).unwrap().as_str(), "42");
///
/// headers.insert("last-event-id", "x".repeat(5000).parse().unwrap());
/// assert!(LastEventId::from_headers(&headers).is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LastEventId(Box<str>);

impl LastEventId {
    /// Parses the header from a request's headers, or `None` if it is absent or unusable.
    pub fn from_headers(headers: &HeaderMap) -> Option<LastEventId> {
        let mut values = headers.get_all(LAST_EVENT_ID).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        LastEventId::parse(value.as_bytes())
    }

    /// Checks a raw header value, or `None` if it is unusable.
    pub fn parse(value: &[u8]) -> Option<LastEventId> {
        if value.is_empty() || value.len() > MAX_LAST_EVENT_ID_LEN {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        if text.chars().any(|c| c.is_control() && c != '\t') {
            return None;
        }
        Some(LastEventId(text.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for LastEventId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LastEventId").field(&&*self.0).finish()
    }
}

impl fmt::Display for LastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(LAST_EVENT_ID, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn accepts_plain_ids() {
        for id in ["1", "abc-42", "a\tb", "ünï"] {
            let parsed = LastEventId::parse(id.as_bytes()).unwrap();
            assert_eq!(parsed.as_str(), id);
        }
        assert_eq!(&*LastEventId::from_headers(&headers(&[b"7"])).unwrap(), "7");
    }

    #[test]
    fn odd_values_are_absent() {
        assert!(LastEventId::from_headers(&HeaderMap::new()).is_none());
        assert!(LastEventId::from_headers(&headers(&[b""])).is_none());
        assert!(LastEventId::from_headers(&headers(&[b"\xff\xfe"])).is_none());
        assert!(LastEventId::from_headers(&headers(&[b"1", b"2"])).is_none());
        let long = vec![b'a'; MAX_LAST_EVENT_ID_LEN + 1];
        assert!(LastEventId::from_headers(&headers(&[&long])).is_none());
        let max = vec![b'a'; MAX_LAST_EVENT_ID_LEN];
        assert!(LastEventId::from_headers(&headers(&[&max])).is_some());
        assert!(LastEventId::parse(b"a\x01b").is_none());
        assert!(LastEventId::parse(b"a\x7fb").is_none());
        assert!(LastEventId::parse(b"a\0b").is_none());
        assert!(LastEventId::parse(b"a\nb").is_none());
    }
}
