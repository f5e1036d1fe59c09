//! Writes a Pushshift / Arctic Shift style comment dump for benchmarks:
//! LINES lines of Reddit comment JSON (bodies from the Reddit corpus,
//! replicated; 20 subreddits; times sorted, as the dumps are, and spread
//! over SPAN_SECS from 2019-01-01: by default one month, as sparse as 1M
//! lines make it; a real month holds ~10^8 comments, ~40 a second),
//! zstd-compressed with the 2^31 window the real `RC_YYYY-MM.zst` files use.
//!
//! Usage: cargo run --release --example make_dump -- OUT.zst [LINES [SPAN_SECS]]

use std::io::Write;

const SUBREDDITS: [&str; 20] = [
    "politics",
    "news",
    "worldnews",
    "AskReddit",
    "science",
    "technology",
    "funny",
    "gaming",
    "movies",
    "todayilearned",
    "pics",
    "books",
    "sports",
    "Music",
    "nba",
    "soccer",
    "europe",
    "canada",
    "unitedkingdom",
    "Economics",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: make_dump OUT.zst [LINES [SPAN_SECS]]")?;
    let lines: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1_000_000);
    let span: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(2_678_400);
    let corpus = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sentiment/reddit_comments.ndjson"
    );
    let bodies: Vec<String> = std::fs::read_to_string(corpus)?
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["body"].as_str().unwrap_or("").to_string()))
        .collect::<Result<_, _>>()?;
    let file = std::fs::File::create(&out)?;
    let mut encoder = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 3)?;
    encoder.long_distance_matching(true)?;
    encoder.window_log(31)?;
    let month_start = 1_546_300_800u64; // 2019-01-01
    for i in 0..lines {
        let subreddit = SUBREDDITS[(i % 20) as usize];
        let id = base36(1_000_000_000 + i);
        let link = base36(500_000_000 + i / 50);
        let line = serde_json::json!({
            "id": id,
            "author": format!("user_{}", i % 50_021),
            "subreddit": subreddit,
            "subreddit_id": format!("t5_{}", base36(1000 + i % 20)),
            "body": bodies[(i % bodies.len() as u64) as usize],
            "created_utc": month_start + (i * span.saturating_sub(1) / lines.max(1)),
            "link_id": format!("t3_{link}"),
            "parent_id": format!("t3_{link}"),
            "score": (i % 37) as i64 - 3,
            "permalink": format!("/r/{subreddit}/comments/{link}/_/{id}/"),
            "controversiality": 0,
            "gilded": 0,
            "stickied": false,
        });
        serde_json::to_writer(&mut encoder, &line)?;
        encoder.write_all(b"\n")?;
    }
    encoder.finish()?.flush()?;
    Ok(())
}

fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
