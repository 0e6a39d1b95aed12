//! One million generated events through the encoder: every valid one is well formed (no CR on
//! the wire, only known field lines, one event/id/retry line at most, decoded back exactly by the
//! spec decoder, retry within client timers), every invalid one is a typed error naming the
//! fault, and nothing panics.

use std::time::Duration;
use tower_sse::{decode::Decoder, Event, EventError, Field};

const EVENTS: u64 = 1_000_000;

/// xorshift64*: fast, deterministic, good enough to spread inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Text weighted towards what breaks SSE framing.
    fn text(&mut self) -> String {
        const PALETTE: &[&str] = &[
            "a", "b", "z", " ", "  ", ":", ": ", "\r", "\n", "\r\n", "\n\r", "\0", "\t", "é", "中",
            "😀", "\u{FEFF}", "\u{2028}", "data", "event", "id", "retry", "data: x", "\u{85}",
        ];
        let len = self.below(12);
        (0..len)
            .map(|_| PALETTE[self.below(PALETTE.len() as u64) as usize])
            .collect()
    }

    fn maybe_text(&mut self) -> Option<String> {
        (self.below(3) > 0).then(|| self.text())
    }
}

fn has_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// What the builder must say of an id, from the rule as documented: line breaks first, then
/// NUL, other control characters, a space at either end.
fn id_error(id: &str) -> Option<fn(&EventError) -> bool> {
    if has_break(id) {
        Some(|e| matches!(e, EventError::LineBreak(Field::Id)))
    } else if id.contains('\0') {
        Some(|e| matches!(e, EventError::NulInId))
    } else if id.chars().any(char::is_control) {
        Some(|e| matches!(e, EventError::ControlInId))
    } else if id.starts_with(' ') || id.ends_with(' ') {
        Some(|e| matches!(e, EventError::SpaceAroundId))
    } else {
        None
    }
}

fn check_one(rng: &mut Rng) {
    let comment = rng.maybe_text();
    let name = rng.maybe_text();
    let id = rng.maybe_text();
    let retry = (rng.below(4) == 0).then(|| rng.below(1 << 40));
    let data = rng.maybe_text();

    let mut builder = Event::builder();
    if let Some(c) = &comment {
        builder = builder.comment(c);
    }
    if let Some(n) = &name {
        builder = builder.event(n);
    }
    if let Some(i) = &id {
        builder = builder.id(i);
    }
    if let Some(r) = retry {
        builder = builder.retry(Duration::from_millis(r));
    }
    if let Some(d) = &data {
        builder = builder.data(d);
    }
    let result = builder.build();

    // The first invalid field, in call order, is the error.
    let expected_error = if comment.as_deref().is_some_and(has_break) {
        Some(Field::Comment)
    } else if name.as_deref().is_some_and(has_break) {
        Some(Field::Event)
    } else if id.as_deref().and_then(id_error).is_some() {
        Some(Field::Id)
    } else {
        None
    };
    let event = match (expected_error, result) {
        (None, Ok(event)) => event,
        (Some(Field::Id), Err(err)) => {
            let expected = id_error(id.as_deref().unwrap()).unwrap();
            assert!(expected(&err), "{id:?} gave {err:?}");
            return;
        }
        (Some(field), Err(EventError::LineBreak(got))) => {
            assert_eq!(got, field);
            return;
        }
        (expected, got) => panic!("expected {expected:?}, got {got:?}"),
    };

    let wire = std::str::from_utf8(event.as_bytes()).expect("UTF-8 in, UTF-8 out");
    assert!(!wire.contains('\r'), "CR on the wire: {wire:?}");
    let has_fields = name.is_some() || id.is_some() || retry.is_some() || data.is_some();
    assert_eq!(wire.ends_with("\n\n"), has_fields, "{wire:?}");
    let (mut events, mut ids, mut retries, mut data_lines) = (0, 0, 0, 0);
    for line in wire.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("data: ") {
            data_lines += 1;
        } else if line.starts_with("event: ") {
            events += 1;
        } else if line.starts_with("id: ") {
            ids += 1;
        } else if line.starts_with("retry: ") {
            retries += 1;
        } else {
            assert!(line.starts_with(": "), "injected line {line:?} in {wire:?}");
        }
    }
    assert_eq!(events, usize::from(name.is_some()));
    assert_eq!(ids, usize::from(id.is_some()));
    assert_eq!(retries, usize::from(retry.is_some()));
    let expected_lines = data.as_deref().map_or(0, |d| {
        d.replace("\r\n", "\n")
            .replace('\r', "\n")
            .split('\n')
            .count()
    });
    assert_eq!(data_lines, expected_lines, "{wire:?}");

    let mut decoder = Decoder::new();
    let messages = decoder.feed(wire.as_bytes());
    assert_eq!(decoder.comments(), u64::from(comment.is_some()));
    // Retry saturates where JavaScript timers overflow.
    assert_eq!(decoder.retry(), retry.map(|r| r.min(i32::MAX as u64)));
    if let Some(id) = &id {
        assert_eq!(decoder.last_event_id(), id);
    }
    match &data {
        Some(d) => {
            assert_eq!(messages.len(), 1, "{wire:?}");
            assert_eq!(
                messages[0].data,
                d.replace("\r\n", "\n").replace('\r', "\n")
            );
            let expected_name = name
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or("message");
            assert_eq!(messages[0].event, expected_name);
        }
        None => assert!(messages.is_empty()),
    }
}

#[test]
fn a_million_generated_events_are_well_formed_or_refused() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0005_EED0_F55E);
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..EVENTS / 2 {
                    check_one(&mut rng);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("no panic and no malformed event");
    }
}
