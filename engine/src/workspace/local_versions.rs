//! Local versions the scanner keeps (docs/CONFLICTS.md, *History and restore*): when a scan
//! finds a file created or edited here, a copy of that version goes to the chunk store and a
//! history record names it, so `botsync restore` can bring back what an agent overwrote even
//! though no sync was involved. A local deletion of a kept version is recorded too.
//!
//! What is kept is bounded by `local_versions` in config.json: versions up to `max_bytes`, at
//! most one per path every `every_secs`, never for append-only (`union`) logs, whose every
//! version is a prefix of the next. The copies are not fsynced (the file itself is on disk;
//! reads of the store are verified, so a power loss can lose a copy, never tear one), and a
//! copy that fails (a full disk) is logged and skipped: keeping history never fails a scan.
//!
//! A scan copies at most [`INLINE_KEEP`] versions itself. The first scan of a large workspace
//! finds every file new, and copying 20,000 of them takes seconds (two new files each in the
//! store; docs/BENCHMARKS.md, *First scan*): past that count the rest is deferred, noted in the
//! index, and kept by [`Workspace::keep_deferred_versions`], which the daemon runs in the
//! background. A deferred version that changes before it is kept is lost to restore, as an edit
//! made between two scans is. The same keeper copies the merge bases a session recorded
//! without copying them (`merge.rs`).

use std::time::Duration;

use crate::chunkstore::duration_ns;
use crate::entry::FileEntry;
use crate::hash::Hash;
use crate::reconcile::MergePolicy;
use crate::scan::{Change, ChangeKind};
use crate::store::{HistoryAction, HistoryRecord};

use super::Workspace;
use super::mirror::Index;

/// Most versions one scan copies into the store itself; the rest are deferred.
pub const INLINE_KEEP: usize = 256;

const NAMESPACE: &str = "local_versions";
const DEFERRED: &str = "deferred";

/// What [`Workspace::keep_deferred_versions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferredKept {
    /// Versions copied into the store.
    pub kept: u64,
    /// Versions not copied because the file changed since the scan or could not be read: the
    /// next scan sees the new version.
    pub skipped: u64,
    /// Copies the store's disk refused (full, failing): they stay deferred, for a later run.
    pub failed: u64,
}

impl Workspace {
    /// Keep the local versions among `changes` (a scan's, not yet committed: the mirror still
    /// holds the versions they replace) that `local_versions` asks for; returns their history
    /// records, to append once the scan is committed, and whether copies were deferred (to
    /// note with `Workspace::set_deferred` once the mirror holds the scan: the daemon's
    /// keeper reads the mirror, and must not find the note before the versions).
    pub(super) fn keep_scanned_versions(
        &self,
        before: &Index,
        changes: &[Change],
        now_ns: i64,
    ) -> (Vec<HistoryRecord>, bool) {
        let rules = self.config.local_versions;
        if !rules.enabled() || changes.is_empty() {
            return (Vec::new(), false);
        }
        let every_ns = duration_ns(Duration::from_secs(rules.every_secs));
        let mut records = Vec::new();
        let mut copies = 0usize;
        let mut deferred = false;
        for change in changes {
            let entry = &change.entry.entry;
            let action = match change.kind {
                ChangeKind::Added => HistoryAction::Created,
                ChangeKind::Modified => HistoryAction::Modified,
                ChangeKind::Deleted => HistoryAction::Deleted,
                ChangeKind::MetadataOnly | ChangeKind::Unselected => continue,
            };
            if self.policy_of(&entry.path) == MergePolicy::Union {
                continue;
            }
            let replaced = before
                .get(&entry.path)
                .filter(|l| !l.entry.is_tombstone())
                .map(|l| l.entry.content)
                .filter(|h| self.is_kept(h));
            if action == HistoryAction::Deleted {
                // Worth a record only if what was deleted can be brought back.
                if replaced.is_some() {
                    records.push(self.local_record(entry, action, replaced, now_ns));
                }
                continue;
            }
            if entry.size > rules.max_bytes || self.kept_recently(entry, now_ns, every_ns) {
                continue;
            }
            if copies == INLINE_KEEP {
                deferred = true;
                continue;
            }
            copies += 1;
            let on_disk = entry.path.on_disk(&self.root);
            match self.chunks.put_file_version_unsynced(&on_disk, entry) {
                Ok(kept) if kept.matches_entry => {
                    records.push(self.local_record(entry, action, replaced, now_ns));
                }
                // Changed again since the scan read it: the next scan sees that version.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %entry.path, error = %e, "could not keep a local version for restore");
                }
            }
        }
        (records, deferred)
    }

    /// True if a scan deferred versions that [`Workspace::keep_deferred_versions`] has not kept
    /// yet (remembered in the index across restarts).
    pub fn has_deferred_versions(&self) -> bool {
        matches!(self.store.kv_get(NAMESPACE, DEFERRED), Ok(Some(v)) if v == [1])
    }

    pub(super) fn set_deferred(&self, deferred: bool) {
        if let Err(e) = self
            .store
            .kv_put(NAMESPACE, DEFERRED, &[u8::from(deferred)])
        {
            tracing::warn!(error = %e, "could not note the deferred local versions");
        }
    }

    /// Keep the versions in the index that a scan deferred (see the module docs): every live
    /// file within `local_versions` whose version is not in the store yet, and every file
    /// whose version is its path's merge base but was only recorded, not copied (a session
    /// that agreed on many versions defers them: [`Workspace::record_merge_bases`]). No history record
    /// is written for them: the edit that later replaces one records it as the version it
    /// replaced. Does nothing when no scan deferred any. `stop` is asked before each copy: when
    /// it says true the rest stays deferred for the next run, as do copies the disk refused.
    pub fn keep_deferred_versions(&self, stop: impl Fn() -> bool) -> DeferredKept {
        let mut done = DeferredKept::default();
        if !self.has_deferred_versions() {
            return done;
        }
        // Cleared first: a scan that defers again while this runs sets it again.
        self.set_deferred(false);
        let rules = self.config.local_versions;
        let index = match self.lock() {
            Ok(m) => m.snapshot(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the index; the deferred local versions are kept next time");
                self.set_deferred(true);
                return done;
            }
        };
        for local in index.values() {
            if stop() {
                self.set_deferred(true);
                break;
            }
            let entry = &local.entry;
            let as_version = !entry.is_tombstone()
                && entry.size <= rules.max_bytes
                && self.policy_of(&entry.path) != MergePolicy::Union
                && !self.is_kept(&entry.content);
            if !as_version && !self.is_deferred_base(entry) {
                continue;
            }
            let on_disk = entry.path.on_disk(&self.root);
            match self.chunks.put_file_version_unsynced(&on_disk, entry) {
                Ok(kept) if kept.matches_entry => done.kept += 1,
                Ok(_) => done.skipped += 1,
                Err(e) => {
                    done.failed += 1;
                    tracing::warn!(path = %entry.path, error = %e, "could not keep a local version for restore; tried again later");
                }
            }
        }
        if done.failed > 0 {
            // What the disk refused stays deferred: the next run tries again.
            self.set_deferred(true);
        }
        done
    }

    /// True if the version `content` can be rebuilt from the store (its manifest is there and
    /// verifies; its chunks are checked when it is read).
    pub(super) fn is_kept(&self, content: &Hash) -> bool {
        matches!(self.chunks.manifest(content), Ok(Some(_)))
    }

    /// True if a local version of `entry`'s path was kept less than `every_ns` ago.
    fn kept_recently(&self, entry: &FileEntry, now_ns: i64, every_ns: i64) -> bool {
        if every_ns == 0 {
            return false;
        }
        let Ok(newest) = self.store.history_for(&entry.path, 1) else {
            return false;
        };
        newest.first().is_some_and(|r| {
            r.from_peer == self.local.peer
                && matches!(r.action, HistoryAction::Created | HistoryAction::Modified)
                && now_ns.saturating_sub(r.at_ns) < every_ns
        })
    }

    fn local_record(
        &self,
        entry: &FileEntry,
        action: HistoryAction,
        replaced: Option<Hash>,
        now_ns: i64,
    ) -> HistoryRecord {
        let live = !entry.is_tombstone();
        HistoryRecord {
            at_ns: now_ns,
            path: entry.path.clone(),
            action,
            from_peer: self.local.peer,
            agent: self.local.agent.clone(),
            machine: self.local.machine.clone(),
            old_content: replaced,
            new_content: live.then_some(entry.content),
            bytes: if live { entry.size } else { 0 },
        }
    }
}
