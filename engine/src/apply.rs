//! Atomic apply: materialize one remote [`FileEntry`] in the workspace.
//!
//! At every instant a path holds either its old version or a complete, verified new one. A file
//! is assembled in a temporary file in its own directory from verified chunks (local files first,
//! then the chunk store, then the caller's [`ChunkSource`]), made durable, and renamed over the
//! target only after re-checking that nobody edited the target since the sync was planned. The
//! version being replaced or deleted is first kept in the chunk store. The directory is then
//! synced, and only then is the index updated and a history record appended.
//!
//! Nothing is ever written through a symlink: each existing component of the parent path must be
//! a real directory, missing ones are created one by one and re-checked, and the temporary file is
//! created exclusively with `O_NOFOLLOW`.
//!
//! This module does not decide *what* to apply (the plan does) or fetch anything over the network
//! (the caller's [`ChunkSource`] does).

mod assemble;
mod disk;

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::chunk::ChunkRef;
use crate::chunkstore::{ChunkStore, ChunkStoreError, create_temp};
use crate::chunktree::content_hash;
use crate::entry::{FileEntry, LocalEntry, StatSig};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::store::{HistoryAction, HistoryRecord, LocalUpdate, Store, StoreError};

pub use assemble::{ChunkSource, NoSource, SourceError};

use assemble::{assemble, stage_source_chunks};
use disk::{
    LocalState, TempFile, file_mode, local_state, prepare_parent, stat_sig, sync_dir, temp_mode,
    time_from_ns,
};

/// Prefix of the temporary files apply creates next to their targets; the scanner ignores them.
pub const TEMP_PREFIX: &str = ".botsync-tmp-";

/// The largest chunk accepted from an entry (FastCDC's own maximum): bounds what one chunk can
/// make us allocate.
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;

/// Where apply works and what it updates.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The index (local entries, chunk locations, history).
    pub store: &'a Store,
    /// The chunk store (kept versions, staged chunks).
    pub chunks: &'a ChunkStore,
    /// The current time (ns since the epoch), recorded in the index and history.
    pub now_ns: i64,
}

/// What [`apply_entry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The new version is in place; the counts say where its bytes came from.
    Written {
        /// Bytes read from files already in the workspace (renames, copies, unchanged parts).
        bytes_from_local: u64,
        /// Bytes read from the chunk store.
        bytes_from_store: u64,
        /// Bytes taken from the [`ChunkSource`].
        bytes_from_source: u64,
    },
    /// The file was deleted (its last version is kept in the chunk store).
    Deleted,
    /// The workspace already had this content; only the index was updated.
    AlreadyCurrent,
    /// The target was edited after the sync was planned: nothing was written.
    LocalChanged {
        /// The path that changed.
        path: RelPath,
    },
    /// Some chunks were found nowhere: nothing was written. Chunks that the source did provide
    /// were staged in the chunk store, so a retry fetches only these.
    MissingChunks {
        /// The chunks to fetch, each once, in file order.
        ids: Vec<Hash>,
    },
}

/// Why apply failed. In every case the old file is intact and no temporary file remains.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A component of the path is a symlink or not a directory.
    #[error(
        "refusing to apply {path}: {component} is a symlink or not a directory; botsync never writes through symlinks (replace it with a real directory or exclude the path)"
    )]
    UnsafePath {
        /// The path being applied.
        path: RelPath,
        /// The offending component on disk.
        component: PathBuf,
    },
    /// The entry contradicts itself (chunk list, size and content hash disagree).
    #[error("refusing to apply {path}: invalid entry: {reason}")]
    InvalidEntry {
        /// The path being applied.
        path: RelPath,
        /// What is inconsistent.
        reason: String,
    },
    /// The source gave bytes that do not match the chunk id.
    #[error(
        "refusing to apply {path}: chunk {id} from the peer hashes to {actual} (corrupt or forged data)"
    )]
    ChunkMismatch {
        /// The path being applied.
        path: RelPath,
        /// The chunk requested.
        id: Hash,
        /// What the bytes hash to.
        actual: Hash,
    },
    /// The chunk source failed.
    #[error("applying {path}: fetching chunk {id} failed: {source}")]
    Source {
        /// The path being applied.
        path: RelPath,
        /// The chunk requested.
        id: Hash,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// A file-system operation failed.
    #[error("applying {path}: {action} {}: {source}", fs_path.display())]
    Io {
        /// The path being applied.
        path: RelPath,
        /// What was being done.
        action: &'static str,
        /// The file or directory involved.
        fs_path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The index failed (the file itself may already be in place; a rescan records it).
    #[error("applying {path}: {source}")]
    Store {
        /// The path being applied.
        path: RelPath,
        /// The index error.
        #[source]
        source: StoreError,
    },
    /// The chunk store failed.
    #[error("applying {path}: {source}")]
    ChunkStore {
        /// The path being applied.
        path: RelPath,
        /// The chunk store error.
        #[source]
        source: ChunkStoreError,
    },
}

/// Make the workspace hold `target` at `target.path`, provided the path still is as `expected`
/// (the local entry the plan was made from; `None` if the path was unknown locally).
pub fn apply_entry(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    expected: Option<&LocalEntry>,
    source: &mut dyn ChunkSource,
) -> Result<ApplyOutcome, ApplyError> {
    let path = &target.path;
    check_entry(target)?;
    let fs_path = path.to_fs(ctx.root);
    let create_dirs = !target.is_tombstone();
    let Some(dir) = prepare_parent(ctx.root, path, create_dirs)? else {
        // A parent directory is missing, so the file is already absent: as deleted as can be.
        return record_current(ctx, target, None);
    };
    let before = local_state(path, &fs_path, expected)?;
    if matches!(before, LocalState::Changed) {
        return Ok(ApplyOutcome::LocalChanged { path: path.clone() });
    }
    if target.is_tombstone() {
        return delete(ctx, target, expected, &fs_path, &dir, before);
    }
    if let (LocalState::Same(Some(meta)), Some(exp)) = (&before, expected)
        && exp.entry.same_content(target)
    {
        return record_current(ctx, target, Some(meta));
    }
    write(ctx, target, expected, source, &fs_path, &dir)
}

/// The chunks of `entry` found nowhere locally (neither in an indexed file nor in the chunk
/// store), each once, in file order: what a sync must fetch. Locations are not verified here; a
/// stale one makes [`apply_entry`] report the chunk in [`ApplyOutcome::MissingChunks`].
pub fn missing_chunks(
    store: &Store,
    chunks: &ChunkStore,
    entry: &FileEntry,
) -> Result<Vec<ChunkRef>, StoreError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    if entry.is_tombstone() {
        return Ok(out);
    }
    for c in &entry.chunks {
        if !seen.insert(c.id) || chunks.has(&c.id) {
            continue;
        }
        if !store.locate_chunk(&c.id)?.iter().any(|l| l.len == c.len) {
            out.push(*c);
        }
    }
    Ok(out)
}

/// Assemble, verify and rename a file version into place.
fn write(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    expected: Option<&LocalEntry>,
    source: &mut dyn ChunkSource,
    fs_path: &Path,
    dir: &Path,
) -> Result<ApplyOutcome, ApplyError> {
    let path = &target.path;
    let (tmp_path, file) =
        create_temp(dir, TEMP_PREFIX).map_err(|e| io_err(path, e.action, e.path, e.source))?;
    let mut temp = TempFile {
        path: tmp_path,
        file,
        keep: false,
    };
    let assembled = assemble(ctx, target, source, &mut temp)?;
    if !assembled.missing.is_empty() {
        stage_source_chunks(ctx, path, &temp, &assembled.from_source)?;
        return Ok(ApplyOutcome::MissingChunks {
            ids: assembled.missing,
        });
    }
    let t = &temp.path;
    let len = temp
        .file
        .metadata()
        .map_err(|e| io_err(path, "checking", t, e))?
        .len();
    if len != target.size {
        return Err(invalid(
            path,
            format!("assembled {len} bytes, entry says {}", target.size),
        ));
    }
    let old_mode = fs::symlink_metadata(fs_path)
        .ok()
        .map(|m| m.permissions().mode());
    let mode = file_mode(
        old_mode.unwrap_or(temp_mode(&temp.file)),
        target.mode.executable,
    );
    temp.file
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(path, "setting permissions of", t, e))?;
    temp.file
        .set_modified(time_from_ns(target.mtime_ns))
        .map_err(|e| io_err(path, "setting mtime of", t, e))?;
    temp.file
        .sync_all()
        .map_err(|e| io_err(path, "syncing", t, e))?;

    // Last moment to notice a local edit made while we were assembling.
    if matches!(local_state(path, fs_path, expected)?, LocalState::Changed) {
        return Ok(ApplyOutcome::LocalChanged { path: path.clone() });
    }
    let old = expected.filter(|e| !e.entry.is_tombstone() && old_mode.is_some());
    if let Some(old) = old
        && old.entry.content != target.content
    {
        keep_version(ctx, path, fs_path, &old.entry)?;
    }
    fs::rename(&temp.path, fs_path).map_err(|e| io_err(path, "renaming into place", fs_path, e))?;
    temp.keep = true;
    sync_dir(path, dir)?;
    let meta = temp
        .file
        .metadata()
        .map_err(|e| io_err(path, "checking", fs_path, e))?;
    let action = if old.is_some() {
        HistoryAction::Modified
    } else {
        HistoryAction::Created
    };
    record(
        ctx,
        target,
        Some(stat_sig(&meta)),
        old.map(|o| o.entry.content),
        action,
    )?;
    Ok(ApplyOutcome::Written {
        bytes_from_local: assembled.from_local,
        bytes_from_store: assembled.from_store,
        bytes_from_source: assembled
            .from_source
            .iter()
            .map(|(_, _, len)| u64::from(*len))
            .sum(),
    })
}

/// Keep, unlink and record the deletion of a file.
fn delete(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    expected: Option<&LocalEntry>,
    fs_path: &Path,
    dir: &Path,
    before: LocalState,
) -> Result<ApplyOutcome, ApplyError> {
    let path = &target.path;
    let LocalState::Same(Some(_)) = before else {
        // Nothing on disk (as expected): only the index learns of the deletion.
        return record_current(ctx, target, None);
    };
    let Some(old) = expected.filter(|e| !e.entry.is_tombstone()) else {
        return Ok(ApplyOutcome::LocalChanged { path: path.clone() });
    };
    keep_version(ctx, path, fs_path, &old.entry)?;
    if matches!(local_state(path, fs_path, expected)?, LocalState::Changed) {
        return Ok(ApplyOutcome::LocalChanged { path: path.clone() });
    }
    fs::remove_file(fs_path).map_err(|e| io_err(path, "deleting", fs_path, e))?;
    sync_dir(path, dir)?;
    record(
        ctx,
        target,
        None,
        Some(old.entry.content),
        HistoryAction::Deleted,
    )?;
    Ok(ApplyOutcome::Deleted)
}

/// The workspace already holds `target`: record it in the index (its version vector is news).
fn record_current(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    meta: Option<&Metadata>,
) -> Result<ApplyOutcome, ApplyError> {
    let local = LocalEntry {
        entry: target.clone(),
        stat: meta.map(stat_sig),
        recorded_at_ns: ctx.now_ns,
    };
    ctx.store
        .commit_local([LocalUpdate::Put(local)])
        .map_err(|source| ApplyError::Store {
            path: target.path.clone(),
            source,
        })?;
    Ok(ApplyOutcome::AlreadyCurrent)
}

/// Update the index and append history after the workspace changed.
fn record(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    stat: Option<StatSig>,
    old_content: Option<Hash>,
    action: HistoryAction,
) -> Result<(), ApplyError> {
    let store_err = |source| ApplyError::Store {
        path: target.path.clone(),
        source,
    };
    let local = LocalEntry {
        entry: target.clone(),
        stat,
        recorded_at_ns: ctx.now_ns,
    };
    ctx.store
        .commit_local([LocalUpdate::Put(local)])
        .map_err(store_err)?;
    let live = !target.is_tombstone();
    let history = HistoryRecord {
        at_ns: ctx.now_ns,
        path: target.path.clone(),
        action,
        from_peer: target.changed_by.peer,
        agent: target.changed_by.agent.clone(),
        old_content,
        new_content: live.then_some(target.content),
        bytes: if live { target.size } else { 0 },
    };
    ctx.store.history_append(&history).map_err(store_err)?;
    Ok(())
}

fn keep_version(
    ctx: &ApplyContext<'_>,
    path: &RelPath,
    fs_path: &Path,
    old: &FileEntry,
) -> Result<(), ApplyError> {
    let kept = ctx
        .chunks
        .put_file_version(fs_path, old)
        .map_err(|source| ApplyError::ChunkStore {
            path: path.clone(),
            source,
        })?;
    tracing::debug!(%path, content = %kept.content, new_bytes = kept.new_bytes, "kept the replaced version");
    Ok(())
}

/// Refuse entries whose chunk list, size and content hash disagree, or whose chunks are absurd.
fn check_entry(target: &FileEntry) -> Result<(), ApplyError> {
    let path = &target.path;
    if path.is_root() {
        return Err(invalid(path, "the workspace root is not a file".into()));
    }
    if target.is_tombstone() {
        return Ok(());
    }
    if let Some(c) = target
        .chunks
        .iter()
        .find(|c| c.len == 0 || c.len > MAX_CHUNK_LEN)
    {
        return Err(invalid(
            path,
            format!("chunk {} has length {}", c.id, c.len),
        ));
    }
    let size: u64 = target.chunks.iter().map(|c| u64::from(c.len)).sum();
    if size != target.size {
        return Err(invalid(
            path,
            format!("chunks total {size} bytes, entry says {}", target.size),
        ));
    }
    if content_hash(&target.chunks) != target.content {
        return Err(invalid(
            path,
            "chunk list does not hash to the content hash".into(),
        ));
    }
    Ok(())
}

fn io_err(
    path: &RelPath,
    action: &'static str,
    fs_path: impl Into<PathBuf>,
    source: io::Error,
) -> ApplyError {
    ApplyError::Io {
        path: path.clone(),
        action,
        fs_path: fs_path.into(),
        source,
    }
}

fn invalid(path: &RelPath, reason: String) -> ApplyError {
    ApplyError::InvalidEntry {
        path: path.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::chunk::{Chunker, ChunkerParams};
    use crate::chunkstore::system_time_ns;
    use crate::entry::{EntryKind, Mode};
    use crate::peer::{AgentLabel, Attribution, PeerId};
    use crate::vector::VersionVector;
    use proptest::prelude::*;

    /// Small chunks so that a few kilobytes make many of them.
    const SMALL: ChunkerParams = ChunkerParams {
        min: 64,
        avg: 256,
        max: 1024,
        ..ChunkerParams::DEFAULT
    };

    struct Fixture {
        tmp: tempfile::TempDir,
        store: Store,
        chunks: ChunkStore,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir_all(tmp.path().join("ws/.botsync")).unwrap();
            let (store, _) = Store::open(&tmp.path().join("ws/.botsync/db")).unwrap();
            let chunks = ChunkStore::open(&tmp.path().join("ws/.botsync/store")).unwrap();
            Fixture { tmp, store, chunks }
        }

        fn root(&self) -> PathBuf {
            self.tmp.path().join("ws")
        }

        fn apply(
            &self,
            target: &FileEntry,
            expected: Option<&LocalEntry>,
            source: &mut dyn ChunkSource,
        ) -> Result<ApplyOutcome, ApplyError> {
            let root = self.root();
            let ctx = ApplyContext {
                root: &root,
                store: &self.store,
                chunks: &self.chunks,
                now_ns: 1,
            };
            apply_entry(&ctx, target, expected, source)
        }
    }

    /// The entry for `data` at `path`, and a source holding its chunks.
    fn version(path: &str, data: &[u8]) -> (FileEntry, HashMap<Hash, Vec<u8>>) {
        let mut source = HashMap::new();
        let mut chunks = Vec::new();
        Chunker::new(SMALL)
            .for_each_chunk(data, |b| {
                source.insert(Hash::of(b), b.to_vec());
                chunks.push(ChunkRef {
                    id: Hash::of(b),
                    len: b.len() as u32,
                });
                Ok(())
            })
            .unwrap();
        let entry = FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: data.len() as u64,
            mtime_ns: 1_700_000_000_123_456_789,
            mode: Mode::default(),
            content: content_hash(&chunks),
            chunks,
            chunker: SMALL,
            version: VersionVector::from_pairs([(PeerId([9; 32]), 1)]),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([9; 32]),
                agent: AgentLabel::new("remote"),
            },
        };
        (entry, source)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn apply_reproduces_the_bytes_exactly(data in proptest::collection::vec(any::<u8>(), 0..6000), repeat in 0usize..3) {
            // Repeating the data makes files whose chunks recur.
            let data: Vec<u8> = std::iter::repeat_n(data, repeat + 1).flatten().collect();
            let fx = Fixture::new();
            let (entry, mut source) = version("notes/a.md", &data);
            let outcome = fx.apply(&entry, None, &mut source).unwrap();
            let ApplyOutcome::Written { bytes_from_local, bytes_from_store, bytes_from_source } = outcome else {
                panic!("expected a write, got {outcome:?}");
            };
            prop_assert_eq!(bytes_from_local + bytes_from_store + bytes_from_source, data.len() as u64);
            prop_assert_eq!(fs::read(fx.root().join("notes/a.md")).unwrap(), data);
            let recorded = fx.store.local_get(&entry.path).unwrap().unwrap();
            prop_assert_eq!(recorded.entry, entry);
        }
    }

    #[test]
    fn mtime_and_exec_bit_are_set() {
        let fx = Fixture::new();
        let (mut entry, mut source) = version("bin/run.sh", b"#!/bin/sh\necho hi\n");
        entry.mode.executable = true;
        fx.apply(&entry, None, &mut source).unwrap();
        let meta = fs::metadata(fx.root().join("bin/run.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o100, 0o100);
        assert_eq!(system_time_ns(meta.modified().unwrap()), entry.mtime_ns);
        let local = fx.store.local_get(&entry.path).unwrap().unwrap();
        assert_eq!(local.stat, Some(stat_sig(&meta)));
        assert_eq!(local.recorded_at_ns, 1);
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let fx = Fixture::new();
        let (mut entry, mut source) = version("a.md", b"hello");
        entry.size += 1;
        assert!(matches!(
            fx.apply(&entry, None, &mut source),
            Err(ApplyError::InvalidEntry { .. })
        ));
        let (mut entry, mut source) = version("a.md", b"hello");
        entry.content = Hash::of(b"other");
        assert!(matches!(
            fx.apply(&entry, None, &mut source),
            Err(ApplyError::InvalidEntry { .. })
        ));
        let (mut entry, mut source) = version("a.md", b"hello");
        entry.chunks[0].len = MAX_CHUNK_LEN + 1;
        assert!(matches!(
            fx.apply(&entry, None, &mut source),
            Err(ApplyError::InvalidEntry { .. })
        ));
        assert!(!fx.root().join("a.md").exists());
    }

    #[test]
    fn a_failing_source_leaves_nothing_behind() {
        struct Broken;
        impl ChunkSource for Broken {
            fn fetch(&mut self, _: &Hash, _: u32) -> Result<Option<Vec<u8>>, SourceError> {
                Err("connection reset".into())
            }
        }
        let fx = Fixture::new();
        let (entry, _) = version("a.md", b"hello");
        let err = fx.apply(&entry, None, &mut Broken).unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        let names: Vec<_> = fs::read_dir(fx.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(".botsync")]);
    }
}
