//! The workspace's in-memory mirror of the local index and the Merkle tree over it.
//!
//! This module owns how the mirror is shared: the index is copy-on-write, so a rescan compares
//! against a snapshot without copying 20,000 entries or holding the lock. It does not read or
//! write the sled index (the workspace commits first, then updates the mirror).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::entry::LocalEntry;
use crate::merkle::MerkleTree;
use crate::path::RelPath;
use crate::store::Store;

use super::WorkspaceError;

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
}

/// The local index: files and tombstones by path.
pub(super) type Index = BTreeMap<RelPath, LocalEntry>;

impl Mirror {
    /// Decode the whole local index from `store` and build the tree over it.
    pub(super) fn load(store: &Store) -> Result<Mirror, WorkspaceError> {
        let index = store.local_all()?;
        let tree = MerkleTree::build(index.values().map(|l| &l.entry));
        Ok(Mirror {
            index: Arc::new(index),
            tree,
        })
    }

    /// The index as it is now, for a scan to compare against without holding the lock.
    pub(super) fn snapshot(&self) -> Arc<Index> {
        Arc::clone(&self.index)
    }

    /// Record `entry` (committed to the index already) in the map and the tree.
    pub(super) fn put(&mut self, entry: LocalEntry) {
        self.tree.insert(&entry.entry);
        Arc::make_mut(&mut self.index).insert(entry.entry.path.clone(), entry);
    }

    /// Forget `path` (removed from the index already).
    pub(super) fn remove(&mut self, path: &RelPath) {
        self.tree.remove(path);
        if self.index.contains_key(path) {
            Arc::make_mut(&mut self.index).remove(path);
        }
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
        let local = Attribution {
            peer: PeerId([3; 32]),
            agent: AgentLabel::new("unit"),
            machine: MachineName::default(),
        };
        let (ws, _) = Workspace::open(dir.path(), local).unwrap();
        for now_ns in [1_000, 2_000] {
            let refresh = ws.refresh(now_ns).unwrap();
            assert_eq!(refresh.files, 1);
            // Held by the mirror alone: the next update (an apply) needs no copy.
            assert_eq!(Arc::strong_count(&ws.lock().index), 1);
        }
    }
}
