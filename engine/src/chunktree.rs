//! A file's chunk list as a Merkle tree; its root is the file's content hash.
//!
//! Owns the tree over one file's [`ChunkRef`]s: how chunks are grouped into nodes, how nodes are
//! hashed, the [`content_hash`], the in-memory [`ChunkTree`] with all levels (what a peer serves
//! its nodes from), and [`Rebuild`], the walk that rebuilds another version's chunk list from
//! only the nodes we lack. It does not own chunking (`crate::chunk`) or moving nodes over the
//! wire (the session in `botsync-proto` drives [`Rebuild`] and answers from [`ChunkTree`]).
//!
//! # Shape
//!
//! Levels are numbered as on the wire: level 0 holds the leaf nodes, each over up to [`FANOUT`]
//! chunks; level 1 groups level-0 nodes, and so on until one root remains at `height - 1`. A
//! node hash covers its level and its children (chunk id and length, or node hash and byte
//! span), under the `ChunkTree` domain ([`leaf_node`] at level 0, [`inner_node`] above), so a
//! tree cannot be passed off as a different level or a different file.
//!
//! # Groups are fixed; the reuse is set-based
//!
//! Nodes hold [`FANOUT`] children (the last of a level fewer), exactly as `botsync-proto`'s
//! tree-node messages address them (`index * FANOUT + i`). [`Rebuild`] does not compare
//! positions: it asks only for nodes whose hash appears *nowhere* in the local tree (set
//! difference). So it is always exact, even when an insertion adds or removes a chunk and shifts
//! every later index. The cost is not always
//! small: a replaced chunk costs one lookup per level, but a shift in the chunk count changes
//! every group after it, and the walk then reads every level-1 node from the edit to the end.
//! Content-defined groups (a group ends after a child whose hash is a boundary) would make
//! shifted groups resynchronize too: measured on 8,192 chunks with one chunk turned into three,
//! 5 lookups instead of about half the list. That changes the content hash and the wire
//! addressing, so it is left for a protocol version 2; see `docs/STORAGE.md`.

use std::fmt;

use crate::chunk::ChunkRef;
use crate::hash::{Domain, Hash};

/// Average number of children per tree node.
pub const FANOUT: usize = 64;

mod rebuild;

pub use rebuild::{NodeAddr, Rebuild, RebuildError};

/// Deepest tree a rebuild will descend: more than any real file needs (64^12 chunks), and a bound
/// on what a hostile peer can make us do.
pub const MAX_LEVELS: usize = 12;

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

/// Hash of a level-0 (leaf) node over up to [`FANOUT`] chunks, with the bytes it spans.
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

/// Hash of an inner node at level `depth` (≥ 1) over child (hash, span) pairs.
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

/// One node of a chunk tree as seen from its parent: its hash and the bytes it covers. As a
/// child of a level-0 node it is a chunk (id and length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeNode {
    /// Node hash (chunk id for a chunk).
    pub hash: Hash,
    /// Bytes of the file under this node.
    pub span: u64,
}

/// The children of one node, as a lookup returns them (and as the wire carries them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChildren {
    /// Index of the first child within its level.
    pub first: u64,
    /// The children, in file order.
    pub nodes: Vec<TreeNode>,
}

/// A file's chunk tree with every level kept: node hashes, spans and child ranges.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkTree {
    chunks: Vec<ChunkRef>,
    /// `levels[l]` is wire level `l`; the last level holds the root alone.
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Level {
    nodes: Vec<TreeNode>,
    /// `ends[i]..ends[i + 1]` are node `i`'s children in the level below (`ends[0] == 0`).
    ends: Vec<usize>,
}

impl ChunkTree {
    /// Build the tree of a chunk list.
    pub fn new(chunks: Vec<ChunkRef>) -> ChunkTree {
        let mut levels: Vec<Level> = Vec::new();
        if !chunks.is_empty() {
            let ends = group_ends(chunks.len());
            let nodes = ends
                .windows(2)
                .map(|w| {
                    let (hash, span) = leaf_node(&chunks[w[0]..w[1]]);
                    TreeNode { hash, span }
                })
                .collect();
            levels.push(Level { nodes, ends });
        }
        while let Some(below) = levels.last().filter(|l| l.nodes.len() > 1) {
            let depth = u8::try_from(levels.len()).unwrap_or(u8::MAX);
            let ends = group_ends(below.nodes.len());
            let nodes = ends
                .windows(2)
                .map(|w| {
                    let pairs: Vec<(Hash, u64)> = below.nodes[w[0]..w[1]]
                        .iter()
                        .map(|n| (n.hash, n.span))
                        .collect();
                    let (hash, span) = inner_node(depth, &pairs);
                    TreeNode { hash, span }
                })
                .collect();
            levels.push(Level { nodes, ends });
        }
        ChunkTree { chunks, levels }
    }

    /// The root hash: equal to [`content_hash`] of the chunks.
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.nodes.first())
            .map_or_else(empty_root, |n| n.hash)
    }

    /// Number of node levels (0 for an empty file). Levels are numbered as on the wire: level 0
    /// holds the leaf nodes (each over up to [`FANOUT`] chunks), the root is at `height() - 1`.
    pub fn height(&self) -> usize {
        self.levels.len()
    }

    /// The chunks, in file order (the children of the level-0 nodes).
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// Number of nodes at `level`.
    pub fn level_len(&self, level: usize) -> usize {
        self.len_at(level + 1)
    }

    /// Node `index` of `level`.
    pub fn node(&self, level: usize, index: u64) -> Option<TreeNode> {
        self.node_at(level + 1, index)
    }

    /// The children of node `index` of `level` (chunks, as `TreeNode { id, len }`, at level 0),
    /// with the index of the first one within its level.
    pub fn children(&self, level: usize, index: u64) -> Option<NodeChildren> {
        self.children_at(level + 1, index)
    }

    /// Number of entries at internal `depth` (0 = chunks, `d` ≥ 1 = wire level `d - 1`).
    fn len_at(&self, depth: usize) -> usize {
        match depth {
            0 => self.chunks.len(),
            d => self.levels.get(d - 1).map_or(0, |lv| lv.nodes.len()),
        }
    }

    /// Entry `index` at internal `depth` (a chunk at depth 0).
    fn node_at(&self, depth: usize, index: u64) -> Option<TreeNode> {
        let i = usize::try_from(index).ok()?;
        match depth {
            0 => self.chunks.get(i).map(|c| TreeNode {
                hash: c.id,
                span: u64::from(c.len),
            }),
            d => self.levels.get(d - 1)?.nodes.get(i).copied(),
        }
    }

    /// The children of entry `index` at internal `depth` (≥ 1).
    fn children_at(&self, depth: usize, index: u64) -> Option<NodeChildren> {
        let i = usize::try_from(index).ok()?;
        let lv = self.levels.get(depth.checked_sub(1)?)?;
        let (from, to) = (*lv.ends.get(i)?, *lv.ends.get(i + 1)?);
        let nodes = (from..to)
            .filter_map(|j| self.node_at(depth - 1, j as u64))
            .collect();
        Some(NodeChildren {
            first: from as u64,
            nodes,
        })
    }
}

impl fmt::Debug for ChunkTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkTree")
            .field("root", &self.root())
            .field("chunks", &self.chunks.len())
            .field("height", &self.height())
            .finish()
    }
}

/// The hash of the empty file.
fn empty_root() -> Hash {
    Hash::tagged(Domain::ChunkTree, &[b"empty"])
}

/// The hash of a node at wire `level` with these children (chunks at level 0).
fn node_hash(level: usize, children: &[TreeNode]) -> Hash {
    if level == 0 {
        let chunks: Vec<ChunkRef> = children
            .iter()
            .map(|n| ChunkRef {
                id: n.hash,
                len: u32::try_from(n.span).unwrap_or(u32::MAX),
            })
            .collect();
        leaf_node(&chunks).0
    } else {
        let pairs: Vec<(Hash, u64)> = children.iter().map(|n| (n.hash, n.span)).collect();
        inner_node(u8::try_from(level).unwrap_or(u8::MAX), &pairs).0
    }
}

/// Where the groups over `len` children end: `[0, FANOUT, 2 * FANOUT, ..., len]`.
fn group_ends(len: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = (0..len).step_by(FANOUT).collect();
    ends.push(len);
    ends
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(seed: u64) -> ChunkRef {
        ChunkRef {
            id: Hash::of(&seed.to_le_bytes()),
            len: 40_000 + (seed % 50_000) as u32,
        }
    }

    fn refs(n: usize) -> Vec<ChunkRef> {
        (0..n as u64).map(chunk).collect()
    }

    /// Rebuild `new`'s list from `old`'s tree, answering from `new`'s tree; returns the list
    /// and the number of nodes asked for.
    fn rebuild_counting(old: &ChunkTree, new: &ChunkTree) -> (Vec<ChunkRef>, usize) {
        let mut r = Rebuild::new(new.root(), new.chunks().len() as u64, old.clone()).unwrap();
        let mut asked = 0;
        while r.finish().is_none() {
            let wanted = r.wanted();
            assert!(!wanted.is_empty(), "nothing wanted, nothing finished");
            for addr in wanted {
                asked += 1;
                let c = new
                    .children(usize::from(addr.level), u64::from(addr.index))
                    .unwrap();
                r.accept(addr, c.nodes).unwrap();
            }
        }
        (r.finish().unwrap(), asked)
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

    #[test]
    fn tree_root_is_the_content_hash_and_levels_link_up() {
        for n in [0, 1, 2, 63, 64, 65, 1000, 8192] {
            let chunks = refs(n);
            let tree = ChunkTree::new(chunks.clone());
            assert_eq!(tree.root(), content_hash(&chunks), "{n} chunks");
            let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
            if n > 0 {
                let top = tree.node(tree.height() - 1, 0).unwrap();
                assert_eq!((top.hash, top.span), (tree.root(), total));
                assert_eq!(tree.level_len(tree.height() - 1), 1);
            }
            for level in 0..tree.height() {
                let mut next_child = 0;
                for i in 0..tree.level_len(level) as u64 {
                    let children = tree.children(level, i).unwrap();
                    assert_eq!(children.first, next_child);
                    let last = i + 1 == tree.level_len(level) as u64;
                    assert!(
                        children.nodes.len() == FANOUT || (last && children.nodes.len() < FANOUT)
                    );
                    next_child += children.nodes.len() as u64;
                    assert_eq!(
                        node_hash(level, &children.nodes),
                        tree.node(level, i).unwrap().hash
                    );
                }
                let below = if level == 0 {
                    chunks.len()
                } else {
                    tree.level_len(level - 1)
                };
                assert_eq!(next_child as usize, below);
            }
        }
    }

    #[test]
    fn identical_chunks_still_make_a_short_tree() {
        let tree = ChunkTree::new(vec![chunk(7); 10_000]);
        assert!(tree.height() <= 14, "height {}", tree.height());
        assert_eq!(tree.root(), content_hash(&vec![chunk(7); 10_000]));
    }

    #[test]
    fn one_changed_chunk_of_8192_asks_one_node_per_level() {
        // A 512 MiB file: 8192 chunks of ~64 KiB. One chunk in the middle is rewritten.
        let old = refs(8192);
        let mut new = old.clone();
        new[4100] = chunk(1_000_000);
        let (old_tree, new_tree) = (ChunkTree::new(old), ChunkTree::new(new.clone()));
        let (list, asked) = rebuild_counting(&old_tree, &new_tree);
        assert_eq!(list, new);
        assert_eq!(
            asked,
            new_tree.height(),
            "root, one level-1 node, one leaf node"
        );
        let (list, asked) = rebuild_counting(&ChunkTree::new(Vec::new()), &new_tree);
        assert_eq!(list, new);
        assert_eq!(asked, 1 + 2 + 128, "with nothing of ours, every node");
    }

    #[test]
    fn inserted_chunk_shifting_every_index_is_still_rebuilt_exactly() {
        // A content-defined insertion: one chunk becomes three, every later index shifts by two.
        let old = refs(8192);
        let mut new = old.clone();
        let inserted = [chunk(2_000_001), chunk(2_000_002), chunk(2_000_003)];
        new.splice(3000..3001, inserted);
        let (old_tree, new_tree) = (ChunkTree::new(old), ChunkTree::new(new.clone()));
        let (list, asked) = rebuild_counting(&old_tree, &new_tree);
        assert_eq!(list, new);
        // Fixed groups: every leaf node from the edit on differs and is asked, nothing before.
        let from_edit = new_tree.level_len(0) - 3000 / FANOUT;
        assert!(
            asked <= from_edit + new_tree.level_len(1) + 1,
            "{asked} asked"
        );
    }

    #[test]
    fn our_own_version_needs_no_node() {
        let tree = ChunkTree::new(refs(300));
        let (list, asked) = rebuild_counting(&tree, &tree.clone());
        assert_eq!((list.as_slice(), asked), (tree.chunks(), 0));
        assert!(matches!(
            Rebuild::new(tree.root(), 0, tree.clone()),
            Err(RebuildError::Count(0))
        ));
    }

    #[test]
    fn chunk_ranges_cover_each_node() {
        let tree = ChunkTree::new(refs(5000));
        assert_eq!(tree.chunk_range(0, 0), Some(0..64));
        assert_eq!(tree.chunk_range(0, 78), Some(4992..5000));
        assert_eq!(tree.chunk_range(1, 1), Some(4096..5000));
        assert_eq!(tree.chunk_range(2, 0), Some(0..5000));
        assert_eq!(tree.chunk_range(1, 2), None);
    }

    #[test]
    fn a_lying_peer_is_caught() {
        let new = ChunkTree::new(refs(501));
        let top = NodeAddr { level: 1, index: 0 };
        let fresh = || Rebuild::new(new.root(), 501, ChunkTree::new(refs(500))).unwrap();
        // A child whose span was changed: the hash no longer matches.
        let mut c = new.children(1, 0).unwrap().nodes;
        c[0].span += 1;
        assert_eq!(fresh().accept(top, c), Err(RebuildError::Mismatch(top)));
        // A node not asked for.
        let leaf = NodeAddr { level: 0, index: 3 };
        let c = new.children(0, 3).unwrap().nodes;
        assert_eq!(
            fresh().accept(leaf, c),
            Err(RebuildError::Unrequested(leaf))
        );
        // The root of a tree over fewer chunks, announced with more: the shape is refused.
        let small = ChunkTree::new(refs(65));
        let mut r = Rebuild::new(small.root(), 64 * 64, ChunkTree::new(Vec::new())).unwrap();
        let got = r.accept(top, small.children(1, 0).unwrap().nodes);
        assert!(
            matches!(
                got,
                Err(RebuildError::Shape {
                    got: 2,
                    want: 64,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the edit, the rebuilt list is the new version's, and every chunk it names
        /// that we lack came from a node the peer sent.
        #[test]
        fn rebuild_gives_exactly_the_new_list(
            n in 1usize..3000,
            at in 0.0f64..1.0,
            removed in 0usize..5,
            inserted in proptest::collection::vec(10_000u64..20_000, 0..5),
        ) {
            let old = refs(n);
            let pos = ((n as f64) * at) as usize;
            let end = (pos + removed).min(n);
            let mut new = old.clone();
            new.splice(pos..end, inserted.iter().map(|&s| chunk(s)));
            prop_assume!(!new.is_empty());
            let (old_tree, new_tree) = (ChunkTree::new(old), ChunkTree::new(new.clone()));
            let (list, asked) = rebuild_counting(&old_tree, &new_tree);
            prop_assert_eq!(&list, &new);
            prop_assert_eq!(content_hash(&list), new_tree.root());
            let nodes: usize = (0..new_tree.height()).map(|l| new_tree.level_len(l)).sum();
            prop_assert!(asked <= nodes);
        }
    }
}
