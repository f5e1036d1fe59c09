//! Hostile post bodies for cleanup and both analyzers: each pattern repeats
//! what a quadratic rule would choke on, grown to any size. Shared by the
//! time-bound test (`tests/it/score_cli.rs`) and the benchmark
//! `examples/adversarial_scoring.rs`.

/// Named patterns: a head written once, then a unit repeated to the size.
pub const PATTERNS: &[(&str, &str, &str)] = &[
    ("but + repeated word", "but ", "good "),
    ("repeated word, but at the end", "", "good "),
    ("runs of !", "wow", "!"),
    ("runs of ?", "what", "?"),
    ("!? alternating", "", "!?"),
    ("(!) repeated", "", "great (!) "),
    ("emoji, no spaces", "", "\u{1F600}"),
    ("emoji words", "", "\u{1F600} \u{1F621} "),
    ("emoticons", "", ":) :( "),
    ("nested emphasis", "", "**_~~"),
    ("open brackets", "", "[("),
    ("links", "", "[a](http://x.org/"),
    ("block quotes", "", "> "),
    ("code fences", "", "```\n"),
    ("long URL", "https://example.org/", "a"),
    ("many URLs", "", "https://x.org/a "),
    ("many sentences", "", "Good. "),
    ("negations", "", "not "),
    ("boosters", "", "very "),
    ("capitals", "fine ", "GOOD "),
    ("kind of", "", "kind of "),
    ("entities", "", "&amp;"),
    ("broken entities", "", "&#"),
    ("newlines", "x", "\n"),
    ("one long word", "", "a"),
    ("contractions", "", "isn't "),
    ("quotes", "", "\"'"),
];

/// The body of `pattern` grown to at least `bytes` bytes.
pub fn body(pattern: &(&str, &str, &str), bytes: usize) -> String {
    let (_, head, unit) = pattern;
    let mut body = String::with_capacity(bytes + unit.len());
    body.push_str(head);
    while body.len() < bytes {
        body.push_str(unit);
    }
    body
}
