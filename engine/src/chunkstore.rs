//! [`ChunkStore`]: content-addressed chunk files under `.botsync/store/`.
//!
//! A chunk with id `abcdef…` lives in `ab/cdef…` (256 fan-out directories keep directories
//! small). Files are written to a temporary name and renamed into place, so a chunk file is
//! either absent or complete; every read is verified against the id, and a file that fails is
//! deleted and reported as missing. Next to the chunks, `manifests/ab/cdef…` holds the chunk
//! list of each kept file version, named by the version's content hash (and verified against it),
//! so a past version can be rebuilt from its content hash alone.
//!
//! The store keeps every version that a remote change replaces or deletes (for `botsync history`
//! and `restore`, and as 3-way merge ancestors). Apart from those, under `staging/`, it stages
//! chunks received during a sync, so an interrupted sync does not fetch them again, until the
//! files that need them are applied (`staging`). [`ChunkStore::gc`] removes what is older than the
//! retention period and not kept by the caller. A chunk's age is its file's modification time,
//! refreshed whenever the chunk is stored again.
//!
//! This module does not know which versions exist (the index does) and never touches workspace
//! files other than reading the version being kept.

mod gc;
mod known;
mod staging;
mod verify;

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chunk::{ChunkRef, Chunker};
use crate::chunktree::content_hash;
use crate::entry::FileEntry;
use crate::error::{IoContext, IoError};
use crate::hash::Hash;

pub use gc::GcReport;
pub use verify::ChunkCheck;

/// The default retention period of kept versions and staged chunks: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Temporary files left by an interrupted write are removed by [`ChunkStore::gc`] after this.
const STALE_TEMP: Duration = Duration::from_secs(60 * 60);

const TEMP_PREFIX: &str = "tmp-";
const MANIFESTS: &str = "manifests";
const STAGING: &str = "staging";
/// Bytes per chunk in a manifest file: id and little-endian length.
const MANIFEST_ROW: usize = Hash::LEN + 4;

/// The content-addressed chunk store of one workspace.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    corrupt_removed: AtomicU64,
}

/// What [`ChunkStore::put_file_version`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptVersion {
    /// Content hash of the bytes actually read (equal to the entry's unless the file changed).
    pub content: Hash,
    /// Their chunks, in order; the version can be rebuilt from these.
    pub chunks: Vec<ChunkRef>,
    /// Size of the version in bytes.
    pub size: u64,
    /// Bytes newly written to the store (chunks already present are only refreshed).
    pub new_bytes: u64,
    /// True if the bytes read are the version `entry` describes.
    pub matches_entry: bool,
}

/// A chunk store failure.
#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    /// A file operation failed.
    #[error("chunk store: {0}")]
    Io(#[from] IoError),
    /// Bytes offered for an id do not hash to it.
    #[error("chunk {expected} rejected: its bytes hash to {actual} (corrupt or forged data)")]
    Mismatch {
        /// The id the bytes were offered for.
        expected: Hash,
        /// The hash of the bytes.
        actual: Hash,
    },
}

impl ChunkStore {
    /// Open (creating if needed) the chunk store in `dir`, usually `.botsync/store`.
    pub fn open(dir: &Path) -> Result<ChunkStore, ChunkStoreError> {
        fs::create_dir_all(dir).io_context("creating the chunk store", dir)?;
        Ok(ChunkStore {
            dir: dir.to_path_buf(),
            corrupt_removed: AtomicU64::new(0),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if a file for chunk `id` exists, kept or staged (its bytes are verified only when
    /// read).
    pub fn has(&self, id: &Hash) -> bool {
        self.chunk_path(id).is_file() || self.staged_path(id).is_file()
    }

    /// Store `bytes`; returns their id. Storing a chunk that is present refreshes its age.
    pub fn put(&self, bytes: &[u8]) -> Result<Hash, ChunkStoreError> {
        let id = Hash::of(bytes);
        self.write_object(&self.chunk_path(&id), bytes)?;
        Ok(id)
    }

    /// The bytes of chunk `id`, kept or staged, verified. A chunk file whose bytes do not match
    /// is deleted, logged and counted ([`ChunkStore::corrupt_removed`]), and reads as missing.
    pub fn get(&self, id: &Hash) -> Result<Option<Vec<u8>>, ChunkStoreError> {
        match self.read_chunk_file(self.chunk_path(id), id)? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.read_chunk_file(self.staged_path(id), id),
        }
    }

    fn read_chunk_file(
        &self,
        path: PathBuf,
        id: &Hash,
    ) -> Result<Option<Vec<u8>>, ChunkStoreError> {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(IoError {
                    action: "reading chunk",
                    path,
                    source: e,
                }
                .into());
            }
        };
        if Hash::of(&bytes) == *id {
            return Ok(Some(bytes));
        }
        self.discard_corrupt(&path, id);
        Ok(None)
    }

    /// How many corrupt chunk or manifest files reads have found and deleted.
    pub fn corrupt_removed(&self) -> u64 {
        self.corrupt_removed.load(Ordering::Relaxed)
    }

    /// Keep the file version at `path` (described by `entry`) before it is replaced or deleted:
    /// read the file once, store each chunk and the version's manifest, and make them durable.
    ///
    /// The file is re-chunked with `entry`'s chunker, so if it no longer matches `entry` the
    /// bytes actually on disk are kept (`matches_entry` is then false): nothing on disk is lost.
    pub fn put_file_version(
        &self,
        path: &Path,
        entry: &FileEntry,
    ) -> Result<KeptVersion, ChunkStoreError> {
        let (kept, written) = self.store_version(path, entry)?;
        sync_files(&written)?;
        Ok(kept)
    }

    /// Keep the file version at `path` as [`ChunkStore::put_file_version`] does, without making
    /// it durable: for copies of versions that are still on disk (the scanner's local versions).
    /// A power loss may lose such a copy but never tears it, since every read is verified.
    pub fn put_file_version_unsynced(
        &self,
        path: &Path,
        entry: &FileEntry,
    ) -> Result<KeptVersion, ChunkStoreError> {
        self.store_version(path, entry).map(|(kept, _)| kept)
    }

    /// Read, chunk and store the version at `path`; returns it and the files newly written.
    fn store_version(
        &self,
        path: &Path,
        entry: &FileEntry,
    ) -> Result<(KeptVersion, Vec<PathBuf>), ChunkStoreError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .io_context("opening the version to keep", path)?;
        let mut written = Vec::new();
        let mut chunks = Vec::with_capacity(entry.chunks.len());
        let mut new_bytes = 0u64;
        let mut failure: Option<ChunkStoreError> = None;
        let size = Chunker::new(entry.chunker)
            .for_each_chunk(file, |bytes| {
                let id = Hash::of(bytes);
                let target = self.chunk_path(&id);
                match self.write_object(&target, bytes) {
                    Ok(true) => {
                        new_bytes += bytes.len() as u64;
                        written.push(target);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        failure = Some(e);
                        return Err(io::Error::other("storing a chunk failed"));
                    }
                }
                chunks.push(ChunkRef {
                    id,
                    len: bytes.len() as u32,
                });
                Ok(())
            })
            .map_err(|e| match failure.take() {
                Some(f) => f,
                None => IoError {
                    action: "reading the version to keep",
                    path: path.into(),
                    source: e,
                }
                .into(),
            })?;
        let content = content_hash(&chunks);
        let manifest = self.manifest_path(&content);
        if self.write_object(&manifest, &encode_manifest(&chunks))? {
            written.push(manifest);
        }
        let matches_entry = content == entry.content && size == entry.size;
        let kept = KeptVersion {
            content,
            chunks,
            size,
            new_bytes,
            matches_entry,
        };
        Ok((kept, written))
    }

    /// The chunk list of a kept version, by content hash; verified (a manifest that does not
    /// hash to its name is deleted and reads as missing).
    pub fn manifest(&self, content: &Hash) -> Result<Option<Vec<ChunkRef>>, ChunkStoreError> {
        let path = self.manifest_path(content);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(IoError {
                    action: "reading manifest",
                    path,
                    source: e,
                }
                .into());
            }
        };
        match decode_manifest(&bytes) {
            Some(chunks) if content_hash(&chunks) == *content => Ok(Some(chunks)),
            _ => {
                self.discard_corrupt(&path, content);
                Ok(None)
            }
        }
    }

    /// Write the manifest of a version whose chunks are in the store (not made durable).
    fn put_manifest(&self, content: &Hash, chunks: &[ChunkRef]) -> Result<(), ChunkStoreError> {
        if content_hash(chunks) != *content {
            return Err(ChunkStoreError::Io(IoError {
                action: "keeping a version whose chunks do not make its content",
                path: self.manifest_path(content),
                source: io::Error::from(io::ErrorKind::InvalidData),
            }));
        }
        self.write_object(&self.manifest_path(content), &encode_manifest(chunks))?;
        Ok(())
    }

    fn chunk_path(&self, id: &Hash) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    fn manifest_path(&self, content: &Hash) -> PathBuf {
        let hex = content.to_hex();
        self.dir.join(MANIFESTS).join(&hex[..2]).join(&hex[2..])
    }

    /// Write `bytes` to `target` via a temporary file and a rename. If the target exists with
    /// the right size it is only refreshed (its age reset). Returns true if a file was written.
    fn write_object(&self, target: &Path, bytes: &[u8]) -> Result<bool, ChunkStoreError> {
        if let Ok(meta) = fs::metadata(target)
            && meta.len() == bytes.len() as u64
        {
            refresh_age(target);
            return Ok(false);
        }
        // A fault point (tests only): the store's disk fails this write.
        fail::fail_point!("chunkstore::write", |arg| Err(IoError {
            action: "writing chunk",
            path: target.to_path_buf(),
            source: crate::error::injected(arg),
        }
        .into()));
        // Owner-only: a chunk may be of a private file.
        let (tmp_path, mut tmp) = create_temp(&self.dir, TEMP_PREFIX, 0o600)?;
        let written = tmp
            .write_all(bytes)
            .io_context("writing chunk", &tmp_path)
            .and_then(|()| rename_into(&tmp_path, target, &self.dir));
        if let Err(e) = written {
            // Best effort: the temporary file is also collected by `gc`.
            let _ = fs::remove_file(&tmp_path);
            return Err(e.into());
        }
        Ok(true)
    }

    fn discard_corrupt(&self, path: &Path, id: &Hash) {
        tracing::warn!(chunk = %id, path = %path.display(), "deleting a corrupt chunk store file");
        // If removal fails, the next read finds it corrupt again and retries.
        let _ = fs::remove_file(path);
        self.corrupt_removed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Rename `tmp` to `target`, creating `target`'s directory (under `root`) only when the rename
/// finds it missing: the fan-out directories exist after the first objects, so a first scan
/// that keeps thousands of versions does not pay a `mkdir` for each.
fn rename_into(tmp: &Path, target: &Path, root: &Path) -> Result<(), IoError> {
    match fs::rename(tmp, target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = target.parent().unwrap_or(root);
            fs::create_dir_all(parent).io_context("creating a chunk directory", parent)?;
            fs::rename(tmp, target).io_context("storing chunk", target)
        }
        other => other.io_context("storing chunk", target),
    }
}

/// Create a new file named `<prefix><random>` in `dir`, exclusively and without following a
/// symlink. Used for chunk files and by apply for workspace temp files.
pub(crate) fn create_temp(dir: &Path, prefix: &str, mode: u32) -> Result<(PathBuf, File), IoError> {
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(format!("{prefix}{:016x}", random_u64()));
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(e) => {
                return Err(IoError {
                    action: "creating temporary file",
                    path,
                    source: e,
                });
            }
        }
    }
    let (path, source) = last.unwrap_or_else(|| (dir.to_path_buf(), io::Error::other("no name")));
    Err(IoError {
        action: "creating temporary file",
        path,
        source,
    })
}

/// A random number from the standard library's per-process random hash keys; enough to make
/// temporary names unguessable and collision-free together with `create_new`.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// Reset a stored object's age. Its age is measured on the file system's clock, the same clock
/// that stamped it when it was written.
fn refresh_age(path: &Path) {
    if let Ok(f) = OpenOptions::new().write(true).open(path) {
        // Best effort: a stale age only makes the object eligible for collection sooner.
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Make newly written objects and their directories durable. fsync waits on the disk, not the
/// CPU, and on a journaled file system concurrent fsyncs share journal commits, so a few threads
/// keep a large version several times faster than syncing its chunks one by one.
fn sync_files(paths: &[PathBuf]) -> Result<(), ChunkStoreError> {
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    let sync = |p: &PathBuf| File::open(p).and_then(|f| f.sync_all());
    for (p, r) in paths.iter().zip(parallel_sync(paths, sync)) {
        r.io_context("syncing chunk", p)?;
    }
    for (d, r) in dirs.iter().zip(parallel_sync(&dirs, sync)) {
        r.io_context("syncing chunk directory", d)?;
    }
    Ok(())
}

/// Threads that fsync concurrently: fsync waits on the disk, not the CPU, and concurrent fsyncs
/// on a journaled file system share journal commits.
const SYNC_THREADS: usize = 16;

/// Run `sync` on every item, from up to [`SYNC_THREADS`] threads; results in item order.
pub(crate) fn parallel_sync<T: Sync>(
    items: &[T],
    sync: impl Fn(&T) -> io::Result<()> + Sync,
) -> Vec<io::Result<()>> {
    if items.len() <= 1 {
        return items.iter().map(&sync).collect();
    }
    let per_thread = items.len().div_ceil(SYNC_THREADS);
    let sync = &sync;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|group| {
                (
                    group.len(),
                    scope.spawn(move || group.iter().map(sync).collect::<Vec<_>>()),
                )
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(n, worker)| {
                worker.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(io::Error::other("fsync thread panicked")))
                        .collect()
                })
            })
            .collect()
    })
}

fn encode_manifest(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * MANIFEST_ROW);
    for c in chunks {
        out.extend_from_slice(c.id.as_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

fn decode_manifest(bytes: &[u8]) -> Option<Vec<ChunkRef>> {
    if !bytes.len().is_multiple_of(MANIFEST_ROW) {
        return None;
    }
    bytes
        .chunks_exact(MANIFEST_ROW)
        .map(|row| {
            let (id, len) = row.split_at(Hash::LEN);
            Some(ChunkRef {
                id: Hash(id.try_into().ok()?),
                len: u32::from_le_bytes(len.try_into().ok()?),
            })
        })
        .collect()
}

/// Nanoseconds since the epoch of a file time (negative before 1970, saturating).
pub(crate) fn system_time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

/// `d` in nanoseconds, saturating at `i64::MAX`.
pub(crate) fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::entry::{EntryKind, Mode};
    use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
    use crate::{ChunkerParams, VersionVector};
    use proptest::prelude::*;

    /// A chunk store in a fresh temporary directory (kept alive by the returned guard).
    pub(crate) fn store() -> (tempfile::TempDir, ChunkStore) {
        let tmp = tempfile::tempdir().unwrap();
        let cs = ChunkStore::open(&tmp.path().join("store")).unwrap();
        (tmp, cs)
    }

    /// The wall clock in ns, as gc compares it with file ages.
    pub(crate) fn now_ns() -> i64 {
        system_time_ns(SystemTime::now())
    }

    #[test]
    fn stored_chunks_and_temp_files_are_never_wider_than_asked() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, cs) = store();
        let mode_of = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // A chunk may be of a private file: the store keeps it owner-only.
        let id = cs.put(b"a private note").unwrap();
        let hex = id.to_hex();
        let stored = tmp.path().join("store").join(&hex[..2]).join(&hex[2..]);
        assert_eq!(mode_of(&stored), 0o600);
        // A temp file gets at most the bits asked for (the umask may narrow them).
        for mode in [0o600, 0o644, 0o000] {
            let (path, _file) = create_temp(tmp.path(), "t-", mode).unwrap();
            assert_eq!(mode_of(&path) & !mode, 0, "{mode:o}");
        }
    }

    #[test]
    fn put_get_round_trip_and_layout() {
        let (_tmp, cs) = store();
        let id = cs.put(b"chunk bytes").unwrap();
        assert_eq!(id, Hash::of(b"chunk bytes"));
        assert!(cs.has(&id));
        assert_eq!(cs.get(&id).unwrap(), Some(b"chunk bytes".to_vec()));
        let hex = id.to_hex();
        assert!(cs.dir().join(&hex[..2]).join(&hex[2..]).is_file());
        assert_eq!(cs.get(&Hash::of(b"absent")).unwrap(), None);
        // No temporary file is left behind.
        let temps = fs::read_dir(cs.dir()).unwrap().flatten();
        assert!(
            temps
                .into_iter()
                .all(|e| !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn get_returns_what_put_stored(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6)) {
            let (_tmp, cs) = store();
            let ids: Vec<Hash> = chunks.iter().map(|c| cs.put(c).unwrap()).collect();
            for (id, bytes) in ids.iter().zip(&chunks) {
                prop_assert_eq!(*id, Hash::of(bytes));
                prop_assert_eq!(cs.get(id).unwrap(), Some(bytes.clone()));
            }
        }
    }

    #[test]
    fn a_corrupt_chunk_is_deleted_and_reads_as_missing() {
        let (_tmp, cs) = store();
        let id = cs.put(b"good bytes").unwrap();
        fs::write(cs.chunk_path(&id), b"bad bytes!").unwrap();
        assert_eq!(cs.get(&id).unwrap(), None);
        assert!(!cs.has(&id));
        assert_eq!(cs.corrupt_removed(), 1);
        // Storing the chunk again heals it.
        cs.put(b"good bytes").unwrap();
        assert_eq!(cs.get(&id).unwrap(), Some(b"good bytes".to_vec()));
    }

    #[test]
    fn a_kept_version_is_rebuilt_from_its_manifest() {
        let (tmp, cs) = store();
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        let file = tmp.path().join("big.bin");
        fs::write(&file, &data).unwrap();
        let chunks = Chunker::default().chunk_reader(&data[..]).unwrap();
        let entry = FileEntry {
            path: crate::RelPath::new("big.bin").unwrap(),
            kind: EntryKind::File,
            size: data.len() as u64,
            mtime_ns: 0,
            mode: Mode::default(),
            content: content_hash(&chunks),
            chunks: chunks.clone(),
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::new(),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([0; 32]),
                agent: AgentLabel::default(),
                machine: MachineName::default(),
            },
        };
        let kept = cs.put_file_version(&file, &entry).unwrap();
        assert!(kept.matches_entry);
        assert_eq!(kept.chunks, chunks);
        assert_eq!(kept.new_bytes, data.len() as u64);
        let manifest = cs.manifest(&entry.content).unwrap().unwrap();
        let rebuilt: Vec<u8> = manifest
            .iter()
            .flat_map(|c| cs.get(&c.id).unwrap().unwrap())
            .collect();
        assert_eq!(rebuilt, data);
        // Keeping the same version again writes nothing new.
        assert_eq!(cs.put_file_version(&file, &entry).unwrap().new_bytes, 0);
    }

    #[test]
    fn manifests_round_trip_and_reject_garbage() {
        let chunks = vec![
            ChunkRef {
                id: Hash::of(b"a"),
                len: 1,
            },
            ChunkRef {
                id: Hash::of(b"b"),
                len: 2,
            },
        ];
        assert_eq!(decode_manifest(&encode_manifest(&chunks)), Some(chunks));
        assert_eq!(decode_manifest(&[1, 2, 3]), None);
    }
}
