//! Property tests: arbitrary events, encoded and then parsed by a decoder that follows the
//! WHATWG algorithm, come back exactly as they went in (data with line breaks normalised to LF).

use bytes::Bytes;
use futures_util::stream;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower_sse::{decode::Decoder, Event, EventError, Field, SseBody};

/// Text with any Unicode, salted with every kind of line break.
fn text_with_breaks() -> impl Strategy<Value = String> {
    let piece = (
        any::<String>(),
        prop_oneof!["\n", "\r", "\r\n", "", "\r\r\n", "\n\r"],
    );
    prop::collection::vec(piece, 0..6)
        .prop_map(|pieces| pieces.into_iter().map(|(s, b)| s + &b).collect())
}

/// A single-line value: any Unicode but CR and LF.
fn single_line() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace(['\r', '\n'], ""))
}

/// An id the builder takes: no control characters, no space at either end, at most 1 KiB.
fn valid_id() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| {
        let mut id: String = s.chars().filter(|c| !c.is_control()).collect();
        while id.len() > tower_sse::MAX_LAST_EVENT_ID_LEN {
            id.pop();
        }
        id.trim_matches(' ').to_owned()
    })
}

#[derive(Debug, Clone)]
struct Spec {
    name: Option<String>,
    id: Option<String>,
    data: String,
    comment: Option<String>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::option::of(single_line()),
        prop::option::of(valid_id()),
        text_with_breaks(),
        prop::option::of(single_line()),
    )
        .prop_map(|(name, id, data, comment)| Spec {
            name,
            id,
            data,
            comment,
        })
}

fn build(spec: &Spec) -> Event {
    let mut builder = Event::builder();
    if let Some(comment) = &spec.comment {
        builder = builder.comment(comment);
    }
    if let Some(name) = &spec.name {
        builder = builder.event(name);
    }
    if let Some(id) = &spec.id {
        builder = builder.id(id);
    }
    builder
        .data(&spec.data)
        .build()
        .expect("valid by construction")
}

fn normalise(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Feeds `bytes` to a decoder in chunks cut at the given points.
fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> (Vec<tower_sse::decode::Message>, Decoder) {
    let mut decoder = Decoder::new();
    let mut messages = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut start = 0;
    for point in points.into_iter().chain([bytes.len()]) {
        messages.extend(decoder.feed(&bytes[start..point]));
        start = point;
    }
    (messages, decoder)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn one_event_round_trips(spec in spec(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let event = build(&spec);
        let wire = event.as_bytes();
        prop_assert!(!wire.contains(&b'\r'), "no CR on the wire");
        prop_assert!(wire.ends_with(b"\n\n"));
        prop_assert_eq!(event.id(), spec.id.as_deref());

        let (messages, decoder) = decode_in_chunks(wire, &cuts);
        prop_assert_eq!(messages.len(), 1);
        let message = &messages[0];
        prop_assert_eq!(&message.data, &normalise(&spec.data));
        let expected_name = match spec.name.as_deref() {
            None | Some("") => "message",
            Some(name) => name,
        };
        prop_assert_eq!(&message.event, expected_name);
        prop_assert_eq!(&message.last_event_id, spec.id.as_deref().unwrap_or(""));
        prop_assert_eq!(decoder.comments(), u64::from(spec.comment.is_some()));
        prop_assert!(decoder.is_idle());
    }

    #[test]
    fn streams_through_the_body_round_trip(
        specs in prop::collection::vec(spec(), 0..12),
        cap in 0usize..300,
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let events: Vec<Event> = specs.iter().map(build).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let wire: Bytes = runtime.block_on(async {
            SseBody::new(stream::iter(events)).coalesce(cap).collect().await.unwrap().to_bytes()
        });

        let (messages, decoder) = decode_in_chunks(&wire, &cuts);
        prop_assert_eq!(messages.len(), specs.len());
        let mut last_id = String::new();
        for (message, spec) in messages.iter().zip(&specs) {
            if let Some(id) = &spec.id {
                last_id = id.clone();
            }
            prop_assert_eq!(&message.data, &normalise(&spec.data));
            prop_assert_eq!(&message.last_event_id, &last_id);
        }
        prop_assert!(decoder.is_idle());
    }

    #[test]
    fn line_breaks_in_single_line_fields_are_refused(
        before in single_line(),
        brk in prop_oneof!["\n", "\r", "\r\n"],
        after in single_line(),
    ) {
        let value = format!("{before}{brk}{after}");
        prop_assert!(matches!(
            Event::builder().event(&value).data("x").build(),
            Err(EventError::LineBreak(Field::Event))
        ));
        prop_assert!(matches!(
            Event::builder().id(&value).data("x").build(),
            Err(EventError::LineBreak(Field::Id))
        ));
        prop_assert!(matches!(
            Event::builder().comment(&value).data("x").build(),
            Err(EventError::LineBreak(Field::Comment))
        ));
    }

    /// An id the builder accepts comes back intact: as the header value a browser sends (trimmed
    /// of spaces), accepted by the server's header parser, and parsed to the same id.
    #[test]
    fn accepted_ids_round_trip_through_last_event_id(id in any::<String>()) {
        let Ok(event) = Event::builder().id(&id).data("x").build() else {
            return Ok(());
        };
        prop_assert_eq!(event.id(), Some(id.as_str()));
        let sent_back = id.trim_matches(|c| c == ' ' || c == '\t');
        prop_assert_eq!(sent_back, id.as_str());
        if id.is_empty() {
            // An empty id resets the client's last event id: it sends no header at all.
            return Ok(());
        }
        let header = http::HeaderValue::from_bytes(sent_back.as_bytes());
        prop_assert!(header.is_ok(), "a server accepts the header");
        let parsed = tower_sse::LastEventId::parse(header.unwrap().as_bytes());
        prop_assert_eq!(parsed.as_deref(), Some(id.as_str()));
    }

    #[test]
    fn ids_that_would_not_come_back_are_refused(
        core in valid_id(),
        fault in prop_oneof![
            Just((" ", "")), Just(("", " ")), Just(("\t", "")), Just(("\x01", "")),
            Just(("", "\x7f")), Just(("\u{9b}", "")),
        ],
    ) {
        let id = format!("{}{core}{}", fault.0, fault.1);
        prop_assert!(Event::builder().id(&id).data("x").build().is_err(), "{id:?}");
        prop_assert!(tower_sse::LastEventId::parse(id.as_bytes()).is_none());
    }

    #[test]
    fn ids_with_nul_are_refused(before in single_line(), after in single_line()) {
        let id = format!("{before}\0{after}");
        prop_assert!(matches!(
            Event::builder().id(&id).build(),
            Err(EventError::NulInId)
        ));
    }
}

/// JSON data: whatever text a serializer produces (raw values included) arrives as one event
/// that parses back to the same value, and can never end the event early or forge a field.
#[cfg(feature = "json")]
mod json {
    use super::*;
    use serde_json::{value::RawValue, Value};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text_with_breaks().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text_with_breaks(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON text of `value`, pretty-printed, with runs of JSON whitespace (CR and LF among
    /// them) added between tokens: still valid JSON, as a raw value may carry it.
    fn spaced_out(value: &Value, spaces: &[u8]) -> String {
        const WS: [&str; 6] = ["\n", "\r", "\r\n", " ", "\t", "\n\n"];
        let pretty = serde_json::to_string_pretty(value).unwrap();
        let mut out = String::new();
        let mut in_string = false;
        let mut escaped = false;
        for (i, c) in pretty.chars().enumerate() {
            out.push(c);
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            if c == '"' {
                in_string = true;
            } else if matches!(c, ',' | ':' | '[' | '{') {
                if let Some(&n) = spaces.get(i % spaces.len().max(1)) {
                    out.push_str(WS[n as usize % WS.len()]);
                }
            }
        }
        out
    }

    fn check(event: &Event, expected: &Value) -> Result<(), TestCaseError> {
        let wire = std::str::from_utf8(event.as_bytes()).unwrap();
        prop_assert!(!wire.contains('\r'), "no CR on the wire: {wire:?}");
        prop_assert!(wire.ends_with("\n\n"));
        let body = &wire[..wire.len() - 1];
        for line in body.lines() {
            prop_assert!(
                line.starts_with("data: ") || line.starts_with("event: "),
                "only data lines: {line:?} in {wire:?}"
            );
        }
        let mut decoder = Decoder::new();
        let messages = decoder.feed(wire.as_bytes());
        prop_assert_eq!(messages.len(), 1, "one event: {:?}", wire);
        let parsed: Value = serde_json::from_str(&messages[0].data).unwrap();
        prop_assert_eq!(&parsed, expected);
        prop_assert!(decoder.is_idle());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_json_value_is_one_event(value in json_value()) {
            check(&Event::json(&value).unwrap(), &value)?;
            let named = Event::builder().event("j").json_data(&value).build().unwrap();
            check(&named, &value)?;
        }

        #[test]
        fn raw_json_with_line_breaks_is_one_event(
            value in json_value(),
            spaces in prop::collection::vec(any::<u8>(), 1..16),
        ) {
            let text = spaced_out(&value, &spaces);
            let raw = RawValue::from_string(text).unwrap();
            check(&Event::json(&raw).unwrap(), &value)?;
        }
    }

    #[test]
    fn a_pretty_raw_value_arrives_whole() {
        let raw = RawValue::from_string("{\n  \"a\": 1,\n\n  \"b\": 2\n}".to_owned()).unwrap();
        let event = Event::json(&raw).unwrap();
        assert_eq!(
            event.as_bytes(),
            "data: {\ndata:   \"a\": 1,\ndata: \ndata:   \"b\": 2\ndata: }\n\n"
        );
    }

    /// A serializer may hand serde_json any text as a raw value, valid JSON or not.
    struct Forged(&'static str);

    impl serde::Serialize for Forged {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut raw = serializer.serialize_struct("$serde_json::private::RawValue", 1)?;
            raw.serialize_field("$serde_json::private::RawValue", self.0)?;
            raw.end()
        }
    }

    #[test]
    fn a_forged_raw_value_cannot_inject_an_event() {
        let forged = Forged("1\n\nevent: injected\nid: \ndata: forged");
        let event = Event::json(&forged).unwrap();
        assert_eq!(
            event.as_bytes(),
            "data: 1\ndata: \ndata: event: injected\ndata: id: \ndata: data: forged\n\n"
        );
        let messages = Decoder::new().feed(event.as_bytes());
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].event, "message");
        assert_eq!(messages[0].last_event_id, "");
    }
}
