//! Rebuilding another version's chunk list from its tree, as a pure state machine.
//!
//! A peer announces a large file by its content hash and chunk count and serves the nodes of its
//! chunk tree on request. [`Rebuild`] says which nodes it still needs ([`Rebuild::wanted`]),
//! takes the peer's answers ([`Rebuild::accept`]) and, once nothing is wanted, gives the whole
//! chunk list ([`Rebuild::finish`]). It does no I/O: the session asks the peer, a test answers
//! from a [`ChunkTree`] in memory.
//!
//! It reuses what we have: a node whose hash appears anywhere in our own version's tree stands
//! for its subtree, wherever it sits, so a replaced chunk costs one node per level. The reuse is
//! set-based, never positional: an insertion that shifts every later index is still rebuilt
//! exactly (at the cost of every leaf node after it; see the module docs of `chunktree`).
//!
//! Nothing is trusted before it is checked: every node must hash to what its parent (or, for
//! the root, the content hash) promised, and must have exactly the children the canonical tree
//! over `chunk_count` chunks gives that address. So the list that comes out is the one whose
//! [`super::content_hash`] is the announced content, and its length is the announced count.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::{ChunkTree, FANOUT, MAX_LEVELS, TreeNode, node_hash};
use crate::chunk::ChunkRef;
use crate::hash::Hash;

/// Where a node sits in a chunk tree: `level` 0 holds the leaf nodes (each over up to
/// [`FANOUT`] chunks), `index` counts nodes from the left within a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    /// Height above the leaves.
    pub level: u8,
    /// Position within the level, from 0.
    pub index: u32,
}

/// Why a node from the peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    /// A node that was not asked for (or was already answered).
    #[error("chunk tree node (level {}, index {}) was not asked for", .0.level, .0.index)]
    Unrequested(NodeAddr),
    /// The children do not hash to what the parent promised.
    #[error("chunk tree node (level {}, index {}) does not match its hash", .0.level, .0.index)]
    Mismatch(NodeAddr),
    /// The node does not have the children its address gives in a tree of that many chunks.
    #[error(
        "chunk tree node (level {}, index {}) has {got} children where the tree needs {want}",
        .addr.level, .addr.index
    )]
    Shape {
        /// The node.
        addr: NodeAddr,
        /// Children received.
        got: usize,
        /// Children the canonical tree has there.
        want: usize,
    },
    /// A chunk longer than a chunk can be.
    #[error("chunk tree node (level {}, index {}) lists a chunk of {span} bytes", .addr.level, .addr.index)]
    ChunkTooLong {
        /// The leaf node.
        addr: NodeAddr,
        /// The length claimed.
        span: u64,
    },
    /// No chunks, or more levels than [`MAX_LEVELS`].
    #[error("a chunk tree of {0} chunks cannot be rebuilt")]
    Count(u64),
}

/// Where the children of a node we know come from.
#[derive(Debug, Clone)]
enum Known {
    /// Received from the peer.
    Remote(Vec<TreeNode>),
    /// The same subtree as our node (level, index): its chunks are ours.
    Local(usize, u64),
}

/// A chunk list being rebuilt from the peer's tree nodes; see the module docs.
#[derive(Debug)]
pub struct Rebuild {
    chunk_count: u64,
    /// Nodes per level of the canonical tree over `chunk_count` chunks.
    level_lens: Vec<u64>,
    local: ChunkTree,
    /// Our node of each hash (level, index).
    local_at: HashMap<Hash, (usize, u64)>,
    known: HashMap<NodeAddr, Known>,
    /// The hash each address still wanted must have.
    wanted: BTreeMap<NodeAddr, Hash>,
}

impl Rebuild {
    /// Start rebuilding the list of `chunk_count` chunks whose tree root is `content`, reusing
    /// the nodes of `local` (our own version of the file; an empty tree if we have none).
    pub fn new(content: Hash, chunk_count: u64, local: ChunkTree) -> Result<Rebuild, RebuildError> {
        let level_lens = level_lens(chunk_count).ok_or(RebuildError::Count(chunk_count))?;
        let mut local_at = HashMap::new();
        for level in 0..local.height() {
            for index in 0..local.level_len(level) as u64 {
                if let Some(n) = local.node(level, index) {
                    local_at.entry(n.hash).or_insert((level, index));
                }
            }
        }
        let mut r = Rebuild {
            chunk_count,
            level_lens,
            local,
            local_at,
            known: HashMap::new(),
            wanted: BTreeMap::new(),
        };
        let top =
            u8::try_from(r.level_lens.len() - 1).map_err(|_| RebuildError::Count(chunk_count))?;
        r.expect(
            NodeAddr {
                level: top,
                index: 0,
            },
            content,
        );
        Ok(r)
    }

    /// The addresses still needed from the peer, in order.
    pub fn wanted(&self) -> Vec<NodeAddr> {
        self.wanted.keys().copied().collect()
    }

    /// Take the peer's node at `addr`: its children in order (chunks at level 0, as
    /// `TreeNode { hash: id, span: len }`).
    pub fn accept(&mut self, addr: NodeAddr, children: Vec<TreeNode>) -> Result<(), RebuildError> {
        let Some(&expected) = self.wanted.get(&addr) else {
            return Err(RebuildError::Unrequested(addr));
        };
        let want = self.child_count(addr);
        if children.len() != want {
            return Err(RebuildError::Shape {
                addr,
                got: children.len(),
                want,
            });
        }
        if addr.level == 0
            && let Some(long) = children.iter().find(|c| u32::try_from(c.span).is_err())
        {
            return Err(RebuildError::ChunkTooLong {
                addr,
                span: long.span,
            });
        }
        if node_hash(usize::from(addr.level), &children) != expected {
            return Err(RebuildError::Mismatch(addr));
        }
        self.wanted.remove(&addr);
        if addr.level > 0 {
            let first = u64::from(addr.index) * FANOUT as u64;
            for (k, child) in children.iter().enumerate() {
                // `first + k` is below the level's length (checked by the child count), which
                // fits a u32 (at most `chunk_count / FANOUT` nodes).
                let index = u32::try_from(first + k as u64).map_err(|_| RebuildError::Shape {
                    addr,
                    got: children.len(),
                    want,
                })?;
                self.expect(
                    NodeAddr {
                        level: addr.level - 1,
                        index,
                    },
                    child.hash,
                );
            }
        }
        self.known.insert(addr, Known::Remote(children));
        Ok(())
    }

    /// The whole chunk list once nothing is wanted any more.
    pub fn finish(&self) -> Option<Vec<ChunkRef>> {
        if !self.wanted.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(usize::try_from(self.chunk_count).unwrap_or(0));
        let top = u8::try_from(self.level_lens.len() - 1).ok()?;
        self.collect(
            NodeAddr {
                level: top,
                index: 0,
            },
            &mut out,
        )?;
        (out.len() as u64 == self.chunk_count).then_some(out)
    }

    /// Note that `addr` must hash to `hash`: resolved at once from our own tree if we have a
    /// node with that hash at that level, wanted from the peer otherwise.
    fn expect(&mut self, addr: NodeAddr, hash: Hash) {
        match self.local_at.get(&hash) {
            // The level is part of the hash, so a match is at the same level; the check keeps
            // a shape we did not ask for out anyway.
            Some(&(level, index))
                if level == usize::from(addr.level)
                    && self
                        .local
                        .children(level, index)
                        .is_some_and(|c| c.nodes.len() == self.child_count(addr)) =>
            {
                self.known.insert(addr, Known::Local(level, index));
            }
            _ => {
                self.wanted.insert(addr, hash);
            }
        }
    }

    /// The number of children node `addr` has in the canonical tree over `chunk_count` chunks.
    fn child_count(&self, addr: NodeAddr) -> usize {
        let below = match addr.level {
            0 => self.chunk_count,
            l => self
                .level_lens
                .get(usize::from(l) - 1)
                .copied()
                .unwrap_or(0),
        };
        let first = u64::from(addr.index) * FANOUT as u64;
        below.saturating_sub(first).min(FANOUT as u64) as usize
    }

    fn collect(&self, addr: NodeAddr, out: &mut Vec<ChunkRef>) -> Option<()> {
        match self.known.get(&addr)? {
            Known::Local(level, index) => {
                out.extend_from_slice(
                    self.local
                        .chunks()
                        .get(self.local.chunk_range(*level, *index)?)?,
                );
            }
            Known::Remote(children) if addr.level == 0 => {
                out.extend(children.iter().map(|c| ChunkRef {
                    id: c.hash,
                    len: u32::try_from(c.span).unwrap_or(u32::MAX),
                }));
            }
            Known::Remote(children) => {
                let first = addr.index as usize * FANOUT;
                for k in 0..children.len() {
                    let index = u32::try_from(first + k).ok()?;
                    self.collect(
                        NodeAddr {
                            level: addr.level - 1,
                            index,
                        },
                        out,
                    )?;
                }
            }
        }
        Some(())
    }
}

/// Nodes per level of the canonical tree over `chunk_count` chunks (level 0 first, the root's
/// level of one node last); `None` for no chunks or a tree deeper than [`MAX_LEVELS`].
fn level_lens(chunk_count: u64) -> Option<Vec<u64>> {
    if chunk_count == 0 {
        return None;
    }
    let mut lens = vec![chunk_count.div_ceil(FANOUT as u64)];
    while let Some(&n) = lens.last().filter(|&&n| n > 1) {
        lens.push(n.div_ceil(FANOUT as u64));
    }
    (lens.len() <= MAX_LEVELS).then_some(lens)
}

impl ChunkTree {
    /// The chunks under node `index` of `level`, as a range of [`ChunkTree::chunks`].
    pub fn chunk_range(&self, level: usize, index: u64) -> Option<Range<usize>> {
        let (mut first, mut last) = (index, index);
        for l in (0..=level).rev() {
            let lv = self.levels.get(l)?;
            first = *lv.ends.get(usize::try_from(first).ok()?)? as u64;
            last = *lv.ends.get(usize::try_from(last).ok()? + 1)? as u64 - 1;
        }
        Some(usize::try_from(first).ok()?..usize::try_from(last).ok()? + 1)
    }
}
