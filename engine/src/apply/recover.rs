//! Replaying what an interrupted apply left behind.
//!
//! Apply records an intent per file before its first rename (`store::intents`) and removes it
//! once the index holds the entry. An intent still present means the process stopped in between:
//! the file on disk may be the new version, the old one, or (after a delete) gone. Each intent is
//! settled by looking at the disk, never by trusting it:
//!
//! - the index already holds the intended version: nothing to do;
//! - a delete: the file is absent, so the tombstone is recorded;
//! - a write: the file is a regular file whose bytes hash to the intended content, so the
//!   intended entry (its version vector, not a new local one) is recorded with the file's stat;
//! - anything else (the rename never happened, or the file was edited since): the intent is
//!   dropped and the next scan sees the file as it is.
//!
//! Without this, the renamed files look like local edits to the next scan, each one becomes a
//! new local version concurrent with the peer's, and the next sync reports conflicts that never
//! happened.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::chunk::Chunker;
use crate::entry::{FileEntry, LocalEntry, StatSig};
use crate::path::RelPath;
use crate::scan::hashing::digest_file;
use crate::store::{ApplyIntent, LocalUpdate, Store, StoreError};

/// What [`recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The paths whose intended version was on disk and is now in the index.
    pub recorded: Vec<RelPath>,
    /// Intents that did not match the disk (left to the scan).
    pub dropped: usize,
}

/// Settle every intent left in `store` against the files under `root`.
pub fn recover(root: &Path, store: &Store) -> Result<Recovery, StoreError> {
    let intents = store.intents()?;
    let mut report = Recovery::default();
    if intents.is_empty() {
        return Ok(report);
    }
    let mut updates = Vec::new();
    let mut history = Vec::new();
    for intent in &intents {
        let target = &intent.target;
        let indexed = store.local_get(&target.path)?;
        if indexed.is_some_and(|l| same_version(&l.entry, target)) {
            continue;
        }
        match on_disk(root, target) {
            Some(stat) => {
                report.recorded.push(target.path.clone());
                updates.push(LocalUpdate::Put(LocalEntry {
                    entry: target.clone(),
                    stat,
                    recorded_at_ns: intent.at_ns,
                }));
                history.extend(intent.history.clone());
            }
            None => report.dropped += 1,
        }
    }
    store.commit_local(updates)?;
    store.history_append_many(&history)?;
    store.intents_clear(intents.iter().map(|i: &ApplyIntent| &i.target.path))?;
    store.flush()?;
    if !report.recorded.is_empty() || report.dropped > 0 {
        tracing::info!(
            recorded = report.recorded.len(),
            dropped = report.dropped,
            "settled the files of an interrupted apply"
        );
    }
    Ok(report)
}

fn same_version(a: &FileEntry, b: &FileEntry) -> bool {
    a.same_content(b) && a.version == b.version && a.is_tombstone() == b.is_tombstone()
}

/// `Some(stat)` if the disk holds exactly `target` (`Some(None)` for a tombstone: the file is
/// absent), `None` otherwise.
fn on_disk(root: &Path, target: &FileEntry) -> Option<Option<StatSig>> {
    let fs_path = target.path.to_fs(root);
    if target.is_tombstone() {
        return match std::fs::symlink_metadata(&fs_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
            _ => None,
        };
    }
    let file = open(&fs_path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != target.size {
        return None;
    }
    let (read, _, content) = digest_file(&Chunker::new(target.chunker), &file, target.size).ok()?;
    let after = file.metadata().ok()?;
    let still = StatSig::of(&after) == StatSig::of(&meta);
    (read == target.size && content == target.content && still).then(|| Some(StatSig::of(&meta)))
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}
