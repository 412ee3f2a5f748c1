//! Reviewing what sync replaced: open conflicts and their resolution, file history and restore
//! (docs/CONFLICTS.md, *Reviewing and resolving*, *History and restore*).
//!
//! Every write here is a new local version: the version vector is the current one with this
//! peer's counter bumped, applied through [`apply::apply_entry`] (temp file, verify, fsync,
//! re-check that the file was not edited since the last scan, rename, index, history), so the
//! result syncs to the peers like any edit and the version it replaces stays restorable.

use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use super::{NoSource, Workspace, WorkspaceError};
use crate::apply::{self, ApplyContext, ApplyOutcome};
use crate::chunk::{ChunkRef, ChunkerParams};
use crate::conflicts::{ConflictKind, ConflictRecord, Side};
use crate::entry::{EntryKind, FileEntry, LocalEntry, Mode};
use crate::hash::Hash;
use crate::path::{PathError, RelPath};
use crate::peer::PeerId;
use crate::rules::Decision;
use crate::store::{HistoryRecord, LocalUpdate};
use crate::vector::{Causality, CounterExhausted, VersionVector};

/// Which version a resolution keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// This machine's version.
    Local,
    /// The peer's version.
    Remote,
    /// Both: the local version at the path, the remote one beside it as
    /// `NAME.conflict-<peer>.EXT`.
    Both,
    /// The file as it is now (the user merged by hand): only the record is closed.
    Merged,
}

/// What resolving one record did (or would do, in a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The record resolved.
    pub record: ConflictRecord,
    /// What was kept.
    pub keep: Keep,
    /// Paths written or deleted as new local versions.
    pub changed: Vec<RelPath>,
    /// Of those, the ones the selection rules do not sync (a `--keep both` copy of a root file
    /// such as `MEMORY.conflict-<peer>.md`): they stay on this machine.
    pub unsynced: Vec<RelPath>,
}

/// Why a review or restore request was refused: each says what to do instead. Nothing was
/// changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No open conflict concerns the path.
    #[error("no open conflict for {0}; `botsync conflicts list` shows the open ones")]
    NoConflict(RelPath),
    /// The record has no kept copy (its loser vanished before it could be copied).
    #[error(
        "the losing version of {0} was not kept; fix the file by hand and resolve with --keep merged"
    )]
    NotKept(RelPath),
    /// The kept copy was removed by hand.
    #[error(
        "the kept copy {} of {path} is missing; fix the file by hand and resolve with --keep merged",
        .file.display()
    )]
    KeptCopyMissing {
        /// The path in conflict.
        path: RelPath,
        /// Where the copy should be.
        file: PathBuf,
    },
    /// The `--keep both` copy's name is taken.
    #[error("{0} already exists; move it away and resolve again")]
    Exists(RelPath),
    /// The version to copy beside is gone from the path.
    #[error("{0} is not in the workspace any more; resolve with --keep local or --keep merged")]
    Vanished(RelPath),
    /// The file was edited after the rescan that preceded the write.
    #[error(
        "{0} was changed on disk since the last scan; nothing was overwritten; run `botsync scan` and retry"
    )]
    EditedSinceScan(RelPath),
    /// The path has an entry but no history.
    #[error(
        "{0} has no earlier version in its history (kept are versions a sync replaced or deleted, and local edits up to local_versions.max_bytes except of append-only logs)"
    )]
    NoHistory(RelPath),
    /// Nothing is known of the path.
    #[error(
        "{0} is unknown here: no version of it was ever recorded; `botsync history` lists the paths that have one"
    )]
    UnknownPath(RelPath),
    /// No version in the history starts with the given hash.
    #[error("{path} has no version {version} in its history; `botsync history {path}` lists them")]
    NoSuchVersion {
        /// The path.
        path: RelPath,
        /// The version as given.
        version: String,
    },
    /// The history has no replaced or deleted version.
    #[error("{0} has no earlier kept version to restore; `botsync history {0}` lists its versions")]
    NothingToRestore(RelPath),
    /// The version's chunks or manifest were collected.
    #[error(
        "version {version} of {path} is no longer kept (versions are kept {days} days, then collected); nothing was changed"
    )]
    Gone {
        /// The path.
        path: RelPath,
        /// The version's short hash.
        version: String,
        /// `retention_days`.
        days: u32,
    },
    /// This peer's counter for the path cannot grow any more.
    #[error("{path}: the change cannot be recorded")]
    Counter {
        /// The path.
        path: RelPath,
        /// The exhausted counter.
        #[source]
        source: CounterExhausted,
    },
    /// The `--keep both` copy's name is not a valid path.
    #[error("cannot name the copy of {path}")]
    BadName {
        /// The path in conflict.
        path: RelPath,
        /// Why the name is invalid.
        #[source]
        source: PathError,
    },
    /// A record's version vector does not parse (the record was edited by hand).
    #[error(
        "the conflict record of {0} holds an unreadable version vector; resolve with --keep merged"
    )]
    BadRecord(RelPath),
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The path restored.
    pub path: RelPath,
    /// The content hash of the version now in place.
    pub content: Hash,
    /// Its size.
    pub size: u64,
    /// False if the path already held that version (nothing was written); for a dry run,
    /// whether it would be written.
    pub written: bool,
}

/// How many history records `restore` looks through for a version.
const HISTORY_DEPTH: usize = 10_000;

impl Workspace {
    /// Every open conflict, oldest first. A case collision that one side ended by renaming
    /// (our path is gone, or we hold the peer's path now) is closed on the way.
    pub fn conflicts(&self) -> Result<Vec<ConflictRecord>, WorkspaceError> {
        let mut open = Vec::new();
        for r in self.conflicts.list()? {
            if self.case_collision_ended(&r)? {
                self.conflicts.close(&r)?;
            } else {
                open.push(r);
            }
        }
        Ok(open)
    }

    /// How many conflicts are open (for `status`).
    pub fn open_conflicts(&self) -> Result<usize, WorkspaceError> {
        Ok(self.conflicts()?.len())
    }

    /// Where a record's kept copy is on disk.
    pub fn kept_copy(&self, record: &ConflictRecord) -> Option<std::path::PathBuf> {
        self.conflicts.kept_file(record)
    }

    /// Resolve the open conflicts of `path` (or of every path) by keeping `keep`. With
    /// `dry_run` nothing changes; the resolutions say what would.
    pub fn resolve(
        &self,
        path: Option<&RelPath>,
        keep: Keep,
        dry_run: bool,
        now_ns: i64,
    ) -> Result<Vec<Resolution>, WorkspaceError> {
        let records: Vec<ConflictRecord> = self
            .conflicts()?
            .into_iter()
            .filter(|r| path.is_none_or(|p| concerns(r, p)))
            .collect();
        if let (Some(p), true) = (path, records.is_empty()) {
            return Err(ReviewError::NoConflict(p.clone()).into());
        }
        // Several losers of one path: the newest decides, the older ones are closed with it.
        let mut out = Vec::new();
        let mut done: Vec<RelPath> = Vec::new();
        for r in records.iter().rev() {
            if done.contains(&r.path) {
                out.push(Resolution {
                    record: r.clone(),
                    keep,
                    changed: Vec::new(),
                    unsynced: Vec::new(),
                });
            } else {
                let changed = self.resolve_one(r, keep, dry_run, now_ns)?;
                let unsynced = changed
                    .iter()
                    .filter(|p| self.selection.decide(p, false) != Decision::Synced)
                    .cloned()
                    .collect();
                done.push(r.path.clone());
                out.push(Resolution {
                    record: r.clone(),
                    keep,
                    changed,
                    unsynced,
                });
            }
        }
        if !dry_run {
            for r in &out {
                self.conflicts.close(&r.record)?;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The history records of `path` (or of every path), newest first.
    pub fn history(
        &self,
        path: Option<&RelPath>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, WorkspaceError> {
        Ok(match path {
            Some(p) => self.store.history_for(p, limit)?,
            None => self.store.history_recent(limit)?,
        })
    }

    /// Bring back a kept version of `path` as a new local change: `version` is a prefix of its
    /// content hash as `history` prints it (default: the newest kept version that is not the
    /// one in place). Refuses when the file was edited since the last scan. With
    /// `dry_run`, every check is made and nothing is written.
    pub fn restore(
        &self,
        path: &RelPath,
        version: Option<&str>,
        dry_run: bool,
        now_ns: i64,
    ) -> Result<Restored, WorkspaceError> {
        let records = self.store.history_for(path, HISTORY_DEPTH)?;
        let current = self.store.local_get(path)?;
        if records.is_empty() {
            return Err(match current {
                Some(_) => ReviewError::NoHistory(path.clone()),
                None => ReviewError::UnknownPath(path.clone()),
            }
            .into());
        }
        let wanted = version.map(str::to_ascii_lowercase);
        let content = match &wanted {
            None => {
                // The newest version recorded that is not the one in place: the one a remote
                // change replaced or deleted, or the local version before the latest edit.
                // One no longer kept is passed over, unless none is kept (then it is "gone").
                let now_in_place = current
                    .as_ref()
                    .filter(|c| !c.entry.is_tombstone())
                    .map(|c| c.entry.content);
                let candidates: Vec<Hash> = records
                    .iter()
                    .flat_map(|r| [r.new_content, r.old_content])
                    .flatten()
                    .filter(|h| Some(*h) != now_in_place)
                    .collect();
                candidates
                    .iter()
                    .find(|h| self.is_kept(h))
                    .or(candidates.first())
                    .copied()
            }
            Some(v) => records
                .iter()
                .flat_map(|r| [r.old_content, r.new_content])
                .flatten()
                .find(|h| h.to_hex().starts_with(v.as_str())),
        };
        let Some(content) = content else {
            return Err(match wanted {
                Some(version) => ReviewError::NoSuchVersion {
                    path: path.clone(),
                    version,
                },
                None => ReviewError::NothingToRestore(path.clone()),
            }
            .into());
        };
        let gone = || {
            WorkspaceError::from(ReviewError::Gone {
                path: path.clone(),
                version: content.short(),
                days: self.config.retention_days,
            })
        };
        let chunks = self.chunks.manifest(&content)?.ok_or_else(gone)?;
        if chunks.iter().any(|c| !self.chunks.has(&c.id)) {
            return Err(gone());
        }
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        if let Some(c) = &current
            && !c.entry.is_tombstone()
            && c.entry.content == content
        {
            return Ok(Restored {
                path: path.clone(),
                content,
                size,
                written: false,
            });
        }
        if !dry_run {
            self.write_version(path, content, chunks, size, now_ns)?;
        }
        Ok(Restored {
            path: path.clone(),
            content,
            size,
            written: true,
        })
    }

    /// Carry out one resolution; returns the paths it changed (would change).
    fn resolve_one(
        &self,
        r: &ConflictRecord,
        keep: Keep,
        dry_run: bool,
        now_ns: i64,
    ) -> Result<Vec<RelPath>, WorkspaceError> {
        if let ConflictKind::CaseCollision { local_path } = &r.kind {
            return self.resolve_case(r, local_path, keep, dry_run, now_ns);
        }
        // A kept peer version (`manual`, `skip`, a `json` key conflict it lost) is concurrent
        // with ours: whatever the resolution, our version must now supersede it, or the next
        // sync would raise the same conflict again.
        if r.lost == Side::Remote && !dry_run {
            let changed = self.resolve_one_kept(r, keep, now_ns)?;
            self.absorb_remote(r, now_ns)?;
            return Ok(changed);
        }
        let kept_side_wanted = match (keep, r.lost) {
            (Keep::Merged, _) => return Ok(Vec::new()),
            (Keep::Local, Side::Local) | (Keep::Remote, Side::Remote) => true,
            (Keep::Local, Side::Remote) | (Keep::Remote, Side::Local) => false,
            (Keep::Both, _) => {
                let side = side_name(&r.path, &r.remote.peer_short())?;
                if !dry_run {
                    match r.lost {
                        // The remote won: it is at the path; copy it beside, then put ours back.
                        Side::Local => {
                            self.copy_current(&r.path, &side, now_ns)?;
                            self.write_kept(r, &r.path, now_ns)?;
                        }
                        // Ours won: the kept remote version goes beside it.
                        Side::Remote => self.write_kept(r, &side, now_ns)?,
                    }
                }
                return Ok(match r.lost {
                    Side::Local => vec![side, r.path.clone()],
                    Side::Remote => vec![side],
                });
            }
        };
        if !kept_side_wanted {
            return Ok(Vec::new());
        }
        if !dry_run {
            self.write_kept(r, &r.path, now_ns)?;
        }
        Ok(vec![r.path.clone()])
    }

    /// Carry out `keep` for a record whose kept copy is the peer's version (the loser).
    fn resolve_one_kept(
        &self,
        r: &ConflictRecord,
        keep: Keep,
        now_ns: i64,
    ) -> Result<Vec<RelPath>, WorkspaceError> {
        match keep {
            Keep::Merged | Keep::Local => Ok(Vec::new()),
            Keep::Remote => {
                self.write_kept(r, &r.path, now_ns)?;
                Ok(vec![r.path.clone()])
            }
            Keep::Both => {
                let side = side_name(&r.path, &r.remote.peer_short())?;
                self.write_kept(r, &side, now_ns)?;
                Ok(vec![side])
            }
        }
    }

    /// Make our version of `r.path` supersede the peer's version of the record (its vector
    /// merged into ours, our counter bumped; the content stays).
    fn absorb_remote(&self, r: &ConflictRecord, now_ns: i64) -> Result<(), WorkspaceError> {
        let theirs =
            parse_vector(&r.remote.vector).ok_or_else(|| ReviewError::BadRecord(r.path.clone()))?;
        let Some(mut current) = self.store.local_get(&r.path)? else {
            return Ok(());
        };
        if matches!(
            current.entry.version.compare(&theirs),
            Causality::Dominates | Causality::Equal
        ) {
            return Ok(());
        }
        let mut version = current.entry.version.merge(&theirs);
        self.bump(&mut version, &r.path)?;
        current.entry.version = version;
        current.entry.changed_by = self.local.clone();
        current.recorded_at_ns = now_ns;
        self.store.commit_local([LocalUpdate::Put(current)])?;
        self.reload(std::slice::from_ref(&r.path))
    }

    /// A case collision: `r.path` is the peer's name, `ours` our name for the same file.
    fn resolve_case(
        &self,
        r: &ConflictRecord,
        ours: &RelPath,
        keep: Keep,
        dry_run: bool,
        now_ns: i64,
    ) -> Result<Vec<RelPath>, WorkspaceError> {
        match keep {
            Keep::Merged => Ok(Vec::new()),
            // Our name stays: record a deletion of the peer's name that supersedes its version,
            // so the peer removes it (keeping it restorable) and takes ours.
            Keep::Local => {
                if !dry_run {
                    let mut version = parse_vector(&r.remote.vector)
                        .ok_or_else(|| ReviewError::BadRecord(r.path.clone()))?;
                    if let Some(l) = self.store.local_get(&r.path)? {
                        version = version.merge(&l.entry.version);
                    }
                    self.bump(&mut version, &r.path)?;
                    let tomb = self.tombstone(&r.path, version, now_ns);
                    self.store.commit_local([LocalUpdate::Put(LocalEntry {
                        entry: tomb,
                        stat: None,
                        recorded_at_ns: now_ns,
                    })])?;
                    self.reload(std::slice::from_ref(&r.path))?;
                }
                Ok(vec![r.path.clone()])
            }
            // The peer's name wins: ours is deleted (kept restorable); the next sync takes theirs.
            Keep::Remote => {
                if !dry_run {
                    self.delete_version(ours, now_ns)?;
                }
                Ok(vec![ours.clone()])
            }
            // Both names stay apart: ours moves to NAME.conflict-<this peer>.EXT.
            Keep::Both => {
                let side = side_name(ours, &self.local.peer.short())?;
                if !dry_run {
                    self.copy_current(ours, &side, now_ns)?;
                    self.delete_version(ours, now_ns)?;
                }
                Ok(vec![side, ours.clone()])
            }
        }
    }

    /// True if a case collision no longer stands: our path is not a live file any more, or our
    /// entry of the peer's path is live or supersedes the peer's version (`--keep local`).
    fn case_collision_ended(&self, r: &ConflictRecord) -> Result<bool, WorkspaceError> {
        let ConflictKind::CaseCollision { local_path } = &r.kind else {
            return Ok(false);
        };
        let m = self.lock()?;
        let live = |p: &RelPath| m.index.get(p).is_some_and(|l| !l.entry.is_tombstone());
        let superseded = m.index.get(&r.path).is_some_and(|l| {
            parse_vector(&r.remote.vector).is_some_and(|v| {
                matches!(
                    l.entry.version.compare(&v),
                    Causality::Dominates | Causality::Equal
                )
            })
        });
        Ok(!live(local_path) || live(&r.path) || superseded)
    }

    /// Write the record's kept copy at `to` as a new local version.
    fn write_kept(
        &self,
        r: &ConflictRecord,
        to: &RelPath,
        now_ns: i64,
    ) -> Result<(), WorkspaceError> {
        let Some(file) = self.conflicts.kept_file(r) else {
            return Err(ReviewError::NotKept(r.path.clone()).into());
        };
        if !file.is_file() {
            return Err(ReviewError::KeptCopyMissing {
                path: r.path.clone(),
                file,
            }
            .into());
        }
        let probe = self.tombstone(to, VersionVector::new(), now_ns);
        let kept = self.chunks.put_file_version(&file, &probe)?;
        self.write_version(to, kept.content, kept.chunks, kept.size, now_ns)
    }

    /// Copy the version now at `from` to `to` (which must not exist) as a new local version.
    fn copy_current(
        &self,
        from: &RelPath,
        to: &RelPath,
        now_ns: i64,
    ) -> Result<(), WorkspaceError> {
        if to.on_disk(&self.root).exists()
            || self
                .store
                .local_get(to)?
                .is_some_and(|l| !l.entry.is_tombstone())
        {
            return Err(ReviewError::Exists(to.clone()).into());
        }
        let Some(cur) = self
            .store
            .local_get(from)?
            .filter(|l| !l.entry.is_tombstone())
        else {
            return Err(ReviewError::Vanished(from.clone()).into());
        };
        let e = cur.entry;
        self.write_version(to, e.content, e.chunks, e.size, now_ns)
    }

    /// Make `path` hold the given content as a new local version (bytes from local files or the
    /// chunk store).
    fn write_version(
        &self,
        path: &RelPath,
        content: Hash,
        chunks: Vec<ChunkRef>,
        size: u64,
        now_ns: i64,
    ) -> Result<(), WorkspaceError> {
        let (current, version) = self.next_version(path)?;
        let live = current.as_ref().filter(|c| !c.entry.is_tombstone());
        let target = FileEntry {
            path: path.clone(),
            kind: EntryKind::File,
            size,
            mtime_ns: now_ns,
            mode: live.map_or(Mode::REGULAR, |c| c.entry.mode),
            content,
            chunks,
            chunker: ChunkerParams::DEFAULT,
            version,
            parent: live.map(|c| c.entry.content),
            changed_by: self.local.clone(),
        };
        self.apply_local(target, current)
    }

    /// Delete `path` as a new local version (its content stays restorable).
    fn delete_version(&self, path: &RelPath, now_ns: i64) -> Result<(), WorkspaceError> {
        let (current, version) = self.next_version(path)?;
        let mut tomb = self.tombstone(path, version, now_ns);
        tomb.parent = current.as_ref().map(|c| c.entry.content);
        self.apply_local(tomb, current)
    }

    /// The index's entry for `path` and the version vector of a new local change to it.
    fn next_version(
        &self,
        path: &RelPath,
    ) -> Result<(Option<LocalEntry>, VersionVector), WorkspaceError> {
        let current = self.store.local_get(path)?;
        let mut version = current
            .as_ref()
            .map(|c| c.entry.version.clone())
            .unwrap_or_default();
        self.bump(&mut version, path)?;
        Ok((current, version))
    }

    fn apply_local(
        &self,
        target: FileEntry,
        current: Option<LocalEntry>,
    ) -> Result<(), WorkspaceError> {
        let ctx = ApplyContext {
            root: &self.root,
            store: &self.store,
            chunks: &self.chunks,
            now_ns: target.mtime_ns,
        };
        let path = target.path.clone();
        let target_content = target.content;
        let outcome = apply::apply_entry(&ctx, &target, current.as_ref(), &mut NoSource)?;
        self.reload(std::slice::from_ref(&path))?;
        match outcome {
            ApplyOutcome::Written { .. } | ApplyOutcome::Deleted | ApplyOutcome::AlreadyCurrent => {
                Ok(())
            }
            ApplyOutcome::LocalChanged { .. } => Err(ReviewError::EditedSinceScan(path).into()),
            ApplyOutcome::MissingChunks { .. } => Err(ReviewError::Gone {
                path,
                version: target_content.short(),
                days: self.config.retention_days,
            }
            .into()),
        }
    }

    fn bump(&self, version: &mut VersionVector, path: &RelPath) -> Result<(), WorkspaceError> {
        version.increment(self.local.peer).map_err(|source| {
            ReviewError::Counter {
                path: path.clone(),
                source,
            }
            .into()
        })
    }

    fn tombstone(&self, path: &RelPath, version: VersionVector, now_ns: i64) -> FileEntry {
        FileEntry {
            path: path.clone(),
            kind: EntryKind::Tombstone,
            size: 0,
            mtime_ns: now_ns,
            mode: Mode::REGULAR,
            content: Hash::ZERO,
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version,
            parent: None,
            changed_by: self.local.clone(),
        }
    }
}

/// True if `r` is about `path` (either name of a case collision).
fn concerns(r: &ConflictRecord, path: &RelPath) -> bool {
    &r.path == path
        || matches!(&r.kind, ConflictKind::CaseCollision { local_path } if local_path == path)
}

/// `dir/stem.conflict-<tag>.ext` beside `path`.
fn side_name(path: &RelPath, tag: &str) -> Result<RelPath, WorkspaceError> {
    let name = path.file_name();
    let side = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.conflict-{tag}.{ext}"),
        _ => format!("{name}.conflict-{tag}"),
    };
    let joined = match path.parent() {
        Some(dir) if !dir.is_root() => dir.join(&side),
        _ => RelPath::new(&side),
    };
    joined.map_err(|source| {
        ReviewError::BadName {
            path: path.clone(),
            source,
        }
        .into()
    })
}

/// A record's vector back into a [`VersionVector`]; `None` if it does not parse.
fn parse_vector(pairs: &[(String, u64)]) -> Option<VersionVector> {
    let parsed: Result<Vec<(PeerId, u64)>, _> = pairs
        .iter()
        .map(|(p, c)| PeerId::from_str(p).map(|id| (id, *c)))
        .collect();
    parsed.ok().map(VersionVector::from_pairs)
}
