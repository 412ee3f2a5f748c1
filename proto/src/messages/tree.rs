//! Wire forms of the two trees a session walks: the workspace Merkle tree (directory nodes and
//! file entries) and a large file's chunk tree.
//!
//! The engine owns the trees and their hashing (`botsync_engine::merkle`,
//! `botsync_engine::chunktree`); this module owns only how their pieces travel. [`NodeChild`]
//! mirrors the engine's `MerkleChild` field for field (the session converts). A chunk-tree node
//! reply can be checked against the hash its parent (or the file's content hash) promised with
//! [`TreeNodeReply::node_hash`], so a peer cannot make us accept a chunk list that does not belong
//! to the content it announced.

use botsync_engine::chunktree::{ChunkTree, FANOUT, NodeAddr, TreeNode, inner_node, leaf_node};
use botsync_engine::{ChunkRef, Hash, RelPath};
use serde::{Deserialize, Serialize};

/// Whether a directory child is a directory or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// A directory: descend with `GetNodes`.
    Dir,
    /// A file (or tombstone): fetch with `GetEntries`.
    File,
}

/// One child of a directory node in the workspace Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChild {
    /// The child's name: one path component (no `/`, not `.`/`..`, NFC, ≤ 255 bytes).
    pub name: String,
    /// Directory or file.
    pub kind: ChildKind,
    /// The child's Merkle hash.
    pub hash: Hash,
}

impl From<botsync_engine::merkle::MerkleChild> for NodeChild {
    /// The wire form of a child of the engine's Merkle tree (same fields).
    fn from(c: botsync_engine::merkle::MerkleChild) -> NodeChild {
        NodeChild {
            name: c.name,
            kind: match c.kind {
                botsync_engine::merkle::ChildKind::Dir => ChildKind::Dir,
                botsync_engine::merkle::ChildKind::File => ChildKind::File,
            },
            hash: c.hash,
        }
    }
}

/// The children of one directory, answering one path of a `GetNodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReply {
    /// The directory (the empty path is the workspace root).
    pub path: RelPath,
    /// Its children sorted by name (byte order), as the engine hashes them. A path that is not
    /// a directory on the replying side has no children.
    pub children: Vec<NodeChild>,
}

/// The address of a node in a file's chunk tree: `level` 0 holds the leaf nodes (each over up
/// to [`FANOUT`] chunk refs), level `n` nodes group up to `FANOUT` nodes of level `n - 1`;
/// `index` counts nodes from the left within a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TreeAddr {
    /// Height above the leaves (0 = leaf node).
    pub level: u8,
    /// Position within the level, from 0.
    pub index: u32,
}

impl TreeAddr {
    /// The root of the tree over `chunk_count` chunks (≥ 1): the one node of the top level.
    pub fn root(chunk_count: u32) -> TreeAddr {
        let mut nodes = u64::from(chunk_count.max(1)).div_ceil(FANOUT as u64);
        let mut level = 0u8;
        while nodes > 1 {
            nodes = nodes.div_ceil(FANOUT as u64);
            level += 1;
        }
        TreeAddr { level, index: 0 }
    }

    /// The addresses of this node's children, given how many nodes exist one level down
    /// (for a leaf node, this is not meaningful: its children are chunk refs).
    pub fn children(self, nodes_below: u64) -> impl Iterator<Item = TreeAddr> {
        let first = u64::from(self.index) * FANOUT as u64;
        let end = (first + FANOUT as u64).min(nodes_below);
        let level = self.level.saturating_sub(1);
        (first..end)
            .filter_map(move |i| u32::try_from(i).ok().map(|index| TreeAddr { level, index }))
    }
}

impl From<TreeAddr> for NodeAddr {
    fn from(a: TreeAddr) -> NodeAddr {
        NodeAddr {
            level: a.level,
            index: a.index,
        }
    }
}

impl From<NodeAddr> for TreeAddr {
    fn from(a: NodeAddr) -> TreeAddr {
        TreeAddr {
            level: a.level,
            index: a.index,
        }
    }
}

/// A reference to a subtree from an inner chunk-tree node: its hash and the bytes it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubtreeRef {
    /// The child node's hash.
    pub hash: Hash,
    /// Bytes of file content below it.
    pub span: u64,
}

/// A chunk-tree node's children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeNodeBody {
    /// A level-0 node: up to [`FANOUT`] chunk refs in file order.
    Leaf(Vec<ChunkRef>),
    /// A level ≥ 1 node: up to [`FANOUT`] child nodes in order.
    Inner(Vec<SubtreeRef>),
}

/// One chunk-tree node, answering one address of a `GetTreeNodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNodeReply {
    /// Which node.
    pub addr: TreeAddr,
    /// Its children (`Leaf` exactly when `addr.level == 0`).
    pub body: TreeNodeBody,
}

impl TreeNodeReply {
    /// The node at `addr` of the engine's `tree`, as a reply (`None` if it has no such node).
    pub fn from_tree(tree: &ChunkTree, addr: TreeAddr) -> Option<TreeNodeReply> {
        let children = tree.children(usize::from(addr.level), u64::from(addr.index))?;
        let body = if addr.level == 0 {
            TreeNodeBody::Leaf(
                children
                    .nodes
                    .iter()
                    .map(|n| ChunkRef {
                        id: n.hash,
                        len: u32::try_from(n.span).unwrap_or(u32::MAX),
                    })
                    .collect(),
            )
        } else {
            TreeNodeBody::Inner(
                children
                    .nodes
                    .iter()
                    .map(|n| SubtreeRef {
                        hash: n.hash,
                        span: n.span,
                    })
                    .collect(),
            )
        };
        Some(TreeNodeReply { addr, body })
    }

    /// The node in the engine's form (its address and children), for
    /// `botsync_engine::chunktree::Rebuild`; refused when the body's kind does not match the
    /// level (`Leaf` exactly at level 0).
    pub fn into_children(self) -> Result<(NodeAddr, Vec<TreeNode>), String> {
        let nodes = match (self.addr.level, self.body) {
            (0, TreeNodeBody::Leaf(chunks)) => chunks
                .into_iter()
                .map(|c| TreeNode {
                    hash: c.id,
                    span: u64::from(c.len),
                })
                .collect(),
            (l, TreeNodeBody::Inner(refs)) if l > 0 => refs
                .into_iter()
                .map(|r| TreeNode {
                    hash: r.hash,
                    span: r.span,
                })
                .collect(),
            _ => {
                return Err(format!(
                    "tree node (level {}, index {}) has the wrong kind",
                    self.addr.level, self.addr.index
                ));
            }
        };
        Ok((self.addr.into(), nodes))
    }

    /// The node's hash and byte span, computed as the engine does: compare it with the hash the
    /// parent node (or, for the root, the entry's content hash) promised before trusting the
    /// children.
    pub fn node_hash(&self) -> (Hash, u64) {
        match &self.body {
            TreeNodeBody::Leaf(chunks) => leaf_node(chunks),
            TreeNodeBody::Inner(children) => {
                let pairs: Vec<(Hash, u64)> = children.iter().map(|c| (c.hash, c.span)).collect();
                inner_node(self.addr.level, &pairs)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use botsync_engine::chunktree::content_hash;

    fn refs(n: usize) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                id: Hash::of(&(i as u64).to_le_bytes()),
                len: 4096,
            })
            .collect()
    }

    #[test]
    fn root_address_matches_tree_height() {
        assert_eq!(TreeAddr::root(1), TreeAddr { level: 0, index: 0 });
        assert_eq!(TreeAddr::root(64), TreeAddr { level: 0, index: 0 });
        assert_eq!(TreeAddr::root(65), TreeAddr { level: 1, index: 0 });
        assert_eq!(TreeAddr::root(64 * 64), TreeAddr { level: 1, index: 0 });
        assert_eq!(TreeAddr::root(64 * 64 + 1), TreeAddr { level: 2, index: 0 });
        assert_eq!(TreeAddr::root(u32::MAX).level, 5);
    }

    /// Rebuilding a two-level tree from replies reproduces the engine's content hash: the
    /// receiver can verify every node it fetches.
    #[test]
    fn replies_verify_against_the_content_hash() {
        let chunks = refs(100);
        let leaves: Vec<TreeNodeReply> = chunks
            .chunks(FANOUT)
            .enumerate()
            .map(|(i, group)| TreeNodeReply {
                addr: TreeAddr {
                    level: 0,
                    index: i as u32,
                },
                body: TreeNodeBody::Leaf(group.to_vec()),
            })
            .collect();
        let root = TreeNodeReply {
            addr: TreeAddr::root(100),
            body: TreeNodeBody::Inner(
                leaves
                    .iter()
                    .map(|l| {
                        let (hash, span) = l.node_hash();
                        SubtreeRef { hash, span }
                    })
                    .collect(),
            ),
        };
        assert_eq!(root.node_hash().0, content_hash(&chunks));
        assert_eq!(root.node_hash().1, 100 * 4096);
        let kids: Vec<TreeAddr> = root.addr.children(leaves.len() as u64).collect();
        assert_eq!(
            kids,
            vec![
                TreeAddr { level: 0, index: 0 },
                TreeAddr { level: 0, index: 1 }
            ]
        );
    }

    /// Replies served from the engine's tree, turned back into the engine's form, rebuild the
    /// list with the engine's walk; a body of the wrong kind is refused.
    #[test]
    fn replies_from_the_engine_tree_rebuild_its_list() {
        use botsync_engine::chunktree::Rebuild;
        let chunks = refs(5000);
        let tree = ChunkTree::new(chunks.clone());
        let mut r = Rebuild::new(tree.root(), 5000, ChunkTree::new(refs(10))).unwrap();
        while r.finish().is_none() {
            for addr in r.wanted() {
                let reply = TreeNodeReply::from_tree(&tree, addr.into()).unwrap();
                assert_eq!(reply.addr, TreeAddr::from(addr));
                let (at, nodes) = reply.into_children().unwrap();
                r.accept(at, nodes).unwrap();
            }
        }
        assert_eq!(r.finish().unwrap(), chunks);
        assert_eq!(TreeAddr::root(5000), TreeAddr { level: 2, index: 0 });
        let wrong = TreeNodeReply {
            addr: TreeAddr::root(5000),
            body: TreeNodeBody::Leaf(refs(3)),
        };
        assert!(wrong.into_children().is_err());
        assert!(TreeNodeReply::from_tree(&tree, TreeAddr { level: 3, index: 0 }).is_none());
    }

    #[test]
    fn single_leaf_tree_root_is_the_content_hash() {
        let chunks = refs(3);
        let reply = TreeNodeReply {
            addr: TreeAddr::root(3),
            body: TreeNodeBody::Leaf(chunks.clone()),
        };
        assert_eq!(reply.node_hash().0, content_hash(&chunks));
    }
}
