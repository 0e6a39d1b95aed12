//! What the Redis engine reads back: channel messages and the READ script's answer.

use crate::hub::broker::Snapshot;
use bytes::Bytes;
use redis::Value;
use std::time::{Duration, SystemTime};

/// A channel message `<epoch> <offset> <ms> <event>`, where `ms` is the publishing time by
/// Redis's clock (milliseconds since the Unix epoch). A message without `ms` (`<epoch>
/// <offset> <event>`, as older versions publish) is taken too: an encoded event never starts
/// with a digit. Garbage comes back as epoch `""` and offset 0, which the hub rejects and counts.
pub(super) struct Message<'a> {
    pub(super) epoch: &'a str,
    pub(super) offset: u64,
    pub(super) published: Option<SystemTime>,
    pub(super) payload: &'a [u8],
}

/// Splits a channel message.
pub(super) fn message(bytes: &[u8]) -> Message<'_> {
    let mut parts = bytes.splitn(3, |b| *b == b' ');
    let (Some(epoch), Some(offset), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Message {
            epoch: "",
            offset: 0,
            published: None,
            payload: &[],
        };
    };
    let stamped = rest
        .iter()
        .position(|b| *b == b' ')
        .and_then(|space| Some((digits(&rest[..space])?, &rest[space + 1..])));
    let (published, payload) = match stamped {
        Some((ms, payload)) => (
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            payload,
        ),
        None => (None, rest),
    };
    Message {
        epoch: std::str::from_utf8(epoch).unwrap_or(""),
        offset: digits(offset).unwrap_or(0),
        published,
        payload,
    }
}

/// A decimal number of at most 19 digits, nothing else.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => digits(bytes(other)?),
    }
}

/// The READ script's answer as a snapshot. Each entry's publishing time is its stream id's
/// milliseconds, taken relative to Redis's clock in the same answer, so its age is Redis's own
/// measure whatever this process's clock says.
pub(super) fn snapshot(value: &Value) -> Option<Snapshot> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [epoch, head, events, now] = parts.as_slice() else {
        return parts.is_empty().then(Snapshot::empty);
    };
    let epoch = std::str::from_utf8(bytes(epoch)?).ok()?;
    let redis_now = number(now)?;
    let mut snapshot = Snapshot::new(epoch, number(head)?);
    let Value::Array(events) = events else {
        return Some(snapshot);
    };
    let local_now = SystemTime::now();
    for entry in events {
        let Value::Array(entry) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) = (entry.first().and_then(bytes), entry.get(1))
        else {
            continue;
        };
        let (mut offset, mut payload) = (None, None);
        for pair in fields.chunks(2) {
            match (pair.first().and_then(bytes), pair.get(1)) {
                (Some(b"o"), Some(value)) => offset = number(value),
                (Some(b"d"), Some(value)) => payload = bytes(value),
                _ => {}
            }
        }
        // An entry without a usable offset is handed over at offset 0, which the hub rejects
        // and counts; one whose payload is missing is still a position, passed over as a hole.
        let offset = offset.unwrap_or(0);
        let payload = Bytes::copy_from_slice(payload.unwrap_or_default());
        let stamped = id.split(|b| *b == b'-').next().and_then(digits);
        match stamped {
            Some(ms) => {
                let age = Duration::from_millis(redis_now.saturating_sub(ms));
                snapshot.push_at(offset, local_now - age.min(max_age()), payload);
            }
            None => snapshot.push(offset, payload),
        }
    }
    Some(snapshot)
}

/// An age no history outlives, so that subtracting it from now never underflows.
fn max_age() -> Duration {
    Duration::from_secs(100 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn messages_split_into_their_four_parts() {
        let m = message(b"e1 7 1700000000123 data: a b\n\n");
        assert_eq!((m.epoch, m.offset), ("e1", 7));
        assert_eq!(
            m.published,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(m.payload, b"data: a b\n\n");
        for junk in [&b""[..], b"e1", b"e1 7", b"e1 x 12 data: a\n\n"] {
            let m = message(junk);
            assert!(m.offset == 0, "{:?}", String::from_utf8_lossy(junk));
        }
        let old = message(b"e1 7 data: a\n\n");
        assert_eq!((old.offset, old.published), (7, None));
        assert_eq!(old.payload, b"data: a\n\n");
    }

    #[test]
    fn snapshot_ages_come_from_redis_clock() {
        let entry = |id: &str, offset: &str, data: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk("o"), bulk(offset), bulk("d"), bulk(data)]),
            ])
        };
        let answer = Value::Array(vec![
            bulk("e1"),
            bulk("2"),
            Value::Array(vec![
                entry("1000000-0", "2", "data: b\n\n"),
                entry("996000-0", "1", "data: a\n\n"),
            ]),
            bulk("1004000"),
        ]);
        let read = snapshot(&answer).unwrap();
        assert_eq!(read.head, 2);
        let ages: Vec<u64> = read
            .events
            .iter()
            .map(|(_, at, _)| {
                let age = SystemTime::now().duration_since(at.unwrap()).unwrap();
                (age.as_millis() as u64 + 500) / 1000
            })
            .collect();
        assert_eq!(ages, [4, 8], "seconds, by Redis's clock");
        assert!(snapshot(&Value::Array(vec![])).unwrap().epoch.is_none());
        assert!(snapshot(&Value::Int(3)).is_none());
    }
}
