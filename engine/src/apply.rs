//! Atomic apply: materialize one remote [`FileEntry`] in the workspace.
//!
//! At every instant a path holds either its old version or a complete, verified new one. A file
//! is assembled in a temporary file in its own directory from verified chunks (local files first,
//! then the chunk store, then the caller's [`ChunkSource`]), made durable, and renamed over the
//! target only after re-checking that nobody edited the target since the sync was planned. The
//! version being replaced or deleted is first kept in the chunk store. The directory entry is
//! then made durable, and only then is the index updated and a history record appended.
//!
//! Many files are applied as a batch ([`apply_batch`], up to [`BATCH_FILES`] at a time): every
//! step runs across the batch before the next, so "durable" costs two `syncfs` calls per batch
//! (one after writing every temp file, one after every rename) rather than an `fsync` per file
//! and per directory, with the same guarantee: a rename is issued only after its data is
//! durable, and the index is written only after the renames are. Where `syncfs` is not known to
//! be as strong as `fsync`, each file and directory is fsynced as before. The reasoning, and when
//! it falls back, is in `durable.rs`.
//!
//! Nothing is ever written through a symlink: each existing component of the parent path must be
//! a real directory, missing ones are created one by one and re-checked, and the temporary file is
//! created exclusively with `O_NOFOLLOW`.
//!
//! This module does not decide *what* to apply (the plan does) or fetch anything over the network
//! (the caller's [`ChunkSource`] does).

mod assemble;
mod batch;
mod copy;
mod disk;
mod durable;
mod recover;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::chunk::ChunkRef;
use crate::chunkstore::{ChunkStore, ChunkStoreError};
use crate::chunktree::content_hash;
use crate::entry::{FileEntry, LocalEntry};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::store::{Store, StoreError};

pub use assemble::{ChunkSource, NoSource, SourceError};
pub use recover::{Recovery, recover};

/// Prefix of the temporary files apply creates next to their targets; the scanner ignores them.
pub const TEMP_PREFIX: &str = ".botsync-tmp-";

/// Prefix of the output file a SYNC.json generator is writing (`.botsync-tmp-gen-PID-SKILL`). It
/// starts with [`TEMP_PREFIX`], so it is never synced; unlike apply's temps it lives while a
/// generator runs, which may be during a scan, so a scan leaves it alone and the generator
/// runner sweeps those whose process is gone.
pub const GENERATOR_TEMP_PREFIX: &str = ".botsync-tmp-gen-";

/// The largest chunk accepted from an entry (FastCDC's own maximum): bounds what one chunk can
/// make us allocate.
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;

/// Entries of a batch processed together at most: [`apply_batch`] makes a batch durable with one
/// pair of barriers, so callers applying many files gather them in batches of
/// [`batch_files`] entries (this, or fewer under a low open-files limit: each entry holds open
/// files until it is renamed).
pub const BATCH_FILES: usize = 512;

/// Open files an entry of a batch may hold at once: its temp file and, while it is renamed,
/// the file it replaces (plus one opened and closed at a time to read the old version).
const FILES_PER_ENTRY: u64 = 3;

/// Open files left to the rest of the process (index, sockets, watcher, logs).
const FILES_KEPT_FREE: u64 = 128;

/// Entries per batch: [`BATCH_FILES`], or fewer where the open-files limit (`RLIMIT_NOFILE`)
/// would not let a whole batch hold its files: a daemon started under the common soft limit
/// of 1,024 failed 18 of 1,200 edited notes with "Too many open files" before.
pub fn batch_files() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let fit = limit.saturating_sub(FILES_KEPT_FREE) / FILES_PER_ENTRY;
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, BATCH_FILES)
}

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
        /// Bytes taken from files already in the workspace (renames, copies, unchanged parts).
        bytes_from_local: u64,
        /// Of `bytes_from_local`, the unchanged parts of the version being replaced, copied in
        /// the kernel without being read or hashed again (`apply/copy.rs`).
        bytes_copied: u64,
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
    /// The intent to apply could not be recorded in the index: nothing was changed.
    #[error(
        "refusing to apply {path}: recording the apply intent in the index failed ({reason}); nothing was changed, retry the sync"
    )]
    Intent {
        /// The path being applied.
        path: RelPath,
        /// The index error, as text (one failure is reported on every entry of the batch).
        reason: String,
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

/// One entry of a batch: the version to apply and the local entry the plan was made from
/// (`None` if the path was unknown locally).
#[derive(Debug, Clone, Copy)]
pub struct ApplyItem<'a> {
    /// The version to materialize.
    pub target: &'a FileEntry,
    /// What the path held when the sync was planned.
    pub expected: Option<&'a LocalEntry>,
    /// The target is the merge of `expected` and a peer's version (history says `merged`).
    pub merged: bool,
}

/// Make the workspace hold `target` at `target.path`, provided the path still is as `expected`
/// (the local entry the plan was made from; `None` if the path was unknown locally).
pub fn apply_entry(
    ctx: &ApplyContext<'_>,
    target: &FileEntry,
    expected: Option<&LocalEntry>,
    source: &mut dyn ChunkSource,
) -> Result<ApplyOutcome, ApplyError> {
    let mut results = apply_batch(
        ctx,
        &[ApplyItem {
            target,
            expected,
            merged: false,
        }],
        source,
    );
    match results.pop() {
        Some(result) => result,
        // `apply_batch` returns exactly one result per item.
        None => Err(invalid(&target.path, "apply returned no result".into())),
    }
}

/// Apply several entries with exactly the guarantees of [`apply_entry`] for each, but step by
/// step across the batch, so that one `syncfs` covers all their data, one more all their renames,
/// and one index commit records them all. Entries fail independently; one result per item, in
/// item order. Give each path at most once: a second item for the same path would find it
/// changed (`LocalChanged`).
pub fn apply_batch(
    ctx: &ApplyContext<'_>,
    items: &[ApplyItem<'_>],
    source: &mut dyn ChunkSource,
) -> Vec<Result<ApplyOutcome, ApplyError>> {
    // Each staged entry holds an open temp file: bound how many are open at once.
    items
        .chunks(batch_files())
        .flat_map(|group| batch::run(ctx, group, source))
        .collect()
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
        if store
            .find_chunk(&c.id, |l| (l.len == c.len).then_some(()))?
            .is_none()
        {
            out.push(*c);
        }
    }
    Ok(out)
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::chunk::{Chunker, ChunkerParams};
    use crate::chunkstore::system_time_ns;
    use crate::entry::{EntryKind, Mode, StatSig};
    use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
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
                machine: MachineName::default(),
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
            let ApplyOutcome::Written { bytes_from_local, bytes_from_store, bytes_from_source, .. } = outcome else {
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
        entry.mode.permissions = 0o755;
        fx.apply(&entry, None, &mut source).unwrap();
        let meta = fs::metadata(fx.root().join("bin/run.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(system_time_ns(meta.modified().unwrap()), entry.mtime_ns);
        let local = fx.store.local_get(&entry.path).unwrap().unwrap();
        assert_eq!(local.stat, Some(StatSig::of(&meta)));
        assert_eq!(local.recorded_at_ns, 1);
    }

    /// Issue 10: a 0600 file arrived as 0644, 000 as 0644. The file is written with exactly the
    /// entry's bits, also over an existing file with wider ones; bits outside 0o777 are dropped.
    #[test]
    fn a_private_file_is_never_written_wider_than_its_source() {
        let fx = Fixture::new();
        let path = fx.root().join("memory/private.md");
        let mut expected = None;
        for (i, bits) in [0o600u16, 0o700, 0o644, 0o000, 0o4755]
            .into_iter()
            .enumerate()
        {
            let (mut entry, mut source) = version("memory/private.md", format!("v{i}").as_bytes());
            entry.mode.permissions = bits;
            fx.apply(&entry, expected.as_ref(), &mut source).unwrap();
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, u32::from(bits & 0o777), "entry mode {bits:o}");
            expected = Some(fx.store.local_get(&entry.path).unwrap().unwrap());
        }
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
