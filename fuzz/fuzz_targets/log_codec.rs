//! The log's record decoders on any bytes: an error, never a panic; what
//! decodes re-encodes to a record that decodes the same.
#![no_main]

use chorus::record::{Post, PostView, RawPost, RawView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = RawPost::from_log_bytes(data) {
        let again = RawPost::from_log_bytes(&raw.to_log_bytes()).expect("a raw post re-encodes");
        assert_eq!(again, raw);
    }
    if let Ok(post) = Post::from_log_bytes(data) {
        let again = Post::from_log_bytes(&post.to_log_bytes()).expect("a post re-encodes");
        assert_eq!(again.incoming, post.incoming);
    }
    let _ = RawView::from_log_bytes(data).map(|v| v.content_hash());
    let _ = PostView::from_log_bytes(data);
});
