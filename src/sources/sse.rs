//! A server-sent events (text/event-stream) parser, fed chunks as they
//! arrive: `event:`, `data:` (several join with newlines), `id:`, comments
//! (`:`) ignored, an event ends at a blank line; CRLF and LF both end lines.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (default `message`).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// `id:`, if any.
    pub id: Option<String>,
}

/// Largest event (its `data:` lines together) or line kept, bytes, unless
/// [`Parser::new`] says otherwise: an event larger than this is dropped and
/// counted, never buffered further.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// Accumulates bytes; yields complete events, in memory bounded by
/// `max_bytes` and in time linear in the input.
#[derive(Debug)]
pub struct Parser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    max_bytes: usize,
    /// Skipping the rest of a line longer than the bound.
    skipping_line: bool,
    /// Dropping the event being read (it grew past the bound).
    dropping_event: bool,
    /// Events dropped for their size.
    pub dropped: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new(MAX_EVENT_BYTES)
    }
}

impl Parser {
    /// A parser keeping events of at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Parser {
        Parser {
            pending: Vec::new(),
            event: None,
            data: None,
            id: None,
            max_bytes,
            skipping_line: false,
            dropping_event: false,
            dropped: 0,
        }
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if !self.skipping_line {
                    self.pending.extend_from_slice(rest);
                    if self.pending.len() > self.max_bytes {
                        // A line that never ends: drop it and its event.
                        self.pending.clear();
                        self.skipping_line = true;
                        self.drop_event();
                    }
                }
                break;
            };
            let piece = &rest[..end];
            rest = &rest[end + 1..];
            if self.skipping_line {
                self.skipping_line = false;
                continue;
            }
            let line = if self.pending.is_empty() {
                self.line(piece, &mut events);
                continue;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(piece);
                line
            };
            self.line(&line, &mut events);
        }
        events
    }

    fn drop_event(&mut self) {
        if !self.dropping_event {
            self.dropped += 1;
        }
        self.dropping_event = true;
        self.data = None;
    }

    /// One complete line (without its `\n`).
    fn line(&mut self, line: &[u8], events: &mut Vec<Event>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if let Some(data) = self.data.take()
                && !self.dropping_event
            {
                events.push(Event {
                    event: self.event.take().unwrap_or_else(|| "message".into()),
                    data,
                    id: self.id.take(),
                });
            }
            self.event = None;
            self.dropping_event = false;
            return;
        }
        if line.starts_with(b":") || self.dropping_event {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                let size = self.data.as_ref().map_or(0, |d| d.len() + 1) + value.len();
                if size > self.max_bytes {
                    self.drop_event();
                    return;
                }
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_with_comments_and_multiline_data() {
        let mut parser = Parser::default();
        assert!(parser.feed(b":)\nevent: upd").is_empty());
        let events = parser.feed(b"ate\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nevent: delete\ndata: 42\n\n");
        assert_eq!(
            events,
            [
                Event {
                    event: "update".into(),
                    data: "{\"a\":\n1}".into(),
                    id: None
                },
                Event {
                    event: "delete".into(),
                    data: "42".into(),
                    id: None
                },
            ]
        );
    }

    #[test]
    fn an_event_or_line_past_the_bound_is_dropped_and_the_stream_goes_on() {
        let mut parser = Parser::new(16);
        // A data line that never ends, fed in pieces: dropped, not kept.
        for _ in 0..1000 {
            assert!(parser.feed(b"data: xxxxxxxxxxxxxxxx").is_empty());
        }
        assert!(parser.pending.len() <= 16 + 22);
        assert!(parser.feed(b"xx\n\n").is_empty());
        // Many data lines that together pass the bound.
        assert!(parser.feed(b"data: 12345678\ndata: 12345678\ndata: 1\n\n").is_empty());
        assert_eq!(parser.dropped, 2);
        let events = parser.feed(b"data: ok\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "ok");
        // A million tiny lines in one chunk take linear time.
        let mut big = Vec::new();
        for _ in 0..200_000 {
            big.extend_from_slice(b"data: a\n\n");
        }
        let mut parser = Parser::default();
        let start = std::time::Instant::now();
        assert_eq!(parser.feed(&big).len(), 200_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
