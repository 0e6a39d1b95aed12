//! Revocation: which subjects are revoked, and the switches that end their open streams.

use crate::{grants::Grants, shutdown::Shutdown, sync::lock, Event};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};
use tokio::time::Instant;

/// Name of the final event of a stream whose subject was revoked.
pub const REVOKED: &str = "revoked";

/// The revoked subjects this node remembers, and one switch per subject and credential (issue
/// time) with streams open.
pub(crate) struct Revocations {
    remember: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Switches of the subjects with open streams (or requests being authorized), by the issue
    /// time of their credential: a revocation ends only the credentials issued before it.
    watching: HashMap<Box<str>, Vec<(Option<SystemTime>, Shutdown)>>,
    /// When `watching` is this large, switches nobody holds are swept.
    sweep_at: usize,
    /// Revoked subjects: the revocation's time, and until when it is remembered.
    revoked: HashMap<Box<str>, (SystemTime, Instant)>,
}

impl Revocations {
    pub(crate) fn new(remember: Duration) -> Revocations {
        Revocations {
            remember,
            state: Mutex::default(),
        }
    }

    /// The grants, watched for their subject's revocation; `None` when it is revoked (for the
    /// time a revocation is remembered). Checked
    /// and watched under one lock with [`revoke`](Revocations::revoke), so a request authorized
    /// while its subject is being revoked either is refused or has its stream ended.
    pub(crate) fn admit(&self, grants: Grants) -> Option<Grants> {
        let Some(subject) = grants.subject_name() else {
            return Some(grants);
        };
        // An issue time in the future comes from a clock ahead of this one: it says nothing
        // about the revocations, so it counts as none until it has passed.
        let issued = grants.issued().filter(|at| *at <= SystemTime::now());
        let mut state = lock(&self.state);
        if let Some(&(at, until)) = state.revoked.get(subject) {
            if Instant::now() < until {
                if issued.is_none_or(|issued| issued <= at) {
                    return None;
                }
            } else {
                state.revoked.remove(subject);
            }
        }
        state.sweep();
        let switches = state.watching.entry(subject.into()).or_default();
        let switch = match switches.iter().find(|(at, _)| *at == issued) {
            Some((_, switch)) => switch.clone(),
            None => {
                let switch = Shutdown::revocation();
                switches.push((issued, switch.clone()));
                switch
            }
        };
        Some(grants.with_revocation(switch))
    }

    /// Revokes `subject` as of `at`: remembers it (for [`remember`](Revocations::remember)
    /// from `at`), and ends its open streams whose credential was issued at or before `at`
    /// (or has no issue time) with a final [`REVOKED`] event, even one remembered for no time.
    /// Returns how many streams it ended; `None` for a revocation already applied.
    pub(crate) fn revoke(&self, subject: &str, at: SystemTime) -> Option<usize> {
        let left = (at + self.remember)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let until = Instant::now() + crate::delay::saturate(left);
        let mut state = lock(&self.state);
        match state.revoked.get_mut(subject) {
            // This very revocation, back from the hub: already applied.
            Some(record) if record.0 == at => return None,
            Some(record) if record.0 > at => {}
            Some(record) => *record = (at, until),
            // Remembered only while it is to be; the open streams end in any case.
            None if left > Duration::ZERO => {
                state.revoked.insert(subject.into(), (at, until));
            }
            None => {}
        }
        if state.revoked.len() % 1024 == 0 {
            let now = Instant::now();
            state.revoked.retain(|_, (_, until)| *until > now);
        }
        let mut ended = Vec::new();
        if let Some(switches) = state.watching.get_mut(subject) {
            switches.retain(|(issued, switch)| {
                let revoked = issued.is_none_or(|issued| issued <= at);
                if revoked {
                    ended.push(switch.clone());
                }
                !revoked
            });
            if switches.is_empty() {
                state.watching.remove(subject);
            }
        }
        drop(state);
        let mut streams = 0;
        for switch in ended {
            streams += switch.watchers();
            switch.trigger(Some(revoked_event()));
        }
        Some(streams)
    }

    /// How many subjects have open streams being watched, for tests and counters.
    #[cfg(test)]
    fn watched(&self) -> usize {
        lock(&self.state).watching.len()
    }
}

impl State {
    /// Drops the switches nobody holds any more (their streams ended), now and then.
    fn sweep(&mut self) {
        if self.watching.len() < self.sweep_at {
            return;
        }
        self.watching.retain(|_, switches| {
            switches.retain(|(_, switch)| switch.is_held());
            !switches.is_empty()
        });
        self.sweep_at = (2 * self.watching.len()).max(1024);
    }
}

/// The final event of a revoked stream: a client recognises it by its name.
fn revoked_event() -> Event {
    Event::builder()
        .event(REVOKED)
        .data(r#"{"reason":"revoked"}"#)
        .build()
        .unwrap_or_else(|_| Event::message(REVOKED))
}

/// A revocation as it crosses a hub: `<ms since the Unix epoch> <subject in hex>` (hex, so
/// that a subject with any character, a CR included, comes back as it was).
pub(crate) fn to_message(subject: &str, at: SystemTime) -> Event {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Event::message(format!("{ms} {}", super::ticket::hex(subject.as_bytes())))
}

/// A revocation read back from a hub event; `None` for anything else.
pub(crate) fn from_message(event: &Event) -> Option<(String, SystemTime)> {
    let mut decoder = crate::decode::Decoder::new();
    let message = decoder.feed(event.as_bytes()).into_iter().next()?;
    let (ms, subject) = message.data.split_once(' ')?;
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms.parse().ok()?))?;
    let subject = String::from_utf8(super::ticket::unhex_vec(subject)?).ok()?;
    Some((subject, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_revoked_subject_is_refused_until_forgotten_or_signed_in_again() {
        let revocations = Revocations::new(HOUR);
        let alice = Grants::new().subject("alice").exact("a");
        let held = revocations.admit(alice.clone()).unwrap();
        let switch = held.revocation().unwrap().clone();
        let now = SystemTime::now();
        // Made a minute ago, so that a sign-in after it is in the past too.
        let at = now - Duration::from_secs(60);
        assert_eq!(
            revocations.revoke("alice", at),
            Some(0),
            "no body watches yet"
        );
        assert!(switch.is_triggered(), "the open stream's switch is thrown");
        assert_eq!(revocations.revoke("alice", at), None, "the same one again");
        assert!(revocations.admit(alice.clone()).is_none());
        let before = alice.clone().issued_at(at - Duration::from_secs(1));
        assert!(revocations.admit(before).is_none());
        let same = alice.clone().issued_at(at);
        assert!(revocations.admit(same).is_none(), "at it is before it");
        let after = alice.clone().issued_at(at + Duration::from_millis(1));
        assert!(revocations.admit(after).is_some(), "a sign-in after it");
        let ahead = alice.clone().issued_at(now + HOUR);
        assert!(
            revocations.admit(ahead).is_none(),
            "a clock ahead says nothing"
        );
        assert!(revocations.admit(Grants::new().subject("bob")).is_some());
        assert!(revocations.admit(Grants::new()).is_some(), "no subject");

        let old = Revocations::new(HOUR);
        let carol = old.admit(Grants::new().subject("carol")).unwrap();
        assert_eq!(old.revoke("carol", now - 2 * HOUR), Some(0));
        assert!(
            carol.revocation().unwrap().is_triggered(),
            "its streams end"
        );
        assert!(
            old.admit(Grants::new().subject("carol")).is_some(),
            "but it is not remembered"
        );
    }

    #[test]
    fn a_revocation_spares_credentials_issued_after_it() {
        let revocations = Revocations::new(HOUR);
        let now = SystemTime::now();
        let grants = |issued| Grants::new().subject("a").issued_at(issued);
        let old = revocations.admit(grants(now - HOUR / 2)).unwrap();
        let new = revocations.admit(grants(now - HOUR / 8)).unwrap();
        let ahead = revocations.admit(grants(now + HOUR)).unwrap();
        revocations.revoke("a", now - HOUR / 4);
        assert!(old.revocation().unwrap().is_triggered());
        assert!(!new.revocation().unwrap().is_triggered());
        assert!(
            ahead.revocation().unwrap().is_triggered(),
            "counted as none"
        );
        assert_eq!(revocations.watched(), 1);
    }

    #[test]
    fn revocations_cross_a_hub_as_text() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_001);
        for subject in ["alice", "a b", "multi\nline", "cr\rlf\r\n", "é", ""] {
            let event = to_message(subject, at);
            assert_eq!(from_message(&event), Some((subject.to_owned(), at)));
        }
        assert_eq!(from_message(&Event::message("nonsense")), None);
    }
}
