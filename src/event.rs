//! One Server-Sent Event and its wire encoding; the docs are on [`Event`] and [`EventBuilder`].

use crate::{
    audience::{self, Audience},
    come_back::Cause,
    delay,
    last_event_id::{id_fault, IdFault},
};
use bytes::{BufMut, Bytes, BytesMut};
use std::{error::Error as StdError, fmt, time::Duration};

/// One Server-Sent Event, already encoded for the wire.
///
/// Built with [`Event::builder`], or [`Event::message`] for a plain data event. An event is
/// encoded once, when it is built, into the exact bytes that go on the wire; cloning it is O(1)
/// (it holds a [`Bytes`]), so the same event can be sent to any number of clients without being
/// copied or encoded again.
///
/// # Encoding
///
/// The encoding follows the WHATWG HTML "Server-sent events" section:
///
/// - data is split into one `data:` line per line; LF, CRLF and a lone CR each count as one line
///   break, so every line reaches the client as written (with breaks normalised to LF);
/// - a trailing line break in data is kept: the client receives it back;
/// - every field is written as `name: value`; a client strips exactly one space after the colon,
///   so a value that starts with a space keeps it;
/// - lines end with LF only, and every event ends with a blank line;
/// - `event`, `id` and comments are single-line fields: a CR or LF in them is refused with an
///   [`EventError`] (it would end the field early and let the rest be read as another field);
/// - an `id` is accepted only if a client can send it back unchanged in `Last-Event-ID` (see
///   [`EventBuilder::id`]).
///
/// ```
/// use tower_sse::Event;
///
/// let event = Event::message("a\r\nb\rc\n");
/// assert_eq!(event.as_bytes(), "data: a\ndata: b\ndata: c\ndata: \n\n");
/// assert_eq!(Event::message(" lead").as_bytes(), "data:  lead\n\n");
/// ```
///
/// # Empty data
///
/// Following the spec, a client dispatches an event when its block has at least one `data` field:
/// `data("")` is sent as `data: ` and dispatched with empty data. An event with no data at all
/// (only `event`, `id` or `retry`) is not dispatched by a browser's `EventSource`, though its `id`
/// and `retry` still take effect; some other clients ignore such blocks entirely, so put an `id`
/// in an event that also carries data. An event with comments only is written without the blank
/// line, so that no client dispatches it.
///
/// ```
/// use tower_sse::Event;
///
/// assert_eq!(Event::message("").as_bytes(), "data: \n\n");
/// let comment = Event::builder().comment("ping").build().unwrap();
/// assert_eq!(comment.as_bytes(), ": ping\n");
/// assert!(!comment.is_dispatchable());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    bytes: Bytes,
    /// Where the `id` value sits in `bytes`; `id_start == 0` means no id (an empty id has a
    /// non-zero start and `id_len == 0`). An id can never start at offset 0 because `id: `
    /// precedes it.
    id_start: u32,
    id_len: u32,
    /// Set on the hub's own last events (evicted, closed): the body that sends this event ends
    /// its stream after it with a come-back block for this cause.
    come_back: Option<Cause>,
    /// The subjects this event is for (none: everyone who may read its topic); never written.
    audience: Option<Audience>,
}

impl Event {
    /// Starts building an event.
    pub fn builder() -> EventBuilder {
        EventBuilder::default()
    }

    /// Starts building an event, spelled as axum's `Event::default()`, so that a handler ported
    /// from axum's `Sse` keeps its event chains as they are: the same setters, and the
    /// [`EventBuilder`] is itself an item an [`SseBody`](crate::SseBody) streams (it is built as
    /// the body reads it; an invalid one fails the stream like any stream error).
    ///
    /// ```
    /// use tower_sse::Event;
    ///
    /// let event = Event::default().event("tick").id("7").data("now").build().unwrap();
    /// assert_eq!(event.as_bytes(), "event: tick\nid: 7\ndata: now\n\n");
    /// ```
    #[allow(clippy::should_implement_trait)] // Returns the builder, not an `Event`.
    pub fn default() -> EventBuilder {
        EventBuilder::default()
    }

    /// An event with only data, dispatched by clients as a `message` event.
    ///
    /// Data may contain any text; every kind of line break is handled. This cannot fail.
    ///
    /// ```
    /// let event = tower_sse::Event::message("a\r\nb");
    /// assert_eq!(event.as_bytes(), "data: a\ndata: b\n\n");
    /// ```
    pub fn message(data: impl AsRef<str>) -> Event {
        let data = data.as_ref();
        let size = DataSize::of(data);
        let mut buf = BytesMut::with_capacity(size.capacity + 1);
        write_data(&mut buf, data, size);
        buf.put_u8(b'\n');
        Event {
            bytes: buf.freeze(),
            id_start: 0,
            id_len: 0,
            come_back: None,
            audience: None,
        }
    }

    /// An event that carries data serialized as JSON (feature `json`); see
    /// [`EventBuilder::json_data`] for how raw JSON text with line breaks is written.
    ///
    /// # Errors
    ///
    /// [`EventError::Json`] when the value cannot be serialized.
    ///
    /// ```
    /// # #[cfg(feature = "json")] {
    /// let event = tower_sse::Event::json(&[1, 2, 3]).unwrap();
    /// assert_eq!(event.as_bytes(), "data: [1,2,3]\n\n");
    /// # }
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Event, EventError> {
        Event::builder().json_data(value).build()
    }

    /// The encoded bytes, exactly as they are written to the client.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The event's `id`, if it has one.
    pub fn id(&self) -> Option<&str> {
        if self.id_start == 0 {
            return None;
        }
        let start = self.id_start as usize;
        let end = start + self.id_len as usize;
        // The range was cut from a `&str` at ASCII boundaries, so it is always valid UTF-8.
        std::str::from_utf8(&self.bytes[start..end]).ok()
    }

    /// Length of the encoding in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (an event built with no fields); an empty event sends nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// An event that writes nothing.
    pub(crate) fn empty() -> Event {
        Event {
            bytes: Bytes::new(),
            id_start: 0,
            id_len: 0,
            come_back: None,
            audience: None,
        }
    }

    /// This event, marked as the last of its stream: the body that sends it adds a come-back
    /// block for `cause` after it.
    pub(crate) fn ending_stream(mut self, cause: Cause) -> Event {
        self.come_back = Some(cause);
        self
    }

    /// The cause of the come-back block that must follow this event, if it ends its stream.
    pub(crate) fn come_back(&self) -> Option<Cause> {
        self.come_back
    }

    /// Whether this event ends with a blank line, that is whether it carries any field besides
    /// comments. Comment-only events are written as comment lines alone so that no client can take
    /// them for an (empty) event.
    pub fn is_dispatchable(&self) -> bool {
        self.bytes.ends_with(b"\n\n")
    }

    /// Returns this event with an `id` field added, or `Ok(self)` unchanged if it already has one.
    ///
    /// Used by fan-out code that numbers events: the encoding is copied once, here, not per client.
    /// A comment-only event is returned unchanged, since an id there would turn it into an event.
    ///
    /// # Errors
    ///
    /// The errors of [`EventBuilder::id`] for an id that would not come back intact, and
    /// [`EventError::TooLarge`] past 4 GiB.
    ///
    /// ```
    /// let event = tower_sse::Event::message("x").with_id_if_missing("7").unwrap();
    /// assert_eq!(event.as_bytes(), "data: x\nid: 7\n\n");
    /// ```
    pub fn with_id_if_missing(self, id: impl AsRef<str>) -> Result<Event, EventError> {
        if self.id_start != 0 || !self.is_dispatchable() {
            return Ok(self);
        }
        let id = id.as_ref();
        check_id(id)?;
        let body = &self.bytes[..self.bytes.len() - 1];
        let mut buf = BytesMut::with_capacity(self.bytes.len() + id.len() + 5);
        buf.put_slice(body);
        buf.put_slice(b"id: ");
        let id_start = buf.len();
        buf.put_slice(id.as_bytes());
        buf.put_slice(b"\n\n");
        Ok(Event {
            bytes: buf.freeze(),
            id_start: offset(id_start)?,
            id_len: offset(id.len())?,
            come_back: None,
            audience: self.audience,
        })
    }

    /// This event, for the given subjects only: a hub subscriber made with
    /// [`Subscription::granted`](crate::hub::Subscription::granted) receives it, from the
    /// history or live, only when its grants' [`subject`](crate::Grants::subject_name) is one of
    /// them; an anonymous subscriber (one made without grants) never does. The audience is not
    /// part of the bytes a client receives, and it crosses a [broker](crate::hub::broker) with
    /// the event. An empty audience is nobody. The bytes are not copied. Each subscriber finds
    /// itself in the audience by a hash of its subject (one integer per subject to compare),
    /// so a check costs a few nanoseconds for a small audience and grows with its size.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures_util::StreamExt;
    /// use tower_sse::{hub::Hub, Event, Grants};
    ///
    /// let hub = Hub::new();
    /// let team = hub.topic("team");
    /// let grants = |who: &str| Grants::new().subject(who).exact("team");
    /// let mut bob = team.subscribe(None).granted(&grants("bob")).unwrap();
    /// team.publish(Event::message("for alice").with_audience(["alice"])).await.unwrap();
    /// team.publish(Event::message("for everyone")).await.unwrap();
    /// let got = bob.next().await.unwrap();
    /// assert!(got.as_bytes().starts_with(b"data: for everyone\n"), "bob never sees alice's");
    /// # }
    /// ```
    pub fn with_audience<I>(mut self, subjects: I) -> Event
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.audience = Some(audience::of(subjects));
        self
    }

    /// The subjects this event is for, if it has an audience
    /// ([`with_audience`](Event::with_audience)).
    pub fn audience(&self) -> Option<&[Box<str>]> {
        self.audience.as_deref().map(audience::Subjects::names)
    }

    /// Whether a subscriber read by `viewer` (none: anonymous) may receive the event.
    pub(crate) fn admits(&self, viewer: Option<&audience::Viewer>) -> bool {
        audience::admits(self.audience.as_ref(), viewer)
    }

    /// The event a broker receives: its bytes are what crosses to the other hubs, the audience
    /// (when there is one) ahead of the event's own bytes, so that any broker that carries the
    /// bytes carries the audience. Never sent to a client.
    pub(crate) fn for_broker(self) -> Event {
        match &self.audience {
            None => self,
            Some(audience) => Event {
                bytes: audience::to_wire(Some(audience), &self.bytes),
                id_start: 0,
                id_len: 0,
                come_back: None,
                audience: None,
            },
        }
    }

    /// An event read back from a broker ([`for_broker`](Event::for_broker)'s bytes), audience
    /// included; anything else is refused, as by [`from_encoded`](Event::from_encoded).
    pub(crate) fn from_wire(payload: Bytes) -> Option<Event> {
        let (audience, bytes) = audience::from_wire(payload)?;
        let mut event = Event::from_encoded(bytes)?;
        event.audience = audience;
        Some(event)
    }
}

impl Event {
    /// An event from an encoding this crate wrote, read back from elsewhere (a broker shared by
    /// many servers), without an `id`. Anything else is refused, so bytes from outside can never
    /// inject a field, an id or a second event into a stream: valid UTF-8, no CR, one field per
    /// line (`data`, `event`, `retry` with digits, or a comment), no blank line but the final one.
    pub(crate) fn from_encoded(bytes: Bytes) -> Option<Event> {
        let text = std::str::from_utf8(&bytes).ok()?;
        if text.is_empty() {
            // What an empty builder makes: an event that writes nothing.
            return Some(Event {
                bytes,
                id_start: 0,
                id_len: 0,
                come_back: None,
                audience: None,
            });
        }
        if text.contains('\r') || !text.ends_with('\n') {
            return None;
        }
        let dispatchable = text.ends_with("\n\n");
        let body = if dispatchable {
            &text[..text.len() - 2]
        } else {
            &text[..text.len() - 1]
        };
        if body.is_empty() {
            return None;
        }
        for line in body.split('\n') {
            let ok = if let Some(retry) = line.strip_prefix("retry: ") {
                !retry.is_empty() && retry.len() <= 10 && retry.bytes().all(|b| b.is_ascii_digit())
            } else if line.starts_with("event: ") {
                // Any name the builder takes, the empty one included (clients read it as
                // `message`): what this crate encodes must come back from a broker unchanged.
                true
            } else {
                line.starts_with(':') || line.starts_with("data:")
            };
            // A comment-only event must stay one: any field would need the blank line.
            if !ok || (!dispatchable && !line.starts_with(':')) {
                return None;
            }
        }
        Some(Event {
            bytes,
            id_start: 0,
            id_len: 0,
            come_back: None,
            audience: None,
        })
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Event")
            .field(&String::from_utf8_lossy(&self.bytes))
            .finish()
    }
}

impl From<&str> for Event {
    fn from(data: &str) -> Self {
        Event::message(data)
    }
}

impl From<String> for Event {
    fn from(data: String) -> Self {
        Event::message(data)
    }
}

impl From<&String> for Event {
    fn from(data: &String) -> Self {
        Event::message(data)
    }
}

impl From<EventBuilder> for Result<Event, EventError> {
    fn from(builder: EventBuilder) -> Self {
        builder.build()
    }
}

/// Builds an [`Event`]; created by [`Event::builder`].
///
/// Fields are written in the order they are set. `data` may be called more than once: each call
/// adds lines, as if the texts were joined with a line break. `event`, `id` and `retry` may be set
/// once each. Errors are kept until [`build`](EventBuilder::build), which reports the first one.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{Event, EventError, Field};
///
/// let event = Event::builder()
///     .event("chat")
///     .id("42")
///     .retry(Duration::from_secs(3))
///     .data("hello\nworld")
///     .build()
///     .unwrap();
///
/// assert_eq!(
///     event.as_bytes(),
///     "event: chat\nid: 42\nretry: 3000\ndata: hello\ndata: world\n\n"
/// );
/// assert_eq!(event.id(), Some("42"));
///
/// // A line break in a single-line field is an error, not an injected field.
/// let forged = Event::builder().event("chat\ndata: forged").build();
/// assert!(matches!(forged, Err(EventError::LineBreak(Field::Event))));
/// ```
#[must_use = "an event builder does nothing until `build` is called"]
pub struct EventBuilder {
    /// Short fields (event, id, retry, comments) are staged here, on the stack, until the data
    /// (or `build`) tells how large the event is: most events then cost one exact allocation.
    head: [u8; HEAD],
    head_len: usize,
    /// The encoding once allocated; from then on, every field is written here.
    buf: BytesMut,
    id_start: usize,
    id_len: usize,
    set: u8,
    error: Option<EventError>,
    audience: Option<Audience>,
}

const HEAD: usize = 64;

impl Default for EventBuilder {
    fn default() -> Self {
        EventBuilder {
            head: [0; HEAD],
            head_len: 0,
            buf: BytesMut::new(),
            id_start: 0,
            id_len: 0,
            set: 0,
            error: None,
            audience: None,
        }
    }
}

impl fmt::Debug for EventBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBuilder")
            .field("written", &self.len())
            .field("error", &self.error)
            .finish()
    }
}

const SET_EVENT: u8 = 1;
const SET_ID: u8 = 2;
const SET_RETRY: u8 = 4;
const HAS_FIELD: u8 = 8;

impl EventBuilder {
    /// Adds data. Any text is allowed; LF, CRLF and lone CR each start a new `data:` line.
    pub fn data(mut self, data: impl AsRef<str>) -> Self {
        let data = data.as_ref();
        let size = DataSize::of(data);
        self.spill(size.capacity);
        write_data(&mut self.buf, data, size);
        self.set |= HAS_FIELD;
        self
    }

    /// Adds data serialized as JSON (feature `json`).
    ///
    /// Compact JSON has no raw line break, so it is one `data:` line. A value that carries its
    /// own text, such as a `serde_json::value::RawValue` (feature `raw_value` of serde_json,
    /// which any crate in the build may switch on) or a pretty-printed one, may hold CR or LF
    /// between tokens: that text then goes through the same line handling as
    /// [`data`](EventBuilder::data), so a raw value can never end the event early or forge a
    /// field. The client receives the JSON text with its line breaks as LF, which parses to the
    /// same value.
    ///
    /// # Errors
    ///
    /// [`build`](EventBuilder::build) fails with [`EventError::Json`] when the value cannot be
    /// serialized.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json_data<T: serde::Serialize>(mut self, value: T) -> Self {
        if self.error.is_some() {
            return self;
        }
        self.spill(128);
        let mark = self.buf.len();
        self.buf.put_slice(b"data: ");
        if let Err(err) = serde_json::to_writer((&mut self.buf).writer(), &value) {
            self.buf.truncate(mark);
            self.error = Some(EventError::Json(err));
            return self;
        }
        let text = mark + 6;
        if memchr::memchr2(b'\r', b'\n', &self.buf[text..]).is_some() {
            // Raw text with line breaks: written again as data lines. Rare, so the copy is fine.
            let json = self.buf.split_off(text);
            self.buf.truncate(mark);
            match std::str::from_utf8(&json) {
                Ok(json) => write_data(&mut self.buf, json, DataSize::of(json)),
                Err(_) => {
                    self.error = Some(EventError::Json(serde::ser::Error::custom(
                        "JSON text is not UTF-8",
                    )));
                    return self;
                }
            }
        } else {
            self.buf.put_u8(b'\n');
        }
        self.set |= HAS_FIELD;
        self
    }

    /// Sets the event name (the `event` field), which clients use as the event type.
    /// Without it, clients dispatch a `message` event. Must not contain CR or LF.
    pub fn event(mut self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        if self.once(SET_EVENT, Field::Event) && self.single_line(name, Field::Event) {
            self.field(b"event: ", name);
        }
        self
    }

    /// Sets the event `id`; the client sends it back in `Last-Event-ID` when it reconnects.
    /// An empty id resets the client's last event id.
    ///
    /// Only ids that come back unchanged are accepted: at most
    /// [`MAX_LAST_EVENT_ID_LEN`](crate::MAX_LAST_EVENT_ID_LEN) bytes, no control characters
    /// (a CR or LF would end the line; clients ignore an id with a NUL; servers answer `400` to
    /// a header with another one, and browsers then give up for good), and no leading or
    /// trailing space (browsers trim it from the header). [`LastEventId`](crate::LastEventId)
    /// applies the same rule to what comes back.
    ///
    /// # Errors
    ///
    /// [`build`](EventBuilder::build) then fails with [`EventError::LineBreak`],
    /// [`EventError::NulInId`], [`EventError::ControlInId`], [`EventError::SpaceAroundId`] or
    /// [`EventError::IdTooLong`].
    ///
    /// ```
    /// use tower_sse::{Event, EventError};
    ///
    /// assert!(Event::builder().id("room-7:42").data("x").build().is_ok());
    /// let err = Event::builder().id(" 42").data("x").build().unwrap_err();
    /// assert!(matches!(err, EventError::SpaceAroundId));
    /// ```
    pub fn id(mut self, id: impl AsRef<str>) -> Self {
        let id = id.as_ref();
        if !self.once(SET_ID, Field::Id) {
            return self;
        }
        if let Err(err) = check_id(id) {
            self.fail(err);
            return self;
        }
        self.id_start = self.len() + 4;
        self.id_len = id.len();
        self.field(b"id: ", id);
        self
    }

    /// Sets the client's reconnection time (the `retry` field), sent in whole milliseconds.
    /// Saturates at 2³¹−1 ms (about 24.8 days): beyond that, JavaScript timers overflow and
    /// clients would reconnect at once.
    pub fn retry(mut self, delay: Duration) -> Self {
        if self.once(SET_RETRY, Field::Retry) {
            let mut digits = [0u8; 20];
            let digits = u64_digits(delay::millis(delay), &mut digits);
            self.put_line(&[b"retry: ", digits]);
            self.set |= HAS_FIELD;
        }
        self
    }

    /// Makes the event for these subjects only: see [`Event::with_audience`]. Never written to
    /// the wire.
    pub fn audience<I>(mut self, subjects: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.audience = Some(audience::of(subjects));
        self
    }

    /// Adds a comment line, which clients ignore. Must not contain CR or LF.
    ///
    /// An event made of comments alone is written without the closing blank line, so that no
    /// client dispatches it as an empty event.
    pub fn comment(mut self, text: impl AsRef<str>) -> Self {
        let text = text.as_ref();
        if self.single_line(text, Field::Comment) {
            self.put_line(&[b": ", text.as_bytes()]);
        }
        self
    }

    /// Finishes the event, or returns the first error met while building it.
    ///
    /// # Errors
    ///
    /// The first of: a line break in a single-line field ([`EventError::LineBreak`]), an id
    /// that would not come back intact (see [`id`](EventBuilder::id)), a field set twice
    /// ([`EventError::Repeated`]), JSON that failed to serialize (`EventError::Json`, feature
    /// `json`), or an event over 4 GiB ([`EventError::TooLarge`]).
    pub fn build(mut self) -> Result<Event, EventError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let blank = usize::from(self.set & HAS_FIELD != 0);
        if self.buf.capacity() == 0 {
            let mut buf = BytesMut::with_capacity(self.head_len + blank);
            buf.put_slice(&self.head[..self.head_len]);
            self.buf = buf;
        }
        if blank == 1 {
            self.buf.put_u8(b'\n');
        }
        Ok(Event {
            bytes: self.buf.freeze(),
            id_start: if self.set & SET_ID != 0 {
                offset(self.id_start)?
            } else {
                0
            },
            id_len: offset(self.id_len)?,
            come_back: None,
            audience: self.audience,
        })
    }

    fn field(&mut self, prefix: &[u8], value: &str) {
        self.put_line(&[prefix, value.as_bytes()]);
        self.set |= HAS_FIELD;
    }

    /// Bytes written so far (staged or allocated; only one of them is ever non-empty).
    fn len(&self) -> usize {
        self.head_len + self.buf.len()
    }

    /// Writes `parts` and a line feed: staged while they fit, else into the allocation.
    fn put_line(&mut self, parts: &[&[u8]]) {
        let size = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        if self.buf.capacity() == 0 && self.head_len + size <= HEAD {
            for part in parts {
                self.head[self.head_len..self.head_len + part.len()].copy_from_slice(part);
                self.head_len += part.len();
            }
            self.head[self.head_len] = b'\n';
            self.head_len += 1;
            return;
        }
        self.spill(size);
        for part in parts {
            self.buf.put_slice(part);
        }
        self.buf.put_u8(b'\n');
    }

    /// Makes room for `extra` more bytes (and the final blank line) in the allocation, moving
    /// the staged fields into it first if it does not exist yet.
    fn spill(&mut self, extra: usize) {
        if self.buf.capacity() == 0 {
            let mut buf = BytesMut::with_capacity(self.head_len + extra + 1);
            buf.put_slice(&self.head[..self.head_len]);
            self.head_len = 0;
            self.buf = buf;
        } else {
            self.buf.reserve(extra + 1);
        }
    }

    fn once(&mut self, flag: u8, field: Field) -> bool {
        if self.set & flag != 0 {
            self.fail(EventError::Repeated(field));
            return false;
        }
        self.set |= flag;
        self.error.is_none()
    }

    fn single_line(&mut self, value: &str, field: Field) -> bool {
        if let Err(err) = check_single_line(value, field) {
            self.fail(err);
            return false;
        }
        self.error.is_none()
    }

    fn fail(&mut self, err: EventError) {
        self.error.get_or_insert(err);
    }
}

/// Which field of an event an [`EventError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// The `event` field (the event name).
    Event,
    /// The `id` field.
    Id,
    /// The `retry` field.
    Retry,
    /// A comment line (including keep-alive comments).
    Comment,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Event => "event",
            Field::Id => "id",
            Field::Retry => "retry",
            Field::Comment => "comment",
        })
    }
}

/// Why an [`Event`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventError {
    /// A single-line field contained a CR or LF.
    LineBreak(Field),
    /// The `id` contained a NUL character, which makes clients ignore it.
    NulInId,
    /// The `id` contained a control character other than CR, LF or NUL (tab, DEL, C1): a
    /// client would send it back in a header that servers refuse.
    ControlInId,
    /// The `id` started or ended with a space, which clients trim from the `Last-Event-ID`
    /// they send back, so it would not match.
    SpaceAroundId,
    /// The `id` is longer than [`MAX_LAST_EVENT_ID_LEN`](crate::MAX_LAST_EVENT_ID_LEN) bytes.
    IdTooLong,
    /// A field that may appear once was set twice.
    Repeated(Field),
    /// The event is larger than 4 GiB.
    TooLarge,
    /// JSON serialization failed.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    Json(serde_json::Error),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventError::LineBreak(field) => write!(f, "line break in the {field} field"),
            EventError::NulInId => f.write_str("NUL character in the id field"),
            EventError::ControlInId => f.write_str("control character in the id field"),
            EventError::SpaceAroundId => f.write_str("leading or trailing space in the id field"),
            EventError::IdTooLong => write!(
                f,
                "id field longer than {} bytes",
                crate::MAX_LAST_EVENT_ID_LEN
            ),
            EventError::Repeated(field) => write!(f, "the {field} field was set twice"),
            EventError::TooLarge => f.write_str("event larger than 4 GiB"),
            #[cfg(feature = "json")]
            EventError::Json(_) => f.write_str("failed to serialize event data as JSON"),
        }
    }
}

impl StdError for EventError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            #[cfg(feature = "json")]
            EventError::Json(err) => Some(err),
            _ => None,
        }
    }
}

/// Refuses a CR or LF in a field that must stay on one line.
fn check_single_line(value: &str, field: Field) -> Result<(), EventError> {
    match memchr::memchr2(b'\r', b'\n', value.as_bytes()) {
        Some(_) => Err(EventError::LineBreak(field)),
        None => Ok(()),
    }
}

/// Refuses an id that would not come back intact in a `Last-Event-ID` header.
fn check_id(id: &str) -> Result<(), EventError> {
    match id_fault(id) {
        None => Ok(()),
        Some(IdFault::LineBreak) => Err(EventError::LineBreak(Field::Id)),
        Some(IdFault::Nul) => Err(EventError::NulInId),
        Some(IdFault::Control) => Err(EventError::ControlInId),
        Some(IdFault::EdgeSpace) => Err(EventError::SpaceAroundId),
        Some(IdFault::TooLong) => Err(EventError::IdTooLong),
    }
}

fn offset(n: usize) -> Result<u32, EventError> {
    u32::try_from(n).map_err(|_| EventError::TooLarge)
}

/// Room for `write_data`: the text, plus `data: ` and a line feed for each line.
#[derive(Debug, Clone, Copy)]
struct DataSize {
    capacity: usize,
    /// Whether the data may contain a line break; `false` only when known to have none.
    breaks: bool,
}

impl DataSize {
    /// Exact for data up to 1 KiB, because a buffer that ends up exactly full becomes `Bytes`
    /// without the extra allocation a partly filled one needs; larger data gets an estimate (one
    /// line per 8 bytes is generous) instead of a counting pass, and data with even more line
    /// breaks just grows the buffer once.
    fn of(data: &str) -> DataSize {
        let bytes = data.as_bytes();
        if bytes.len() > 1024 {
            return DataSize {
                capacity: bytes.len() + bytes.len() / 8 + 7,
                breaks: true,
            };
        }
        let (mut lines, mut breaks) = (1, 0);
        for at in memchr::memchr2_iter(b'\r', b'\n', bytes) {
            breaks += 1;
            // The LF of a CRLF ends no extra line.
            if !(bytes[at] == b'\n' && at > 0 && bytes[at - 1] == b'\r') {
                lines += 1;
            }
        }
        DataSize {
            capacity: bytes.len() - breaks + lines * 7,
            breaks: breaks > 0,
        }
    }
}

/// Writes `data` as `data:` lines, treating LF, CRLF and lone CR each as one line break.
fn write_data(buf: &mut BytesMut, data: &str, size: DataSize) {
    let bytes = data.as_bytes();
    buf.extend_from_slice(b"data: ");
    if !size.breaks {
        // One line, already scanned: no second search.
        buf.extend_from_slice(bytes);
        buf.put_u8(b'\n');
        return;
    }
    let mut start = 0;
    let mut skip_lf = false;
    for at in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        if skip_lf {
            skip_lf = false;
            if at == start && bytes[at] == b'\n' {
                // Second half of a CRLF: the line was already ended by the CR.
                start = at + 1;
                continue;
            }
        }
        // The line, then the next line's prefix, in two copies.
        buf.extend_from_slice(&bytes[start..at]);
        buf.extend_from_slice(b"\ndata: ");
        skip_lf = bytes[at] == b'\r';
        start = at + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.put_u8(b'\n');
}

/// The decimal digits of `n`, written at the end of `out`.
fn u64_digits(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &out[i..]
}

/// Appends the decimal digits of `n`.
pub(crate) fn put_u64(buf: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    buf.put_slice(u64_digits(n, &mut digits));
}

/// Checks that `text` can be sent as one comment line.
pub(crate) fn check_comment(text: &str) -> Result<(), EventError> {
    check_single_line(text, Field::Comment)
}

#[cfg(test)]
mod tests {
    #[test]
    fn from_wire_takes_what_the_encoder_writes_and_nothing_else() {
        let built = Event::builder()
            .event("chat")
            .retry(std::time::Duration::from_secs(3))
            .comment("c")
            .data("a\nb")
            .build()
            .unwrap();
        let back = Event::from_wire(built.as_bytes().clone()).unwrap();
        assert_eq!(back.as_bytes(), built.as_bytes());
        assert_eq!(back.id(), None);
        let comment = Event::builder().comment("ping").build().unwrap();
        assert!(!Event::from_wire(comment.as_bytes().clone())
            .unwrap()
            .is_dispatchable());
        assert!(Event::from_wire(Bytes::new()).unwrap().is_empty());
        for bad in [
            "\n",
            "data: x\n",
            "data: x",
            "data: a\n\ndata: b\n\n",
            "id: 1\ndata: x\n\n",
            "data: x\r\n\n",
            "retry: soon\ndata: x\n\n",
            "retry: \ndata: x\n\n",
            "evil: x\ndata: x\n\n",
            ": c\ndata: x\n",
        ] {
            assert!(
                Event::from_wire(Bytes::from(bad)).is_none(),
                "{bad:?} was taken"
            );
        }
        assert!(Event::from_wire(Bytes::from_static(b"data: \xff\n\n")).is_none());
    }

    use super::*;

    fn wire(event: Result<Event, EventError>) -> String {
        String::from_utf8(event.unwrap().into_bytes().to_vec()).unwrap()
    }

    #[test]
    fn data_lines_split_on_every_break_kind() {
        assert_eq!(
            wire(Event::builder().data("a\nb\r\nc\rd").build()),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn crlf_is_one_break_not_two() {
        assert_eq!(
            wire(Event::builder().data("a\r\nb").build()),
            "data: a\ndata: b\n\n"
        );
        // Lone CRs in a row are each a break; CR then CRLF is two breaks.
        assert_eq!(
            wire(Event::builder().data("a\r\r\nb").build()),
            "data: a\ndata: \ndata: b\n\n"
        );
        assert_eq!(
            wire(Event::builder().data("a\n\r\nb").build()),
            "data: a\ndata: \ndata: b\n\n"
        );
    }

    #[test]
    fn trailing_break_is_kept() {
        assert_eq!(
            wire(Event::builder().data("a\n").build()),
            "data: a\ndata: \n\n"
        );
        assert_eq!(
            wire(Event::builder().data("a\r").build()),
            "data: a\ndata: \n\n"
        );
        assert_eq!(
            wire(Event::builder().data("a\r\n").build()),
            "data: a\ndata: \n\n"
        );
    }

    #[test]
    fn leading_breaks_and_lone_breaks() {
        assert_eq!(
            wire(Event::builder().data("\n").build()),
            "data: \ndata: \n\n"
        );
        assert_eq!(
            wire(Event::builder().data("\r\n").build()),
            "data: \ndata: \n\n"
        );
        assert_eq!(
            wire(Event::builder().data("\na").build()),
            "data: \ndata: a\n\n"
        );
    }

    #[test]
    fn leading_space_is_kept_by_the_separator_space() {
        assert_eq!(wire(Event::builder().data(" x").build()), "data:  x\n\n");
        assert_eq!(wire(Event::builder().event(" e").build()), "event:  e\n\n");
    }

    #[test]
    fn empty_data_is_one_empty_data_line() {
        assert_eq!(wire(Event::builder().data("").build()), "data: \n\n");
        assert_eq!(Event::message("").as_bytes(), "data: \n\n");
    }

    #[test]
    fn data_called_twice_adds_lines() {
        assert_eq!(
            wire(Event::builder().data("a").data("b").build()),
            "data: a\ndata: b\n\n"
        );
    }

    #[test]
    fn no_lone_cr_on_the_wire() {
        let event = Event::message("x\ry\r\n\r\rz");
        assert!(!event.as_bytes().contains(&b'\r'));
    }

    #[test]
    fn fields_in_order_and_id_is_recorded() {
        let event = Event::builder()
            .comment("hi")
            .event("update")
            .id("7")
            .retry(Duration::from_millis(2500))
            .data("x")
            .build()
            .unwrap();
        assert_eq!(
            event.as_bytes(),
            ": hi\nevent: update\nid: 7\nretry: 2500\ndata: x\n\n"
        );
        assert_eq!(event.id(), Some("7"));
    }

    #[test]
    fn retry_is_whole_milliseconds() {
        assert_eq!(
            wire(Event::builder().retry(Duration::from_micros(1_999)).build()),
            "retry: 1\n\n"
        );
        assert_eq!(
            wire(Event::builder().retry(Duration::from_secs(30)).build()),
            "retry: 30000\n\n"
        );
        assert_eq!(
            wire(Event::builder().retry(Duration::ZERO).build()),
            "retry: 0\n\n"
        );
    }

    #[test]
    fn single_line_fields_refuse_line_breaks() {
        for bad in ["a\nb", "a\rb", "a\r\nb", "\n", "x\n"] {
            assert!(matches!(
                Event::builder().event(bad).build(),
                Err(EventError::LineBreak(Field::Event))
            ));
            assert!(matches!(
                Event::builder().id(bad).build(),
                Err(EventError::LineBreak(Field::Id))
            ));
            assert!(matches!(
                Event::builder().comment(bad).build(),
                Err(EventError::LineBreak(Field::Comment))
            ));
        }
    }

    #[test]
    fn id_with_nul_is_refused() {
        let err = Event::builder().id("a\0b").build().unwrap_err();
        assert!(matches!(err, EventError::NulInId));
        assert_eq!(err.to_string(), "NUL character in the id field");
    }

    #[test]
    fn ids_that_would_not_come_back_intact_are_refused() {
        let fails = |id: &str| Event::builder().id(id).data("x").build().unwrap_err();
        assert!(matches!(fails(" lead"), EventError::SpaceAroundId));
        assert!(matches!(fails("trail "), EventError::SpaceAroundId));
        assert!(matches!(fails("a\x01b"), EventError::ControlInId));
        assert!(matches!(fails("a\x7fb"), EventError::ControlInId));
        assert!(matches!(fails("a\tb"), EventError::ControlInId));
        let long = "i".repeat(crate::MAX_LAST_EVENT_ID_LEN + 1);
        assert!(matches!(fails(&long), EventError::IdTooLong));
        assert_eq!(fails(&long).to_string(), "id field longer than 1024 bytes");
        let longest = "i".repeat(crate::MAX_LAST_EVENT_ID_LEN);
        assert!(Event::builder().id(&longest).data("x").build().is_ok());
        assert!(Event::builder().id("in ner").data("x").build().is_ok());
        // Numbering an event applies the same rule.
        assert!(matches!(
            Event::message("x").with_id_if_missing(" 1"),
            Err(EventError::SpaceAroundId)
        ));
    }

    #[test]
    fn retry_saturates_where_client_timers_overflow() {
        assert_eq!(
            wire(Event::builder().retry(Duration::MAX).build()),
            "retry: 2147483647\n\n"
        );
    }

    #[test]
    fn nul_is_fine_in_data_and_names() {
        assert_eq!(
            wire(Event::builder().data("a\0b").build()),
            "data: a\0b\n\n"
        );
        assert_eq!(
            wire(Event::builder().event("a\0").build()),
            "event: a\0\n\n"
        );
    }

    #[test]
    fn repeated_single_fields_are_refused() {
        assert!(matches!(
            Event::builder().id("1").id("2").build(),
            Err(EventError::Repeated(Field::Id))
        ));
        assert!(matches!(
            Event::builder().event("a").event("b").build(),
            Err(EventError::Repeated(Field::Event))
        ));
        assert!(matches!(
            Event::builder()
                .retry(Duration::ZERO)
                .retry(Duration::ZERO)
                .build(),
            Err(EventError::Repeated(Field::Retry))
        ));
    }

    #[test]
    fn first_error_wins_and_later_fields_are_not_written() {
        let err = Event::builder().event("a\nb").id("\0").build().unwrap_err();
        assert!(matches!(err, EventError::LineBreak(Field::Event)));
    }

    #[test]
    fn comment_only_event_has_no_blank_line() {
        let event = Event::builder().comment("ping").build().unwrap();
        assert_eq!(event.as_bytes(), ": ping\n");
        assert!(!event.is_dispatchable());
    }

    #[test]
    fn empty_builder_sends_nothing() {
        let event = Event::builder().build().unwrap();
        assert!(event.is_empty());
        assert!(!event.is_dispatchable());
    }

    #[test]
    fn empty_id_is_allowed_and_recorded() {
        let event = Event::builder().id("").data("x").build().unwrap();
        assert_eq!(event.as_bytes(), "id: \ndata: x\n\n");
        assert_eq!(event.id(), Some(""));
        assert_eq!(Event::message("x").id(), None);
    }

    #[test]
    fn with_id_if_missing_adds_an_id_once() {
        let event = Event::builder().event("e").data("x").build().unwrap();
        let numbered = event.with_id_if_missing("5").unwrap();
        assert_eq!(numbered.as_bytes(), "event: e\ndata: x\nid: 5\n\n");
        assert_eq!(numbered.id(), Some("5"));
        let again = numbered.clone().with_id_if_missing("6").unwrap();
        assert_eq!(again, numbered);
        assert!(Event::message("x").with_id_if_missing("a\nb").is_err());
        let comment = Event::builder().comment("c").build().unwrap();
        assert_eq!(comment.clone().with_id_if_missing("1").unwrap(), comment);
    }

    #[test]
    fn staged_fields_spill_in_order_whatever_their_size() {
        let long = "n".repeat(200);
        let event = Event::builder()
            .comment("c")
            .id("short")
            .event(&long)
            .data("d")
            .retry(Duration::from_secs(1))
            .build()
            .unwrap();
        let expected = format!(": c\nid: short\nevent: {long}\ndata: d\nretry: 1000\n\n");
        assert_eq!(event.as_bytes(), expected.as_str());
        assert_eq!(event.id(), Some("short"));

        // An id written after the spill, and one staged then moved, both keep their place.
        let late = Event::builder().data("x").id("late").build().unwrap();
        assert_eq!(late.as_bytes(), "data: x\nid: late\n\n");
        assert_eq!(late.id(), Some("late"));
        let long_id = "i".repeat(150);
        let event = Event::builder().event("e").id(&long_id).build().unwrap();
        assert_eq!(event.id(), Some(long_id.as_str()));
    }

    #[test]
    fn typical_events_encode_exactly() {
        let event = Event::builder().event("price").id("1042").build().unwrap();
        assert_eq!(event.as_bytes(), "event: price\nid: 1042\n\n");
        let event = Event::builder()
            .event("e")
            .id("1")
            .data("many\nlines\n\n\n\n\n\n\n\n")
            .build();
        assert_eq!(
            event.unwrap().as_bytes(),
            "event: e\nid: 1\ndata: many\ndata: lines\ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn small_data_capacity_is_exact() {
        for data in [
            "",
            "x",
            "a\nb",
            "a\r\nb",
            "a\rb",
            "\r\n\r\n",
            "\n\r",
            "a\r\r\nb\n",
        ] {
            let mut buf = BytesMut::new();
            let size = DataSize::of(data);
            write_data(&mut buf, data, size);
            assert_eq!(buf.len(), size.capacity, "{data:?}");
        }
    }

    #[test]
    fn clone_shares_the_encoding() {
        let event = Event::message("shared");
        let copy = event.clone();
        assert_eq!(event.as_bytes().as_ptr(), copy.as_bytes().as_ptr());
    }

    #[test]
    fn put_u64_formats_edges() {
        for n in [0u64, 9, 10, 12345, u64::MAX] {
            let mut buf = BytesMut::new();
            put_u64(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
        }
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_data_is_one_line_even_with_newlines_in_strings() {
        let event = Event::builder()
            .event("j")
            .json_data(serde_json::json!({"text": "a\nb\r\nc"}))
            .build()
            .unwrap();
        assert_eq!(
            event.as_bytes(),
            "event: j\ndata: {\"text\":\"a\\nb\\r\\nc\"}\n\n"
        );
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_failure_is_an_error() {
        use std::collections::HashMap;
        // Maps with non-string keys cannot be JSON objects.
        let mut map = HashMap::new();
        map.insert(vec![1u8], 1);
        assert!(matches!(
            Event::builder().json_data(&map).build(),
            Err(EventError::Json(_))
        ));
    }

    /// One step of building an event, as a user might take it.
    #[derive(Debug, Clone)]
    enum Part {
        Name(String),
        Data(String),
        Comment(String),
        Retry(u64),
    }

    fn part() -> impl proptest::strategy::Strategy<Value = Part> {
        use proptest::prelude::*;
        // Text from a small alphabet that holds every troublesome character.
        let text = proptest::collection::vec(
            prop_oneof![
                Just(' '),
                Just(':'),
                Just('\n'),
                Just('\r'),
                Just('-'),
                Just('é'),
                Just('\u{0}'),
                Just('\t'),
                any::<char>(),
                "[a-z0-9]".prop_map(|s| s.chars().next().unwrap()),
            ],
            0..12,
        )
        .prop_map(|chars| chars.into_iter().collect::<String>());
        prop_oneof![
            text.clone().prop_map(Part::Name),
            text.clone().prop_map(Part::Data),
            text.prop_map(Part::Comment),
            (0u64..=u64::from(u32::MAX)).prop_map(Part::Retry),
        ]
    }

    proptest::proptest! {
        /// Whatever the builder accepts (without an id, which a broker's hub refuses) crosses a
        /// broker unchanged: `from_wire` takes back exactly the bytes the encoder wrote.
        #[test]
        fn every_built_event_comes_back_from_the_wire(
            parts in proptest::collection::vec(part(), 0..6)
        ) {
            let mut builder = Event::builder();
            for part in parts {
                builder = match part {
                    Part::Name(name) => builder.event(name),
                    Part::Data(data) => builder.data(data),
                    Part::Comment(text) => builder.comment(text),
                    Part::Retry(ms) => builder.retry(std::time::Duration::from_millis(ms)),
                };
            }
            if let Ok(event) = builder.build() {
                let back = Event::from_wire(event.as_bytes().clone());
                proptest::prop_assert!(back.is_some(), "refused {:?}", event);
                let back = back.unwrap();
                proptest::prop_assert_eq!(back.as_bytes(), event.as_bytes());
                proptest::prop_assert_eq!(back.is_dispatchable(), event.is_dispatchable());
            }
        }
    }
}
