//! A strict reader of the top-level members of one JSON object, for the
//! fast paths that take a few fields of a line without building its value.
//!
//! It reads a line the way serde_json would accept it, or gives up: every
//! method returns `None` on anything it cannot be sure of (text that is
//! not JSON, a lone surrogate, nesting past [`MAX_DEPTH`], a key with an
//! escape), and the caller then parses the line in full, which says why.
//! Skipped values are checked as strictly as read ones (serde_json builds
//! and so checks every value of a line it parses), so a line is never read
//! here that the full parse would refuse.

use std::borrow::Cow;

/// Nesting this reader follows in a skipped value; deeper, it gives up
/// (serde_json refuses past 128).
pub const MAX_DEPTH: usize = 100;

/// The members of one JSON object, read in order.
pub struct Members<'a> {
    text: &'a str,
    at: usize,
    /// Whether the next member is the first (no comma before it).
    first: bool,
}

impl<'a> Members<'a> {
    /// Starts reading `text`, which must be one JSON object (whitespace
    /// around it allowed).
    pub fn new(text: &'a str) -> Option<Members<'a>> {
        let mut m = Members {
            text,
            at: 0,
            first: true,
        };
        m.ws();
        m.eat(b'{')?;
        Some(m)
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The next member's key, its `:` read; `Some(None)` after the closing
    /// brace, when nothing but whitespace follows it.
    pub fn next_key(&mut self) -> Option<Option<&'a str>> {
        self.ws();
        if self.peek()? == b'}' {
            self.at += 1;
            self.ws();
            return (self.at == self.text.len()).then_some(None);
        }
        if !self.first {
            self.eat(b',')?;
            self.ws();
        }
        self.first = false;
        self.eat(b'"')?;
        let start = self.at;
        let end = find_special(self.bytes(), start);
        // A key with an escape (or a control character) is left to the
        // full parse.
        if self.bytes().get(end)? != &b'"' {
            return None;
        }
        self.at = end + 1;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(Some(&self.text[start..end]))
    }

    /// The member's value as a string, or `None` inside for `null`; gives
    /// up on any other value.
    pub fn string_or_null(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.peek()? {
            b'"' => self.string(true).map(Some),
            b'n' => self.literal("null").map(|()| None),
            _ => None,
        }
    }

    /// The member's value as the text of a number, or `None` inside for
    /// `null`; gives up on any other value.
    pub fn number_or_null(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number().map(Some),
            b'n' => self.literal("null").map(|()| None),
            _ => None,
        }
    }

    /// Skips the member's value, checking it.
    pub fn skip(&mut self) -> Option<()> {
        self.value(0)
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(false).map(drop),
            b'{' => self.container(b'}', true, depth),
            b'[' => self.container(b']', false, depth),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    /// An object (`keyed`) or an array, its opening byte next.
    fn container(&mut self, close: u8, keyed: bool, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.ws();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            if keyed {
                if self.peek()? != b'"' {
                    return None;
                }
                self.string(false)?;
                self.ws();
                self.eat(b':')?;
                self.ws();
            }
            self.value(depth + 1)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.ws();
                }
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// A number as JSON writes it: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        let text = &self.text[start..self.at];
        // serde_json refuses a number too large for an f64: any but a
        // short integer is checked, and one near the bound is left to it.
        if !short_integer(text) && text.parse::<f64>().ok()?.abs() >= 8e307 {
            return None;
        }
        Some(text)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// A string, its opening quote next: borrowed when it has no escape,
    /// else (with `decode`) unescaped; without `decode`, only checked (and
    /// given as written).
    fn string(&mut self, decode: bool) -> Option<Cow<'a, str>> {
        let bytes = self.bytes();
        let start = self.at + 1;
        let mut end = find_special(bytes, start);
        if bytes.get(end)? == &b'"' {
            self.at = end + 1;
            return Some(Cow::Borrowed(&self.text[start..end]));
        }
        // Checked to its closing quote first, which sizes the text.
        let first_escape = end;
        loop {
            match *bytes.get(end)? {
                b'"' => break,
                b'\\' => end = self.escape(end + 1, None)?,
                // A control character must be escaped.
                _ => return None,
            }
            end = find_special(bytes, end);
        }
        self.at = end + 1;
        if !decode {
            return Some(Cow::Borrowed(&self.text[start..end]));
        }
        let mut out = String::with_capacity(end - start);
        let (mut run, mut at) = (start, first_escape);
        while at < end {
            // A backslash: the string holds no other special byte.
            out.push_str(&self.text[run..at]);
            at = self.escape(at + 1, Some(&mut out))?;
            run = at;
            at = find_special(bytes, at);
        }
        out.push_str(&self.text[run..end]);
        Some(Cow::Owned(out))
    }

    /// The escape whose letter is at `at`, pushed to `out`; gives the
    /// position after it.
    fn escape(&self, at: usize, out: Option<&mut String>) -> Option<usize> {
        let c = match *self.bytes().get(at)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4(at + 1)?;
                let (code, next) = match high {
                    0xD800..=0xDBFF => {
                        // A surrogate pair, or (alone) nothing serde_json takes.
                        if self.bytes().get(at + 5..at + 7)? != b"\\u" {
                            return None;
                        }
                        let low = self.hex4(at + 7)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        (0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00), at + 11)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (high, at + 5),
                };
                if let Some(out) = out {
                    out.push(char::from_u32(code)?);
                }
                return Some(next);
            }
            _ => return None,
        };
        if let Some(out) = out {
            out.push(c);
        }
        Some(at + 1)
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.bytes().get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
    }
}

/// The number of a value's text (as [`Members::number_or_null`] gives it)
/// as serde_json reads it: integers of up to 18 digits here, the rest by
/// serde_json itself.
pub fn number_of(text: &str) -> Option<serde_json::Number> {
    // serde_json reads "-0" as the float -0.0.
    if short_integer(text) && text != "-0" {
        let n: i64 = text.parse().ok()?;
        return Some(serde_json::Number::from(n));
    }
    serde_json::from_str(text).ok()
}

/// Whether `text` is an integer of at most 18 digits (an `i64` for sure).
fn short_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The first byte at or after `from` that ends a run of a string's plain
/// text: a quote, a backslash or a control character (`len` if none).
/// Eight bytes at a time.
fn find_special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // Bytes below 0x20, equal to '"', equal to '\\'. The lowest flag is
        // exact (a borrow only spreads above a flagged byte).
        let hits =
            (x.wrapping_sub(ONES * 0x20) & !x & HIGHS) | zero_byte(x ^ (ONES * 0x22)) | zero_byte(x ^ (ONES * 0x5C));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b < 0x20 || b == b'"' || b == b'\\' {
            return i;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member's key and value (strings decoded; everything else
    /// skipped as `-`), or `None` where the reader gives up.
    fn read(text: &str) -> Option<Vec<(String, String)>> {
        let mut m = Members::new(text)?;
        let mut out = Vec::new();
        while let Some(key) = m.next_key()? {
            let value = if m.peek() == Some(b'"') {
                m.string_or_null()?.map(Cow::into_owned).unwrap_or_default()
            } else {
                m.skip()?;
                "-".into()
            };
            out.push((key.to_string(), value));
        }
        Some(out)
    }

    #[test]
    fn reads_what_serde_json_reads_and_gives_up_on_what_it_refuses() {
        let accepted = [
            r#"{}"#,
            r#" { "a" : "b" , "c":[1,-2.5e+3,{"d":null}],"e":true,"f":false,"g":0} "#,
            r#"{"s":"a \"quoted\" line\nand \u00e9 \ud83d\ude00 \/ \\ \b\f\r\t"}"#,
            r#"{"s":"déjà vu — 😀","n":-0,"m":1E5,"o":{"p":[[],{}]}}"#,
            r#"{"a":"b","a":"c"}"#,
            r#"{"a":1e-999,"b":123456789012345678901234567890,"c":1.5e300}"#,
            "{\"long\":\"0123456789abcdefghijklmnopqrstuvwxyz0123456789\"}",
        ];
        for text in accepted {
            let ours = read(text).unwrap_or_else(|| panic!("gave up on {text}"));
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            let strings: Vec<(String, String)> = ours.iter().filter(|(_, v)| v != "-").cloned().collect();
            for (key, value) in strings {
                // The last of a repeated key is the one serde_json keeps.
                if ours.iter().filter(|(k, _)| *k == key).count() == 1 {
                    assert_eq!(theirs[&key], serde_json::Value::String(value), "{text}");
                }
            }
        }
        let refused = [
            r#""#,
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e999}"#,
            r#"{"a":-2e308}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"b}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{1:2}}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            r#"{a:1}"#,
        ];
        for text in refused {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_err(), "{text}");
            assert_eq!(read(text), None, "{text}");
        }
        // Not an object: not for this reader.
        assert_eq!(read("[]"), None);
        // Nesting past the bound is left to the full parse, which takes it
        // up to 128.
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_ok());
        assert_eq!(read(&deep), None);
        let fine = format!(r#"{{"a":{}{}}}"#, "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(read(&fine).is_some());
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "-0",
            "7",
            "-3",
            "1546344000",
            "-999999999999999999",
            "999999999999999999",
            "9999999999999999999",
            "18446744073709551616",
            "-9223372036854775809",
            "2.5",
            "1e5",
            "-1.5E-3",
            "0.0",
        ] {
            let theirs: serde_json::Number = serde_json::from_str(text).unwrap();
            assert_eq!(number_of(text), Some(theirs), "{text}");
        }
    }

    #[test]
    fn finds_every_special_byte_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1F] {
                    // Text with an "é" (non-ASCII bytes never count) where
                    // the special byte is not.
                    let mut bytes = vec![b'a'; len];
                    if at >= 2 {
                        bytes[..2].copy_from_slice("é".as_bytes());
                    }
                    if at < len {
                        bytes[at] = special;
                    }
                    assert_eq!(find_special(&bytes, 0), at, "len {len} at {at} byte {special}");
                }
            }
        }
    }
}
