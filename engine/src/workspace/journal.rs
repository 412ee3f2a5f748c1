//! What changed in the Merkle tree lately: the paths updated since each of our recent roots.
//!
//! A peer whose root is one our tree had a while ago holds exactly the entries we held then
//! (equal roots mean equal entries), so the paths where it differs from us now are among those
//! our tree changed since. An initiator that finds the responder's root here offers those
//! paths at once instead of walking the tree and asking for the peer's entries (feature
//! `direct-offer`, docs/PROTOCOL.md): the common case of a daemon pushing its own edits to a
//! peer that was in sync.
//!
//! The journal lives in memory beside the tree and is bounded: at most [`MAX_PATHS`] changed
//! paths and [`MAX_ROOTS`] roots; a root whose changes fell out is forgotten, and a session
//! with a peer at a root not (or no longer) known walks the tree as before. Every change of
//! the tree goes through the mirror's `put` and `remove`, which note it here; a tree rebuilt
//! from the index with another root than the one it had forgets everything.

use std::collections::{BTreeSet, VecDeque};

use crate::hash::Hash;
use crate::path::RelPath;

/// At most this many changed paths are remembered (about 1 MiB of paths).
pub(super) const MAX_PATHS: usize = 16_384;
/// At most this many recent roots are remembered.
pub(super) const MAX_ROOTS: usize = 64;

/// The changed paths in order, and the roots the tree had between them.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// The sequence number of `paths[0]`: changes noted before it are forgotten.
    base: u64,
    /// Changed paths, oldest first (a path changed twice is there twice).
    paths: VecDeque<RelPath>,
    /// Roots the tree had, oldest first, each with the sequence number of the next change
    /// after it (the changes since that root are `paths[seq - base..]`).
    roots: VecDeque<(Hash, u64)>,
}

impl Journal {
    /// The tree changed at `path`.
    pub(super) fn changed(&mut self, path: &RelPath) {
        self.paths.push_back(path.clone());
        if self.paths.len() > MAX_PATHS {
            self.paths.pop_front();
            self.base += 1;
            while self.roots.front().is_some_and(|&(_, seq)| seq < self.base) {
                self.roots.pop_front();
            }
        }
    }

    /// The tree's root is `root` now.
    pub(super) fn at_root(&mut self, root: Hash) {
        let seq = self.next_seq();
        match self.roots.back_mut() {
            // The same point, seen again (or a root computed twice).
            Some(last) if last.1 == seq => last.0 = root,
            _ => {
                self.roots.push_back((root, seq));
                if self.roots.len() > MAX_ROOTS {
                    self.roots.pop_front();
                }
            }
        }
    }

    /// The paths changed since the tree last had `root`, each once and sorted; `None` if that
    /// root is not known (never seen, or its changes were forgotten).
    pub(super) fn since(&self, root: Hash) -> Option<Vec<RelPath>> {
        let &(_, seq) = self.roots.iter().rev().find(|(r, _)| *r == root)?;
        let from = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let changed: BTreeSet<&RelPath> = self.paths.range(from..).collect();
        Some(changed.into_iter().cloned().collect())
    }

    /// Forget every root and path: the tree changed in a way not noted here.
    pub(super) fn forget(&mut self) {
        self.base = self.next_seq();
        self.paths.clear();
        self.roots.clear();
    }

    fn next_seq(&self) -> u64 {
        self.base + self.paths.len() as u64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::merkle::MerkleTree;
    use crate::merkle::tests::entry;

    fn path(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn strs(paths: &[RelPath]) -> Vec<&str> {
        paths.iter().map(RelPath::as_str).collect()
    }

    #[test]
    fn the_paths_since_a_root_are_those_changed_after_it_each_once() {
        let mut j = Journal::default();
        j.changed(&path("a.md"));
        j.at_root(Hash([1; 32]));
        j.changed(&path("c.md"));
        j.changed(&path("b.md"));
        j.changed(&path("c.md"));
        j.at_root(Hash([2; 32]));
        assert_eq!(strs(&j.since(Hash([1; 32])).unwrap()), ["b.md", "c.md"]);
        assert_eq!(j.since(Hash([2; 32])).unwrap(), Vec::<RelPath>::new());
        assert_eq!(j.since(Hash([3; 32])), None, "a root never seen");
        j.forget();
        assert_eq!(j.since(Hash([1; 32])), None);
        assert_eq!(j.since(Hash([2; 32])), None);
    }

    #[test]
    fn a_root_whose_changes_fell_out_is_forgotten_and_the_roots_are_bounded() {
        let mut j = Journal::default();
        j.at_root(Hash([1; 32]));
        for i in 0..MAX_PATHS {
            j.changed(&path(&format!("n/{i}.md")));
        }
        j.at_root(Hash([2; 32]));
        assert_eq!(j.since(Hash([1; 32])).unwrap().len(), MAX_PATHS);
        j.changed(&path("one-more.md"));
        assert_eq!(j.since(Hash([1; 32])), None, "its first change was dropped");
        assert_eq!(strs(&j.since(Hash([2; 32])).unwrap()), ["one-more.md"]);
        for i in 0..(MAX_ROOTS as u8 + 3) {
            j.changed(&path("x.md"));
            j.at_root(Hash([i + 10; 32]));
        }
        assert_eq!(j.roots.len(), MAX_ROOTS);
        assert_eq!(j.since(Hash([2; 32])), None, "pushed out by newer roots");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u8),
        Remove(u8),
        Root,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..12, 0u8..4).prop_map(|(p, v)| Step::Put(p, v)),
            1 => (0u8..12).prop_map(Step::Remove),
            2 => Just(Step::Root),
        ]
    }

    proptest! {
        /// The law the direct offer rests on: a peer at any root the journal still knows
        /// differs from the tree now only at paths the journal returns for that root.
        #[test]
        fn a_peer_at_a_known_root_differs_only_at_the_paths_returned(
            steps in proptest::collection::vec(step(), 1..80),
        ) {
            let mut tree = MerkleTree::new();
            let mut j = Journal::default();
            let mut entries: BTreeMap<String, u8> = BTreeMap::new();
            let mut seen: Vec<(Hash, BTreeMap<String, u8>)> = Vec::new();
            for s in steps {
                match s {
                    Step::Put(p, v) => {
                        let name = format!("d{}/f{p}.md", p % 3);
                        let e = entry(&name, &[v], 1);
                        if tree.insert(&e) {
                            j.changed(&e.path);
                        }
                        entries.insert(name, v);
                    }
                    Step::Remove(p) => {
                        let name = format!("d{}/f{p}.md", p % 3);
                        if tree.remove(&path(&name)) {
                            j.changed(&path(&name));
                        }
                        entries.remove(&name);
                    }
                    Step::Root => {
                        let root = tree.root();
                        j.at_root(root);
                        seen.push((root, entries.clone()));
                    }
                }
            }
            for (root, then) in &seen {
                let since: BTreeSet<String> = j
                    .since(*root)
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect();
                let names: BTreeSet<&String> = then.keys().chain(entries.keys()).collect();
                for name in names {
                    if then.get(name) != entries.get(name) {
                        prop_assert!(since.contains(name), "{name} differs but is not listed");
                    }
                }
            }
        }
    }
}
