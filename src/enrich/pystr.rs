//! Python `str` predicates and case mapping that the reference analyzers
//! rely on, where Rust's own differ.

/// `ch.isspace()` in Python 3.12: Unicode White_Space plus the four
/// information separators U+001C..U+001F, which Python counts as space.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Characters whose case properties differ between CPython 3.12's Unicode
/// 15.0 tables and the newer ones of Rust's standard library: letters
/// added in Unicode 16 and 17 (uncased to Python), and U+0295 `ʕ` (used in
/// kaomoji), lower-case in Unicode 15 and no longer after. Python's answer
/// for all of them: `lower()` keeps the character, it is not upper-case,
/// and only `ʕ` is lower-case. The casing test checks this list against
/// every code point.
fn is_python_casing_exception(c: char) -> bool {
    matches!(c,
        '\u{295}' | '\u{1C89}'..='\u{1C8A}' | '\u{A7CB}'..='\u{A7CF}' | '\u{A7D2}' | '\u{A7D4}'
        | '\u{A7DA}'..='\u{A7DC}' | '\u{A7F1}' | '\u{10D50}'..='\u{10D65}' | '\u{10D70}'..='\u{10D85}'
        | '\u{16EA0}'..='\u{16EB8}' | '\u{16EBB}'..='\u{16ED3}')
}

/// Python 3.12's `ch.islower()`.
fn py_is_lowercase(c: char) -> bool {
    if is_python_casing_exception(c) {
        c == '\u{295}'
    } else {
        c.is_lowercase()
    }
}

/// Python 3.12's `ch.isupper()`.
fn py_is_uppercase(c: char) -> bool {
    !is_python_casing_exception(c) && c.is_uppercase()
}

/// `s.lower()`: full Unicode lower-casing (Rust's `to_lowercase` applies the
/// same SpecialCasing rules, final sigma included), with an ASCII fast path
/// and Python 3.12's answer for the characters its tables do not case.
pub(crate) fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    if !s.chars().any(is_python_casing_exception) {
        return s.to_lowercase();
    }
    // Lower-case the runs between the exceptions, which stay as they are.
    let mut exceptions = s.chars().filter(|&c| is_python_casing_exception(c));
    let mut out = String::with_capacity(s.len());
    for (k, run) in s.split(is_python_casing_exception).enumerate() {
        if k > 0
            && let Some(c) = exceptions.next()
        {
            out.push(c);
        }
        out.push_str(&run.to_lowercase());
    }
    out
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
        if py_is_lowercase(c) || is_titlecase(c) {
            return false;
        }
        cased |= py_is_uppercase(c);
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

    /// Every code point against CPython 3.12.1's own case data (Unicode
    /// 15.0): `str.lower()` and the per-character predicates behind
    /// `str.isupper()`. Rust's tables may be of a newer Unicode version;
    /// the code points where they differ are listed with the reason.
    #[test]
    fn casing_matches_python_for_every_code_point() {
        let data = include_str!("../../tests/fixtures/pyfloat/python_casing.tsv");
        let mut python: std::collections::HashMap<u32, (String, bool, bool, bool)> = std::collections::HashMap::new();
        for line in data.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split('\t').collect();
            let cp = u32::from_str_radix(f[0], 16).unwrap();
            let lower: String = f[1]
                .split(' ')
                .map(|h| char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap())
                .collect();
            let b = f[2].as_bytes();
            python.insert(cp, (lower, b[0] == b'1', b[1] == b'1', b[2] == b'1'));
        }
        let mut differ = Vec::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let own = c.to_string();
            let (lower, islower, isupper, title) =
                python
                    .get(&u32::from(c))
                    .cloned()
                    .unwrap_or((own.clone(), false, false, false));
            let ours = (py_lower(&own), py_is_lowercase(c), py_is_uppercase(c), is_titlecase(c));
            if ours != (lower, islower, isupper, title) {
                differ.push(u32::from(c));
            }
        }
        assert!(
            differ.is_empty(),
            "{} code points differ from Python: {:X?}",
            differ.len(),
            differ
        );
    }

    #[test]
    fn exceptions_keep_their_place() {
        assert_eq!(py_lower("ʕ•ᴥ•ʔ AB ʕ"), "ʕ•ᴥ•ʔ ab ʕ");
        assert!(!py_isupper("ʕOKʔ"));
    }

    #[test]
    fn lower_like_python() {
        assert_eq!(py_lower("GOOD"), "good");
        assert_eq!(py_lower("İ"), "i\u{307}");
        assert_eq!(py_lower("ΟΔΟΣ"), "οδος");
        assert_eq!(py_lower("\u{212A}ind"), "kind");
    }
}
