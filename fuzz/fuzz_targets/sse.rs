//! The server-sent events parser fed in chunks: no panic, events bounded.
#![no_main]

use chorus::sources::sse::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut parser = Parser::new(256);
    let step = usize::from(split).max(1);
    for chunk in rest.chunks(step) {
        for event in parser.feed(chunk) {
            assert!(event.data.len() <= 256);
        }
    }
});
