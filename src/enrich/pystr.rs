//! Python `str` predicates and case mapping that the reference analyzers
//! rely on, where Rust's own differ.

/// `ch.isspace()` in Python 3.12: Unicode White_Space plus the four
/// information separators U+001C..U+001F, which Python counts as space.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s.lower()`: full Unicode lower-casing (Rust's `to_lowercase` applies the
/// same SpecialCasing rules, final sigma included), with an ASCII fast path.
pub(crate) fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Writes `s.lower()` into `out`, reusing its allocation.
pub(crate) fn py_lower_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        out.push_str(s);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// Unicode general category Lt (titlecase letters), which Python's
/// `isupper()` treats as disqualifying and Rust has no predicate for.
fn is_titlecase(c: char) -> bool {
    matches!(c,
        '\u{01C5}' | '\u{01C8}' | '\u{01CB}' | '\u{01F2}'
        | '\u{1F88}'..='\u{1F8F}' | '\u{1F98}'..='\u{1F9F}' | '\u{1FA8}'..='\u{1FAF}'
        | '\u{1FBC}' | '\u{1FCC}' | '\u{1FFC}')
}

/// `s.isupper()`: at least one cased character and no lower-case or
/// title-case one.
pub(crate) fn py_isupper(s: &str) -> bool {
    if s.is_ascii() {
        let b = s.as_bytes();
        return b.iter().any(u8::is_ascii_uppercase) && !b.iter().any(u8::is_ascii_lowercase);
    }
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_is_pythons() {
        // Every code point for which CPython 3.12's str.isspace() is true.
        let python: Vec<u32> = vec![
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
            0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
        ];
        let ours: Vec<u32> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_py_space(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, python);
    }

    #[test]
    fn isupper_like_python() {
        assert!(py_isupper("GOOD"));
        assert!(py_isupper("ISN'T"));
        assert!(py_isupper("A1!"));
        assert!(!py_isupper("1!"));
        assert!(!py_isupper("Good"));
        assert!(py_isupper("ÉTÉ"));
        assert!(!py_isupper("ǅA"));
        assert!(!py_isupper(""));
    }

    #[test]
    fn lower_like_python() {
        assert_eq!(py_lower("GOOD"), "good");
        assert_eq!(py_lower("İ"), "i\u{307}");
        assert_eq!(py_lower("ΟΔΟΣ"), "οδος");
        assert_eq!(py_lower("\u{212A}ind"), "kind");
    }
}
