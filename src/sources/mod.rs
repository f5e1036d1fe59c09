//! Where posts come from besides the HTTP API, and how any source hands
//! accepted posts to the log.

pub mod demo;

use crate::log::{Log, LogError, Topic, post_key};
use crate::record::{IncomingPost, RawPost};

/// Appends accepted posts to `posts.raw`, durably, each keyed by its
/// platform and id; returns how many.
pub fn append_posts(log: &dyn Log, posts: Vec<IncomingPost>, ingested_at: i64) -> Result<usize, LogError> {
    let records: Vec<(Vec<u8>, Vec<u8>)> = posts
        .into_iter()
        .map(|incoming| {
            let key = post_key(&incoming.platform, &incoming.id);
            // Invariant: strings and integers always serialise.
            let value = serde_json::to_vec(&RawPost { incoming, ingested_at }).expect("a raw post serialises");
            (key, value)
        })
        .collect();
    if records.is_empty() {
        return Ok(0);
    }
    let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    log.append(Topic::Raw, &refs)?;
    Ok(records.len())
}
