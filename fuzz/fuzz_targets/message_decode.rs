//! Any bytes as one frame payload: `decode` must not panic, and whatever it accepts must
//! survive a round trip; chunk payloads are also pushed through decompression and verification,
//! chunk-tree nodes through hashing.
#![no_main]

use botsync_proto::codec::{decode, encode};
use botsync_proto::messages::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let again = encode(&message).expect("a decoded message re-encodes");
        assert_eq!(
            decode(&again).expect("a re-encoded message decodes"),
            message
        );
        match message {
            Message::ChunkData(chunk) => {
                let _ = chunk.into_verified_bytes();
            }
            Message::TreeNodes { nodes, .. } => {
                for node in &nodes {
                    let _ = node.node_hash();
                }
            }
            _ => {}
        }
    }
});
