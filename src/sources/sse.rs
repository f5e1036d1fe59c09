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

/// Accumulates bytes; yields complete events.
#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl Parser {
    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(Event {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data,
                        id: self.id.take(),
                    });
                }
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                "id" => self.id = Some(value.to_string()),
                _ => {}
            }
        }
        events
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
}
