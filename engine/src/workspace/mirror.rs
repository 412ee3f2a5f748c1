//! The workspace's in-memory mirror of the local index and the Merkle tree over it.
//!
//! This module owns how the mirror is shared and when it is in memory at all: the index is
//! copy-on-write, so a rescan compares against a snapshot without copying 20,000 entries or
//! holding the lock; and a long-running holder (the daemon) can let go of it while nothing uses
//! it ([`Mirror::unload_if_unused`]), keeping only the root and the file count that a no-op
//! sync asks for: at a million files the mirror is over a GiB. It is decoded again from the
//! index on its next use. The module does not write the sled index (the workspace commits
//! first, then updates the mirror).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::entry::LocalEntry;
use crate::hash::Hash;
use crate::merkle::MerkleTree;
use crate::path::RelPath;
use crate::store::Store;

use super::WorkspaceError;
use super::journal::Journal;

/// The in-memory copy of the local index and the tree over it.
///
/// The index is shared copy-on-write: a rescan takes a snapshot (a reference count, not a
/// copy) and scans against it without holding the lock, so readers are never blocked by a
/// scan. The first update after the snapshot is dropped changes the map in place; an update
/// while a snapshot is still held (an apply during a scan, two rescans at once) copies the map
/// once and leaves the snapshot as it was.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub(super) index: Arc<Index>,
    pub(super) tree: MerkleTree,
    /// `Some` while the mirror is not in memory (`index` and `tree` are empty then): the root
    /// and file count it had.
    unloaded: Option<Summary>,
    /// Set by every [`Mirror::ensure_loaded`], cleared by [`Mirror::unload_if_unused`]: a
    /// second chance, so that only a mirror nobody used between two calls is dropped.
    used: bool,
    /// The paths the tree changed at since each of its recent roots; kept while unloaded (the
    /// tree decoded again is the same tree).
    journal: Journal,
}

/// What is kept of an unloaded mirror: what a no-op sync and the mass-delete guard ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Summary {
    pub(super) root: Hash,
    pub(super) files: u64,
}

/// The local index: files and tombstones by path.
pub(super) type Index = BTreeMap<RelPath, LocalEntry>;

impl Mirror {
    /// Decode the whole local index from `store` and build the tree over it.
    pub(super) fn load(store: &Store) -> Result<Mirror, WorkspaceError> {
        let index = store.local_all()?;
        let tree = MerkleTree::build(index.values().map(|l| &l.entry));
        let mut journal = Journal::default();
        // The tree as the index holds it: a peer synced with the process that wrote it may be
        // at this root.
        journal.at_root(tree.root());
        Ok(Mirror {
            index: Arc::new(index),
            tree,
            unloaded: None,
            used: true,
            journal,
        })
    }

    /// Decode the mirror again if it was unloaded, and note the use. Every reader of `index`
    /// or `tree` goes through this first (the workspace's `lock`).
    pub(super) fn ensure_loaded(&mut self, store: &Store) -> Result<(), WorkspaceError> {
        if let Some(was) = self.unloaded {
            let mut loaded = Mirror::load(store)?;
            tracing::debug!(
                entries = loaded.index.len(),
                "index loaded back into memory"
            );
            loaded.journal = std::mem::take(&mut self.journal);
            if loaded.tree.root() != was.root {
                // Not the tree that was unloaded: its changes were not noted.
                loaded.journal.forget();
            }
            *self = loaded;
        }
        self.used = true;
        Ok(())
    }

    /// The root and the file count, loaded or not.
    pub(super) fn summary(&self) -> Summary {
        self.unloaded.unwrap_or_else(|| Summary {
            root: self.tree.root(),
            files: self.tree.file_count(),
        })
    }

    /// True while the index is in memory.
    pub(super) fn is_loaded(&self) -> bool {
        self.unloaded.is_none()
    }

    /// Let go of the index and the tree if nothing used them since the last call and no scan
    /// holds a snapshot; returns the number of entries dropped (0 if it kept them). A commit
    /// made while unloaded loads the mirror again first: the index on disk is always whole.
    pub(super) fn unload_if_unused(&mut self) -> usize {
        if self.unloaded.is_some() || std::mem::take(&mut self.used) {
            return 0;
        }
        if Arc::strong_count(&self.index) > 1 {
            // A scan compares against it; the commit that follows will use it.
            return 0;
        }
        let summary = self.summary();
        let dropped = self.index.len();
        *self = Mirror {
            unloaded: Some(summary),
            journal: std::mem::take(&mut self.journal),
            ..Mirror::default()
        };
        dropped
    }

    /// The index as it is now, for a scan to compare against without holding the lock.
    pub(super) fn snapshot(&self) -> Arc<Index> {
        Arc::clone(&self.index)
    }

    /// Record `entry` (committed to the index already) in the map and the tree.
    pub(super) fn put(&mut self, entry: LocalEntry) {
        if self.tree.insert(&entry.entry) {
            self.journal.changed(&entry.entry.path);
        }
        Arc::make_mut(&mut self.index).insert(entry.entry.path.clone(), entry);
    }

    /// Forget `path` (removed from the index already).
    pub(super) fn remove(&mut self, path: &RelPath) {
        if self.tree.remove(path) {
            self.journal.changed(path);
        }
        if self.index.contains_key(path) {
            Arc::make_mut(&mut self.index).remove(path);
        }
    }

    /// The root and the file count, loaded or not; a root computed from the tree is noted in
    /// the journal (a peer may hold it later).
    pub(super) fn noted_summary(&mut self) -> Summary {
        let summary = self.summary();
        if self.unloaded.is_none() {
            self.journal.at_root(summary.root);
        }
        summary
    }

    /// The paths changed since the tree had `root` (some may be gone from it: removed by a
    /// selection change or a purge), if the journal knows that root.
    pub(super) fn changed_since(&self, root: Hash) -> Option<Vec<RelPath>> {
        self.journal.since(root)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use std::fs;

    use super::*;
    use crate::peer::AgentLabel;
    use crate::peer::{Attribution, MachineName, PeerId};
    use crate::workspace::Workspace;

    fn local_entry(path: &str, content: &[u8]) -> LocalEntry {
        LocalEntry {
            entry: crate::merkle::tests::entry(path, content, 3),
            stat: None,
            recorded_at_ns: 1_700_000_000_000_000_000,
        }
    }

    fn paths(index: &Index) -> Vec<&str> {
        index.keys().map(RelPath::as_str).collect()
    }

    #[test]
    fn a_scan_snapshot_is_shared_and_never_sees_later_updates() {
        let mut mirror = Mirror::default();
        mirror.put(local_entry("memory/a.md", b"a"));
        let snapshot = mirror.snapshot();
        assert!(Arc::ptr_eq(&snapshot, &mirror.index), "not a copy");

        // An apply while the scan runs: the mirror moves on, the scan's view does not.
        mirror.put(local_entry("memory/b.md", b"b"));
        mirror.remove(&RelPath::new("memory/a.md").unwrap());
        assert_eq!(paths(&snapshot), ["memory/a.md"]);
        assert_eq!(paths(&mirror.index), ["memory/b.md"]);

        // Once the scan let go, updates happen in place.
        drop(snapshot);
        let map = Arc::as_ptr(&mirror.index);
        mirror.put(local_entry("memory/c.md", b"c"));
        assert_eq!(Arc::as_ptr(&mirror.index), map);
        assert_eq!(paths(&mirror.index), ["memory/b.md", "memory/c.md"]);
    }

    #[test]
    fn refresh_lets_go_of_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        Workspace::init(dir.path(), None).unwrap();
        fs::create_dir(dir.path().join("memory")).unwrap();
        fs::write(dir.path().join("memory/a.md"), b"a").unwrap();
        let ws = open_as(3, dir.path());
        for now_ns in [1_000, 2_000] {
            let refresh = ws.refresh(now_ns).unwrap();
            assert_eq!(refresh.files, 1);
            // Held by the mirror alone: the next update (an apply) needs no copy.
            assert_eq!(Arc::strong_count(&ws.lock().unwrap().index), 1);
        }
    }

    /// The workspace at `dir`, opened as the peer `[peer; 32]`.
    fn open_as(peer: u8, dir: &std::path::Path) -> Workspace {
        let local = Attribution {
            peer: PeerId([peer; 32]),
            agent: AgentLabel::new("unit"),
            machine: MachineName::default(),
        };
        Workspace::open(dir, local).unwrap().0
    }

    fn workspace_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Workspace) {
        workspace_of(3, files)
    }

    fn workspace_of(peer: u8, files: &[(&str, &[u8])]) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        Workspace::init(dir.path(), None).unwrap();
        for (path, bytes) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
        let ws = open_as(peer, dir.path());
        ws.refresh(1_000).unwrap();
        (dir, ws)
    }

    #[test]
    fn an_apply_keeps_the_index_in_memory_while_it_writes() {
        use crate::apply::{ChunkSource, SourceError};
        use crate::hash::Hash;
        /// Fetches from `from`, and tries to unload `to`'s index (twice: a second chance
        /// would drop it) each time.
        struct Unloading<'a> {
            from: &'a Workspace,
            to: &'a Workspace,
            dropped: usize,
        }
        impl ChunkSource for Unloading<'_> {
            fn fetch(&mut self, id: &Hash, _len: u32) -> Result<Option<Vec<u8>>, SourceError> {
                self.dropped += self.to.unload_index_if_unused();
                self.dropped += self.to.unload_index_if_unused();
                Ok(self.from.read_chunk(id).unwrap())
            }
        }
        let (_da, alpha) = workspace_of(1, &[("memory/a.md", b"from alpha")]);
        let (_db, beta) = workspace_of(2, &[("memory/b.md", b"beta's own")]);
        let paths = [RelPath::new("memory/a.md").unwrap()];
        let plan = beta.plan(alpha.entries(&paths).unwrap()).unwrap();
        let mut source = Unloading {
            from: &alpha,
            to: &beta,
            dropped: 0,
        };
        let reports = beta.apply_with(plan, 5_000, &mut source).unwrap();
        assert_eq!(
            reports[0].outcome,
            crate::plan::Outcome::Done,
            "{reports:?}"
        );
        assert_eq!(source.dropped, 0, "unloaded in the middle of the apply");
        assert_eq!(beta.snapshot().1, 2);
        // Once it is over, an unused index leaves as before.
        beta.unload_index_if_unused();
        assert_eq!(beta.unload_index_if_unused(), 2);
    }

    #[test]
    fn an_index_unused_between_two_calls_leaves_memory_and_comes_back_on_use() {
        let (_dir, ws) = workspace_with(&[("memory/a.md", b"a"), ("memory/b.md", b"b")]);
        let (root, files) = ws.snapshot();
        let paths = [RelPath::new("memory/a.md").unwrap()];
        let before = ws.entries(&paths).unwrap();

        // The refresh and the entries used it: the first call only takes note.
        assert_eq!(ws.unload_index_if_unused(), 0);
        assert!(ws.index_in_memory());
        assert_eq!(ws.unload_index_if_unused(), 2, "two entries dropped");
        assert!(!ws.index_in_memory());
        assert_eq!(ws.unload_index_if_unused(), 0, "already out");

        // What a no-op sync asks does not bring it back.
        assert_eq!(ws.snapshot(), (root, files));
        assert!(!ws.index_in_memory());

        // A reader does, and sees what it saw before.
        assert_eq!(ws.entries(&paths).unwrap(), before);
        assert!(ws.index_in_memory());
        assert_eq!(ws.snapshot(), (root, files));
        assert_eq!(
            ws.children(&RelPath::new("memory").unwrap())
                .unwrap()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_rescan_after_an_unload_starts_from_the_whole_index() {
        let (dir, ws) = workspace_with(&[("memory/a.md", b"a"), ("memory/b.md", b"b")]);
        ws.unload_index_if_unused();
        assert_eq!(ws.unload_index_if_unused(), 2);

        fs::write(dir.path().join("memory/c.md"), b"c").unwrap();
        let refresh = ws.refresh(2_000).unwrap();
        // Only the new file is a change: a and b were found in the index loaded back.
        let s = &refresh.scan;
        assert_eq!((s.added, s.modified, s.deleted), (1, 0, 0));
        assert_eq!(refresh.files, 3);

        // The same root as a process that opens the workspace afresh.
        let root = refresh.root;
        drop(ws);
        let again = open_as(3, dir.path());
        assert_eq!(again.snapshot(), (root, 3));
    }

    #[test]
    fn the_paths_changed_since_an_earlier_root_are_known_across_an_unload() {
        let (dir, ws) = workspace_with(&[("memory/a.md", b"a"), ("memory/b.md", b"b")]);
        let (root, _) = ws.snapshot();
        ws.unload_index_if_unused();
        assert_eq!(ws.unload_index_if_unused(), 2);

        fs::write(dir.path().join("memory/a.md"), b"a, edited").unwrap();
        fs::write(dir.path().join("memory/c.md"), b"c").unwrap();
        let now = ws.refresh(2_000).unwrap().root;
        let since = ws.changed_since(root).unwrap().unwrap();
        assert_eq!(
            since.iter().map(RelPath::as_str).collect::<Vec<_>>(),
            ["memory/a.md", "memory/c.md"]
        );
        assert_eq!(ws.changed_since(now).unwrap(), Some(Vec::new()));
        assert_eq!(ws.changed_since(Hash([9; 32])).unwrap(), None, "never ours");
    }

    #[test]
    fn a_workspace_opened_again_knows_the_root_its_index_was_left_at() {
        let (dir, ws) = workspace_with(&[("memory/a.md", b"a")]);
        let (left_at, _) = ws.snapshot();
        drop(ws);
        let again = open_as(3, dir.path());
        fs::write(dir.path().join("memory/b.md"), b"b").unwrap();
        again.refresh(2_000).unwrap();
        assert_eq!(
            again.changed_since(left_at).unwrap(),
            Some(vec![RelPath::new("memory/b.md").unwrap()])
        );
    }

    #[test]
    fn a_path_gone_from_the_tree_is_a_change_and_a_same_version_is_not() {
        let a = RelPath::new("memory/a.md").unwrap();
        let mut mirror = Mirror::default();
        mirror.put(local_entry("memory/a.md", b"a"));
        let root = mirror.noted_summary().root;
        // A new stat record of the same version changes nothing a peer could see.
        mirror.put(local_entry("memory/a.md", b"a"));
        assert_eq!(mirror.changed_since(root), Some(Vec::new()));
        mirror.put(local_entry("memory/b.md", b"b"));
        assert_eq!(
            mirror.changed_since(root),
            Some(vec![RelPath::new("memory/b.md").unwrap()])
        );
        // Removed entirely (a selection change, a purge): still a path where a peer at that
        // root differs.
        mirror.remove(&a);
        assert_eq!(
            mirror.changed_since(root),
            Some(vec![a, RelPath::new("memory/b.md").unwrap()])
        );
    }

    #[test]
    fn an_index_a_scan_compares_against_stays_in_memory() {
        let mut mirror = Mirror::default();
        mirror.put(local_entry("memory/a.md", b"a"));
        let scan = mirror.snapshot();
        assert_eq!(mirror.unload_if_unused(), 0);
        assert_eq!(mirror.unload_if_unused(), 0, "the scan still holds it");
        assert!(mirror.is_loaded());
        drop(scan);
        assert_eq!(mirror.unload_if_unused(), 1);
        assert!(!mirror.is_loaded());
    }
}
