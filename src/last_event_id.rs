//! The `Last-Event-ID` request header, parsed into a typed value.

use http::{HeaderMap, HeaderName};
use std::{fmt, ops::Deref};

/// The `Last-Event-ID` header name.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The longest event id, in bytes: [`EventBuilder::id`](crate::EventBuilder::id) refuses longer
/// ids, and a longer `Last-Event-ID` value is ignored.
pub const MAX_LAST_EVENT_ID_LEN: usize = 1024;

/// Why a text cannot be an event id that comes back intact in a `Last-Event-ID` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdFault {
    /// A CR or LF, which would end the `id:` line early.
    LineBreak,
    /// A NUL, which makes clients ignore the id.
    Nul,
    /// Another control character (tab, DEL, C1): servers refuse such a header with `400`.
    Control,
    /// A leading or trailing space, which clients trim from the header they send back.
    EdgeSpace,
    /// Longer than [`MAX_LAST_EVENT_ID_LEN`].
    TooLong,
}

/// The one rule for event ids, shared by the event builder and the header parser: an id is
/// accepted exactly when a client can send it back unchanged.
pub(crate) fn id_fault(id: &str) -> Option<IdFault> {
    let bytes = id.as_bytes();
    let fault = if memchr::memchr2(b'\r', b'\n', bytes).is_some() {
        IdFault::LineBreak
    } else if memchr::memchr(0, bytes).is_some() {
        IdFault::Nul
    } else if id.chars().any(char::is_control) {
        IdFault::Control
    } else if id.starts_with(' ') || id.ends_with(' ') {
        IdFault::EdgeSpace
    } else if id.len() > MAX_LAST_EVENT_ID_LEN {
        IdFault::TooLong
    } else {
        return None;
    };
    Some(fault)
}

/// The id of the last event a reconnecting client received, from its `Last-Event-ID` header.
///
/// [`SseLayer`](crate::SseLayer) parses the header and puts this value in the request's
/// extensions. Absent, empty, repeated and non-UTF-8 values are treated as absent, and so is any
/// value that [`EventBuilder::id`](crate::EventBuilder::id) would refuse (longer than
/// [`MAX_LAST_EVENT_ID_LEN`] bytes, control characters, leading or trailing spaces): the same
/// rule on both sides, so every id the crate sends comes back, and nothing else is taken for one.
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

    /// The id a query string carries in parameter `name` (percent-decoded, `+` as a space), by
    /// the same rule as the header: `None` when the parameter is absent, repeated or unusable.
    ///
    /// A freshly constructed browser `EventSource` sends no `Last-Event-ID`; a page that kept
    /// the last id it saw (in `localStorage`, say) can put it in the URL of its first connect.
    /// [`SseLayer`](crate::SseLayer) reads the `lastEventId` parameter this way when the header
    /// is absent ([`SseLayer::last_event_id_query`](crate::SseLayer::last_event_id_query)).
    ///
    /// ```
    /// use tower_sse::LastEventId;
    ///
    /// let id = LastEventId::from_query(Some("room=1&lastEventId=ab%2D7"), "lastEventId");
    /// assert_eq!(id.unwrap().as_str(), "ab-7");
    /// assert!(LastEventId::from_query(Some("lastEventId=1&lastEventId=2"), "lastEventId").is_none());
    /// assert!(LastEventId::from_query(None, "lastEventId").is_none());
    /// ```
    pub fn from_query(query: Option<&str>, name: &str) -> Option<LastEventId> {
        // Decoded to bytes, not lossily to text: a value that is not UTF-8 is unusable.
        let decode = |part: &str| -> Vec<u8> {
            percent_encoding::percent_decode(part.replace('+', " ").as_bytes()).collect()
        };
        let mut values = query?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .filter(|(key, _)| decode(key) == name.as_bytes())
            .map(|(_, value)| decode(value));
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        LastEventId::parse(&value)
    }

    /// Checks a raw header value, or `None` if it is unusable.
    pub fn parse(value: &[u8]) -> Option<LastEventId> {
        if value.is_empty() || value.len() > MAX_LAST_EVENT_ID_LEN {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        if id_fault(text).is_some() {
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
        for id in ["1", "abc-42", "a b", "ünï"] {
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
        assert!(LastEventId::parse(b"a\tb").is_none());
        assert!(LastEventId::parse(" lead".as_bytes()).is_none());
        assert!(LastEventId::parse("trail ".as_bytes()).is_none());
        assert!(LastEventId::parse("c1\u{85}".as_bytes()).is_none());
    }

    #[test]
    fn query_ids_follow_the_header_rule() {
        let q = |query: &str| LastEventId::from_query(Some(query), "lastEventId");
        assert_eq!(q("lastEventId=a+b").unwrap().as_str(), "a b");
        assert_eq!(q("x=1&lastEventId=%C3%BC").unwrap().as_str(), "ü");
        for unusable in [
            "lastEventId=",
            "lastEventId=%0A",
            "lastEventId=+lead",
            "lastEventId=%FF",
            "lasteventid=1",
            "x=1",
        ] {
            assert!(q(unusable).is_none(), "{unusable}");
        }
        let long = format!("lastEventId={}", "a".repeat(MAX_LAST_EVENT_ID_LEN + 1));
        assert!(q(&long).is_none());
    }

    #[test]
    fn id_rule_names_each_fault() {
        assert_eq!(id_fault("ok-1 2"), None);
        assert_eq!(id_fault(""), None);
        assert_eq!(id_fault("a\rb"), Some(IdFault::LineBreak));
        assert_eq!(id_fault("a\0b"), Some(IdFault::Nul));
        assert_eq!(id_fault("a\x01b"), Some(IdFault::Control));
        assert_eq!(id_fault("a\x7fb"), Some(IdFault::Control));
        assert_eq!(id_fault(" a"), Some(IdFault::EdgeSpace));
        assert_eq!(id_fault("a "), Some(IdFault::EdgeSpace));
        assert_eq!(id_fault(&"x".repeat(MAX_LAST_EVENT_ID_LEN)), None);
        assert_eq!(
            id_fault(&"x".repeat(MAX_LAST_EVENT_ID_LEN + 1)),
            Some(IdFault::TooLong)
        );
    }
}
