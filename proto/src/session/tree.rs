//! Chunk-tree nodes of one file: built from a chunk list to answer `GetTreeNodes`, and used to
//! rebuild an elided chunk list from the peer's nodes while reusing every node we already have.

use std::collections::HashMap;

use botsync_engine::chunktree::{FANOUT, inner_node, leaf_node};
use botsync_engine::{ChunkRef, Hash};

use crate::messages::{SubtreeRef, TreeAddr, TreeNodeBody, TreeNodeReply};

/// All nodes of one file's chunk tree, level by level (level 0 = leaf nodes).
#[derive(Debug, Clone)]
pub struct NodeTable {
    levels: Vec<Vec<(Hash, u64, TreeNodeBody)>>,
}

impl NodeTable {
    /// Build every node of the tree over `chunks` (at least one chunk).
    pub fn build(chunks: &[ChunkRef]) -> NodeTable {
        let mut levels = Vec::new();
        let leaves: Vec<(Hash, u64, TreeNodeBody)> = chunks
            .chunks(FANOUT)
            .map(|g| {
                let (h, s) = leaf_node(g);
                (h, s, TreeNodeBody::Leaf(g.to_vec()))
            })
            .collect();
        levels.push(leaves);
        let mut depth = 1u8;
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let up: Vec<(Hash, u64, TreeNodeBody)> = below
                .chunks(FANOUT)
                .map(|g| {
                    let pairs: Vec<(Hash, u64)> = g.iter().map(|(h, s, _)| (*h, *s)).collect();
                    let (h, s) = inner_node(depth, &pairs);
                    let refs = g
                        .iter()
                        .map(|(h, s, _)| SubtreeRef { hash: *h, span: *s })
                        .collect();
                    (h, s, TreeNodeBody::Inner(refs))
                })
                .collect();
            levels.push(up);
            depth = depth.saturating_add(1);
        }
        NodeTable { levels }
    }

    /// The root's hash (the file's content hash).
    pub fn root(&self) -> Option<Hash> {
        self.levels
            .last()
            .and_then(|l| l.first())
            .map(|(h, _, _)| *h)
    }

    /// The node at `addr`, as a reply.
    pub fn reply(&self, addr: TreeAddr) -> Option<TreeNodeReply> {
        let level = self.levels.get(usize::from(addr.level))?;
        let (_, _, body) = level.get(addr.index as usize)?;
        Some(TreeNodeReply {
            addr,
            body: body.clone(),
        })
    }

    /// Every node body by its hash (to reuse the nodes we have when rebuilding a peer's list).
    pub fn by_hash(&self) -> HashMap<Hash, TreeNodeBody> {
        self.levels
            .iter()
            .flatten()
            .map(|(h, _, b)| (*h, b.clone()))
            .collect()
    }
}

/// Rebuilds a chunk list top-down from nodes: known nodes come from `local`, the others are
/// asked for; every node is checked against the hash its parent promised.
#[derive(Debug)]
pub struct Rebuild {
    content: Hash,
    local: HashMap<Hash, TreeNodeBody>,
    /// Nodes known so far by address.
    known: HashMap<TreeAddr, TreeNodeBody>,
    /// Expected hash of each address still to resolve.
    expected: HashMap<TreeAddr, Hash>,
    root: TreeAddr,
}

impl Rebuild {
    /// Start rebuilding the list of `chunk_count` chunks whose tree root is `content`.
    pub fn new(content: Hash, chunk_count: u32, local: HashMap<Hash, TreeNodeBody>) -> Rebuild {
        let root = TreeAddr::root(chunk_count);
        let mut expected = HashMap::new();
        expected.insert(root, content);
        let mut r = Rebuild {
            content,
            local,
            known: HashMap::new(),
            expected,
            root,
        };
        r.resolve_local();
        r
    }

    /// The addresses still needed from the peer.
    pub fn wanted(&self) -> Vec<TreeAddr> {
        let mut v: Vec<TreeAddr> = self.expected.keys().copied().collect();
        v.sort();
        v
    }

    /// Accept a node from the peer; it must hash to what its parent promised.
    pub fn accept(&mut self, reply: TreeNodeReply) -> Result<(), String> {
        let Some(want) = self.expected.get(&reply.addr).copied() else {
            return Err(format!("unrequested tree node {:?}", reply.addr));
        };
        let leaf = matches!(reply.body, TreeNodeBody::Leaf(_));
        if leaf != (reply.addr.level == 0) {
            return Err(format!("tree node {:?} has the wrong kind", reply.addr));
        }
        if reply.node_hash().0 != want {
            return Err(format!(
                "tree node {:?} does not match its hash",
                reply.addr
            ));
        }
        self.expected.remove(&reply.addr);
        self.insert(reply.addr, reply.body);
        self.resolve_local();
        Ok(())
    }

    /// The complete chunk list once nothing is wanted any more.
    pub fn finish(&self) -> Option<Vec<ChunkRef>> {
        if !self.expected.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        self.collect(self.root, &mut out)?;
        Some(out)
    }

    /// The content hash being rebuilt.
    pub fn content(&self) -> Hash {
        self.content
    }

    fn insert(&mut self, addr: TreeAddr, body: TreeNodeBody) {
        if let TreeNodeBody::Inner(children) = &body {
            for (i, child) in children.iter().enumerate() {
                let Some(index) = (addr.index as usize)
                    .checked_mul(FANOUT)
                    .and_then(|b| b.checked_add(i))
                    .and_then(|x| u32::try_from(x).ok())
                else {
                    continue;
                };
                let caddr = TreeAddr {
                    level: addr.level.saturating_sub(1),
                    index,
                };
                self.expected.insert(caddr, child.hash);
            }
        }
        self.known.insert(addr, body);
    }

    fn resolve_local(&mut self) {
        loop {
            let hit = self
                .expected
                .iter()
                .find_map(|(a, h)| self.local.get(h).map(|b| (*a, b.clone())));
            let Some((addr, body)) = hit else { return };
            let leaf = matches!(body, TreeNodeBody::Leaf(_));
            if leaf != (addr.level == 0) {
                // Same hash at another height cannot happen (the level is hashed); be safe.
                self.local
                    .retain(|_, b| !matches!((b, leaf), (TreeNodeBody::Leaf(_), true)));
                continue;
            }
            self.expected.remove(&addr);
            self.insert(addr, body);
        }
    }

    fn collect(&self, addr: TreeAddr, out: &mut Vec<ChunkRef>) -> Option<()> {
        match self.known.get(&addr)? {
            TreeNodeBody::Leaf(chunks) => out.extend_from_slice(chunks),
            TreeNodeBody::Inner(children) => {
                for i in 0..children.len() {
                    let index = u32::try_from(addr.index as usize * FANOUT + i).ok()?;
                    self.collect(
                        TreeAddr {
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

#[cfg(test)]
mod tests {
    use super::*;
    use botsync_engine::chunktree::content_hash;

    fn refs(n: usize, salt: u8) -> Vec<ChunkRef> {
        (0..n)
            .map(|i| ChunkRef {
                id: Hash::of(&[(i % 251) as u8, (i / 251) as u8, salt]),
                len: 100,
            })
            .collect()
    }

    fn rebuild_against(theirs: &[ChunkRef], ours: &[ChunkRef]) -> (Vec<ChunkRef>, usize) {
        let table = NodeTable::build(theirs);
        assert_eq!(table.root(), Some(content_hash(theirs)));
        let local = NodeTable::build(ours).by_hash();
        let mut r = Rebuild::new(content_hash(theirs), theirs.len() as u32, local);
        let mut asked = 0;
        while r.finish().is_none() {
            for addr in r.wanted() {
                asked += 1;
                r.accept(table.reply(addr).unwrap()).unwrap();
            }
        }
        (r.finish().unwrap(), asked)
    }

    #[test]
    fn rebuilds_a_large_list_asking_only_changed_nodes() {
        let old = refs(8192, 0);
        let mut new = old.clone();
        new[5000] = ChunkRef {
            id: Hash::of(b"changed"),
            len: 101,
        };
        let (list, asked) = rebuild_against(&new, &old);
        assert_eq!(list, new);
        assert_eq!(asked, 3, "root, one inner node, one leaf node");
        let (list, asked) = rebuild_against(&new, &[]);
        assert_eq!(list, new);
        assert_eq!(asked, 1 + 2 + 128);
    }

    #[test]
    fn a_forged_node_is_refused() {
        let theirs = refs(200, 1);
        let mut r = Rebuild::new(content_hash(&theirs), 200, HashMap::new());
        let forged = NodeTable::build(&refs(200, 2))
            .reply(TreeAddr::root(200))
            .unwrap();
        assert!(r.accept(forged).is_err());
    }
}
