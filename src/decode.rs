//! A client-side event stream decoder that follows the WHATWG algorithm step by step.
//!
//! It is what a browser's `EventSource` does with the bytes it receives, which makes it the right
//! tool to test an SSE endpoint, or to consume one from Rust (the load tool in `examples/` uses it).
//!
//! # Example
//!
//! ```
//! use tower_sse::decode::Decoder;
//!
//! let mut decoder = Decoder::new();
//! // Chunks may split lines, and even CRLF pairs, anywhere.
//! let mut messages = decoder.feed(b"event: chat\r");
//! messages.extend(decoder.feed(b"\nid: 1\ndata: a\ndata:  b\n"));
//! messages.extend(decoder.feed(b"\n: a comment\ndata: ignored, never finished"));
//!
//! assert_eq!(messages.len(), 1);
//! assert_eq!(messages[0].event, "chat");
//! assert_eq!(messages[0].data, "a\n b");
//! assert_eq!(messages[0].last_event_id, "1");
//! assert_eq!(decoder.comments(), 1);
//! ```

use std::mem;

/// One event as the client dispatches it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The event type: the `event` field, or `message` when there was none.
    pub event: String,
    /// The data, with line breaks as LF and without the final line break.
    pub data: String,
    /// The client's last event id when the event was dispatched.
    pub last_event_id: String,
}

/// Decodes an event stream the way the WHATWG spec says a client must.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    event: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
    comments: u64,
    blocks: u64,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of bytes and returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                Some(at) => {
                    self.line.extend_from_slice(&rest[..at]);
                    self.after_cr = rest[at] == b'\r';
                    rest = &rest[at + 1..];
                    let line = mem::take(&mut self.line);
                    self.process_line(&line, &mut out);
                    self.line = line;
                    self.line.clear();
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        out
    }

    /// The last event id the client holds (what it would send as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time set by the last valid `retry` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// How many comment lines were seen.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// How many blank lines (dispatch points) were seen, including those that dispatched nothing.
    pub fn blank_lines(&self) -> u64 {
        self.blocks
    }

    /// Whether the decoder is between events: no partial line and no pending fields.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && self.data.is_empty() && self.event.is_empty()
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Message>) {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let text = String::from_utf8_lossy(line);
        if text.is_empty() {
            self.blocks += 1;
            self.dispatch(out);
            return;
        }
        if text.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match text.find(':') {
            Some(colon) => {
                let value = &text[colon + 1..];
                (&text[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().or(self.retry);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Message>) {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        let mut data = mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = mem::take(&mut self.event);
        out.push(Message {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> (Vec<Message>, Decoder) {
        let mut decoder = Decoder::new();
        let messages = decoder.feed(input);
        (messages, decoder)
    }

    #[test]
    fn strips_one_leading_space_only() {
        let (m, _) = all(b"data:  two\n\n");
        assert_eq!(m[0].data, " two");
        let (m, _) = all(b"data:none\n\n");
        assert_eq!(m[0].data, "none");
    }

    #[test]
    fn all_break_kinds_and_split_crlf() {
        let mut decoder = Decoder::new();
        let mut m = decoder.feed(b"data: a\rdata: b\r");
        m.extend(decoder.feed(b"\ndata: c\n\r\n"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].data, "a\nb\nc");
    }

    #[test]
    fn no_data_field_is_not_dispatched_but_id_is_kept() {
        let (m, d) = all(b"id: 9\nevent: x\n\n");
        assert!(m.is_empty());
        assert_eq!(d.last_event_id(), "9");
    }

    #[test]
    fn an_empty_data_field_dispatches_empty_data() {
        // The data buffer is "\n", which is not empty: the spec dispatches "".
        let (m, _) = all(b"data\n\ndata: \n\n");
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.data.is_empty() && m.event == "message"));
    }

    #[test]
    fn id_with_nul_is_ignored_and_retry_needs_digits() {
        let (_, d) = all(b"id: 1\n\nid: a\0b\nretry: 12x\n\nretry: 40\n\n");
        assert_eq!(d.last_event_id(), "1");
        assert_eq!(d.retry(), Some(40));
    }

    #[test]
    fn bom_is_stripped_once() {
        let (m, _) = all(b"\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].data, "x");
    }

    #[test]
    fn unfinished_event_is_discarded() {
        let (m, d) = all(b"data: x\n");
        assert!(m.is_empty());
        assert!(!d.is_idle());
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        let (m, _) = all(b"data\ndata\n\n");
        assert_eq!(m[0].data, "\n");
    }
}
