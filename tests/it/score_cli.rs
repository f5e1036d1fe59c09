//! `chorus score` as a user runs it: the real binary, stdin and arguments.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::fixture;

fn chorus(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chorus");
    // Feed stdin from another thread: chorus writes output while it reads,
    // and a full stdout pipe would otherwise block both sides.
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let output = child.wait_with_output().expect("chorus output");
    writer.join().expect("stdin writer").expect("write stdin");
    output
}

#[test]
fn ndjson_stdin_matches_python_goldens_in_order() {
    check_cli_against_goldens("edge_cases");
}

#[test]
fn many_lines_are_scored_in_parallel_and_printed_in_input_order() {
    // 10,000 lines: several batches, each split over every core.
    check_cli_against_goldens("fuzz");
}

fn check_cli_against_goldens(set: &str) {
    let input = std::fs::read(fixture(&format!("sentiment/{set}.ndjson"))).unwrap();
    let expected = std::fs::read_to_string(fixture(&format!("sentiment/{set}.expected.ndjson"))).unwrap();
    let out = chorus(&["score", "--format", "ndjson"], &input);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<Value> = expected.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["id"], w["id"]);
        for (ours, python) in [
            ("polarity", "textblob_polarity"),
            ("subjectivity", "textblob_subjectivity"),
            ("vader_neg", "vader_neg"),
            ("vader_neu", "vader_neu"),
            ("vader_pos", "vader_pos"),
            ("vader_compound", "vader_compound"),
        ] {
            // The printed float parses back to exactly Python's double.
            assert_eq!(g[ours].as_f64(), w[python].as_f64(), "{} {ours}", g["id"]);
        }
        let compound = g["vader_compound"].as_f64().unwrap();
        let label = if compound >= 0.05 {
            "positive"
        } else if compound <= -0.05 {
            "negative"
        } else {
            "neutral"
        };
        assert_eq!(g["sentiment"], label);
    }
}

#[test]
fn malformed_line_is_named_and_the_rest_still_scored() {
    let input =
        b"{\"id\":\"a\",\"body\":\"I love it\"}\n{\"id\":\"b\",\"body\":\n{\"id\":\"c\",\"body\":\"I hate it\"}\n";
    let out = chorus(&["score", "--format", "ndjson"], input);
    assert!(
        !out.status.success(),
        "a malformed line must make the exit status non-zero"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "stderr names the line: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["a", "c"]);
}

#[test]
fn text_arguments_print_a_table() {
    let out = chorus(&["score", "I love this!", "This is terrible."], b"");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("id") && lines[0].contains("compound"), "{stdout}");
    assert!(
        lines[1].contains("positive") && lines[1].contains("I love this!"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("negative") && lines[2].contains("This is terrible."),
        "{stdout}"
    );
}

#[test]
fn a_hostile_one_mebibyte_body_of_any_pattern_is_scored_within_seconds() {
    use crate::adversarial_bodies::{PATTERNS, body};
    // Linear work takes well under a second per MiB even unoptimised; the
    // quadratic `but` rule took 11 s for 200,000 words in a release build.
    const BOUND: std::time::Duration = std::time::Duration::from_secs(15);
    for pattern in PATTERNS {
        let line = serde_json::json!({"id": pattern.0, "body": body(pattern, 1 << 20)}).to_string();
        let start = std::time::Instant::now();
        let out = chorus(&["score", "--format", "ndjson"], line.as_bytes());
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{}: {}",
            pattern.0,
            String::from_utf8_lossy(&out.stderr)
        );
        let scored: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(scored["id"], pattern.0);
        assert!(scored["vader_compound"].is_f64(), "{}: {scored}", pattern.0);
        assert!(took < BOUND, "{}: {took:?} for 1 MiB", pattern.0);
    }
}
