//! The workspace Merkle tree: one hash over everything a workspace syncs.
//!
//! A file leaf's hash covers exactly the synced facts of its entry: name, kind (file or
//! tombstone), content hash, size, exec bit and version vector. Not the mtime: after a sync two
//! machines hold the same version with different mtimes, and they must compare equal. A
//! directory node's hash covers its children sorted by name (name, kind, hash). So the root
//! changes exactly when synced content or metadata changes, equal subtrees have equal hashes
//! whatever order the entries were scanned in, and a session descends only into directories
//! whose hashes differ.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entry::{EntryKind, FileEntry};
use crate::hash::{Domain, Hash};
use crate::path::RelPath;

/// What a child of a directory node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// A directory (its hash is a directory node).
    Dir,
    /// A file or tombstone (its hash is a leaf).
    File,
}

/// One child of a directory node: what the wire sends when descending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleChild {
    /// The child's name (one path component).
    pub name: String,
    /// Directory or file.
    pub kind: ChildKind,
    /// Its node or leaf hash.
    pub hash: Hash,
}

/// The Merkle tree of a set of entries.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// Directory path → its children by name.
    dirs: BTreeMap<RelPath, BTreeMap<String, (ChildKind, Hash)>>,
    /// Directory path → its node hash.
    hashes: BTreeMap<RelPath, Hash>,
    files: u64,
}

impl MerkleTree {
    /// Build the tree over `entries` (files and tombstones, any order).
    pub fn build<'a>(entries: impl IntoIterator<Item = &'a FileEntry>) -> MerkleTree {
        let mut dirs: BTreeMap<RelPath, BTreeMap<String, (ChildKind, Hash)>> = BTreeMap::new();
        dirs.insert(RelPath::root(), BTreeMap::new());
        let mut files = 0;
        for e in entries {
            if !e.is_tombstone() {
                files += 1;
            }
            let Some(parent) = e.path.parent() else {
                continue;
            };
            dirs.entry(parent.clone()).or_default().insert(
                e.path.file_name().to_owned(),
                (ChildKind::File, leaf_hash(e)),
            );
            // Make sure every ancestor directory exists.
            let mut dir = parent;
            while let Some(up) = dir.parent() {
                let name = dir.file_name().to_owned();
                dirs.entry(up.clone())
                    .or_default()
                    .entry(name)
                    .or_insert((ChildKind::Dir, Hash::ZERO));
                dir = up;
            }
        }
        // Deepest directories first, so children are hashed before their parents.
        let mut order: Vec<RelPath> = dirs.keys().cloned().collect();
        order.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let mut hashes = BTreeMap::new();
        for dir in order {
            let children = dirs.get(&dir).cloned().unwrap_or_default();
            let h = dir_hash(&children);
            hashes.insert(dir.clone(), h);
            if let Some(up) = dir.parent() {
                dirs.entry(up)
                    .or_default()
                    .insert(dir.file_name().to_owned(), (ChildKind::Dir, h));
            }
        }
        MerkleTree {
            dirs,
            hashes,
            files,
        }
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        self.hashes
            .get(&RelPath::root())
            .copied()
            .unwrap_or_else(|| dir_hash(&BTreeMap::new()))
    }

    /// The hash of the subtree at `dir` (`None` if no such directory).
    pub fn subtree(&self, dir: &RelPath) -> Option<Hash> {
        self.hashes.get(dir).copied()
    }

    /// The children of `dir`, sorted by name (`None` if no such directory).
    pub fn children(&self, dir: &RelPath) -> Option<Vec<MerkleChild>> {
        self.dirs.get(dir).map(|c| {
            c.iter()
                .map(|(name, (kind, hash))| MerkleChild {
                    name: name.clone(),
                    kind: *kind,
                    hash: *hash,
                })
                .collect()
        })
    }

    /// Number of files (not tombstones) in the tree.
    pub fn file_count(&self) -> u64 {
        self.files
    }
}

/// The leaf hash of an entry: its synced content and metadata (not its mtime).
pub fn leaf_hash(e: &FileEntry) -> Hash {
    let mut buf = Vec::with_capacity(96 + e.version.len() * 40);
    buf.extend_from_slice(&(e.path.file_name().len() as u32).to_le_bytes());
    buf.extend_from_slice(e.path.file_name().as_bytes());
    buf.push(match e.kind {
        EntryKind::File => 0,
        EntryKind::Tombstone => 1,
    });
    buf.extend_from_slice(e.content.as_bytes());
    buf.extend_from_slice(&e.size.to_le_bytes());
    buf.push(u8::from(e.mode.executable));
    for (peer, counter) in e.version.iter() {
        buf.extend_from_slice(peer.as_bytes());
        buf.extend_from_slice(&counter.to_le_bytes());
    }
    Hash::tagged(Domain::FileNode, &[&buf])
}

fn dir_hash(children: &BTreeMap<String, (ChildKind, Hash)>) -> Hash {
    let mut buf = Vec::with_capacity(children.len() * 48);
    for (name, (kind, hash)) in children {
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.push(match kind {
            ChildKind::Dir => 0,
            ChildKind::File => 1,
        });
        buf.extend_from_slice(hash.as_bytes());
    }
    Hash::tagged(Domain::DirNode, &[&buf])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::entry::Mode;
    use crate::peer::{AgentLabel, Attribution, PeerId};
    use crate::vector::VersionVector;
    use proptest::prelude::*;

    fn entry(path: &str, content: u8, mtime: i64) -> FileEntry {
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: 1,
            mtime_ns: mtime,
            mode: Mode::default(),
            content: Hash::of(&[content]),
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::from_pairs([(PeerId([1; 32]), 1)]),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([1; 32]),
                agent: AgentLabel::new(""),
            },
        }
    }

    fn sample() -> Vec<FileEntry> {
        [
            "MEMORY.md",
            "memory/a.md",
            "memory/b.md",
            "memory/x/y/z.md",
            "USER.md",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| entry(p, i as u8, 7))
        .collect()
    }

    #[test]
    fn children_and_subtrees() {
        let t = MerkleTree::build(&sample());
        let root: Vec<String> = t
            .children(&RelPath::root())
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(root, ["MEMORY.md", "USER.md", "memory"]);
        assert!(t.subtree(&RelPath::new("memory/x/y").unwrap()).is_some());
        assert!(t.children(&RelPath::new("nope").unwrap()).is_none());
        assert_eq!(t.file_count(), 5);
    }

    #[test]
    fn mtime_is_not_synced_state_but_content_is() {
        let a = MerkleTree::build(&sample());
        let mut moved = sample();
        moved[2].mtime_ns = 99;
        assert_eq!(MerkleTree::build(&moved).root(), a.root());
        let mut changed = sample();
        changed[3].content = Hash::of(b"new");
        let b = MerkleTree::build(&changed);
        assert_ne!(b.root(), a.root());
        // Exactly the ancestors of the changed file change.
        for (dir, same) in [
            ("memory", false),
            ("memory/x", false),
            ("memory/x/y", false),
        ] {
            let d = RelPath::new(dir).unwrap();
            assert_eq!(a.subtree(&d) == b.subtree(&d), same, "{dir}");
        }
    }

    proptest! {
        #[test]
        fn root_does_not_depend_on_order(seed in any::<u64>()) {
            let mut entries = sample();
            let mut x = seed | 1;
            for i in (1..entries.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                entries.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(MerkleTree::build(&entries).root(), MerkleTree::build(&sample()).root());
        }
    }
}
