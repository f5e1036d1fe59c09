//! Counts the enrich stage's seen-state of a stopped data directory:
//!
//! ```text
//! cargo run --release --example state_size -- DIR
//! ```
//!
//! Prints the live entries (a full scan) and the state's disk bytes, as
//! the figures of the seen-state's expiry in the README were measured.

use chorus::log::Log;
use chorus::log::fjall::FjallLog;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: state_size DIR");
    let log = FjallLog::open(&std::path::Path::new(&dir).join("log"), 4).expect("open the log (is a server running?)");
    let (mut entries, mut after): (u64, Option<Vec<u8>>) = (0, None);
    loop {
        let page = log.scan_state(b"", after.as_deref(), 100_000).expect("scan the state");
        entries += page.len() as u64;
        match page.last() {
            Some((key, _)) if page.len() == 100_000 => after = Some(key.clone()),
            _ => break,
        }
    }
    println!(
        "state entries: {entries}, disk: {:.1} MiB",
        log.state_bytes() as f64 / (1 << 20) as f64
    );
}
