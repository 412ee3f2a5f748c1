//! Hard caps on everything a peer can make us decode or allocate.
//!
//! This module owns the numbers; [`crate::codec`] applies [`MAX_FRAME`] before allocating a frame
//! and as bincode's byte limit, and `Message::validate` (in [`crate::messages`]) enforces the rest
//! after decoding. Every cap is part of the protocol (`docs/PROTOCOL.md`, "Limits"): a sender must
//! stay within them, a receiver closes the connection with `bad-message` when one is exceeded.
//! Sizes are chosen so that one frame never holds more than a few MiB and a whole session's
//! working set stays far below the 64 MiB memory target.
//!
//! What this module does not own: the path rules themselves (they live in
//! [`botsync_engine::path`], re-exported here so the wire and the engine can never disagree).

use botsync_engine::ChunkerParams;
use botsync_engine::chunktree::FANOUT;
use botsync_engine::peer::AgentLabel;

pub use botsync_engine::path::{MAX_COMPONENT_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH};

/// Largest frame payload in bytes (4 MiB), checked on the length prefix before any allocation.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// Largest chunk in bytes, raw or decompressed: the chunker's maximum (256 KiB).
pub const MAX_CHUNK_LEN: usize = ChunkerParams::DEFAULT.max as usize;

/// Most paths in one `GetNodes` or `GetEntries` request.
pub const MAX_PATHS_PER_REQUEST: usize = 1024;

/// Most directory nodes in one `Nodes` reply.
pub const MAX_NODES_PER_REPLY: usize = MAX_PATHS_PER_REQUEST;

/// Most children of one directory node in a `Nodes` reply.
pub const MAX_NODE_CHILDREN: usize = 65_536;

/// Most children of one directory an asker takes across its `NodesPart` messages and its reply
/// (feature `LONG_LISTS`): what it holds of one directory at once.
pub const MAX_LISTED_CHILDREN: usize = 1 << 20;

/// Most file entries in one `Entries` batch.
pub const MAX_ENTRIES_PER_BATCH: usize = 1024;

/// Most chunk references carried inline in one entry; longer lists travel elided and are
/// fetched as chunk-tree nodes.
pub const MAX_INLINE_CHUNKS: usize = 1024;

/// The smallest chunker minimum an entry may declare. Every chunk of a file but its last is at
/// least the chunker's minimum, so a file of `size` bytes has at most `size / min + 1` chunks:
/// with this floor, a peer cannot make a receiver handle more than one chunk reference per
/// 2 KiB of file (the chunk-count amplification of issue 10).
pub const MIN_CHUNK_FLOOR: u32 = 2048;

/// Most chunks a file of `size` bytes chunked with minimum `min` can have.
pub fn max_chunks(size: u64, min: u32) -> u64 {
    match size {
        0 => 0,
        _ => size / u64::from(min.max(1)) + 1,
    }
}

/// Most chunk ids in one `GetChunks` request.
pub const MAX_IDS_PER_REQUEST: usize = 1024;

/// Most chunk-tree nodes asked for (or returned) in one `GetTreeNodes` / `TreeNodes`.
pub const MAX_TREE_NODES_PER_REQUEST: usize = 256;

/// Most children of one chunk-tree node: the engine's fan-out.
pub const MAX_TREE_NODE_CHILDREN: usize = FANOUT;

/// Most peers in one version vector.
pub const MAX_VECTOR_PEERS: usize = 1024;

/// Most patterns in one `GetState`.
pub const MAX_STATE_PATTERNS: usize = botsync_engine::state::MAX_PATTERNS;

/// Most records in one `State` batch (batches are also split to fit [`MAX_FRAME`]).
pub const MAX_STATE_RECORDS_PER_BATCH: usize = 256;

/// Most state records one side accepts from the other in one session: a peer cannot make the
/// receiver hold an unbounded list of keys.
pub const MAX_STATE_RECORDS_PER_SESSION: usize = 65_536;

/// Largest state value in bytes (the engine's own cap, 64 KiB).
pub const MAX_STATE_VALUE: usize = botsync_engine::state::MAX_VALUE_BYTES;

/// Longest peer name in `Hello`, in bytes.
pub const MAX_PEER_NAME: usize = 64;

/// Longest agent label, in bytes (the engine's own cap).
pub const MAX_AGENT_LABEL: usize = AgentLabel::MAX_LEN;

/// Largest body of a `Coordinate` or `Coordinated` message (a coordination request or answer,
/// docs/LOCKS.md), in bytes.
pub const MAX_COORD_BODY: usize = 1024 * 1024;

/// Longest human-readable text in an `Error` message, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// Most designated mesh config files in one `MeshConfig` or `Parity` message.
pub const MAX_MESH_FILES: usize = 8;

/// Largest stripped mesh config file in bytes (256 KiB): a mesh config is a few KiB of JSON.
pub const MAX_MESH_FILE_BYTES: usize = 256 * 1024;

/// Most selection rules in a `Parity` report.
pub const MAX_POLICY_RULES: usize = 256;

/// Longest selection rule in a `Parity` report, in bytes.
pub const MAX_POLICY_RULE_BYTES: usize = 1024;

/// Length of the frame's length prefix in bytes.
pub const FRAME_HEADER_LEN: usize = 4;

// The frame must hold the largest chunk with room for its header fields.
const _: () = assert!(MAX_CHUNK_LEN + 1024 < MAX_FRAME);
// Every mesh file at its cap, and the policy at its caps, fit one frame with room to spare.
const _: () = assert!(
    MAX_MESH_FILES * (MAX_MESH_FILE_BYTES + 1024) + MAX_POLICY_RULES * (MAX_POLICY_RULE_BYTES + 8)
        < MAX_FRAME
);
// The length prefix is a u32.
const _: () = assert!(MAX_FRAME <= u32::MAX as usize);

// A full inline chunk list (32-byte id + at most 5-byte varint length each) is a small part of
// a frame, so an entry batch can always hold many entries.
const _: () = assert!(MAX_INLINE_CHUNKS * 37 < MAX_FRAME / 16);

// One state record of the largest value (with its key, vector and label) always fits a frame.
const _: () = assert!(MAX_STATE_VALUE + 64 * 1024 < MAX_FRAME);

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when it was cut: what
/// a sender does with free-form text (a failure reason, a path in a report, a selection rule)
/// before it meets a cap the receiver checks, so that the message still encodes and decodes.
pub fn fit_text(mut text: String, max: usize) -> String {
    const CUT: &str = "…";
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(CUT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if max >= CUT.len() {
        text.push_str(CUT);
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use botsync_engine::{ChunkRef, Hash};

    use super::*;
    use crate::codec::encode;
    use crate::messages::{Message, SubtreeRef, TreeAddr, TreeNodeBody, TreeNodeReply};

    /// The largest request and reply of each fixed-size kind encodes within one frame, so a
    /// sender that respects the count caps never needs to split by bytes for them.
    #[test]
    fn requests_at_their_count_caps_fit_a_frame() {
        let ids = Message::GetChunks {
            ids: vec![Hash::of(b"id"); MAX_IDS_PER_REQUEST],
        };
        assert!(encode(&ids).unwrap().len() < MAX_FRAME);
        let addrs = vec![
            TreeAddr {
                level: 5,
                index: u32::MAX
            };
            MAX_TREE_NODES_PER_REQUEST
        ];
        let get = Message::GetTreeNodes {
            content: Hash::ZERO,
            nodes: addrs.clone(),
        };
        assert!(encode(&get).unwrap().len() < MAX_FRAME);
        let inner = vec![
            SubtreeRef {
                hash: Hash::ZERO,
                span: u64::MAX >> 6, // the largest span 64 children can each have
            };
            MAX_TREE_NODE_CHILDREN
        ];
        let leaf = vec![
            ChunkRef {
                id: Hash::ZERO,
                len: MAX_CHUNK_LEN as u32
            };
            MAX_TREE_NODE_CHILDREN
        ];
        let mut nodes: Vec<TreeNodeReply> = addrs
            .iter()
            .map(|&addr| TreeNodeReply {
                addr,
                body: TreeNodeBody::Inner(inner.clone()),
            })
            .collect();
        nodes[0] = TreeNodeReply {
            addr: TreeAddr { level: 0, index: 0 },
            body: TreeNodeBody::Leaf(leaf),
        };
        let reply = Message::TreeNodes {
            content: Hash::ZERO,
            nodes,
        };
        assert!(encode(&reply).unwrap().len() < MAX_FRAME);
    }
}
