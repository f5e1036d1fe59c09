//! A file's records one at a time, in bounded memory: NDJSON lines, or the
//! elements of one JSON array read incrementally (a dump of any size never
//! sits in memory whole). A record longer than the bound is skipped to its
//! end without being kept, and reported as such.

use std::io::{self, BufRead};

/// What [`Records::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A record (its text is in the caller's buffer), the `number`-th: a
    /// line of NDJSON (blank ones count), or an element of the array.
    Record {
        /// 1-based line or element number.
        number: usize,
    },
    /// A record longer than the bound, skipped.
    TooLong {
        /// 1-based line or element number.
        number: usize,
        /// Its length, bytes.
        bytes: u64,
    },
    /// The array is not valid JSON from here on; nothing more is read.
    Broken {
        /// The element where it broke.
        number: usize,
        /// Why.
        reason: String,
    },
}

/// Reads records from `reader`, each at most `max_bytes` long.
pub struct Records<R> {
    reader: R,
    max_bytes: usize,
    array: bool,
    state: State,
    number: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the first record (or `[`).
    Start,
    /// Between records.
    Between,
    /// Nothing more.
    Done,
}

impl<R: BufRead> Records<R> {
    /// NDJSON records, or with `array` the elements of one JSON array.
    pub fn new(reader: R, max_bytes: usize, array: bool) -> Records<R> {
        Records {
            reader,
            max_bytes,
            array,
            state: State::Start,
            number: 0,
        }
    }

    /// The next record into `buf` (cleared first); `None` at the end.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Item>> {
        buf.clear();
        if self.state == State::Done {
            return Ok(None);
        }
        if self.array {
            self.next_element(buf)
        } else {
            self.next_line(buf)
        }
    }

    fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Item>> {
        let (mut length, mut any, mut newline) = (0u64, false, false);
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                self.state = State::Done;
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (take, end) = match memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let room = (self.max_bytes + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            length += take as u64;
            self.reader.consume(take);
            if end {
                newline = true;
                break;
            }
        }
        self.number += 1;
        let content = length - u64::from(newline);
        if content > self.max_bytes as u64 {
            buf.clear();
            return Ok(Some(Item::TooLong {
                number: self.number,
                bytes: content,
            }));
        }
        Ok(Some(Item::Record { number: self.number }))
    }

    /// Skips whitespace (and, between elements, one comma); the next byte.
    fn peek_past_space(&mut self) -> io::Result<Option<u8>> {
        loop {
            let chunk = self.reader.fill_buf()?;
            let Some(&b) = chunk.first() else {
                return Ok(None);
            };
            if b.is_ascii_whitespace() {
                self.reader.consume(1);
            } else {
                return Ok(Some(b));
            }
        }
    }

    fn broken(&mut self, reason: impl Into<String>) -> Option<Item> {
        self.state = State::Done;
        Some(Item::Broken {
            number: self.number + 1,
            reason: reason.into(),
        })
    }

    fn next_element(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Item>> {
        match self.state {
            State::Start => {
                if self.peek_past_space()? != Some(b'[') {
                    return Ok(self.broken("not a JSON array: it must start with ["));
                }
                self.reader.consume(1);
                if self.peek_past_space()? == Some(b']') {
                    self.reader.consume(1);
                    return self.after_array();
                }
            }
            State::Between => match self.peek_past_space()? {
                Some(b',') => {
                    self.reader.consume(1);
                    self.peek_past_space()?;
                }
                Some(b']') => {
                    self.reader.consume(1);
                    return self.after_array();
                }
                Some(b) => return Ok(self.broken(format!("expected , or ] after an element, got {:?}", b as char))),
                None => return Ok(self.broken("the array is not closed (no ])")),
            },
            State::Done => return Ok(None),
        }
        self.state = State::Between;
        // One element: to the end of its string, or of its outermost
        // brackets, or (a number, true, false, null) to a delimiter.
        let (mut depth, mut in_string, mut escaped, mut length) = (0usize, false, false, 0u64);
        let mut started = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(self.broken("the file ends inside an element"));
            }
            let mut end = None;
            for (i, &b) in chunk.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    b',' | b']' | b'}' if depth == 0 && started => {
                        end = Some(i);
                        break;
                    }
                    b if b.is_ascii_whitespace() && depth == 0 && started => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
                started = true;
            }
            let take = end.unwrap_or(chunk.len());
            let room = (self.max_bytes + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            length += take as u64;
            self.reader.consume(take);
            if end.is_some() {
                break;
            }
        }
        self.number += 1;
        if length > self.max_bytes as u64 {
            buf.clear();
            return Ok(Some(Item::TooLong {
                number: self.number,
                bytes: length,
            }));
        }
        Ok(Some(Item::Record { number: self.number }))
    }

    fn after_array(&mut self) -> io::Result<Option<Item>> {
        self.state = State::Done;
        match self.peek_past_space()? {
            None => Ok(None),
            Some(b) => Ok(Some(Item::Broken {
                number: self.number + 1,
                reason: format!("text after the array's closing ] ({:?})", b as char),
            })),
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, max: usize, array: bool, buffer: usize) -> Vec<(Item, String)> {
        let reader = io::BufReader::with_capacity(buffer, text.as_bytes());
        let mut records = Records::new(reader, max, array);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(item) = records.next(&mut buf).unwrap() {
            out.push((item, String::from_utf8(buf.clone()).unwrap()));
        }
        out
    }

    #[test]
    fn lines_are_bounded_and_numbered() {
        for buffer in [1, 3, 64] {
            let got = all("{\"a\":1}\n\nxxxxxxxxxx\n{\"b\":2}", 8, false, buffer);
            assert_eq!(
                got,
                [
                    (Item::Record { number: 1 }, "{\"a\":1}\n".into()),
                    (Item::Record { number: 2 }, "\n".into()),
                    (Item::TooLong { number: 3, bytes: 10 }, String::new()),
                    (Item::Record { number: 4 }, "{\"b\":2}".into()),
                ],
                "buffer {buffer}"
            );
        }
    }

    #[test]
    fn array_elements_are_read_one_at_a_time() {
        let text = " [ {\"a\": \"x],\\\"y\"}, [1, [2]] ,\n 3.5, \"s\\\"]\", null, {\"long\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaa\"}, {} ] \n";
        for buffer in [1, 2, 7, 4096] {
            let got = all(text, 24, true, buffer);
            let texts: Vec<(&Item, &str)> = got.iter().map(|(i, t)| (i, t.as_str())).collect();
            assert_eq!(
                texts,
                [
                    (&Item::Record { number: 1 }, "{\"a\": \"x],\\\"y\"}"),
                    (&Item::Record { number: 2 }, "[1, [2]]"),
                    (&Item::Record { number: 3 }, "3.5"),
                    (&Item::Record { number: 4 }, "\"s\\\"]\""),
                    (&Item::Record { number: 5 }, "null"),
                    (&Item::TooLong { number: 6, bytes: 39 }, ""),
                    (&Item::Record { number: 7 }, "{}"),
                ],
                "buffer {buffer}"
            );
        }
        assert!(all("[]", 10, true, 4).is_empty());
        let broken = all("[{\"a\":1} {\"b\":2}]", 100, true, 4);
        assert!(matches!(&broken[1].0, Item::Broken { number: 2, reason } if reason.contains("expected , or ]")));
        let unclosed = all("[{\"a\":1},", 100, true, 4);
        assert!(matches!(&unclosed[1].0, Item::Broken { .. }), "{unclosed:?}");
        let trailing = all("[1] x", 100, true, 4);
        assert!(matches!(&trailing[1].0, Item::Broken { reason, .. } if reason.contains("after the array")));
    }
}
