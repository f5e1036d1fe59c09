//! Cleanup and both analyzers on any text: no panic, scores in range.
#![no_main]

use chorus::enrich::{clean, score};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let text = clean::clean(&body);
    for scores in [score(&text), score(&body)] {
        assert!((-1.0..=1.0).contains(&scores.polarity), "{scores:?}");
        assert!((0.0..=1.0).contains(&scores.subjectivity), "{scores:?}");
        assert!((-1.0..=1.0).contains(&scores.vader_compound), "{scores:?}");
    }
});
