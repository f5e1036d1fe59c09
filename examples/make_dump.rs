//! Writes a Pushshift / Arctic Shift style comment dump for benchmarks:
//! LINES lines of Reddit comment JSON (the 38 fields of a real 2018 line,
//! keys sorted, slashes escaped; bodies from the Reddit corpus,
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
        let created = month_start + (i * span.saturating_sub(1) / lines.max(1));
        let author = format!("user_{}", i % 50_021);
        // The 38 fields of a real line (tests/fixtures/pushshift), keys
        // sorted and slashes escaped as the dumps have them.
        let line = serde_json::json!({
            "archived": false,
            "author": author,
            "author_created_utc": 1_300_000_000 + (i % 50_021) * 3_001,
            "author_flair_background_color": null,
            "author_flair_css_class": null,
            "author_flair_richtext": [],
            "author_flair_template_id": null,
            "author_flair_text": null,
            "author_flair_text_color": null,
            "author_flair_type": "text",
            "author_fullname": format!("t2_{}", base36(3_000_000 + i % 50_021)),
            "author_patreon_flair": false,
            "body": bodies[(i % bodies.len() as u64) as usize],
            "can_gild": true,
            "can_mod_post": false,
            "collapsed": false,
            "collapsed_reason": null,
            "controversiality": 0,
            "created_utc": created,
            "distinguished": null,
            "edited": false,
            "gilded": 0,
            "gildings": {"gid_1": 0, "gid_2": 0, "gid_3": 0},
            "id": id,
            "is_submitter": i % 7 == 0,
            "link_id": format!("t3_{link}"),
            "no_follow": true,
            "parent_id": format!("t3_{link}"),
            "permalink": format!("/r/{subreddit}/comments/{link}/what_people_said_about_it_today/{id}/"),
            "removal_reason": null,
            "retrieved_on": created + 1_362_091,
            "score": (i % 37) as i64 - 3,
            "send_replies": true,
            "stickied": false,
            "subreddit": subreddit,
            "subreddit_id": format!("t5_{}", base36(1000 + i % 20)),
            "subreddit_name_prefixed": format!("r/{subreddit}"),
            "subreddit_type": "public",
        });
        let text = serde_json::to_string(&line)?.replace('/', "\\/");
        encoder.write_all(text.as_bytes())?;
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
