//! Any bytes as the coordination feed (`memory/bot-sync/feed.jsonl` arrives from peers): parsing
//! never panics, reads as one order (time, then id) with each id once, every message written back
//! as a line reads back the same, and handoffs are read without panicking.
//! Replayed by `cargo test -p botsync-engine --test fuzz_corpus`.
#![no_main]

use botsync_engine::feed::{Feed, handoffs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let feed = Feed::parse(data);
    for w in feed.messages.windows(2) {
        let key = |m: &botsync_engine::feed::Message| (m.at_ms().unwrap_or(0), m.id.clone());
        assert!(key(&w[0]) < key(&w[1]), "out of order or repeated");
    }
    for m in &feed.messages {
        let again = Feed::parse(m.to_line().as_bytes());
        assert_eq!(again.messages.len(), 1);
        assert_eq!(&again.messages[0], m);
    }
    let _ = handoffs(&feed);
});
