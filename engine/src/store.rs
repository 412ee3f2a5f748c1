//! [`Store`]: the index, a rebuildable cache of what the workspace, the chunk store and the
//! peers already know, typed over a [`Backend`] of ordered trees: sled on disk
//! ([`Store::open`], every line of sled code is in `sled_backend.rs`) or memory
//! ([`Store::in_memory`]). It holds:
//! - `local`: [`RelPath`](crate::RelPath) → [`LocalEntry`](crate::LocalEntry), the current version of each path plus its stat cache;
//! - `chunks`: the chunk-location index, chunk id → [`ChunkLocation`]s (where on disk a chunk's
//!   bytes can be read), kept consistent with `local` in the same transaction;
//! - `peers` / `peer_meta`: what we last knew each peer had, and per-peer facts ([`PeerMeta`]);
//! - `history` / `history_by_path`: append-only [`HistoryRecord`]s;
//! - `kv`: namespaced key-value pairs for later features (locks, generator state), and the
//!   sync log ([`SessionRecord`]s, namespace `sessions`);
//! - `meta`: the schema version, the local peer id and the last scan time.
//!
//! The index is a cache: an index of an older schema `migrate` knows is brought up to date in
//! place; if sled cannot open it, or a record of the schema is missing or unknown, the
//! directory is moved aside (never deleted) and a fresh index is created; [`Store::open`] reports
//! [`OpenOutcome::Rebuilt`] and the caller rescans. A record that fails to decode is skipped and
//! reported through [`Store::take_corruption`], never a panic.
//!
//! It does not read or write workspace files, chunk files ([`crate::chunkstore`]) or decide
//! anything about sync: callers give it values and read them back.

pub mod backend;
mod codec;
mod history;
mod intents;
mod kv;
#[cfg(test)]
mod laws;
mod local;
mod migrate;
mod peers;
mod raft;
mod sessions;
mod sled_backend;
mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backend::{Backend, BackendError, MemoryBackend, Order, Span, Tree, Write};
use sled_backend::{OpenFailure, SledBackend};

use crate::error::{IoContext, IoError};
use crate::peer::PeerId;

pub use history::{HistoryAction, HistoryRecord};
pub use intents::ApplyIntent;
pub use local::{ChunkLocation, LocalUpdate};
pub use peers::PeerMeta;
pub use raft::RaftLog;
pub use sessions::{PATHS_KEPT, SESSIONS_KEPT, SessionRecord};
pub use state::StateTaken;

/// The schema of the index. Bump it when a key layout or value type changes incompatibly: an
/// index of a schema `migrate` knows is brought up to date in place, any other is moved aside
/// and rebuilt from the files. 3: `Mode` holds the nine permission bits instead of the
/// executable bit. 4: an attribution and a history record carry the machine's name.
pub const SCHEMA_VERSION: u32 = 4;

const META_SCHEMA: &[u8] = b"schema_version";
const META_LOCAL_PEER: &[u8] = b"local_peer";
const META_LAST_SCAN: &[u8] = b"last_scan_ns";

/// The index of one workspace.
#[derive(Debug)]
pub struct Store {
    /// The index directory (a label for an index in memory), named in errors.
    dir: PathBuf,
    backend: Arc<dyn Backend>,
    /// Held by every write: a write that reads first (a commit replacing chunk locations, a
    /// compare-and-swap) sees no other write land between its reads and its batch.
    writer: Arc<Mutex<()>>,
    corruption: Mutex<Vec<Corruption>>,
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// There was no index: a fresh one was created.
    Created,
    /// The existing index was opened.
    Opened,
    /// The existing index was unusable; it was moved aside and a fresh one created. The caller
    /// must rescan the workspace.
    Rebuilt {
        /// Why the old index was unusable, and where it was moved.
        reason: String,
    },
}

/// A record that failed to decode and was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The sled tree holding the record.
    pub tree: &'static str,
    /// The record's key, printable (lossy UTF-8 or hex).
    pub key: String,
    /// What was wrong.
    pub reason: String,
}

/// An index failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another botsync process holds the index.
    #[error(
        "index {path} is locked by another botsync process; stop it (or `botsync auto off`) and retry"
    )]
    Locked {
        /// The index directory.
        path: PathBuf,
    },
    /// A storage operation failed.
    #[error("index {path}: {action} failed: {source}")]
    Db {
        /// The index directory.
        path: PathBuf,
        /// What was being done ("reading local entry", ...).
        action: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// Moving a broken index aside or creating the directory failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A value could not be encoded (a bug, not bad data).
    #[error("index: encoding {what} failed: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },
    /// A state key's version counter reached its maximum: the write cannot be counted.
    #[error("state {key}: {source}")]
    StateCounter {
        /// The key.
        key: String,
        /// Whose counter.
        #[source]
        source: crate::vector::CounterExhausted,
    },
    /// A caller-supplied key is not acceptable.
    #[error("index: invalid {what} {value:?}: {reason}")]
    InvalidKey {
        /// Which kind of key.
        what: &'static str,
        /// The key as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl Store {
    /// Open the index in `dir` (usually `.botsync/db`), creating it if missing and rebuilding it
    /// if it is unusable. The old directory of a rebuilt index is kept as `<dir>.corrupt-<n>`.
    pub fn open(dir: &Path) -> Result<(Store, OpenOutcome), StoreError> {
        let existed = dir.exists();
        match wait_for_lock(lock_pauses(), || Store::try_open(dir)) {
            Ok((store, state)) => match state {
                SchemaState::Current => {
                    let outcome = if existed {
                        OpenOutcome::Opened
                    } else {
                        OpenOutcome::Created
                    };
                    Ok((store, outcome))
                }
                SchemaState::Fresh => {
                    store.write_schema()?;
                    Ok((store, OpenOutcome::Created))
                }
                SchemaState::Older(from) => {
                    store.migrate(from)?;
                    Ok((store, OpenOutcome::Opened))
                }
                SchemaState::Unusable(why) => {
                    drop(store);
                    Store::rebuild(dir, why)
                }
            },
            Err(OpenFailure::Locked) => Err(StoreError::Locked {
                path: dir.to_path_buf(),
            }),
            Err(OpenFailure::Unusable(why)) => Store::rebuild(dir, why),
        }
    }

    /// An empty index held in memory: nothing is kept after it is dropped. For replicas that
    /// need no persistence (tests, test peers); the same records and checks as on disk.
    pub fn in_memory() -> Store {
        let store = Store::over(Path::new("(in memory)"), Arc::new(MemoryBackend::new()));
        // Written like a fresh index on disk, so every reader sees the same meta records.
        if let Err(e) = store.write_schema() {
            tracing::warn!(error = %e, "an index in memory refused a write");
        }
        store
    }

    fn over(dir: &Path, backend: Arc<dyn Backend>) -> Store {
        Store {
            dir: dir.to_path_buf(),
            backend,
            writer: Arc::new(Mutex::new(())),
            corruption: Mutex::new(Vec::new()),
        }
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The write turn (see `writer`).
    fn turn(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key` in `tree`; `action` names the read in an error.
    fn get(
        &self,
        tree: Tree,
        key: &[u8],
        action: impl FnOnce() -> String,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend
            .get(tree, key)
            .map_err(|e| self.db_err(action(), e))
    }

    /// `f(key, value)` for each record of `tree` in `span`, in `order`, until it returns false.
    fn scan(
        &self,
        tree: Tree,
        span: &Span,
        order: Order,
        action: impl FnOnce() -> String,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.backend
            .visit(tree, span, order, &mut f)
            .map_err(|e| self.db_err(action(), e))
    }

    /// Apply `batch` atomically, in the write turn the caller holds (or takes here).
    fn write(&self, batch: Vec<Write>, action: impl FnOnce() -> String) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.backend
            .write(batch)
            .map_err(|e| self.db_err(action(), e))
    }

    /// Take the write turn and apply `batch`.
    fn write_now(
        &self,
        batch: Vec<Write>,
        action: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let _turn = self.turn();
        self.write(batch, action)
    }

    /// This workspace's peer id, if recorded.
    pub fn local_peer(&self) -> Result<Option<PeerId>, StoreError> {
        let raw = self.get(Tree::Meta, META_LOCAL_PEER, || "reading local peer".into())?;
        Ok(raw.and_then(|v| {
            let bytes: Result<[u8; 32], _> = v.as_slice().try_into();
            match bytes {
                Ok(b) => Some(PeerId(b)),
                Err(_) => {
                    self.report("meta", META_LOCAL_PEER, "local peer id is not 32 bytes");
                    None
                }
            }
        }))
    }

    /// Record this workspace's peer id.
    pub fn set_local_peer(&self, peer: PeerId) -> Result<(), StoreError> {
        self.write_now(
            vec![Write::Put(
                Tree::Meta,
                META_LOCAL_PEER.to_vec(),
                peer.0.to_vec(),
            )],
            || "writing local peer".into(),
        )
    }

    /// When the last complete scan started (ns since the epoch), if any.
    pub fn last_scan_ns(&self) -> Result<Option<i64>, StoreError> {
        let raw = self.get(Tree::Meta, META_LAST_SCAN, || "reading last scan".into())?;
        Ok(raw.and_then(|v| match <[u8; 8]>::try_from(v.as_slice()) {
            Ok(b) => Some(i64::from_be_bytes(b)),
            Err(_) => {
                self.report("meta", META_LAST_SCAN, "last scan time is not 8 bytes");
                None
            }
        }))
    }

    /// Record when the last complete scan started.
    pub fn set_last_scan_ns(&self, at_ns: i64) -> Result<(), StoreError> {
        self.write_now(
            vec![Write::Put(
                Tree::Meta,
                META_LAST_SCAN.to_vec(),
                at_ns.to_be_bytes().to_vec(),
            )],
            || "writing last scan".into(),
        )
    }

    /// Write everything to disk. sled also flushes in the background every half second; call this
    /// before reporting a sync as complete.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.backend.flush().map_err(|e| self.db_err("flushing", e))
    }

    /// The records skipped as undecodable since the last call (each is also logged).
    pub fn take_corruption(&self) -> Vec<Corruption> {
        let mut guard = self
            .corruption
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *guard)
    }

    /// Note an undecodable record: logged and kept for [`Store::take_corruption`].
    fn report(&self, tree: &'static str, key: &[u8], reason: impl Into<String>) {
        let c = Corruption {
            tree,
            key: codec::printable_key(key),
            reason: reason.into(),
        };
        tracing::warn!(tree = c.tree, key = %c.key, reason = %c.reason, "skipping corrupt index record");
        self.corruption
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(c);
    }

    /// Decode a value, reporting (and dropping) it if it is corrupt.
    fn decode_or_report<T: serde::de::DeserializeOwned>(
        &self,
        tree: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Option<T> {
        match codec::decode(value) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.report(tree, key, reason);
                None
            }
        }
    }

    fn db_err(&self, action: impl Into<String>, source: BackendError) -> StoreError {
        StoreError::Db {
            path: self.dir.clone(),
            action: action.into(),
            source,
        }
    }

    fn try_open(dir: &Path) -> Result<(Store, SchemaState), OpenFailure> {
        let (backend, had_files) = SledBackend::open(dir)?;
        let store = Store::over(dir, Arc::new(backend));
        let state = match store.schema_state() {
            SchemaState::Fresh if had_files => SchemaState::Unusable(
                "its files hold no readable data (sled found nothing valid in them)".into(),
            ),
            state => state,
        };
        Ok((store, state))
    }

    fn schema_state(&self) -> SchemaState {
        match self.backend.get(Tree::Meta, META_SCHEMA) {
            Ok(Some(v)) => match <[u8; 4]>::try_from(v.as_slice()) {
                Ok(b) if u32::from_be_bytes(b) == SCHEMA_VERSION => SchemaState::Current,
                Ok(b)
                    if (migrate::OLDEST_MIGRATED..SCHEMA_VERSION)
                        .contains(&u32::from_be_bytes(b)) =>
                {
                    SchemaState::Older(u32::from_be_bytes(b))
                }
                Ok(b) => SchemaState::Unusable(format!(
                    "schema version {} found, {SCHEMA_VERSION} expected",
                    u32::from_be_bytes(b)
                )),
                Err(_) => SchemaState::Unusable("schema version record is malformed".into()),
            },
            Ok(None) if self.backend.is_empty().unwrap_or(false) => SchemaState::Fresh,
            Ok(None) => SchemaState::Unusable("schema version record is missing".into()),
            Err(e) => SchemaState::Unusable(format!("reading the schema version failed: {e}")),
        }
    }

    fn write_schema(&self) -> Result<(), StoreError> {
        self.write_now(
            vec![Write::Put(
                Tree::Meta,
                META_SCHEMA.to_vec(),
                SCHEMA_VERSION.to_be_bytes().to_vec(),
            )],
            || "writing schema version".into(),
        )?;
        self.flush()
    }

    /// Move `dir` aside to the first free `<dir>.corrupt-<n>` and create a fresh index.
    fn rebuild(dir: &Path, why: String) -> Result<(Store, OpenOutcome), StoreError> {
        let aside = free_aside_name(dir);
        fs::rename(dir, &aside).io_context("moving aside the broken index", dir)?;
        tracing::warn!(index = %dir.display(), moved_to = %aside.display(), reason = %why, "rebuilding the index");
        let reason = format!("{why}; the old index was moved to {}", aside.display());
        match wait_for_lock(lock_pauses(), || Store::try_open(dir)) {
            Ok((store, SchemaState::Fresh)) => {
                store.write_schema()?;
                // Skill state is not a cache: carry it over (issue 14).
                let kept = store.salvage_state(&aside);
                if kept > 0 {
                    tracing::info!(rows = kept, "skill state carried over from the old index");
                }
                Ok((store, OpenOutcome::Rebuilt { reason }))
            }
            Ok((_, SchemaState::Current | SchemaState::Older(_) | SchemaState::Unusable(_)))
            | Err(OpenFailure::Unusable(_)) => Err(StoreError::Io(IoError {
                action: "creating a fresh index",
                path: dir.to_path_buf(),
                source: std::io::Error::other(
                    "the new index directory was not empty or could not be opened",
                ),
            })),
            Err(OpenFailure::Locked) => Err(StoreError::Locked {
                path: dir.to_path_buf(),
            }),
        }
    }
}

/// What the `meta` tree says about the schema.
enum SchemaState {
    Current,
    /// An older schema that `migrate` brings up to date.
    Older(u32),
    Fresh,
    Unusable(String),
}

/// The pauses [`Store::open`] makes between attempts to take the index lock before reporting
/// it taken: 5 ms doubling to 100 ms, 955 ms in all. sled 0.34 releases the lock from a
/// background thread shortly after the last handle of a database is dropped (sled issues
/// #1234, #1289), so a process that closes and reopens its index must wait for it; another
/// process holding the index is reported after these pauses. A fixed schedule, not a deadline:
/// the engine reads no clock.
fn lock_pauses() -> impl Iterator<Item = Duration> {
    (0..13u32).map(|i| Duration::from_millis((5u64 << i.min(5)).min(100)))
}

/// Call `open` until it fails with something other than [`OpenFailure::Locked`] or succeeds,
/// sleeping for each of `pauses` in turn between attempts; still locked after the last pause,
/// the lock is reported.
fn wait_for_lock<T>(
    pauses: impl IntoIterator<Item = Duration>,
    mut open: impl FnMut() -> Result<T, OpenFailure>,
) -> Result<T, OpenFailure> {
    let mut pauses = pauses.into_iter();
    loop {
        match open() {
            Err(OpenFailure::Locked) => match pauses.next() {
                Some(pause) => std::thread::sleep(pause),
                None => return Err(OpenFailure::Locked),
            },
            other => return other,
        }
    }
}

fn free_aside_name(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    let mut n = 1u32;
    loop {
        let candidate = dir.with_file_name(format!("{name}.corrupt-{n}"));
        if !candidate.exists() {
            return candidate;
        }
        n = n.saturating_add(1);
    }
}

#[cfg(test)]
impl Store {
    /// Every raw record of `tree` (tests look under the typed API).
    pub(crate) fn rows(&self, tree: Tree) -> backend::Rows {
        let mut out = Vec::new();
        self.scan(tree, &Span::all(), Order::Ascending, String::new, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    /// Write one raw record (tests forge what an older or broken writer left).
    pub(crate) fn put_raw(&self, tree: Tree, key: &[u8], value: &[u8]) {
        self.write_now(
            vec![Write::Put(tree, key.to_vec(), value.to_vec())],
            String::new,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let (store, outcome) = Store::open(&dir).unwrap();
        assert_eq!(outcome, OpenOutcome::Created);
        store.set_local_peer(PeerId([7; 32])).unwrap();
        store.set_last_scan_ns(42).unwrap();
        store.flush().unwrap();
        drop(store);
        let (store, outcome) = Store::open(&dir).unwrap();
        assert_eq!(outcome, OpenOutcome::Opened);
        assert_eq!(store.local_peer().unwrap(), Some(PeerId([7; 32])));
        assert_eq!(store.last_scan_ns().unwrap(), Some(42));
        assert!(store.take_corruption().is_empty());
    }

    #[test]
    fn an_index_closed_and_reopened_at_once_opens_every_time() {
        // sled lets go of its lock a moment after the handle is dropped: a reopen right after
        // a close must wait for it, not report the index taken by another process.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        for i in 0..20 {
            let (store, _) = Store::open(&dir).unwrap_or_else(|e| panic!("open {i}: {e}"));
            store.set_last_scan_ns(i).unwrap();
            drop(store);
        }
    }

    #[test]
    fn the_lock_is_waited_for_then_reported() {
        let total: Duration = lock_pauses().sum();
        assert_eq!(total, Duration::from_millis(955), "about a second in all");

        let mut attempts = 0;
        let opened = wait_for_lock([Duration::ZERO; 5], || {
            attempts += 1;
            if attempts < 3 {
                Err(OpenFailure::Locked)
            } else {
                Ok("open")
            }
        });
        assert!(matches!(opened, Ok("open")));
        assert_eq!(attempts, 3);

        let mut attempts = 0;
        let held = wait_for_lock([Duration::ZERO; 4], || -> Result<(), _> {
            attempts += 1;
            Err(OpenFailure::Locked)
        });
        assert!(matches!(held, Err(OpenFailure::Locked)));
        assert_eq!(attempts, 5, "one attempt, then one after each pause");

        let mut attempts = 0;
        let broken = wait_for_lock([Duration::ZERO; 5], || -> Result<(), _> {
            attempts += 1;
            Err(OpenFailure::Unusable("bad".into()))
        });
        assert!(matches!(broken, Err(OpenFailure::Unusable(_))));
        assert_eq!(attempts, 1, "only the lock is waited for");
    }

    #[test]
    fn second_open_is_locked_not_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let (_store, _) = Store::open(&dir).unwrap();
        let err = Store::open(&dir).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(!tmp.path().join("db.corrupt-1").exists());
    }

    #[test]
    fn wrong_schema_is_rebuilt_and_kept_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let (store, _) = Store::open(&dir).unwrap();
        store
            .write_now(
                vec![Write::Put(
                    Tree::Meta,
                    META_SCHEMA.to_vec(),
                    999u32.to_be_bytes().to_vec(),
                )],
                String::new,
            )
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let (store, outcome) = Store::open(&dir).unwrap();
        let OpenOutcome::Rebuilt { reason } = outcome else {
            panic!("expected a rebuild")
        };
        assert!(reason.contains("schema version 999"), "{reason}");
        assert!(tmp.path().join("db.corrupt-1").is_dir());
        assert_eq!(store.local_peer().unwrap(), None);
    }

    #[test]
    fn aside_names_do_not_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        std::fs::create_dir(tmp.path().join("db.corrupt-1")).unwrap();
        assert_eq!(free_aside_name(&dir), tmp.path().join("db.corrupt-2"));
    }
}
