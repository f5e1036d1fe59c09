//! Reddit's listing and token answers, whatever the server sends: an
//! error, never a panic.
#![no_main]

use chorus::sources::reddit::{read_listing, read_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(children) = read_listing(&text) {
        for (name, post) in children {
            assert!(!name.is_empty() || post.is_err() || post.is_ok());
        }
    }
    if let Ok((_, lifetime)) = read_token(&text, "client_credentials") {
        assert!(lifetime <= std::time::Duration::from_secs(24 * 3600));
    }
});
