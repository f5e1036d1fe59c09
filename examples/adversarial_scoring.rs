//! Times cleanup + TextBlob + VADER on hostile bodies of 1 KiB to 1 MiB
//! (the patterns of `tests/it/adversarial_bodies.rs`), one post at a time as
//! the enrich stage scores it:
//!
//! ```text
//! cargo run --release --example adversarial_scoring [-- MAX_BYTES]
//! ```
//!
//! Prints one line per pattern: milliseconds per body at each size, and the
//! growth from the largest size but one to the largest (4 when the work is
//! linear in the size: each size is 4 times the one before).

use std::time::Instant;

#[path = "../tests/it/adversarial_bodies.rs"]
mod adversarial_bodies;

use chorus::enrich::{self, clean};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let max: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1 << 20);
    let sizes: Vec<usize> = std::iter::successors(Some(1024usize), |s| Some(s * 4))
        .take_while(|s| *s <= max)
        .collect();
    print!("{:<32}", "pattern (ms per body)");
    for size in &sizes {
        print!("{:>10}", format!("{} KiB", size / 1024));
    }
    println!("{:>10}", "growth");
    let mut worst: f64 = 0.0;
    for pattern in adversarial_bodies::PATTERNS {
        print!("{:<32}", pattern.0);
        let mut times = Vec::new();
        for &size in &sizes {
            let body = adversarial_bodies::body(pattern, size);
            // Best of three, the machines being shared.
            let best = (0..3)
                .map(|_| {
                    let start = Instant::now();
                    let text = clean::clean(&body);
                    std::hint::black_box(enrich::score(&text));
                    start.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min);
            print!("{best:>10.2}");
            times.push(best);
        }
        let growth = match times.as_slice() {
            [.., a, b] if *a > 0.0 => b / a,
            _ => f64::NAN,
        };
        worst = worst.max(*times.last().unwrap_or(&0.0));
        println!("{growth:>10.1}");
    }
    println!("slowest body of the largest size: {worst:.1} ms");
}
