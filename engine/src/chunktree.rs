//! A file's chunk list as a small Merkle tree; its root is the file's content hash.
//!
//! Leaves are the file's [`ChunkRef`]s in order. They are grouped [`FANOUT`] to a node; nodes are
//! grouped again until one root remains. A node hash covers its level and its children (id and
//! length for leaves, node hash and byte span for inner nodes), under the `ChunkTree` domain.
//! Two versions of a large file are compared by walking down only the nodes whose hashes differ.

use crate::chunk::ChunkRef;
use crate::hash::{Domain, Hash};

/// Children per tree node.
pub const FANOUT: usize = 64;

/// The content hash of a file with these chunks: the root of its chunk tree.
pub fn content_hash(chunks: &[ChunkRef]) -> Hash {
    if chunks.is_empty() {
        return Hash::tagged(Domain::ChunkTree, &[b"empty"]);
    }
    let mut level: Vec<(Hash, u64)> = chunks.chunks(FANOUT).map(leaf_node).collect();
    let mut depth = 1u8;
    while level.len() > 1 {
        level = level
            .chunks(FANOUT)
            .map(|group| inner_node(depth, group))
            .collect();
        depth = depth.saturating_add(1);
    }
    level[0].0
}

/// Hash of a level-0 node over up to [`FANOUT`] chunks, with the bytes it spans.
pub fn leaf_node(chunks: &[ChunkRef]) -> (Hash, u64) {
    let mut buf = Vec::with_capacity(1 + chunks.len() * 36);
    buf.push(0u8);
    let mut span = 0u64;
    for c in chunks {
        buf.extend_from_slice(c.id.as_bytes());
        buf.extend_from_slice(&c.len.to_le_bytes());
        span += u64::from(c.len);
    }
    (Hash::tagged(Domain::ChunkTree, &[&buf]), span)
}

/// Hash of an inner node at `depth` (≥ 1) over child (hash, span) pairs.
pub fn inner_node(depth: u8, children: &[(Hash, u64)]) -> (Hash, u64) {
    let mut buf = Vec::with_capacity(1 + children.len() * 40);
    buf.push(depth);
    let mut span = 0u64;
    for (h, s) in children {
        buf.extend_from_slice(h.as_bytes());
        buf.extend_from_slice(&s.to_le_bytes());
        span += s;
    }
    (Hash::tagged(Domain::ChunkTree, &[&buf]), span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(n: usize) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                id: Hash::of(&(i as u64).to_le_bytes()),
                len: 1000 + i as u32,
            })
            .collect()
    }

    #[test]
    fn content_hash_depends_on_every_chunk() {
        let a = refs(200);
        let mut b = a.clone();
        b[150].len += 1;
        assert_ne!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&[]), content_hash(&refs(1)));
        assert_eq!(content_hash(&a), content_hash(&refs(200)));
    }
}
