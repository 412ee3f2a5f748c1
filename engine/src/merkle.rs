//! The workspace Merkle tree: one hash for everything a replica holds, and one per directory.
//!
//! Owns the tree over a replica's [`FileEntry`]s (files and tombstones): leaf hashes, directory
//! hashes, lookups by path and incremental updates. Two replicas whose roots are equal hold the
//! same synced state, so a session compares roots first (in sync = one round trip) and descends
//! only into children whose hashes differ. It does not own the entries (the index) or the wire
//! messages that carry [`MerkleChild`] lists.
//!
//! # What a leaf covers, and why not mtime
//!
//! A leaf hash covers exactly what sync must agree on: the path, the kind (file or tombstone),
//! the content hash, the size, the synced mode bits and the version vector. It leaves out the
//! modification time: after a sync each replica writes the file at its own time, so mtimes differ
//! between machines whose files are identical. Covering mtime would make two replicas in sync look
//! different forever and every session would descend the whole tree. The version vector already
//! says which version this is, and the content hash what it holds. It also leaves out the chunk
//! list (the content hash is its root), the parent hash and the attribution (who made a version
//! does not change what it is).
//!
//! # Directories
//!
//! Directories are not entries: they exist because paths run through them, and vanish with their
//! last entry. A directory's hash covers its children sorted by name then kind, each as (name,
//! kind, hash). A name can be a tombstone file and a directory at once (a file `notes` was
//! deleted, then `notes/a.md` created), so the kind is part of the child's key. Hashes are
//! computed lazily: an update clears the cached hashes on its path, and the next read recomputes
//! only those.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::entry::{EntryKind, FileEntry};
use crate::hash::{Domain, Hash};
use crate::path::RelPath;

/// What a child of a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChildKind {
    /// A directory (sorts before a file of the same name).
    Dir,
    /// A file or tombstone entry.
    File,
}

/// One child of a directory, as sent on the wire when descending a differing subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleChild {
    /// The child's name (one path component).
    pub name: String,
    /// Directory or file.
    pub kind: ChildKind,
    /// The child's subtree hash (leaf hash for a file).
    pub hash: Hash,
}

/// The Merkle tree over a replica's entries.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    root: Dir,
}

#[derive(Debug, Clone, Default)]
struct Dir {
    children: BTreeMap<(String, ChildKind), Node>,
    /// Cached hash; cleared when anything below changes.
    hash: OnceLock<Hash>,
    /// Cached number of files below (tombstones not counted); cleared with `hash`.
    files: OnceLock<u64>,
}

#[derive(Debug, Clone)]
enum Node {
    Dir(Dir),
    File {
        path: RelPath,
        hash: Hash,
        tombstone: bool,
    },
}

impl MerkleTree {
    /// An empty tree (no entries).
    pub fn new() -> MerkleTree {
        MerkleTree::default()
    }

    /// Build the tree of `entries`, in any order. A path given twice keeps its last entry.
    pub fn build<'e>(entries: impl IntoIterator<Item = &'e FileEntry>) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for e in entries {
            tree.insert(e);
        }
        tree
    }

    /// The root hash: equal on two replicas exactly when their entries agree.
    pub fn root(&self) -> Hash {
        self.root.hash()
    }

    /// Add or replace the entry at `entry.path`. The workspace root itself is not an entry and is
    /// ignored. Returns true if the tree changed: the path's leaf is new or has another hash (a
    /// new stat record of the same version is no change).
    pub fn insert(&mut self, entry: &FileEntry) -> bool {
        let hash = leaf_hash(entry);
        let Some((dirs, name)) = split(&entry.path) else {
            return false;
        };
        let mut dir = &mut self.root;
        dir.changed();
        for component in dirs {
            let node = dir
                .children
                .entry((component.to_owned(), ChildKind::Dir))
                .or_insert_with(|| Node::Dir(Dir::default()));
            dir = match node {
                Node::Dir(d) => d,
                // Keys with kind `Dir` always hold a `Node::Dir`.
                Node::File { .. } => return false,
            };
            dir.changed();
        }
        let before = dir.children.insert(
            (name.to_owned(), ChildKind::File),
            Node::File {
                path: entry.path.clone(),
                hash,
                tombstone: entry.is_tombstone(),
            },
        );
        !matches!(before, Some(Node::File { hash: old, .. }) if old == hash)
    }

    /// Remove the entry at `path`, and the directories it leaves empty. Returns true if there was
    /// one. (Deleting a file is not this: a deleted file is a tombstone entry, inserted.)
    pub fn remove(&mut self, path: &RelPath) -> bool {
        match split(path) {
            Some((dirs, name)) => remove_in(&mut self.root, &dirs, name),
            None => false,
        }
    }

    /// The hash of the subtree at `path`: the directory there, else the file there; the root for
    /// the empty path. `None` if nothing is there.
    pub fn subtree(&self, path: &RelPath) -> Option<Hash> {
        if path.is_root() {
            return Some(self.root());
        }
        let (dirs, name) = split(path)?;
        let parent = self.dir(&dirs)?;
        match parent.children.get(&(name.to_owned(), ChildKind::Dir)) {
            Some(node) => Some(node.hash()),
            None => parent
                .children
                .get(&(name.to_owned(), ChildKind::File))
                .map(Node::hash),
        }
    }

    /// The children of the directory at `path` (the root for the empty path), sorted by name then
    /// kind; `None` if there is no directory there.
    pub fn children(&self, path: &RelPath) -> Option<Vec<MerkleChild>> {
        let dir = if path.is_root() {
            &self.root
        } else {
            let (dirs, name) = split(path)?;
            match self
                .dir(&dirs)?
                .children
                .get(&(name.to_owned(), ChildKind::Dir))?
            {
                Node::Dir(d) => d,
                Node::File { .. } => return None,
            }
        };
        Some(
            dir.children
                .iter()
                .map(|((name, kind), node)| MerkleChild {
                    name: name.clone(),
                    kind: *kind,
                    hash: node.hash(),
                })
                .collect(),
        )
    }

    /// The paths of all entries at or below `path`, in sorted order (what to send when the other
    /// side lacks a whole subtree).
    pub fn entry_paths_under(&self, path: &RelPath) -> Vec<RelPath> {
        let mut out = Vec::new();
        let Some((dirs, name)) = split(path) else {
            collect_paths(&self.root, &mut out);
            out.sort();
            return out;
        };
        let Some(parent) = self.dir(&dirs) else {
            return out;
        };
        if let Some(Node::Dir(d)) = parent.children.get(&(name.to_owned(), ChildKind::Dir)) {
            collect_paths(d, &mut out);
        }
        if let Some(Node::File { path, .. }) =
            parent.children.get(&(name.to_owned(), ChildKind::File))
        {
            out.push(path.clone());
        }
        out.sort();
        out
    }

    /// Number of entries in the tree.
    pub fn len(&self) -> usize {
        self.root.count()
    }

    /// Number of files in the tree, tombstones not counted.
    pub fn file_count(&self) -> u64 {
        self.root.files()
    }

    /// True if the tree holds no entry.
    pub fn is_empty(&self) -> bool {
        self.root.children.is_empty()
    }

    /// The directory reached by following `dirs` from the root.
    fn dir(&self, dirs: &[&str]) -> Option<&Dir> {
        let mut dir = &self.root;
        for component in dirs {
            dir = match dir
                .children
                .get(&((*component).to_owned(), ChildKind::Dir))?
            {
                Node::Dir(d) => d,
                Node::File { .. } => return None,
            };
        }
        Some(dir)
    }
}

/// The leaf hash of an entry: path, kind, content, size, mode and version vector (not mtime; see
/// the module docs).
pub fn leaf_hash(entry: &FileEntry) -> Hash {
    let path = entry.path.as_str().as_bytes();
    let mut buf = Vec::with_capacity(64 + path.len() + entry.version.len() * 40);
    buf.extend_from_slice(&(path.len() as u64).to_le_bytes());
    buf.extend_from_slice(path);
    buf.push(match entry.kind {
        EntryKind::File => 0,
        EntryKind::Tombstone => 1,
    });
    buf.extend_from_slice(entry.content.as_bytes());
    buf.extend_from_slice(&entry.size.to_le_bytes());
    buf.extend_from_slice(&entry.mode.permissions.to_le_bytes());
    buf.extend_from_slice(&(entry.version.len() as u64).to_le_bytes());
    for (peer, counter) in entry.version.iter() {
        buf.extend_from_slice(peer.as_bytes());
        buf.extend_from_slice(&counter.to_le_bytes());
    }
    Hash::tagged(Domain::FileNode, &[&buf])
}

impl Dir {
    fn hash(&self) -> Hash {
        *self.hash.get_or_init(|| {
            let mut buf = Vec::with_capacity(self.children.len() * 56);
            for ((name, kind), node) in &self.children {
                buf.extend_from_slice(&(name.len() as u64).to_le_bytes());
                buf.extend_from_slice(name.as_bytes());
                buf.push(match kind {
                    ChildKind::Dir => 0,
                    ChildKind::File => 1,
                });
                buf.extend_from_slice(node.hash().as_bytes());
            }
            Hash::tagged(Domain::DirNode, &[&buf])
        })
    }

    /// Forget what was cached: something below changed.
    fn changed(&mut self) {
        self.hash.take();
        self.files.take();
    }

    fn files(&self) -> u64 {
        *self.files.get_or_init(|| {
            self.children
                .values()
                .map(|n| match n {
                    Node::Dir(d) => d.files(),
                    Node::File { tombstone, .. } => u64::from(!tombstone),
                })
                .sum()
        })
    }

    fn count(&self) -> usize {
        self.children
            .values()
            .map(|n| match n {
                Node::Dir(d) => d.count(),
                Node::File { .. } => 1,
            })
            .sum()
    }
}

impl Node {
    fn hash(&self) -> Hash {
        match self {
            Node::Dir(d) => d.hash(),
            Node::File { hash, .. } => *hash,
        }
    }
}

/// A non-root path as (parent directory components, last component).
fn split(path: &RelPath) -> Option<(Vec<&str>, &str)> {
    let mut dirs: Vec<&str> = path.components().collect();
    let name = dirs.pop()?;
    Some((dirs, name))
}

/// Remove file `name` under `dirs` below `dir`, pruning directories left empty.
fn remove_in(dir: &mut Dir, dirs: &[&str], name: &str) -> bool {
    let removed = match dirs.split_first() {
        None => dir
            .children
            .remove(&(name.to_owned(), ChildKind::File))
            .is_some(),
        Some((first, rest)) => {
            let key = ((*first).to_owned(), ChildKind::Dir);
            let (removed, now_empty) = match dir.children.get_mut(&key) {
                Some(Node::Dir(sub)) => {
                    let removed = remove_in(sub, rest, name);
                    (removed, sub.children.is_empty())
                }
                _ => (false, false),
            };
            if now_empty {
                dir.children.remove(&key);
            }
            removed
        }
    };
    if removed {
        dir.changed();
    }
    removed
}

fn collect_paths(dir: &Dir, out: &mut Vec<RelPath>) {
    for node in dir.children.values() {
        match node {
            Node::Dir(d) => collect_paths(d, out),
            Node::File { path, .. } => out.push(path.clone()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::entry::Mode;
    use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
    use crate::vector::VersionVector;
    use proptest::prelude::*;

    /// A file entry with one change by `peer`, for tests.
    pub(crate) fn entry(path: &str, content: &[u8], peer: u8) -> FileEntry {
        let mut version = VersionVector::new();
        version.increment(PeerId([peer; 32])).unwrap();
        FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: content.len() as u64,
            mtime_ns: 1_700_000_000_000_000_000,
            mode: Mode::default(),
            content: Hash::of(content),
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version,
            parent: None,
            changed_by: Attribution {
                peer: PeerId([peer; 32]),
                agent: AgentLabel::new("test"),
                machine: MachineName::default(),
            },
        }
    }

    fn workspace() -> Vec<FileEntry> {
        vec![
            entry("MEMORY.md", b"# memory", 1),
            entry("USER.md", b"user", 1),
            entry("memory/2026-01-01.md", b"day one", 2),
            entry("memory/2026-01-02.md", b"day two", 2),
            entry("memory/log.jsonl", b"{}", 1),
            entry("skills/sync/SKILL.md", b"skill", 3),
            entry("skills/sync/scripts/run.sh", b"#!/bin/sh", 3),
        ]
    }

    /// Every directory path of the tree, with its subtree hash.
    fn dir_hashes(tree: &MerkleTree) -> BTreeMap<String, Hash> {
        fn walk(tree: &MerkleTree, path: RelPath, out: &mut BTreeMap<String, Hash>) {
            out.insert(path.as_str().to_owned(), tree.subtree(&path).unwrap());
            for child in tree.children(&path).unwrap() {
                if child.kind == ChildKind::Dir {
                    walk(tree, path.join(&child.name).unwrap(), out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(tree, RelPath::root(), &mut out);
        out
    }

    #[test]
    fn mtime_and_attribution_do_not_change_the_root() {
        let entries = workspace();
        let tree = MerkleTree::build(&entries);
        let mut touched = entries.clone();
        touched[2].mtime_ns += 5_000_000_000;
        touched[2].changed_by.agent = AgentLabel::new("other agent");
        assert_eq!(MerkleTree::build(&touched).root(), tree.root());
        for change in [
            |e: &mut FileEntry| e.mode.permissions = 0o755,
            |e: &mut FileEntry| e.size += 1,
            |e: &mut FileEntry| e.kind = EntryKind::Tombstone,
            |e: &mut FileEntry| e.version.increment(PeerId([9; 32])).unwrap(),
            |e: &mut FileEntry| e.content = Hash::of(b"other"),
        ] {
            let mut changed = entries.clone();
            change(&mut changed[2]);
            assert_ne!(MerkleTree::build(&changed).root(), tree.root());
        }
    }

    #[test]
    fn lookups_by_path() {
        let tree = MerkleTree::build(&workspace());
        assert_eq!(tree.len(), 7);
        let top: Vec<(String, ChildKind)> = tree
            .children(&RelPath::root())
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.kind))
            .collect();
        assert_eq!(
            top,
            [
                ("MEMORY.md", ChildKind::File),
                ("USER.md", ChildKind::File),
                ("memory", ChildKind::Dir),
                ("skills", ChildKind::Dir)
            ]
            .map(|(n, k)| (n.to_owned(), k))
        );
        let skills = RelPath::new("skills").unwrap();
        assert_eq!(
            tree.entry_paths_under(&skills),
            vec![
                RelPath::new("skills/sync/SKILL.md").unwrap(),
                RelPath::new("skills/sync/scripts/run.sh").unwrap()
            ]
        );
        let user = RelPath::new("USER.md").unwrap();
        assert_eq!(tree.subtree(&user), Some(leaf_hash(&workspace()[1])));
        assert_eq!(tree.entry_paths_under(&user), vec![user.clone()]);
        assert!(tree.children(&user).is_none());
        assert!(tree.subtree(&RelPath::new("nope/x").unwrap()).is_none());
        assert_eq!(tree.entry_paths_under(&RelPath::root()).len(), 7);
    }

    #[test]
    fn a_name_can_be_a_tombstone_and_a_directory() {
        let mut gone = entry("notes", b"", 1);
        gone.kind = EntryKind::Tombstone;
        let entries = vec![gone, entry("notes/a.md", b"a", 2)];
        let tree = MerkleTree::build(&entries);
        let kinds: Vec<ChildKind> = tree
            .children(&RelPath::root())
            .unwrap()
            .iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, vec![ChildKind::Dir, ChildKind::File]);
        let notes = RelPath::new("notes").unwrap();
        assert_eq!(tree.entry_paths_under(&notes).len(), 2);
        assert_eq!(tree.file_count(), 1);
        assert_eq!(tree.len(), 2);
        let mut smaller = MerkleTree::build(&entries);
        assert!(smaller.remove(&RelPath::new("notes/a.md").unwrap()));
        assert_eq!(smaller.root(), MerkleTree::build(&entries[..1]).root());
    }

    #[test]
    fn removing_the_last_entry_prunes_directories() {
        let mut tree = MerkleTree::build(&workspace());
        for e in workspace() {
            assert!(tree.remove(&e.path));
        }
        assert!(tree.is_empty());
        assert_eq!(tree.root(), MerkleTree::new().root());
        assert!(!tree.remove(&RelPath::new("MEMORY.md").unwrap()));
    }

    #[test]
    fn twenty_thousand_entries_build_and_update() {
        let entries: Vec<FileEntry> = (0..20_000)
            .map(|i| {
                entry(
                    &format!("memory/d{}/note-{i}.md", i % 50),
                    &(i as u32).to_le_bytes(),
                    1,
                )
            })
            .collect();
        let mut tree = MerkleTree::build(&entries);
        let before = tree.root();
        tree.insert(&entry("memory/d7/note-7.md", b"edited", 1));
        assert_ne!(tree.root(), before);
        tree.insert(&entries[7]);
        assert_eq!(tree.root(), before);
    }

    fn arb_entries() -> impl Strategy<Value = Vec<FileEntry>> {
        let name = prop::sample::select(vec!["a", "b", "memory", "notes.md", "x.jsonl"]);
        let path = prop::collection::vec(name, 1..4).prop_map(|c| c.join("/"));
        prop::collection::btree_map(path, (any::<u8>(), 1u8..4, any::<bool>()), 1..25).prop_map(
            |m| {
                m.into_iter()
                    .map(|(p, (content, peer, tomb))| {
                        let mut e = entry(&p, &[content], peer);
                        if tomb {
                            e.kind = EntryKind::Tombstone;
                        }
                        e
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn root_is_independent_of_insertion_order(entries in arb_entries(), seed in any::<u64>()) {
            let mut shuffled = entries.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(MerkleTree::build(&entries).root(), MerkleTree::build(&shuffled).root());
        }

        #[test]
        fn one_changed_entry_changes_exactly_its_ancestors(entries in arb_entries(), pick in any::<prop::sample::Index>()) {
            let before = MerkleTree::build(&entries);
            let mut changed = entries.clone();
            let i = pick.index(changed.len());
            changed[i].content = Hash::of(b"something new");
            let after = MerkleTree::build(&changed);
            prop_assert_ne!(before.root(), after.root());
            let (old_dirs, new_dirs) = (dir_hashes(&before), dir_hashes(&after));
            prop_assert_eq!(old_dirs.keys().collect::<Vec<_>>(), new_dirs.keys().collect::<Vec<_>>());
            let path = &changed[i].path;
            for (dir, old) in &old_dirs {
                // A directory named like the file (file `a`, directory `a/`) is a sibling.
                let is_ancestor = path.starts_with(&RelPath::new(dir).unwrap()) && path.as_str() != dir;
                prop_assert_eq!(new_dirs[dir] != *old, is_ancestor, "directory {:?}", dir);
            }
        }

        #[test]
        fn incremental_updates_equal_a_rebuild(
            first in arb_entries(),
            second in arb_entries(),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut tree = MerkleTree::build(&first);
            // Cached hashes and counts must be forgotten by the updates below.
            let _ = (tree.root(), tree.file_count());
            let mut live: BTreeMap<RelPath, FileEntry> = first.iter().map(|e| (e.path.clone(), e.clone())).collect();
            for e in &second {
                tree.insert(e);
                live.insert(e.path.clone(), e.clone());
            }
            let _ = (tree.root(), tree.file_count());
            for r in removals {
                if live.is_empty() { break; }
                let path = live.keys().nth(r.index(live.len())).cloned().unwrap();
                prop_assert!(tree.remove(&path));
                live.remove(&path);
            }
            let rebuilt = MerkleTree::build(live.values());
            prop_assert_eq!(tree.root(), rebuilt.root());
            prop_assert_eq!(tree.len(), live.len());
            let files = live.values().filter(|e| !e.is_tombstone()).count() as u64;
            prop_assert_eq!(tree.file_count(), files);
            prop_assert_eq!(tree.entry_paths_under(&RelPath::root()), live.keys().cloned().collect::<Vec<_>>());
        }
    }
}
