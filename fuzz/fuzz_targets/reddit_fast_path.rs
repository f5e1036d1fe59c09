//! The dumps' fast path against the full parse, on any line: it gives
//! exactly what parsing the line and mapping the comment gives, or leaves
//! the line to them (`None`); never a post from a line the parse refuses.
#![no_main]

use chorus::mapping::reddit::{comment, comment_from_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for detect in [false, true] {
        if let Some(fast) = comment_from_text(data, detect) {
            let value: serde_json::Value = serde_json::from_slice(data).expect("the fast path read a line that is not JSON");
            assert_eq!(comment(&value).as_ref(), Ok(&fast), "detect {detect}");
        }
    }
});
