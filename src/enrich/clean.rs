//! Cleanup of a post's `body` into its `text` (filled in below).
