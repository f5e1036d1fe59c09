//! HTML post bodies (Mastodon statuses, Hacker News items) as the text a
//! reader sees: paragraphs become blank lines, `<br>` a line break, other
//! tags vanish (their text stays), entities are decoded once.

/// The text of an HTML fragment.
pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        // `<` not followed by a tag name, `/` or `!` is text.
        let starts_tag = rest[at + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if !starts_tag {
            out.push('<');
            rest = &rest[at + 1..];
            continue;
        }
        let Some(end) = rest[at..].find('>') else {
            // A lone '<' is text.
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        let tag = rest[at + 1..at + end].trim().to_ascii_lowercase();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        match name.as_str() {
            "br" => out.push('\n'),
            // A paragraph (opening or closing) starts a new block.
            "p" | "div" | "blockquote" | "li" | "pre" if !out.is_empty() && !out.ends_with("\n\n") => {
                let trimmed = out.trim_end_matches('\n').len();
                out.truncate(trimmed);
                out.push_str("\n\n");
            }
            _ => {}
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    let (decoded, _) = crate::enrich::clean::decode_entities(&out);
    decoded.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn paragraphs_breaks_tags_and_entities() {
        assert_eq!(to_text("<p>it&#39;s cool guy</p>"), "it's cool guy");
        assert_eq!(to_text("<p>one</p><p>two<br>three</p>"), "one\n\ntwo\nthree");
        assert_eq!(
            to_text("Aw shucks<p>Tell you <i>what</i>, &lt;deal&gt; &amp;amp;"),
            "Aw shucks\n\nTell you what, <deal> &amp;"
        );
        assert_eq!(
            to_text(r#"<p><a href="https://x.org/tags/rust" class="mention hashtag">#<span>rust</span></a> 3 < 4</p>"#),
            "#rust 3 < 4"
        );
    }
}
