//! `mapping::parse_document` in every format: no panic, and every post it
//! accepts keeps the record's bounds.
#![no_main]

use chorus::mapping::{Format, parse_document};
use chorus::record::Limits;
use libfuzzer_sys::fuzz_target;

const FORMATS: [Format; 7] = [
    Format::Auto,
    Format::Canonical,
    Format::Reddit,
    Format::Tweet,
    Format::Bluesky,
    Format::Mastodon,
    Format::HackerNews,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let limits = Limits { max_post_bytes: 4096 };
    let parsed = parse_document(body, FORMATS[selector as usize % FORMATS.len()], &limits);
    for post in &parsed.posts {
        assert!(post.check(&limits).is_ok(), "an accepted post breaks the bounds: {post:?}");
    }
    assert!(parsed.rejected.len() <= chorus::mapping::MAX_LISTED_REJECTIONS);
    assert!(parsed.rejected_total >= parsed.rejected.len());
});
