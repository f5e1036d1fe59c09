//! How fast the Reddit dump fast path reads lines: `comment_from_text`
//! over every line of an NDJSON file (e.g. a decompressed dump from
//! `examples/make_dump`), on one thread, best of three passes.
//!
//! Usage: cargo run --release --example bench_parse -- FILE.ndjson

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: bench_parse FILE.ndjson")?;
    let text = std::fs::read(&path)?;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut best = f64::INFINITY;
    let mut read = 0;
    for _ in 0..3 {
        let start = Instant::now();
        read = 0;
        for line in &lines {
            if let Some(post) = chorus::mapping::reddit::comment_from_text(line, true) {
                read += 1;
                std::hint::black_box(post);
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let bytes = text.len() as f64;
    println!(
        "{} lines ({} read by the fast path), {:.0} ns per line, {:.0} MB/s",
        lines.len(),
        read,
        best * 1e9 / lines.len() as f64,
        bytes / best / 1e6
    );
    Ok(())
}
