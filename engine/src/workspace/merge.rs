//! Carrying out the merging policies (docs/CONFLICTS.md, *Merge policies*): reading the three
//! versions (ours from disk, theirs from the chunks fetched for it, the common ancestor from the
//! store), merging them with [`crate::reconcile`], and falling back to `newest` when a policy
//! refuses. Also the `manual` and `skip` records, and the merge bases: the last version of a
//! path both sides are known to have held, kept in the store as the ancestor of the next merge.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use super::{Workspace, WorkspaceError};
use crate::apply::{ApplyContext, ChunkSource, NoSource};
use crate::chunk::{ChunkRef, Chunker};
use crate::conflicts::{ConflictKind, NewConflict, Side};
use crate::entry::{EntryKind, FileEntry, LocalEntry};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::plan::{self, Action, ItemReport, Outcome, PlanItem, Winner};
use crate::reconcile::{self, MERGE_LIMIT, MergePolicy, Refusal};
use crate::vector::{Causality, VersionVector};

/// The index namespace of merge bases: path -> content hash of the common ancestor.
const MERGE_BASES: &str = "merge-base";

/// Merge bases recorded per index write: the batch a write holds in memory stays small.
const BASES_PER_WRITE: usize = 512;

/// Merge bases of agreed versions (already on disk on both sides) that one call of
/// [`Workspace::record_merge_bases`] copies into the store itself; the rest are deferred.
const INLINE_BASES: usize = 256;

/// True if `entry` can be a merge base: not a tombstone, not too large to merge.
fn can_be_base(entry: &FileEntry) -> bool {
    !entry.is_tombstone() && entry.size <= MERGE_LIMIT
}

/// The index record of `entry` as its path's merge base, unless it cannot be one.
fn base_record(entry: &FileEntry) -> Option<(String, Vec<u8>)> {
    if !can_be_base(entry) {
        return None;
    }
    let record = postcard::to_allocvec(&(entry.content, &entry.version)).ok()?;
    Some((entry.path.as_str().to_owned(), record))
}

/// A version read for a merge, or why it could not be.
enum Read3 {
    Bytes(Vec<u8>),
    /// Our file is not the version the index holds any more (edited since the scan).
    LocalChanged,
    /// A chunk of the peer's version is not here (the sync fetches it again).
    Missing,
    Refused(Refusal),
}

impl Workspace {
    /// The merge policy of `path` on this side.
    pub fn policy_of(&self, path: &RelPath) -> MergePolicy {
        self.policies.for_path(path)
    }

    /// Carry out `Merge { policy }` for `item` against our `local` version. Returns the version
    /// to write (the merge, or the peer's version when the policy refused and it wins), or
    /// `None` when nothing is written (ours wins the fallback, or a version could not be read:
    /// the report then says why).
    pub(super) fn carry_out_merge(
        &self,
        ctx: &ApplyContext<'_>,
        item: &PlanItem,
        local: &LocalEntry,
        policy: MergePolicy,
        report: &mut ItemReport,
    ) -> Result<Option<FileEntry>, WorkspaceError> {
        let ours = &local.entry;
        let theirs = &item.remote;
        let ours_bytes = match self.read_ours(ours) {
            Read3::Bytes(b) => b,
            Read3::LocalChanged => {
                report.outcome = Outcome::LocalChanged;
                return Ok(None);
            }
            Read3::Refused(r) => return self.fall_back(ctx, item, local, policy, report, r),
            Read3::Missing => {
                report.outcome = Outcome::LocalChanged;
                return Ok(None);
            }
        };
        let theirs_bytes = match self.read_stored(theirs) {
            Read3::Bytes(b) => b,
            Read3::Missing | Read3::LocalChanged => {
                report.outcome = Outcome::MissingChunks;
                return Ok(None);
            }
            Read3::Refused(r) => return self.fall_back(ctx, item, local, policy, report, r),
        };
        let base = self.merge_base(&ours.path, [(ours, &ours_bytes), (theirs, &theirs_bytes)]);
        let remote_wins = plan::winner(ours, theirs) == Winner::Remote;
        let (w, l) = if remote_wins {
            (&theirs_bytes, &ours_bytes)
        } else {
            (&ours_bytes, &theirs_bytes)
        };
        let merged = match reconcile::merge(policy, base.as_deref(), w, l) {
            Ok(m) => m,
            Err(refusal) => return self.fall_back(ctx, item, local, policy, report, refusal),
        };
        let (winner, loser) = if remote_wins {
            (theirs, ours)
        } else {
            (ours, theirs)
        };
        if !merged.conflicts.is_empty() {
            // Keys both sides changed took the winner's value: the loser is kept whole here,
            // whichever side it came from (the other side may simply take this merge).
            let kept = self.conflicts.keep_bytes(
                NewConflict {
                    kind: ConflictKind::MergedKeys {
                        keys: merged.conflicts.clone(),
                    },
                    local: ours,
                    remote: theirs,
                    lost: if remote_wins {
                        Side::Local
                    } else {
                        Side::Remote
                    },
                    policy: policy.name(),
                    kept_on: self.local.peer,
                    now_ns: ctx.now_ns,
                },
                l,
            )?;
            report.conflict_copy = kept.kept;
        }
        let digest = Chunker::new(theirs.chunker).digest_bytes(&merged.bytes);
        let mut at = 0usize;
        for c in &digest.chunks {
            let end = at + c.len as usize;
            self.chunks.put_staged(&c.id, &merged.bytes[at..end])?;
            at = end;
        }
        report.size = digest.size;
        Ok(Some(FileEntry {
            path: theirs.path.clone(),
            kind: EntryKind::File,
            size: digest.size,
            // The later of the two: both sides merging the same pair write the same entry.
            mtime_ns: ours.mtime_ns.max(theirs.mtime_ns),
            mode: winner.mode,
            content: digest.content,
            chunks: digest.chunks,
            chunker: theirs.chunker,
            version: plan::merged_version(Some(ours), theirs),
            parent: Some(ours.content),
            // A merge is no new change by this peer (its counter is not raised, so that both
            // sides merging the same pair write the same entry): it is attributed to the
            // version the merge kept whole, else to the winner, whose author the merged
            // version counts. Attributed to this peer, a relay that never wrote the path
            // made a version every other peer refused ("changed by X, but the version counts
            // no change by X").
            changed_by: if merged.bytes == *l {
                loser.changed_by.clone()
            } else {
                winner.changed_by.clone()
            },
        }))
    }

    /// The policy refused: decide by `newest` as if the path had no merging policy, keeping
    /// our loser here (the peer keeps its own when it takes ours). The record names the policy
    /// and why it did not merge.
    fn fall_back(
        &self,
        ctx: &ApplyContext<'_>,
        item: &PlanItem,
        local: &LocalEntry,
        policy: MergePolicy,
        report: &mut ItemReport,
        refusal: Refusal,
    ) -> Result<Option<FileEntry>, WorkspaceError> {
        let ours = &local.entry;
        tracing::info!(path = %ours.path, policy = policy.name(), why = %refusal, "not merged; newest wins");
        let why = format!("{} (not merged: {refusal})", policy.name());
        if plan::winner(ours, &item.remote) == Winner::Local {
            report.action = Action::KeepConflict;
            return Ok(None);
        }
        report.action = Action::TakeConflict;
        report.conflict_copy = self.keep_loser(ours, &item.remote, &why, ctx.now_ns)?;
        let mut target = item.remote.clone();
        target.version = plan::merged_version(Some(ours), &item.remote);
        Ok(Some(target))
    }

    /// `manual`: ours stays; the peer's version is kept in `conflicts/` for review.
    pub(super) fn keep_for_review(
        &self,
        item: &PlanItem,
        local: &LocalEntry,
        now_ns: i64,
        report: &mut ItemReport,
    ) -> Result<(), WorkspaceError> {
        let bytes = match self.read_stored(&item.remote) {
            Read3::Bytes(b) => b,
            Read3::Refused(r) => {
                report.outcome = Outcome::Failed {
                    reason: format!("the peer's version could not be kept for review: {r}"),
                };
                return Ok(());
            }
            Read3::Missing | Read3::LocalChanged => {
                report.outcome = Outcome::MissingChunks;
                return Ok(());
            }
        };
        let record = self.conflicts.keep_bytes(
            NewConflict {
                kind: ConflictKind::Content,
                local: &local.entry,
                remote: &item.remote,
                lost: Side::Remote,
                policy: MergePolicy::Manual.name(),
                kept_on: self.local.peer,
                now_ns,
            },
            &bytes,
        )?;
        report.conflict_copy = record.kept;
        Ok(())
    }

    /// `skip`: both versions stay where they are; the record keeps the conflict open.
    pub(super) fn record_skip(
        &self,
        item: &PlanItem,
        local: &LocalEntry,
        now_ns: i64,
    ) -> Result<(), WorkspaceError> {
        self.conflicts.keep(
            NewConflict {
                kind: ConflictKind::Content,
                local: &local.entry,
                remote: &item.remote,
                lost: Side::Remote,
                policy: MergePolicy::Skip.name(),
                kept_on: self.local.peer,
                now_ns,
            },
            None,
        )?;
        Ok(())
    }

    /// Record that both sides now hold the current versions of `paths` (the ones with a
    /// merging policy): each becomes the common ancestor of the next merge of its path. Chunks
    /// staged for it are kept in the store; a version not found whole there is read from disk.
    /// Best effort: a failure is logged and only means a later merge lacks its ancestor.
    ///
    /// These versions are on disk on both sides (the same bytes), so only the first
    /// 256 are copied into the store here; the others are recorded at once and
    /// copied later by [`Workspace::keep_deferred_versions`] (the daemon's keeper, a few seconds
    /// after the session). Settling two identical workspaces of 10^5 notes copied every one of
    /// them within the session, on both sides, one after the other. A deferred base whose file
    /// changes before it is copied is lost, as a base that was never recorded: that merge has
    /// no ancestor.
    pub fn record_merge_bases(&self, paths: &[RelPath]) {
        let mut inline = INLINE_BASES;
        let mut deferred = false;
        // A slice at a time: a session of 20,000 notes must not hold all their entries.
        for slice in paths.chunks(BASES_PER_WRITE) {
            let current: Vec<FileEntry> = slice
                .iter()
                .filter(|p| self.policy_of(p).merges())
                .filter_map(|p| self.store.local_get(p).ok().flatten())
                .map(|local| local.entry)
                .collect();
            let (now, later) = current.split_at(inline.min(current.len()));
            inline -= now.len();
            self.keep_merge_bases(now.iter(), &mut NoSource);
            let mut records: Vec<(String, Vec<u8>)> =
                later.iter().filter_map(base_record).collect();
            deferred |= !records.is_empty();
            self.record_bases(&mut records);
        }
        if deferred {
            self.set_deferred(true);
        }
    }

    /// True if `entry` is its path's recorded merge base but the store does not hold it yet
    /// (a base [`Workspace::record_merge_bases`] deferred).
    pub(super) fn is_deferred_base(&self, entry: &FileEntry) -> bool {
        if !can_be_base(entry) || !self.policy_of(&entry.path).merges() {
            return false;
        }
        let Ok(Some(raw)) = self.store.kv_get(MERGE_BASES, entry.path.as_str()) else {
            return false;
        };
        matches!(
            postcard::from_bytes::<(Hash, VersionVector)>(&raw),
            Ok((content, _)) if content == entry.content
        ) && !self.is_kept(&entry.content)
    }

    /// Keep `entries` (versions just applied or agreed, of paths with a merging policy) as their
    /// paths' merge bases, recorded in index writes of [`BASES_PER_WRITE`] (one write of a
    /// session's 20,000 bases held about 65 MiB in sled's batch at once).
    ///
    /// A base's chunks are taken from the store, its staging, or `source` (the chunks the
    /// session holds in memory, its own copy of what it just applied); only when one is in
    /// none of these places is the version read back from disk and chunked again. (An initial
    /// sync of an agent workspace, 3,280 notes and logs, re-read and re-chunked every note
    /// held in memory: about a tenth of the receiver's CPU.)
    ///
    /// A base is a copy of a version that is on disk right now, so it is kept without making
    /// it durable (as the scanner's local versions are): a power loss may lose it, which only
    /// means the next merge of that path has no ancestor, but never tears it, since every read
    /// of the store is verified. Syncing each one cost an initial sync of an agent workspace
    /// (3,280 notes and logs) over 12,000 fsyncs and as many short-lived threads.
    pub(super) fn keep_merge_bases<'a>(
        &self,
        entries: impl Iterator<Item = &'a FileEntry>,
        source: &mut dyn ChunkSource,
    ) {
        let mut records = Vec::new();
        for entry in entries {
            if !can_be_base(entry) {
                continue;
            }
            let mut held = |id: &Hash, len: u32| {
                if !source.holds(id) {
                    return None;
                }
                source.fetch(id, len).ok().flatten()
            };
            let kept = self
                .chunks
                .keep_version_from(&entry.content, &entry.chunks, &mut held)
                || self
                    .chunks
                    .put_file_version_unsynced(&entry.path.on_disk(&self.root), entry)
                    .is_ok_and(|k| k.matches_entry);
            if !kept {
                tracing::debug!(path = %entry.path, "merge base not kept");
                continue;
            }
            records.extend(base_record(entry));
            if records.len() == BASES_PER_WRITE {
                self.record_bases(&mut records);
            }
        }
        self.record_bases(&mut records);
    }

    /// Write (and clear) `records` of merge bases in one index write.
    fn record_bases(&self, records: &mut Vec<(String, Vec<u8>)>) {
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.store.kv_put_many(MERGE_BASES, records) {
            tracing::debug!(error = %e, bases = records.len(), "merge bases not recorded");
        }
        records.clear();
    }

    /// The common ancestor of the two `known` versions of `path`, if one is recorded, still
    /// readable, and an ancestor of both: its version vector is dominated by (or equal to)
    /// each of theirs. A base agreed with one peer is no ancestor of a third peer's version
    /// that never saw it.
    fn merge_base(&self, path: &RelPath, known: [(&FileEntry, &Vec<u8>); 2]) -> Option<Vec<u8>> {
        let raw = self.store.kv_get(MERGE_BASES, path.as_str()).ok()??;
        let (content, version): (Hash, VersionVector) = postcard::from_bytes(&raw).ok()?;
        let descends = |e: &FileEntry| {
            matches!(
                e.version.compare(&version),
                Causality::Dominates | Causality::Equal
            )
        };
        if !known.iter().all(|(e, _)| descends(e)) {
            return None;
        }
        if let Some((_, bytes)) = known.iter().find(|(e, _)| e.content == content) {
            return Some((*bytes).clone());
        }
        let chunks = self.chunks.manifest(&content).ok()??;
        self.read_chunks(&chunks).ok()
    }

    /// Our version of a path from disk, checked against the index.
    fn read_ours(&self, entry: &FileEntry) -> Read3 {
        if entry.size > MERGE_LIMIT {
            return Read3::Refused(Refusal::TooLarge);
        }
        let mut bytes = Vec::with_capacity(entry.size as usize);
        let read = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(entry.path.on_disk(&self.root))
            .and_then(|f| f.take(MERGE_LIMIT + 1).read_to_end(&mut bytes));
        if read.is_err()
            || Chunker::new(entry.chunker).digest_bytes(&bytes).content != entry.content
        {
            return Read3::LocalChanged;
        }
        Read3::Bytes(bytes)
    }

    /// A version from the chunk store or our own files (the peer's, after its chunks were
    /// fetched).
    fn read_stored(&self, entry: &FileEntry) -> Read3 {
        if entry.size > MERGE_LIMIT {
            return Read3::Refused(Refusal::TooLarge);
        }
        match self.read_chunks(&entry.chunks) {
            Ok(b) => Read3::Bytes(b),
            Err(()) => Read3::Missing,
        }
    }

    fn read_chunks(&self, chunks: &[ChunkRef]) -> Result<Vec<u8>, ()> {
        let mut out = Vec::new();
        for c in chunks {
            let bytes = match self.chunks.get(&c.id) {
                Ok(Some(b)) => b,
                _ => self.read_chunk(&c.id).ok().flatten().ok_or(())?,
            };
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }
}
