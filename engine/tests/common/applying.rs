//! The fixture of the apply tests (`apply.rs`, `apply_copy.rs`): an agent workspace on a real
//! file system with its index and chunk store, versions of files as a peer would send them, and
//! notes that chunk into many pieces.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; tests fail loudly

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use botsync_engine::apply::{
    ApplyContext, ApplyError, ApplyOutcome, ChunkSource, TEMP_PREFIX, apply_entry,
};
use botsync_engine::chunk::ChunkerKind;
use botsync_engine::chunkstore::ChunkStore;
use botsync_engine::chunktree::content_hash;
use botsync_engine::store::{LocalUpdate, Store};
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, Chunker, ChunkerParams, EntryKind, FileEntry, Hash,
    LocalEntry, MachineName, Mode, PeerId, RelPath, StatSig, VersionVector,
};

pub const ME: PeerId = PeerId([1; 32]);
pub const LAPTOP: PeerId = PeerId([2; 32]);
/// Small chunks, so that notes of a few kilobytes have many.
pub const SMALL: ChunkerParams = ChunkerParams {
    kind: ChunkerKind::FastCdc2020,
    min: 64,
    avg: 256,
    max: 1024,
};
pub const NOW: i64 = 1_800_000_000_000_000_000;

/// An agent workspace with its index and chunk store.
pub struct Workspace {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub store: Store,
    pub chunks: ChunkStore,
}

impl Workspace {
    pub fn new() -> Workspace {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("agent");
        fs::create_dir_all(root.join(".botsync")).unwrap();
        let (store, _) = Store::open(&root.join(".botsync/db")).unwrap();
        let chunks = ChunkStore::open(&root.join(".botsync/store")).unwrap();
        Workspace {
            _tmp: tmp,
            root,
            store,
            chunks,
        }
    }

    /// The agent writes a file, and the scanner records it.
    pub fn write_and_scan(&self, path: &str, bytes: &[u8]) -> LocalEntry {
        let on_disk = self.root.join(path);
        fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
        fs::write(&on_disk, bytes).unwrap();
        let meta = fs::metadata(&on_disk).unwrap();
        let (mut entry, _) = version(path, bytes, ME);
        entry.mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let local = LocalEntry {
            entry,
            stat: Some(StatSig {
                size: meta.len(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
                ino: meta.ino(),
                dev: meta.dev(),
            }),
            recorded_at_ns: NOW - 1,
        };
        self.store
            .commit_local([LocalUpdate::Put(local.clone())])
            .unwrap();
        local
    }

    /// The index learns the stat facts of `path` again (its bytes are still `local`'s).
    pub fn write_and_scan_sparse(&self, local: &LocalEntry, path: &Path) -> LocalEntry {
        let meta = fs::metadata(path).unwrap();
        let local = LocalEntry {
            stat: Some(StatSig::of(&meta)),
            ..local.clone()
        };
        self.store
            .commit_local([LocalUpdate::Put(local.clone())])
            .unwrap();
        local
    }

    pub fn apply(
        &self,
        target: &FileEntry,
        expected: Option<&LocalEntry>,
        source: &mut dyn ChunkSource,
    ) -> Result<ApplyOutcome, ApplyError> {
        let ctx = ApplyContext {
            root: &self.root,
            store: &self.store,
            chunks: &self.chunks,
            now_ns: NOW,
        };
        apply_entry(&ctx, target, expected, source)
    }

    pub fn read(&self, path: &str) -> Vec<u8> {
        fs::read(self.root.join(path)).unwrap()
    }

    /// Every apply temp file left anywhere in the workspace.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    out.push(p.clone());
                }
                if e.file_type().unwrap().is_dir() {
                    walk(&p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

/// A version of `path` with content `bytes` made by `by`, and a source holding its chunks (what
/// the peer would send).
pub fn version(path: &str, bytes: &[u8], by: PeerId) -> (FileEntry, HashMap<Hash, Vec<u8>>) {
    let mut source = HashMap::new();
    let mut chunks = Vec::new();
    Chunker::new(SMALL)
        .for_each_chunk(bytes, |b| {
            source.insert(Hash::of(b), b.to_vec());
            chunks.push(ChunkRef {
                id: Hash::of(b),
                len: b.len() as u32,
            });
            Ok(())
        })
        .unwrap();
    let mut vector = VersionVector::new();
    vector.increment(by).unwrap();
    let entry = FileEntry {
        path: RelPath::new(path).unwrap(),
        kind: EntryKind::File,
        size: bytes.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: Mode::default(),
        content: content_hash(&chunks),
        chunks,
        chunker: SMALL,
        version: vector,
        parent: None,
        changed_by: Attribution {
            peer: by,
            agent: AgentLabel::new("laptop-agent"),
            machine: MachineName::default(),
        },
    };
    (entry, source)
}

/// Notes of `lines` numbered lines: text that chunks into many pieces.
pub fn notes(lines: usize, tag: &str) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            format!(
                "- {tag} observation {i}: the user prefers short answers ({})\n",
                i * 7919
            )
        })
        .collect::<String>()
        .into_bytes()
}
