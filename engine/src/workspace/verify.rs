//! `botsync verify`: re-read every synced file and every stored chunk, and repair what rotted.
//!
//! The stat cache makes scans cheap by trusting a file whose size, times and inode did not
//! change; bytes that changed under an unchanged stat (bit rot, a bad disk, a careless tool
//! writing with a preserved mtime) are never seen by a scan. Verify hashes them all against the
//! index:
//!
//! - **damaged**: the stat is the one the index recorded, the bytes are not: nobody changed the
//!   file, the disk did. Never propagated as an edit.
//! - **changed**: the stat moved since the last scan: a normal edit, left for the next scan.
//!
//! Repair never overwrites a file the user changed (the stat is checked again just before the
//! rename, as every apply does). It first rebuilds the version from local bytes (other files
//! sharing its chunks, the chunk store); what is not found locally is marked *awaiting a peer*:
//! the index records the damaged bytes with an empty version vector, so every peer's version
//! dominates it and the next pull takes the good version back (fetching what is missing). Such
//! an entry is never offered or served to peers (it claims nothing), see [`Workspace::entries`].

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use super::{Workspace, WorkspaceError};
use crate::apply::{self, ApplyContext, ApplyItem, ApplyOutcome, NoSource};
use crate::chunk::{ChunkRef, Chunker};
use crate::chunkstore::ChunkCheck;
use crate::entry::{FileEntry, LocalEntry, StatSig};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::rules::Decision;
use crate::scan::hashing::digest_file;
use crate::store::LocalUpdate;
use crate::vector::VersionVector;

/// A file whose bytes no longer match the index although its stat does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The path.
    pub path: RelPath,
    /// The content the index records (the good version).
    pub expected: Hash,
    /// The content on disk.
    pub found: Hash,
}

/// What [`Workspace::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Synced files re-hashed.
    pub files: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Files whose bytes rotted under an unchanged stat.
    pub damaged: Vec<Damaged>,
    /// Files changed since the last scan (not damage: the next scan records them).
    pub changed: Vec<RelPath>,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(RelPath, String)>,
    /// Files already marked damaged and waiting for a peer's copy.
    pub awaiting_peer: Vec<RelPath>,
    /// The chunk store's check.
    pub chunks: ChunkCheck,
}

impl VerifyReport {
    /// True if nothing is wrong (changes since the last scan are not wrong).
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
            && self.unreadable.is_empty()
            && self.awaiting_peer.is_empty()
            && self.chunks.corrupt == 0
            && self.chunks.unreadable == 0
    }
}

/// What [`Workspace::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Rebuilt from local bytes.
    pub restored: Vec<RelPath>,
    /// Marked to be taken back from the next peer that syncs.
    pub awaiting_peer: Vec<RelPath>,
    /// Left alone: changed since verify (an edit is never overwritten) or failed, with why.
    pub left: Vec<(RelPath, String)>,
}

/// The facts of one file on disk, read against its index entry.
enum Found {
    Same {
        bytes: u64,
    },
    Changed,
    Damaged {
        stat: StatSig,
        digest: (u64, Vec<ChunkRef>, Hash),
    },
    Unreadable(String),
}

impl Workspace {
    /// Re-hash every synced file against the index and every stored chunk against its id.
    /// Reads everything; changes nothing but the removal of corrupt chunk-store files.
    pub fn verify(&self) -> Result<VerifyReport, WorkspaceError> {
        let index = self.lock()?.snapshot();
        let mut report = VerifyReport::default();
        for (path, local) in index.iter() {
            if local.entry.is_tombstone() || self.selection.decide(path, false) != Decision::Synced
            {
                continue;
            }
            if local.entry.version.is_empty() {
                report.awaiting_peer.push(path.clone());
                continue;
            }
            report.files += 1;
            match self.read_against(local) {
                Found::Same { bytes } => report.bytes += bytes,
                Found::Changed => report.changed.push(path.clone()),
                Found::Damaged { digest, .. } => {
                    report.bytes += digest.0;
                    report.damaged.push(Damaged {
                        path: path.clone(),
                        expected: local.entry.content,
                        found: digest.2,
                    });
                }
                Found::Unreadable(why) => report.unreadable.push((path.clone(), why)),
            }
        }
        report.chunks = self.chunks.verify_all();
        Ok(report)
    }

    /// Repair the damaged `paths` (as [`Workspace::verify`] reported them): rebuild from local
    /// bytes, else mark them to be taken back from a peer. Each is checked again first.
    pub fn repair(&self, paths: &[RelPath], now_ns: i64) -> Result<RepairReport, WorkspaceError> {
        let ctx = ApplyContext {
            root: &self.root,
            store: &self.store,
            chunks: &self.chunks,
            now_ns,
        };
        let mut report = RepairReport::default();
        let mut touched = Vec::new();
        for path in paths {
            let Some(local) = self.lock()?.index.get(path).cloned() else {
                report.left.push((path.clone(), "not in the index".into()));
                continue;
            };
            let (stat, digest) = match self.read_against(&local) {
                Found::Damaged { stat, digest } => (stat, digest),
                Found::Same { .. } => continue,
                Found::Changed => {
                    report.left.push((
                        path.clone(),
                        "changed since verify: left to the scan".into(),
                    ));
                    continue;
                }
                Found::Unreadable(why) => {
                    report.left.push((path.clone(), why));
                    continue;
                }
            };
            // What the disk holds now, as the entry the apply expects to replace.
            let on_disk = LocalEntry {
                entry: FileEntry {
                    size: digest.0,
                    chunks: digest.1,
                    content: digest.2,
                    version: VersionVector::new(),
                    parent: Some(local.entry.content),
                    ..local.entry.clone()
                },
                stat: Some(stat),
                recorded_at_ns: now_ns,
            };
            let item = ApplyItem {
                target: &local.entry,
                expected: Some(&on_disk),
                merged: false,
            };
            let outcome = apply::apply_batch(&ctx, &[item], &mut NoSource).remove(0);
            touched.push(path.clone());
            match outcome {
                Ok(ApplyOutcome::Written { .. } | ApplyOutcome::AlreadyCurrent) => {
                    report.restored.push(path.clone());
                }
                Ok(ApplyOutcome::MissingChunks { .. }) => {
                    self.store.commit_local([LocalUpdate::Put(on_disk)])?;
                    report.awaiting_peer.push(path.clone());
                }
                Ok(other) => report.left.push((path.clone(), format!("{other:?}"))),
                Err(e) => report.left.push((path.clone(), e.to_string())),
            }
        }
        self.store.flush()?;
        self.reload(&touched)?;
        Ok(report)
    }

    /// Read the file of `local` and compare it with the index.
    fn read_against(&self, local: &LocalEntry) -> Found {
        let entry = &local.entry;
        let fs_path = entry.path.to_fs(&self.root);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fs_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Changed,
            Err(e) => return Found::Unreadable(format!("{}: {e}", fs_path.display())),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Found::Unreadable(format!("{}: {e}", fs_path.display())),
        };
        let stat = StatSig::of(&meta);
        if !meta.is_file() || local.stat != Some(stat) {
            return Found::Changed;
        }
        match digest_file(&Chunker::new(entry.chunker), &file, meta.len()) {
            Ok(d) if d.0 != meta.len() => Found::Changed,
            Ok(d) if d.2 == entry.content => Found::Same { bytes: d.0 },
            Ok(d) => Found::Damaged { stat, digest: d },
            Err(e) => Found::Unreadable(format!("{}: {e}", fs_path.display())),
        }
    }
}
