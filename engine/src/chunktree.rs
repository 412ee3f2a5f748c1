//! A file's chunk list as a Merkle tree; its root is the file's content hash.
//!
//! Owns the tree over one file's [`ChunkRef`]s: how chunks are grouped into nodes, how nodes are
//! hashed, the [`content_hash`], the in-memory [`ChunkTree`] with all levels, and the diff walk
//! that finds which chunks of another version differ by reading only a few of its nodes. It does
//! not own chunking (`crate::chunk`) or moving nodes over the wire (`botsync-proto` supplies the
//! lookup closure).
//!
//! # Shape
//!
//! Levels are numbered as on the wire: level 0 holds the leaf nodes, each over up to [`FANOUT`]
//! chunks; level 1 groups level-0 nodes, and so on until one root remains at `height - 1`. A
//! node hash covers its level and its children (chunk id and length, or node hash and byte
//! span), under the `ChunkTree` domain ([`leaf_node`] at level 0, [`inner_node`] above), so a
//! tree cannot be passed off as a different level or a different file.
//!
//! # Groups are fixed; the diff is set-based
//!
//! Nodes hold [`FANOUT`] children (the last of a level fewer), exactly as `botsync-proto`'s
//! tree-node messages address them (`index * FANOUT + i`). The diff does not compare positions:
//! it descends only into nodes whose hash appears *nowhere* in the local tree and, at level 1,
//! keeps only chunk ids we do not have (set difference). So it is always exact, even when an
//! insertion adds or removes a chunk and shifts every later index. The cost is not always
//! small: a replaced chunk costs one lookup per level, but a shift in the chunk count changes
//! every group after it, and the walk then reads every level-1 node from the edit to the end.
//! Content-defined groups (a group ends after a child whose hash is a boundary) would make
//! shifted groups resynchronize too: measured on 8,192 chunks with one chunk turned into three,
//! 5 lookups instead of about half the list. That changes the content hash and the wire
//! addressing, so it is left for a protocol version 2; see `docs/STORAGE.md`.

use std::collections::HashSet;
use std::fmt;

use crate::chunk::ChunkRef;
use crate::hash::{Domain, Hash};

/// Average number of children per tree node.
pub const FANOUT: usize = 64;

/// Deepest tree a diff will descend: more than any real file needs (64^12 chunks), and a bound
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

/// A run of consecutive chunks of the other version that this tree does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedRun {
    /// Index of the first chunk of the run in the other version's chunk list.
    pub first: u64,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// Why a diff against another version's tree failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeDiffError<E: std::error::Error + 'static> {
    /// The lookup (usually a request to a peer) failed.
    #[error("reading chunk tree node (level {level}, index {index}): {source}")]
    Lookup {
        /// Level of the node whose children were asked for.
        level: usize,
        /// Index of that node within its level.
        index: u64,
        /// What the lookup returned.
        #[source]
        source: E,
    },
    /// The children returned do not hash to the node asked for: corrupt or hostile data.
    #[error(
        "chunk tree node (level {level}, index {index}) does not match its hash {expected}; the peer sent inconsistent data, retry the sync"
    )]
    Mismatch {
        /// Level of the node.
        level: usize,
        /// Index of the node within its level.
        index: u64,
        /// The hash the children should have produced.
        expected: Hash,
    },
    /// The other tree claims more levels than [`MAX_LEVELS`], or a node has too many children.
    #[error(
        "chunk tree with root {root} is malformed (too deep or a node too wide); the peer sent invalid data"
    )]
    Malformed {
        /// The other version's root.
        root: Hash,
    },
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

    /// Find the chunks of another version of this file that this tree does not have.
    ///
    /// The other tree is known by its root hash and height (number of node levels; its root is
    /// at level `other_height - 1`) and read only through `lookup`, which returns the children
    /// of node (level, index), as a peer would over the network.
    /// The walk starts at the root and descends only into nodes whose hash appears nowhere in
    /// this tree: a subtree with a known hash holds only chunks we have, wherever it sits. So a
    /// replaced chunk costs one lookup per level; an edit that shifts chunk indexes is still
    /// found exactly, at the cost of reading every leaf node after it (see the module docs).
    /// Every lookup result is checked against the hash it must produce before it is trusted.
    /// Returns the missing chunks of the other version as runs of consecutive indexes.
    pub fn diff<E, F>(
        &self,
        other_root: Hash,
        other_height: usize,
        mut lookup: F,
    ) -> Result<Vec<ChangedRun>, TreeDiffError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(usize, u64) -> Result<NodeChildren, E>,
    {
        let known = self.known_hashes();
        if known.contains(&other_root) || (other_height == 0 && other_root == empty_root()) {
            return Ok(Vec::new());
        }
        if other_height == 0 || other_height > MAX_LEVELS {
            return Err(TreeDiffError::Malformed { root: other_root });
        }
        let mut missing: Vec<(u64, ChunkRef)> = Vec::new();
        // Depth-first, left to right, so chunks come out in file order.
        let mut stack = vec![(other_height - 1, 0u64, other_root)];
        while let Some((level, index, expected)) = stack.pop() {
            let children = lookup(level, index).map_err(|source| TreeDiffError::Lookup {
                level,
                index,
                source,
            })?;
            if children.nodes.is_empty() || children.nodes.len() > FANOUT {
                return Err(TreeDiffError::Malformed { root: other_root });
            }
            if node_hash(level, &children.nodes) != expected {
                return Err(TreeDiffError::Mismatch {
                    level,
                    index,
                    expected,
                });
            }
            let unknown = children
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| !known.contains(&n.hash));
            if level == 0 {
                for (k, n) in unknown {
                    let len = u32::try_from(n.span)
                        .map_err(|_| TreeDiffError::Malformed { root: other_root })?;
                    missing.push((children.first + k as u64, ChunkRef { id: n.hash, len }));
                }
            } else {
                let below: Vec<_> = unknown
                    .map(|(k, n)| (level - 1, children.first + k as u64, n.hash))
                    .collect();
                stack.extend(below.into_iter().rev());
            }
        }
        Ok(runs(missing))
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

    /// Every node hash and chunk id of this tree. Domains keep them apart: a chunk id is a plain
    /// BLAKE3 of bytes, a node hash is tagged and covers its level.
    fn known_hashes(&self) -> HashSet<Hash> {
        let mut known: HashSet<Hash> = self.chunks.iter().map(|c| c.id).collect();
        known.extend(
            self.levels
                .iter()
                .flat_map(|l| l.nodes.iter().map(|n| n.hash)),
        );
        known
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

/// Sorted (index, chunk) pairs into runs of consecutive indexes.
fn runs(mut missing: Vec<(u64, ChunkRef)>) -> Vec<ChangedRun> {
    missing.sort_by_key(|(i, _)| *i);
    let mut out: Vec<ChangedRun> = Vec::new();
    for (i, c) in missing {
        match out.last_mut() {
            Some(run) if run.first + run.chunks.len() as u64 == i => run.chunks.push(c),
            _ => out.push(ChangedRun {
                first: i,
                chunks: vec![c],
            }),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::convert::Infallible;

    fn chunk(seed: u64) -> ChunkRef {
        ChunkRef {
            id: Hash::of(&seed.to_le_bytes()),
            len: 40_000 + (seed % 50_000) as u32,
        }
    }

    fn refs(n: usize) -> Vec<ChunkRef> {
        (0..n as u64).map(chunk).collect()
    }

    /// Diff `new` against `old`'s tree, counting lookups and node entries read from `new`.
    fn diff_counting(old: &ChunkTree, new: &ChunkTree) -> (Vec<ChangedRun>, usize, usize) {
        let (lookups, entries) = (Cell::new(0), Cell::new(0));
        let runs = old
            .diff(new.root(), new.height(), |level, index| {
                let children = new.children(level, index).unwrap();
                lookups.set(lookups.get() + 1);
                entries.set(entries.get() + children.nodes.len());
                Ok::<_, Infallible>(children)
            })
            .unwrap();
        (runs, lookups.get(), entries.get())
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
    fn one_changed_chunk_of_8192_reads_few_nodes() {
        // A 512 MiB file: 8192 chunks of ~64 KiB. One chunk in the middle is rewritten.
        let old = refs(8192);
        let mut new = old.clone();
        new[4100] = chunk(1_000_000);
        let (old_tree, new_tree) = (ChunkTree::new(old), ChunkTree::new(new));
        let (runs, lookups, entries) = diff_counting(&old_tree, &new_tree);
        assert_eq!(
            runs,
            vec![ChangedRun {
                first: 4100,
                chunks: vec![chunk(1_000_000)]
            }]
        );
        assert!(lookups <= new_tree.height(), "{lookups} lookups");
        // One node per level: the root's children, one level-1 node's, one leaf node's.
        assert!(entries <= 4 * FANOUT, "{entries} entries read");
    }

    #[test]
    fn inserted_chunk_shifting_every_index_is_still_found_exactly() {
        // A content-defined insertion: one chunk becomes three, every later index shifts by two.
        let old = refs(8192);
        let mut new = old.clone();
        let inserted = [chunk(2_000_001), chunk(2_000_002), chunk(2_000_003)];
        new.splice(3000..3001, inserted);
        let (old_tree, new_tree) = (ChunkTree::new(old), ChunkTree::new(new));
        let (runs, lookups, _) = diff_counting(&old_tree, &new_tree);
        assert_eq!(
            runs,
            vec![ChangedRun {
                first: 3000,
                chunks: inserted.to_vec()
            }]
        );
        // Fixed groups: every leaf node from the edit on differs and is read, nothing before.
        let from_edit = new_tree.level_len(0) - 3000 / FANOUT;
        assert!(
            lookups <= from_edit + new_tree.level_len(1) + 1,
            "{lookups} lookups"
        );
    }

    #[test]
    fn diff_against_empty_or_equal_trees() {
        let tree = ChunkTree::new(refs(300));
        let (runs, lookups, _) = diff_counting(&tree, &tree.clone());
        assert!(runs.is_empty());
        assert_eq!(lookups, 0);
        let empty = ChunkTree::new(Vec::new());
        let (runs, _, _) = diff_counting(&empty, &tree);
        assert_eq!(
            runs,
            vec![ChangedRun {
                first: 0,
                chunks: refs(300)
            }]
        );
        let (runs, lookups, _) = diff_counting(&tree, &empty);
        assert!(runs.is_empty() && lookups == 0);
    }

    #[test]
    fn lying_peer_is_caught() {
        let (old, new) = (ChunkTree::new(refs(500)), ChunkTree::new(refs(501)));
        let err = old
            .diff(new.root(), new.height(), |level, index| {
                let mut c = new.children(level, index).unwrap();
                c.nodes[0].span += 1;
                Ok::<_, Infallible>(c)
            })
            .unwrap_err();
        assert!(matches!(err, TreeDiffError::Mismatch { .. }), "{err}");
        let err = old.diff(new.root(), MAX_LEVELS + 1, |_, _| {
            Ok::<_, Infallible>(NodeChildren {
                first: 0,
                nodes: vec![],
            })
        });
        assert!(matches!(err, Err(TreeDiffError::Malformed { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the edit, the diff returns exactly the chunks of the new version that the old
        /// one lacks, at their indexes.
        #[test]
        fn diff_finds_exactly_the_missing_chunks(
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
            let (old_tree, new_tree) = (ChunkTree::new(old.clone()), ChunkTree::new(new.clone()));
            let (runs, _, _) = diff_counting(&old_tree, &new_tree);
            let have: HashSet<Hash> = old.iter().map(|c| c.id).collect();
            let want: Vec<(u64, ChunkRef)> = new.iter().enumerate()
                .filter(|(_, c)| !have.contains(&c.id))
                .map(|(i, c)| (i as u64, *c))
                .collect();
            let got: Vec<(u64, ChunkRef)> = runs.iter()
                .flat_map(|r| r.chunks.iter().enumerate().map(move |(k, c)| (r.first + k as u64, *c)))
                .collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(new_tree.root(), content_hash(&new));
        }
    }
}
