//! Cleanup of a post's `body` into its `text`: what a reader sees, without
//! markup, links or invisible characters. The raw `body` is always kept
//! beside it; sentiment in the pipeline is scored on `text`.
//!
//! The rules, applied in this order:
//!
//! 1. **HTML entities** are decoded: the named ones that occur in social
//!    text (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;` `&nbsp;` `&hellip;`
//!    `&mdash;` `&ndash;` quotes, `&copy;`…) and numeric ones (`&#39;`,
//!    `&#x200B;`). Reddit's API escapes `&`, `<`, `>` once more unless asked
//!    for `raw_json`, so when the first pass decoded an `&amp;`, a second
//!    pass decodes what it revealed. Unknown or malformed entities stay as
//!    written.
//! 2. **Block markdown**, per line: quote markers (`>`), headings (`#`),
//!    list bullets (`-`, `*`, `+`, `1.`, `1)`), code fences and horizontal
//!    rules are removed; the text they mark up stays.
//! 3. **Inline markdown**: `[label](url)` and `![alt](url)` become the label;
//!    emphasis (`*`, `**`, `_`, `__`, `~~`) and inline code backticks are
//!    removed when they open or close a word (so `f*cking`, `snake_case` and
//!    emoticons like `*)` stay); superscript `^word` / `^(words)` and
//!    spoilers `>!text!<` keep their text; a backslash escape keeps the
//!    escaped character.
//! 4. **Links**: bare URLs (`http://`, `https://`, `www.`) and Reddit's
//!    `<https://…>` autolinks are removed; punctuation right after a URL
//!    stays.
//! 5. **Invisible characters**: zero-width space/non-joiner, word joiner,
//!    BOM, soft hyphen, bidi controls and other control characters are
//!    removed; a zero-width joiner stays only inside an emoji sequence.
//! 6. **Whitespace**: tabs and Unicode spaces become one space, lines are
//!    trimmed, three or more line breaks become one blank line (paragraphs
//!    stay, as TextBlob ends sentences at blank lines), `\r\n` becomes `\n`,
//!    and the text is trimmed.

/// The cleaned `text` of a post `body`.
pub fn clean(body: &str) -> String {
    let decoded = decode_entities_twice(body);
    let mut out = String::with_capacity(decoded.len());
    let mut blank_run = 0usize;
    let mut in_fence = false;
    let mut line_buf = String::new();
    for raw_line in decoded.split('\n') {
        let raw_line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let trimmed = raw_line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        let content = if in_fence {
            raw_line
        } else {
            strip_block_markers(raw_line)
        };
        line_buf.clear();
        if in_fence {
            line_buf.push_str(content);
        } else {
            inline(content, &mut line_buf);
        }
        let line = normalize_line(&line_buf);
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(&line);
    }
    out
}

/// Rule 1, with the second pass for API-escaped text.
fn decode_entities_twice(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return s.into();
    }
    let (once, saw_amp) = decode_entities(s);
    if saw_amp && once.contains('&') {
        decode_entities(&once).0.into()
    } else {
        once.into()
    }
}

/// Decodes the entities of `s`; also tells whether an `&amp;` was decoded.
fn decode_entities(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len());
    let mut saw_amp = false;
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // An entity is at most ~10 characters up to its ';'.
        let end = rest.bytes().take(12).position(|b| b == b';');
        let decoded = end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                saw_amp |= c == '&';
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    (out, saw_amp)
}

/// The character of one entity name (without `&` and `;`).
fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "euro" => '€',
        "pound" => '£',
        "cent" => '¢',
        "yen" => '¥',
        "sect" => '§',
        "para" => '¶',
        "zwj" => '\u{200d}',
        "zwnj" => '\u{200c}',
        _ => return None,
    })
}

/// Rule 2 for one line outside a code fence.
fn strip_block_markers(line: &str) -> &str {
    let mut s = line.trim_start();
    // Quote markers, possibly nested ("> > text"); not a spoiler (">!").
    while let Some(rest) = s.strip_prefix('>') {
        if rest.starts_with('!') {
            break;
        }
        s = rest.trim_start();
    }
    // Horizontal rule: three or more of one of - * _ and nothing else.
    let mut marks = s.chars().filter(|c| !c.is_whitespace());
    if let Some(first) = marks.next()
        && matches!(first, '-' | '*' | '_')
        && s.chars().filter(|&c| c == first).count() >= 3
        && marks.all(|c| c == first)
    {
        return "";
    }
    // Heading.
    let hashes = s.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&hashes) && s[hashes..].starts_with([' ', '\t']) {
        s = s[hashes..].trim_start();
    }
    // Bullet or numbered list item.
    if let Some(rest) = s.strip_prefix(['-', '*', '+'])
        && rest.starts_with([' ', '\t'])
    {
        s = rest.trim_start();
    } else {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if (1..=9).contains(&digits)
            && let Some(rest) = s[digits..].strip_prefix(['.', ')'])
            && rest.starts_with([' ', '\t'])
        {
            s = rest.trim_start();
        }
    }
    s
}

/// A character that can end a word for emphasis purposes.
fn is_boundary(c: Option<char>) -> bool {
    match c {
        None => true,
        Some(c) => c.is_whitespace() || (c.is_ascii_punctuation() && c != '*' && c != '_' && c != '~'),
    }
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// Rules 3 and 4 for one line.
fn inline(line: &str, out: &mut String) {
    let chars: Vec<char> = line.chars().collect();
    let at = |k: usize| chars.get(k).copied();
    let mut i = 0usize;
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        match c {
            '\\' if at(i + 1).is_some_and(|n| n.is_ascii_punctuation()) => {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            '!' if at(i + 1) == Some('[') => {
                if let Some((label, next)) = markdown_link(&chars, i + 1) {
                    inline(&label, out);
                    i = next;
                    continue;
                }
            }
            '[' => {
                if let Some((label, next)) = markdown_link(&chars, i) {
                    inline(&label, out);
                    i = next;
                    continue;
                }
            }
            '<' if starts_with_at(&chars, i + 1, "http") => {
                if let Some(len) = chars[i..].iter().position(|&c| c == '>') {
                    i += len + 1;
                    continue;
                }
            }
            '>' if at(i + 1) == Some('!') => {
                // Spoiler opening.
                i += 2;
                continue;
            }
            '!' if at(i + 1) == Some('<') => {
                // Spoiler closing.
                i += 2;
                continue;
            }
            '*' | '_' | '~' | '`' => {
                let run = chars[i..].iter().take_while(|&&d| d == c).count();
                let before = prev;
                let after = at(i + run);
                let opens = is_boundary(before) && is_word(after) || (is_boundary(before) && is_emph_start(after));
                let closes = (is_word(before) || is_emph_end(before)) && is_boundary(after);
                let strike_ok = c != '~' || run == 2;
                let code = c == '`';
                if (opens || closes || (code && run <= 3)) && strike_ok {
                    i += run;
                    continue;
                }
                for _ in 0..run {
                    out.push(c);
                }
                i += run;
                continue;
            }
            '^' if is_boundary(prev) || is_word(prev) => {
                if at(i + 1) == Some('(')
                    && let Some(close) = chars[i + 2..].iter().position(|&c| c == ')')
                {
                    let inner: String = chars[i + 2..i + 2 + close].iter().collect();
                    inline(&inner, out);
                    i += close + 3;
                    continue;
                }
                if is_word(at(i + 1)) {
                    i += 1;
                    continue;
                }
            }
            'h' | 'w' | 'H' | 'W' if !is_word(prev) => {
                if let Some(len) = url_len(&chars[i..]) {
                    i += len;
                    continue;
                }
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
}

/// Punctuation that may sit inside emphasis next to the marker ("*"quoted"*").
fn is_emph_start(c: Option<char>) -> bool {
    matches!(c, Some('"' | '\'' | '“' | '‘' | '(' | '[' | '$' | '#' | '@'))
}

fn is_emph_end(c: Option<char>) -> bool {
    matches!(c, Some('"' | '\'' | '”' | '’' | ')' | ']' | '.' | '!' | '?' | '%'))
}

fn starts_with_at(chars: &[char], at: usize, prefix: &str) -> bool {
    let mut k = at;
    for p in prefix.chars() {
        if chars.get(k).map(|c| c.to_ascii_lowercase()) != Some(p) {
            return false;
        }
        k += 1;
    }
    true
}

/// `[label](url)` starting at `chars[start] == '['`: the label and the index
/// after the closing parenthesis. Parentheses inside the URL may nest.
fn markdown_link(chars: &[char], start: usize) -> Option<(String, usize)> {
    let mut depth = 0usize;
    let mut k = start;
    let close = loop {
        match chars.get(k)? {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    break k;
                }
            }
            _ => {}
        }
        k += 1;
    };
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let mut depth = 0usize;
    let mut k = close + 1;
    loop {
        match chars.get(k)? {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            c if c.is_whitespace() && depth == 1 && chars.get(k + 1) != Some(&'"') => return None,
            _ => {}
        }
        k += 1;
    }
    Some((chars[start + 1..close].iter().collect(), k + 1))
}

/// Length of a bare URL at the start of `chars`, without the punctuation
/// that ends the sentence around it.
fn url_len(chars: &[char]) -> Option<usize> {
    let scheme = ["https://", "http://", "www."]
        .into_iter()
        .find(|p| starts_with_at(chars, 0, p))?;
    let mut len = chars.iter().take_while(|c| !c.is_whitespace()).count();
    if len <= scheme.len() {
        return None;
    }
    // Give back trailing punctuation and an unbalanced closing parenthesis.
    loop {
        let last = chars[len - 1];
        let opens = chars[..len].iter().filter(|&&c| c == '(').count();
        let closes = chars[..len].iter().filter(|&&c| c == ')').count();
        if matches!(last, '.' | ',' | '!' | '?' | ';' | ':' | '\'' | '"' | '*' | '_' | ']')
            || (last == ')' && closes > opens)
        {
            len -= 1;
        } else {
            break;
        }
    }
    Some(len)
}

/// Rules 5 and 6 for one line: invisible characters out, whitespace
/// collapsed, ends trimmed.
fn normalize_line(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut pending_space = false;
    for (k, &c) in chars.iter().enumerate() {
        let keep = match c {
            '\u{200d}' => {
                let emoji = |c: Option<&char>| c.is_some_and(|&c| c as u32 >= 0x2000 && !c.is_alphanumeric());
                emoji(chars.get(k.wrapping_sub(1))) && emoji(chars.get(k + 1))
            }
            '\u{200b}' | '\u{200c}' | '\u{2060}' | '\u{feff}' | '\u{ad}' | '\u{200e}' | '\u{200f}' => false,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => false,
            c if c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) => {
                pending_space = !out.is_empty();
                continue;
            }
            c if c.is_control() => false,
            _ => true,
        };
        if !keep {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn entities() {
        assert_eq!(clean("Tom &amp; Jerry &gt; everyone"), "Tom & Jerry > everyone");
        assert_eq!(clean("&lt;3 you &#39;all&#39; &#x1F600;"), "<3 you 'all' 😀");
        // API-escaped once more: "&amp;#x200B;" is a zero-width space.
        assert_eq!(clean("&amp;#x200B;\n\nhello"), "hello");
        assert_eq!(clean("AT&T &unknown; & co"), "AT&T &unknown; & co");
    }

    #[test]
    fn block_markdown() {
        assert_eq!(
            clean("> quoted bad text\n\nmy good reply"),
            "quoted bad text\n\nmy good reply"
        );
        assert_eq!(clean("# Heading\nnice"), "Heading\nnice");
        assert_eq!(
            clean("- item one is good\n- item two is bad"),
            "item one is good\nitem two is bad"
        );
        assert_eq!(clean("1. first\n2) second"), "first\nsecond");
        assert_eq!(clean("above\n\n---\n\nbelow"), "above\n\nbelow");
        assert_eq!(clean("```\nlet x = *y*;\n```\ndone"), "let x = *y*;\ndone");
        assert_eq!(clean("&gt; escaped quote"), "escaped quote");
    }

    #[test]
    fn inline_markdown() {
        assert_eq!(clean("**This** is *amazing*"), "This is amazing");
        assert_eq!(
            clean("__bold__ and _it_ and ~~terrible~~ fine"),
            "bold and it and terrible fine"
        );
        assert_eq!(clean("`code` is good"), "code is good");
        assert_eq!(clean("[link](http://a.b/good) was great"), "link was great");
        assert_eq!(
            clean("see [the film](https://en.wikipedia.org/wiki/Up_(2009_film)) now"),
            "see the film now"
        );
        assert_eq!(clean("![cat](https://i.imgur.com/x.png)"), "cat");
        assert_eq!(clean("^(tiny text) lol ^super"), "tiny text lol super");
        assert_eq!(clean(">!spoiler here!< ok"), "spoiler here ok");
        assert_eq!(clean(r"\*not emphasis\*"), "*not emphasis*");
    }

    #[test]
    fn keeps_what_is_not_markup() {
        assert_eq!(clean("f*cking great"), "f*cking great");
        assert_eq!(clean("snake_case_name"), "snake_case_name");
        assert_eq!(clean("wink *) and 2 * 3"), "wink *) and 2 * 3");
        assert_eq!(clean("^_^ and :-) and <3"), "^_^ and :-) and <3");
        assert_eq!(clean("u/bob and r/politics"), "u/bob and r/politics");
    }

    #[test]
    fn urls() {
        assert_eq!(
            clean("Great article https://example.com/good-news?x=1&y=2 check it"),
            "Great article check it"
        );
        assert_eq!(clean("see www.good.com."), "see .");
        assert_eq!(clean("(source: https://x.org/a_(b))"), "(source: )");
        assert_eq!(clean("autolink <https://x.org> here"), "autolink here");
        assert_eq!(clean("http:// alone"), "http:// alone");
    }

    #[test]
    fn invisible_and_whitespace() {
        assert_eq!(clean("a\u{200b}b\u{feff}c\u{ad}d\u{7}e"), "abcde");
        assert_eq!(clean("  lots \t of\u{a0}\u{2003}space  "), "lots of space");
        assert_eq!(clean("one\r\n\r\n\r\n\r\ntwo\r\nthree"), "one\n\ntwo\nthree");
        // The family emoji keeps its joiners; a stray joiner goes.
        assert_eq!(
            clean("family 👨\u{200d}👩\u{200d}👧 time a\u{200d}b"),
            "family 👨\u{200d}👩\u{200d}👧 time ab"
        );
        assert_eq!(clean(""), "");
        assert_eq!(clean(" \n\n "), "");
    }
}
