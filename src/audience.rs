//! An event's audience: the subjects who may receive it, and how it crosses a broker.
//!
//! The audience never reaches a client: it is not part of the event's bytes. A hub subscriber
//! made with [`Subscription::granted`](crate::hub::Subscription::granted) receives an event
//! with an audience only when its subject is in it; every other subscriber never receives it.

use bytes::{BufMut, Bytes, BytesMut};
use std::{
    hash::{BuildHasher, RandomState},
    sync::{Arc, OnceLock},
};

/// The subjects an event is for; shared by every clone of the event.
pub(crate) type Audience = Arc<Subjects>;

/// An audience: its subjects, and a key of each (a hash, the same for the whole process), so
/// that a subscriber looks for its own key in a flat list of integers, and compares strings
/// only on a match.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Subjects {
    keys: Box<[u64]>,
    names: Box<[Box<str>]>,
}

impl Subjects {
    pub(crate) fn names(&self) -> &[Box<str>] {
        &self.names
    }
}

/// The key of a subject: one hash function for the whole process.
fn key(subject: &str) -> u64 {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    STATE.get_or_init(RandomState::new).hash_one(subject)
}

/// The audience of these subjects, without repeats.
pub(crate) fn of<I>(subjects: I) -> Audience
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    let mut names: Vec<Box<str>> = subjects
        .into_iter()
        .map(|s| s.into().into_boxed_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    Arc::new(Subjects {
        keys: names.iter().map(|name| key(name)).collect(),
        names: names.into(),
    })
}

/// Who reads a subscription, for events with an audience: its grants' subject and its key.
#[derive(Debug)]
pub(crate) struct Viewer {
    subject: Box<str>,
    key: u64,
}

impl Viewer {
    pub(crate) fn new(subject: &str) -> Viewer {
        Viewer {
            subject: subject.into(),
            key: key(subject),
        }
    }
}

/// Whether a subscriber read by `viewer` (none: an anonymous one) may receive an event with
/// `audience` (none: everyone who may read its topic).
pub(crate) fn admits(audience: Option<&Audience>, viewer: Option<&Viewer>) -> bool {
    match (audience, viewer) {
        (None, _) => true,
        (Some(audience), Some(viewer)) => audience
            .keys
            .iter()
            .zip(audience.names.iter())
            .any(|(key, name)| *key == viewer.key && **name == *viewer.subject),
        (Some(_), None) => false,
    }
}

/// The first byte of an audience prefix on the broker wire. An encoded event never starts with
/// it (its lines start with a field name or `:`), so a payload without it is a bare event.
const MARK: u8 = b'@';

/// An event's bytes as they cross a broker: `@` and each subject as `<length>:<bytes>`, a line
/// feed, then the event, when it has an audience; the event alone when it has none.
pub(crate) fn to_wire(audience: Option<&Audience>, event: &Bytes) -> Bytes {
    let Some(audience) = audience else {
        return event.clone();
    };
    let size = audience.names.iter().map(|s| s.len() + 21).sum::<usize>();
    let mut buf = BytesMut::with_capacity(2 + size + event.len());
    buf.put_u8(MARK);
    for subject in audience.names.iter() {
        buf.put_slice(subject.len().to_string().as_bytes());
        buf.put_u8(b':');
        buf.put_slice(subject.as_bytes());
    }
    buf.put_u8(b'\n');
    buf.put_slice(event);
    buf.freeze()
}

/// Splits a broker payload into its audience and the event's bytes; `None` when it starts with
/// an audience prefix that is not well formed (a truncated length, a subject that is not UTF-8).
pub(crate) fn from_wire(payload: Bytes) -> Option<(Option<Audience>, Bytes)> {
    if payload.first() != Some(&MARK) {
        return Some((None, payload));
    }
    let mut rest = &payload[1..];
    let mut subjects = Vec::new();
    loop {
        match rest.first() {
            Some(b'\n') => break,
            Some(_) => {}
            None => return None,
        }
        let colon = rest.iter().position(|b| *b == b':')?;
        let digits = &rest[..colon];
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let value = rest.get(colon + 1..colon + 1 + len)?;
        subjects.push(std::str::from_utf8(value).ok()?.to_owned());
        rest = &rest[colon + 1 + len..];
    }
    let start = payload.len() - rest.len() + 1;
    // Sorted again: the wire is not trusted to keep the order the search needs.
    Some((Some(of(subjects)), payload.slice(start..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audience_crosses_the_wire_and_back() {
        let audience = of(["é", "alice", "", "bob:x\n@1:", "alice"]);
        assert_eq!(audience.names().len(), 4, "without repeats");
        let event = Bytes::from_static(b"data: hi\n\n");
        let wire = to_wire(Some(&audience), &event);
        let (back, bytes) = from_wire(wire).unwrap();
        assert_eq!(back, Some(audience));
        assert_eq!(bytes, event);
        let (none, bare) = from_wire(event.clone()).unwrap();
        assert!(none.is_none());
        assert_eq!(bare, event);
    }

    #[test]
    fn a_broken_prefix_is_refused() {
        for bad in [
            &b"@"[..],
            b"@5:abc\ndata: x\n\n",
            b"@x:abc\n",
            b"@:abc\n",
            b"@3:abc",
            b"@2:\xff\xfe\ndata: x\n\n",
        ] {
            assert!(from_wire(Bytes::from_static(bad)).is_none(), "{bad:?}");
        }
        let (empty, _) = from_wire(Bytes::from_static(b"@\ndata: x\n\n")).unwrap();
        let empty = empty.unwrap();
        assert!(empty.names().is_empty(), "an empty audience");
        assert!(!admits(Some(&empty), Some(&Viewer::new(""))), "is nobody");
    }

    #[test]
    fn who_is_admitted() {
        let viewer = Viewer::new;
        let audience = of(["carol", "alice", "dave", "bob"]);
        for who in ["alice", "bob", "carol", "dave"] {
            assert!(admits(Some(&audience), Some(&viewer(who))), "{who}");
        }
        let audience = of(["alice"]);
        assert!(admits(None, None));
        assert!(admits(None, Some(&viewer("bob"))));
        assert!(admits(Some(&audience), Some(&viewer("alice"))));
        assert!(!admits(Some(&audience), Some(&viewer("bob"))));
        assert!(!admits(Some(&audience), Some(&viewer("alic"))));
        assert!(
            !admits(Some(&audience), None),
            "an anonymous subscriber never"
        );
    }
}
