//! Receiving a peer's versions: deciding each under its merge policy ([`Workspace::plan`]),
//! what must be fetched, staging what arrives, and carrying the plan out ([`Workspace::apply`]):
//! conflict copies and merges item by item, index-only updates and files in batches.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use super::{NoSource, Workspace, WorkspaceError, is_disk_full};
use crate::apply::{self, ApplyContext, ApplyOutcome, ChunkSource};
use crate::chunk::ChunkRef;
use crate::conflicts::{ConflictKind, NewConflict, Side};
use crate::entry::{FileEntry, LocalEntry};
use crate::guard::{self, MassDelete};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::plan::{self, Action, Base, ItemReport, Outcome, PlanItem};
use crate::rules::Decision;
use crate::store::LocalUpdate;

impl Workspace {
    /// Decide what to do with each incoming version, under our own selection rules. No clock
    /// takes part: the decision depends on the entries alone (docs/CONFLICTS.md).
    pub fn plan(&self, incoming: Vec<FileEntry>) -> Result<Vec<PlanItem>, WorkspaceError> {
        let m = self.lock()?;
        let all = &m.index;
        // Our files the same offer deletes cannot collide: a rename that only changes letter
        // case (or a `conflicts resolve` on the other side) replaces one name by the other.
        let dying: HashSet<&RelPath> = incoming
            .iter()
            .filter(|r| {
                r.is_tombstone()
                    && plan::decide(all.get(&r.path).map(|l| &l.entry), r) == Action::Delete
            })
            .map(|r| &r.path)
            .collect();
        let by_fold = folds_matching(
            all.iter()
                .filter(|(p, l)| !l.entry.is_tombstone() && !dying.contains(p))
                .map(|(p, _)| p),
            incoming.iter().map(|r| &r.path),
        );
        let mut out = Vec::with_capacity(incoming.len());
        for remote in incoming {
            let policy = self.policies.for_path(&remote.path);
            let decided =
                plan::decide_with(all.get(&remote.path).map(|l| &l.entry), &remote, policy);
            let action = if self.selection.decide(&remote.path, false) != Decision::Synced {
                Action::NotSelected
            } else if let (Some(local), true) = (
                plan::case_collision(&remote.path, &by_fold),
                decided.writes_file() && !remote.is_tombstone(),
            ) {
                // Only a version we would write can collide: one our entry supersedes (a
                // `conflicts resolve --keep local` tombstone) is simply not taken.
                Action::CaseCollision { local }
            } else {
                decided
            };
            let base = all.get(&remote.path).map(|l| Base::of(&l.entry));
            let bytes_needed = if action.needs_content() && !remote.is_tombstone() {
                apply::missing_chunks(&self.store, &self.chunks, &remote)?
                    .iter()
                    .map(|c| u64::from(c.len))
                    .sum()
            } else {
                0
            };
            out.push(PlanItem {
                remote,
                action,
                bytes_needed,
                base,
                policy,
            });
        }
        Ok(out)
    }

    /// Refuse `items` if carrying them out would delete more files than `delete_threshold`
    /// allows (docs/CONFLICTS.md, *Deletes*). Callers skip it for `--force` and dry runs.
    pub fn check_deletes(&self, items: &[PlanItem]) -> Result<(), MassDelete> {
        let synced = self.snapshot().1;
        guard::check(&self.config.delete_threshold, synced, items)
    }

    /// The chunks `items` need that exist nowhere locally, each once.
    pub fn chunks_needed(&self, items: &[PlanItem]) -> Result<Vec<ChunkRef>, WorkspaceError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for item in items.iter().filter(|i| i.action.needs_content()) {
            for c in apply::missing_chunks(&self.store, &self.chunks, &item.remote)? {
                if seen.insert(c.id) {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Stage a received chunk (verified against its id) in the chunk store until [`Workspace::apply`]
    /// writes the files that need it.
    pub fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), WorkspaceError> {
        let put = self.chunks.put_staged(id, bytes);
        if let Err(e) = &put
            && is_disk_full(e)
        {
            // Never hold the disk full with a cache: the retry after freeing space must fit.
            self.chunks.clear_staging();
        }
        Ok(put?)
    }

    /// Give back every staged chunk (the disk is full; see [`Workspace::put_chunk`]); returns
    /// the bytes freed.
    pub fn release_staged_chunks(&self) -> u64 {
        self.chunks.clear_staging()
    }

    /// Carry out planned items received from a peer; one report per item, in item order.
    ///
    /// Conflict copies and merges happen item by item; index-only updates (a merged vector, a
    /// tombstone recorded) are committed 512 at a time; files to write or
    /// delete are gathered and applied [`apply::batch_files`] at a time through
    /// [`apply::apply_batch`], so a batch costs two file-system syncs and one index commit. An
    /// item whose path is already waiting in either first flushes it, so it sees the earlier
    /// item's result.
    pub fn apply(
        &self,
        items: Vec<PlanItem>,
        now_ns: i64,
    ) -> Result<Vec<ItemReport>, WorkspaceError> {
        self.apply_with(items, now_ns, &mut NoSource)
    }

    /// [`Self::apply`], taking chunks from `source` too (chunks a session received and holds
    /// in memory instead of staging them): a chunk not in a local file is taken from there
    /// before the chunk store is searched.
    pub fn apply_with(
        &self,
        items: Vec<PlanItem>,
        now_ns: i64,
        source: &mut dyn ChunkSource,
    ) -> Result<Vec<ItemReport>, WorkspaceError> {
        let ctx = ApplyContext {
            root: &self.root,
            store: &self.store,
            chunks: &self.chunks,
            now_ns,
        };
        let paths: Vec<RelPath> = items.iter().map(|i| i.remote.path.clone()).collect();
        // Held while the files are written (nothing else commits meanwhile: the caller's turn):
        // an apply of 10^6 files runs for minutes without reading the index, and a daemon at
        // its tidy-up would unload it, only for the reload below to decode it again.
        let hold = self.lock()?.snapshot();
        // Read once: the open-files limit does not change during a sync.
        let batch_files = apply::batch_files();
        let mut reports: Vec<ItemReport> = Vec::with_capacity(items.len());
        // (report index, version to apply, local entry it replaces) waiting for the batch.
        let mut batch: Vec<(usize, FileEntry, Option<LocalEntry>)> = Vec::new();
        let mut waiting: HashSet<RelPath> = HashSet::new();
        let mut flush = |batch: &mut Vec<(usize, FileEntry, Option<LocalEntry>)>,
                         waiting: &mut HashSet<RelPath>,
                         reports: &mut [ItemReport]| {
            let apply_items: Vec<apply::ApplyItem<'_>> = batch
                .iter()
                .map(|(at, target, local)| apply::ApplyItem {
                    target,
                    expected: local.as_ref(),
                    merged: matches!(reports[*at].action, Action::Merge { .. }),
                })
                .collect();
            let results = apply::apply_batch(&ctx, &apply_items, &mut *source);
            // The batch is durable: the chunks of files now on disk need no staged copy.
            let applied = batch.iter().zip(&results).filter(|(_, r)| {
                matches!(
                    r,
                    Ok(ApplyOutcome::Written { .. } | ApplyOutcome::AlreadyCurrent)
                )
            });
            // Versions of paths with a merging policy stay in the store as the common
            // ancestor of their next merge; the staged copies of all others go.
            let (bases, plain): (Vec<_>, Vec<_>) = applied.partition(|((_, target, _), _)| {
                !target.is_tombstone() && self.policy_of(&target.path).merges()
            });
            self.keep_merge_bases(
                bases.into_iter().map(|((_, target, _), _)| target),
                &mut *source,
            );
            // Chunks the source held in memory were never staged: nothing to remove.
            let unstaged = self.chunks.unstage(
                plain
                    .into_iter()
                    .flat_map(|((_, target, _), _)| target.chunks.iter().map(|c| &c.id))
                    .filter(|id| !source.holds(id)),
            );
            tracing::debug!(unstaged, "staged chunks of applied files removed");
            for ((at, _, _), result) in batch.iter().zip(results) {
                let report = &mut reports[*at];
                report.outcome = match result {
                    Ok(ApplyOutcome::Written { .. } | ApplyOutcome::Deleted) => Outcome::Done,
                    Ok(ApplyOutcome::AlreadyCurrent) => Outcome::Unchanged,
                    Ok(ApplyOutcome::LocalChanged { .. }) => Outcome::LocalChanged,
                    Ok(ApplyOutcome::MissingChunks { .. }) => Outcome::MissingChunks,
                    Err(e) => {
                        tracing::warn!(path = %report.path, error = %e, "apply failed");
                        let reason = if is_disk_full(&e) {
                            self.chunks.clear_staging();
                            format!("disk full: {e}; free space and sync again")
                        } else {
                            e.to_string()
                        };
                        Outcome::Failed { reason }
                    }
                };
                // The loser was not replaced after all (edited meanwhile, chunks missing, a
                // failure): it is still in place, so there is no conflict to keep.
                if report.outcome != Outcome::Done
                    && let Some(kept) = report.conflict_copy.take()
                    && let Err(e) = self.conflicts.discard(&kept)
                {
                    tracing::warn!(path = %report.path, error = %e, "could not drop an unused conflict copy");
                }
            }
            batch.clear();
            waiting.clear();
        };
        // Index-only updates (a merged vector, a tombstone) waiting for their commit.
        let mut index_only = IndexOnly::default();
        for item in items {
            if waiting.contains(item.path()) {
                flush(&mut batch, &mut waiting, &mut reports);
            }
            if index_only.paths.contains(item.path()) {
                self.commit_index_only(&mut index_only, &mut reports);
            }
            let (report, carried) = self.apply_one(&ctx, item);
            match carried {
                Carried::Nothing => {}
                Carried::File(file) => {
                    let (target, local) = *file;
                    waiting.insert(target.path.clone());
                    batch.push((reports.len(), target, local));
                }
                Carried::Index(entry) => {
                    index_only.paths.insert(entry.entry.path.clone());
                    index_only.updates.push((reports.len(), *entry));
                }
            }
            reports.push(report);
            if batch.len() >= batch_files {
                flush(&mut batch, &mut waiting, &mut reports);
            }
            if index_only.updates.len() >= INDEX_ONLY_PER_COMMIT {
                self.commit_index_only(&mut index_only, &mut reports);
            }
        }
        if !batch.is_empty() {
            flush(&mut batch, &mut waiting, &mut reports);
        }
        self.commit_index_only(&mut index_only, &mut reports);
        self.store.flush()?;
        // Let go first, so the reload updates the map in place (no copy).
        drop(hold);
        self.reload(&paths)?;
        // Same content on both sides: that version is common ground for the next merge.
        let agreed: Vec<RelPath> = reports
            .iter()
            .filter(|r| r.action == Action::MergeVersion && r.outcome == Outcome::Unchanged)
            .map(|r| r.path.clone())
            .collect();
        self.record_merge_bases(&agreed);
        Ok(reports)
    }

    /// Start carrying out one item: its report, and the file to write or delete if any (the
    /// report's outcome is then filled in by the batch).
    fn apply_one(&self, ctx: &ApplyContext<'_>, item: PlanItem) -> (ItemReport, Carried) {
        let path = item.remote.path.clone();
        let mut report = ItemReport {
            path: path.clone(),
            action: item.action.clone(),
            outcome: Outcome::Unchanged,
            size: item.remote.size,
            bytes_fetched: item.bytes_needed,
            conflict_copy: None,
            changed_by: Some(item.remote.changed_by.clone()),
            mtime_ns: item.remote.mtime_ns,
        };
        match self.carry_out(ctx, &item, &mut report) {
            Ok(file) => (report, file),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "apply failed");
                report.outcome = Outcome::Failed {
                    reason: e.to_string(),
                };
                (report, Carried::Nothing)
            }
        }
    }

    /// Do the part of an item that is neither a file written nor an index update (keep the
    /// conflict copy of a file about to be replaced, a merge, a review copy); returns what is
    /// left to carry out: the version to apply and the local entry it replaces when the item
    /// writes or deletes a file, the entry to commit when it only updates the index.
    ///
    /// The item is first re-checked against the index as it is now (docs/CONFLICTS.md, the
    /// race rule): if another session or a rescan changed the path since the plan, the item
    /// is decided again, so a version the plan never saw becomes a conflict, never a silent
    /// overwrite. The caller serializes applies, so nothing changes the index between this
    /// check and the write (the file itself is re-checked by [`apply::apply_batch`]).
    fn carry_out(
        &self,
        ctx: &ApplyContext<'_>,
        item: &PlanItem,
        report: &mut ItemReport,
    ) -> Result<Carried, WorkspaceError> {
        let local = self.store.local_get(&item.remote.path)?;
        let action = item.action_now(local.as_ref().map(|l| &l.entry));
        if action != item.action {
            tracing::debug!(
                path = %item.remote.path,
                planned = item.action.name(),
                now = action.name(),
                "the path changed between plan and apply; decided again"
            );
            report.action = action.clone();
        }
        let mut target = item.remote.clone();
        target.version = plan::merged_version(local.as_ref().map(|l| &l.entry), &item.remote);
        match &action {
            Action::CaseCollision { local: ours } => {
                self.record_case_collision(ours, &item.remote, ctx.now_ns)?;
                Ok(Carried::Nothing)
            }
            Action::Nothing | Action::KeepConflict | Action::NotSelected => Ok(Carried::Nothing),
            Action::Merge { policy } => match &local {
                Some(l) => Ok(match self.carry_out_merge(ctx, item, l, *policy, report)? {
                    Some(t) => Carried::File(Box::new((t, local.clone()))),
                    None => Carried::Nothing,
                }),
                None => Ok(Carried::File(Box::new((target, None)))),
            },
            Action::ReviewConflict | Action::SkipConflict => {
                if let Some(l) = &local {
                    if action == Action::ReviewConflict {
                        self.keep_for_review(item, l, ctx.now_ns, report)?;
                    } else {
                        self.record_skip(item, l, ctx.now_ns)?;
                    }
                }
                Ok(Carried::Nothing)
            }
            Action::MergeVersion | Action::RecordTombstone => {
                let updated = match local {
                    Some(mut l) => {
                        l.entry.version = target.version;
                        l
                    }
                    None => LocalEntry {
                        entry: target,
                        stat: None,
                        recorded_at_ns: ctx.now_ns,
                    },
                };
                Ok(Carried::Index(Box::new(updated)))
            }
            Action::Take | Action::Delete | Action::TakeConflict => {
                if action == Action::TakeConflict
                    && let Some(l) = &local
                {
                    report.conflict_copy =
                        self.keep_loser(&l.entry, &item.remote, "newest", ctx.now_ns)?;
                }
                Ok(Carried::File(Box::new((target, local))))
            }
        }
    }

    /// Commit the waiting index-only updates in one index write. If the write fails, each of
    /// their items reports the failure (its file was never touched; the next sync retries).
    fn commit_index_only(&self, waiting: &mut IndexOnly, reports: &mut [ItemReport]) {
        if waiting.updates.is_empty() {
            return;
        }
        let (at, entries): (Vec<usize>, Vec<LocalEntry>) = waiting.updates.drain(..).unzip();
        waiting.paths.clear();
        if let Err(e) = self
            .store
            .commit_local(entries.into_iter().map(LocalUpdate::Put))
        {
            tracing::warn!(error = %e, items = at.len(), "recording versions in the index failed");
            let reason = WorkspaceError::from(e).to_string();
            for i in at {
                reports[i].outcome = Outcome::Failed {
                    reason: reason.clone(),
                };
            }
        }
    }

    /// Keep our losing version of a conflict in `.botsync/conflicts/` with its record
    /// (docs/CONFLICTS.md). Returns the copy's path relative to the workspace.
    pub(super) fn keep_loser(
        &self,
        ours: &FileEntry,
        winner: &FileEntry,
        policy: &str,
        now_ns: i64,
    ) -> Result<Option<String>, WorkspaceError> {
        if ours.is_tombstone() {
            return Ok(None);
        }
        let src = ours.path.on_disk(&self.root);
        let record = self.conflicts.keep(
            NewConflict {
                kind: ConflictKind::Content,
                local: ours,
                remote: winner,
                lost: Side::Local,
                policy,
                kept_on: self.local.peer,
                now_ns,
            },
            Some(&src),
        )?;
        Ok(record.and_then(|r| r.kept))
    }

    /// Record that `remote` collides in letter case with our `ours`: the peer's version was not
    /// taken; the record stays open until one side renames or `conflicts resolve` ends it.
    fn record_case_collision(
        &self,
        ours: &RelPath,
        remote: &FileEntry,
        now_ns: i64,
    ) -> Result<(), WorkspaceError> {
        let Some(local) = self.store.local_get(ours)? else {
            return Ok(());
        };
        self.conflicts.keep(
            NewConflict {
                kind: ConflictKind::CaseCollision {
                    local_path: ours.clone(),
                },
                local: &local.entry,
                remote,
                lost: Side::Remote,
                policy: "case-collision",
                kept_on: self.local.peer,
                now_ns,
            },
            None,
        )?;
        Ok(())
    }
}

/// Index-only updates (a merged vector, a tombstone recorded) per index commit. One commit
/// each made settling two identical workspaces of 10^6 files a million index writes.
const INDEX_ONLY_PER_COMMIT: usize = 512;

/// What is left of an item once [`Workspace::apply_one`] has done its own part.
enum Carried {
    /// Nothing: the item is done (or failed, as its report says).
    Nothing,
    /// A file to write or delete in the next batch: the version, and the entry it replaces.
    File(Box<(FileEntry, Option<LocalEntry>)>),
    /// An entry to commit to the index, with no file written.
    Index(Box<LocalEntry>),
}

/// Index-only updates waiting for their commit, with the reports they belong to.
#[derive(Default)]
struct IndexOnly {
    /// (report index, entry to commit).
    updates: Vec<(usize, LocalEntry)>,
    /// Their paths: a later item for one of them must see it committed first.
    paths: HashSet<RelPath>,
}

/// Paths bigger than this are folded the slow way (an allocation each).
const FOLD_BUFFER: usize = 512;

/// Our paths (`ours`) under their [`RelPath::case_fold_key`], but only those whose key is the
/// key of one of `incoming`: all that [`plan::case_collision`] looks up, and the same map it
/// would find if every path were folded (where several of ours share a key, the last wins).
/// Folding every path of the index allocated a string per file on every plan: 78 % of the
/// daemon's CPU in a sync of 10 edits at 100,000 files, 10.9 s at 1,000,000 (the scaling
/// run). An ASCII path (the usual kind) is lowered on the stack and hashed; only a path whose
/// hash is one of the wanted keys', or a path that is not ASCII, is folded for real.
fn folds_matching<'a>(
    ours: impl Iterator<Item = &'a RelPath>,
    incoming: impl Iterator<Item = &'a RelPath>,
) -> HashMap<String, RelPath> {
    let state = std::hash::RandomState::new();
    let wanted: HashSet<String> = incoming.map(RelPath::case_fold_key).collect();
    let wanted_hashes: HashSet<u64> = wanted
        .iter()
        .map(|k| state.hash_one(k.as_bytes()))
        .collect();
    let mut buf = [0u8; FOLD_BUFFER];
    let mut out = HashMap::new();
    for path in ours {
        let bytes = path.as_str().as_bytes();
        if bytes.is_ascii() && bytes.len() <= FOLD_BUFFER {
            let lowered = &mut buf[..bytes.len()];
            lowered.copy_from_slice(bytes);
            lowered.make_ascii_lowercase();
            if !wanted_hashes.contains(&state.hash_one(&*lowered)) {
                continue;
            }
        }
        let key = path.case_fold_key();
        if wanted.contains(&key) {
            out.insert(key, path.clone());
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn paths(names: &[&str]) -> Vec<RelPath> {
        names.iter().map(|n| RelPath::new(n).unwrap()).collect()
    }

    #[test]
    fn folds_matching_finds_what_folding_everything_finds() {
        let ours = paths(&[
            "MEMORY.md",
            "memory/Notes.md",
            "memory/other.md",
            "Straße/ÄRGER.md",
            "x/y.md",
        ]);
        let incoming = paths(&["memory.md", "memory/notes.md", "straße/ärger.md", "new.md"]);
        let every: HashMap<String, RelPath> = ours
            .iter()
            .map(|p| (p.case_fold_key(), p.clone()))
            .filter(|(k, _)| incoming.iter().any(|r| r.case_fold_key() == *k))
            .collect();
        let found = folds_matching(ours.iter(), incoming.iter());
        assert_eq!(found, every);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            plan::case_collision(&incoming[0], &found),
            Some(RelPath::new("MEMORY.md").unwrap())
        );
        assert_eq!(plan::case_collision(&incoming[3], &found), None);
    }
}
