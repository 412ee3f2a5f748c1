//! [`Workspace`]: one opened workspace, tying the scanner, the index, the chunk store, the
//! Merkle tree, the reconciliation rule and apply together.
//!
//! This is the engine's front door for drivers (the CLI, the session's replica). It holds no
//! network code and reads no clock: callers pass `now_ns`. It owns the on-disk layout of
//! `.botsync/` (PRODUCT.md §3) except the identity and `peers.json`, which the CLI and proto own.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::apply::{self, ApplyError, ChunkSource, SourceError};
use crate::chunk::ChunkerParams;
use crate::chunkstore::{ChunkStore, ChunkStoreError, GcReport, duration_ns};
use crate::config::{ConfigError, SyncConfig};
use crate::conflicts::{ConflictError, ConflictStore};
use crate::entry::{FileEntry, LocalEntry};
use crate::error::{IoContext, IoError};
use crate::hash::Hash;
use crate::layout::{Layout, SUBDIRS};
use crate::merkle::MerkleChild;
use crate::path::RelPath;
use crate::peer::{Attribution, MachineName, PeerId};
use crate::reconcile::Policies;
use crate::rules::{Decision, RulesError, Selection};
use crate::scan::{self, ChangeKind, ScanContext, ScanError, ScanSummary};
use crate::secrets::SecretRules;
use crate::store::{LocalUpdate, OpenOutcome, Store, StoreError};

mod journal;
mod local_versions;
mod merge;
mod mirror;
mod receive;
mod review;
mod verify;

pub use self::local_versions::{DeferredKept, INLINE_KEEP};
use self::mirror::Mirror;
pub use self::review::{Keep, Resolution, Restored, ReviewError};
pub use self::verify::{Damaged, RepairReport, VerifyReport};

/// Why a workspace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// No `.botsync/` at the root.
    #[error(
        "{} is not a botsync workspace (no .botsync/ directory); run `botsync init` there or pass -w DIR",
        .0.display()
    )]
    NotAWorkspace(PathBuf),
    /// `config.json` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A selection pattern is invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The index failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chunk store failed.
    #[error(transparent)]
    ChunkStore(#[from] ChunkStoreError),
    /// The scan could not run.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Applying a version failed (the old file is intact).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Keeping or reading a conflict record failed.
    #[error(transparent)]
    Conflicts(#[from] ConflictError),
    /// A review or restore request was refused (nothing was changed).
    #[error(transparent)]
    Review(#[from] ReviewError),
}

/// [`Workspace::collect_garbage`] runs at most once a day.
pub const GC_INTERVAL_NS: i64 = 24 * 60 * 60 * 1_000_000_000;
const GC_NAMESPACE: &str = "gc";
const GC_LAST_RUN: &str = "last_run_ns";

/// Index updates per sled transaction when committing a scan.
const COMMIT_SLICE: usize = 512;

/// One opened workspace.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    config: SyncConfig,
    selection: Selection,
    store: Store,
    chunks: ChunkStore,
    conflicts: ConflictStore,
    /// The merge policy of each path (config.json's `merge` rules, then the defaults).
    policies: Policies,
    /// The secret guard's settings (`secret_keys`, `secret_patterns`, `secret_allow`).
    secrets: SecretRules,
    local: Attribution,
    /// The local index in memory (decoded once at open) and its Merkle tree, kept in step with
    /// every commit this workspace makes.
    mirror: Mutex<Mirror>,
}

/// Where a workspace keeps its index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IndexKind {
    /// `.botsync/db` on disk: what the workspace knows (version vectors, what each peer had,
    /// history) survives a restart.
    #[default]
    OnDisk,
    /// In memory: the index starts empty at every open and is lost with the process, so the
    /// first refresh records every file as a local change. For replicas that live as long as
    /// one process (test peers); the files, the chunk store and every rule are as on disk.
    InMemory,
}

/// What a refresh found.
#[derive(Debug, Clone)]
pub struct Refresh {
    /// What the scan found (its entries are in the index now).
    pub scan: ScanSummary,
    /// The Merkle root afterwards.
    pub root: Hash,
    /// Files (not tombstones) in the index afterwards.
    pub files: u64,
}

impl Workspace {
    /// Create `.botsync/` under `root` with a default `config.json` (kept if present).
    /// Returns true if the workspace was new.
    pub fn init(root: &Path, name: Option<&str>) -> Result<bool, WorkspaceError> {
        let layout = Layout::new(root);
        let state = layout.state();
        let fresh = !state.is_dir();
        for sub in SUBDIRS {
            let dir = state.join(sub);
            fs::create_dir_all(&dir).io_context("creating", &dir)?;
        }
        let config_path = layout.config();
        if !config_path.exists() {
            let config = SyncConfig {
                name: name.map(str::to_owned),
                ..SyncConfig::default()
            };
            config.save(&config_path)?;
        }
        Ok(fresh)
    }

    /// Open an existing workspace as `local` (this peer and the agent making changes). An empty
    /// `local.machine` becomes the workspace's own name: the config's `name`, or the name of
    /// the root directory.
    pub fn open(
        root: &Path,
        local: Attribution,
    ) -> Result<(Workspace, OpenOutcome), WorkspaceError> {
        Workspace::open_with(root, local, IndexKind::OnDisk)
    }

    /// [`Workspace::open`] with its index where `index` says.
    pub fn open_with(
        root: &Path,
        mut local: Attribution,
        index: IndexKind,
    ) -> Result<(Workspace, OpenOutcome), WorkspaceError> {
        let layout = Layout::new(root);
        let state = layout.state().to_path_buf();
        if !state.is_dir() {
            return Err(WorkspaceError::NotAWorkspace(root.to_path_buf()));
        }
        let config = SyncConfig::load(&layout.config())?;
        if local.machine.as_str().is_empty() {
            let dir_name = root.file_name().map(|n| n.to_string_lossy());
            local.machine =
                MachineName::new(config.name.as_deref().or(dir_name.as_deref()).unwrap_or(""));
        }
        let selection = Selection::new(&config)?;
        let policies = Policies::new(&config.merge).map_err(|problem| ConfigError::Invalid {
            path: layout.config(),
            problem,
        })?;
        let secrets = config
            .secret_rules()
            .map_err(|problem| ConfigError::Invalid {
                path: layout.config(),
                problem,
            })?;
        for sub in SUBDIRS {
            let dir = state.join(sub);
            fs::create_dir_all(&dir).io_context("creating", &dir)?;
        }
        let (store, outcome) = match index {
            IndexKind::OnDisk => Store::open(&layout.db())?,
            IndexKind::InMemory => (Store::in_memory(), OpenOutcome::Created),
        };
        store.set_local_peer(local.peer)?;
        let chunks = ChunkStore::open(&layout.store())?;
        // Before the index is read: an apply killed between its renames and its index commit
        // left files the index does not know yet (apply/recover.rs).
        apply::recover(root, &store)?;
        let mirror = Mirror::load(&store)?;
        let ws = Workspace {
            root: root.to_path_buf(),
            config,
            selection,
            store,
            chunks,
            conflicts: ConflictStore::new(&layout.conflicts()),
            policies,
            secrets,
            local,
            mirror: Mutex::new(mirror),
        };
        Ok((ws, outcome))
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The loaded configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The index.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Who changes made here are attributed to.
    pub fn local(&self) -> &Attribution {
        &self.local
    }

    /// Bring the index up to date with the files (stat-cache rescan) and rebuild the tree.
    pub fn refresh(&self, now_ns: i64) -> Result<Refresh, WorkspaceError> {
        self.settle_intents()?;
        // A snapshot, not a copy: other sessions read the mirror while the scan hashes.
        let prev = self.lock()?.snapshot();
        let report = scan::scan(&self.scan_context(now_ns), &prev)?;
        // Released before the mirror is updated, so the update is in place (no copy).
        drop(prev);
        self.commit_scan(report, now_ns)
    }

    /// Bring the index up to date with what is at `scopes` only (paths a file-system watcher
    /// reported: directories with what is below them, or single files). Falls back to a full
    /// [`Workspace::refresh`] when a scope cannot be scanned on its own (it vanished, is a
    /// symlink, is spelled differently on disk): a partial view never records a deletion the
    /// full scan would not.
    pub fn refresh_under(
        &self,
        scopes: &[RelPath],
        now_ns: i64,
    ) -> Result<Refresh, WorkspaceError> {
        self.settle_intents()?;
        let prev = self.lock()?.snapshot();
        let report = scan::scan_under(&self.scan_context(now_ns), &prev, scopes)?;
        drop(prev);
        match report {
            Some(report) => self.commit_scan(report, now_ns),
            None => self.refresh(now_ns),
        }
    }

    /// Record the files an earlier apply renamed into place but could not record (a failure
    /// after the rename; a crash is settled by [`Workspace::open`]), so the scan does not take
    /// them for local edits.
    fn settle_intents(&self) -> Result<(), WorkspaceError> {
        let recovery = apply::recover(&self.root, &self.store)?;
        if !recovery.recorded.is_empty() {
            self.reload(&recovery.recorded)?;
        }
        Ok(())
    }

    fn scan_context(&self, now_ns: i64) -> ScanContext<'_> {
        ScanContext {
            root: &self.root,
            selection: &self.selection,
            local: self.local.clone(),
            now_ns,
            chunker: ChunkerParams::DEFAULT,
            secrets: Some(&self.secrets),
        }
    }

    /// Store what a scan found: the index, then the mirror and its tree.
    fn commit_scan(
        &self,
        report: scan::ScanReport,
        now_ns: i64,
    ) -> Result<Refresh, WorkspaceError> {
        // The entries move on into the updates (then the mirror): a first scan of a large
        // workspace must not hold two copies of every entry.
        let (summary, changes, refreshed) = report.into_parts();
        let before = self.lock()?.snapshot();
        let (kept, deferred) = self.keep_scanned_versions(&before, &changes, now_ns);
        // Released before the mirror is updated, so the update is in place (no copy).
        drop(before);
        let updates: Vec<LocalUpdate> = changes
            .into_iter()
            .map(|c| match c.kind {
                ChangeKind::Unselected => LocalUpdate::Remove(c.entry.entry.path),
                _ => LocalUpdate::Put(c.entry),
            })
            .chain(refreshed.into_iter().map(LocalUpdate::Put))
            .collect();
        // Commit in slices: one sled transaction buffers all its writes in memory, and a first
        // scan of a large workspace has an update per file. Each update stands alone (a crash
        // between slices leaves a partly refreshed stat cache, which the next scan completes).
        for slice in updates.chunks(COMMIT_SLICE) {
            self.store.commit_local(slice.to_vec())?;
        }
        self.store.set_last_scan_ns(now_ns)?;
        if !updates.is_empty() {
            // Durable before any peer can be told: a counter bump lost to a crash would be
            // issued again for other bytes, and the peer holding the first would see one
            // version with two contents.
            self.store.flush()?;
        }
        if let Err(e) = self.store.history_append_many(&kept) {
            // The copies stay in the store until collected; only `history` misses them.
            tracing::warn!(error = %e, "could not record the local versions kept for restore");
        }
        let (root, files) = {
            let mut m = self.lock()?;
            for u in updates {
                match u {
                    LocalUpdate::Put(e) => m.put(e),
                    LocalUpdate::Remove(p) => m.remove(&p),
                }
            }
            let s = m.noted_summary();
            (s.root, s.files)
        };
        if deferred {
            self.set_deferred(true);
        }
        Ok(Refresh {
            scan: summary,
            root,
            files,
        })
    }

    /// The Merkle root and file count of the index as it is (no rescan; the index is not
    /// loaded into memory for it).
    pub fn snapshot(&self) -> (Hash, u64) {
        let s = self.lock_as_is().noted_summary();
        (s.root, s.files)
    }

    /// The paths whose entries changed here (or left the tree) since our tree last had `root`,
    /// each once, if we remember that root (one of our last 64, in this process or the index
    /// it opened) and every change since: a peer whose root is `root` holds exactly the
    /// entries we held then, so it differs from us at most there. `None` if not known; the
    /// session then walks the tree.
    pub fn changed_since(&self, root: Hash) -> Result<Option<Vec<RelPath>>, WorkspaceError> {
        Ok(self.lock()?.changed_since(root))
    }

    /// Children of a directory in the Merkle tree.
    pub fn children(&self, dir: &RelPath) -> Result<Option<Vec<MerkleChild>>, WorkspaceError> {
        Ok(self.lock()?.tree.children(dir))
    }

    /// Every entry path (files and tombstones) at or below each of `dirs` in the Merkle tree.
    pub fn paths_under(&self, dirs: &[RelPath]) -> Result<Vec<RelPath>, WorkspaceError> {
        let m = self.lock()?;
        Ok(dirs
            .iter()
            .flat_map(|d| m.tree.entry_paths_under(d))
            .collect())
    }

    /// The current entries of `paths` (files and tombstones) as peers may see them; unknown
    /// paths are skipped, and so are files damaged on disk awaiting a peer's copy (their entry
    /// has an empty version vector: it claims nothing, see `workspace/verify.rs`).
    pub fn entries(&self, paths: &[RelPath]) -> Result<Vec<FileEntry>, WorkspaceError> {
        let m = self.lock()?;
        Ok(paths
            .iter()
            .filter_map(|p| m.index.get(p))
            .filter(|l| !l.entry.version.is_empty())
            .map(|l| l.entry.clone())
            .collect())
    }

    /// A chunk of a file we currently advertise, read from that file and verified. `None` if no
    /// indexed file holds it any more (it changed since the scan).
    pub fn read_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, WorkspaceError> {
        // Loaded here, so that an index that cannot be read is an error, not a missing chunk.
        drop(self.lock()?);
        Ok(self.store.find_chunk(id, |loc| {
            let current = self
                .lock()
                .ok()?
                .index
                .get(&loc.path)
                .map(|l| l.entry.content);
            if current != Some(loc.content)
                || self.selection.decide(&loc.path, false) != Decision::Synced
            {
                return None;
            }
            let fs_path = loc.path.on_disk(&self.root);
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&fs_path)
                .ok()?;
            let mut buf = vec![0u8; loc.len as usize];
            f.seek(SeekFrom::Start(loc.offset)).ok()?;
            f.read_exact(&mut buf).ok()?;
            (Hash::of(&buf) == *id).then_some(buf)
        })?)
    }

    /// A chunk from the chunk store (kept versions, merge bases, staged chunks), verified; `None`
    /// if the store does not hold it. For compressing against a version a peer holds (a merge
    /// base is the version both sides last agreed on): never for serving content.
    pub fn read_kept_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, WorkspaceError> {
        Ok(self.chunks.get(id)?)
    }

    /// Enforce the retention setting (`retention_days` of config.json): remove kept versions,
    /// staged chunks and history records older than it. Runs at most once per [`GC_INTERVAL_NS`]
    /// (the time of the last run is in the index); returns `None` when it was not due. Files the
    /// collection cannot remove are reported in the [`GcReport`] and left for the next run.
    pub fn collect_garbage(&self, now_ns: i64) -> Result<Option<GcReport>, WorkspaceError> {
        let last = self
            .store
            .kv_get(GC_NAMESPACE, GC_LAST_RUN)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(i64::from_be_bytes);
        if last.is_some_and(|at| (0..GC_INTERVAL_NS).contains(&now_ns.saturating_sub(at))) {
            return Ok(None);
        }
        let retention = Duration::from_secs(u64::from(self.config.retention_days) * 24 * 60 * 60);
        let report = self.chunks.gc(retention, now_ns, |_| false)?;
        let horizon = now_ns.saturating_sub(duration_ns(retention));
        let pruned = self.store.history_prune(horizon)?;
        self.store
            .kv_put(GC_NAMESPACE, GC_LAST_RUN, &now_ns.to_be_bytes())?;
        tracing::info!(
            removed = report.removed,
            bytes = report.bytes_removed,
            failures = report.failures.len(),
            history_pruned = pruned,
            "chunk store collected"
        );
        Ok(Some(report))
    }

    /// Remember what `peer` had after a session.
    pub fn record_peer(&self, peer: PeerId, entries: &[FileEntry]) -> Result<(), WorkspaceError> {
        self.store.peer_put_many(&peer, entries.iter())?;
        Ok(())
    }

    /// Re-read `paths` from the index into the mirror after apply committed them.
    fn reload(&self, paths: &[RelPath]) -> Result<(), WorkspaceError> {
        let fresh: Vec<(RelPath, Option<LocalEntry>)> = paths
            .iter()
            .map(|p| Ok((p.clone(), self.store.local_get(p)?)))
            .collect::<Result<_, StoreError>>()?;
        let mut m = self.lock()?;
        for (path, entry) in fresh {
            match entry {
                Some(e) => m.put(e),
                None => m.remove(&path),
            }
        }
        Ok(())
    }

    /// The mirror, loaded back into memory first if it was unloaded.
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Mirror>, WorkspaceError> {
        let mut m = self.lock_as_is();
        m.ensure_loaded(&self.store)?;
        Ok(m)
    }

    /// The mirror as it is, loaded or not: for its summary and for unloading it.
    fn lock_as_is(&self) -> std::sync::MutexGuard<'_, Mirror> {
        // A panic while holding the lock leaves the mirror at worst stale, never torn: each
        // update is one map insert and one tree insert.
        self.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Let go of the in-memory index and Merkle tree if nothing used them since the last call
    /// (a daemon at rest calls this now and then); the root and the file count stay, so a
    /// no-op sync does not load them again. The next scan, plan or descent decodes the index
    /// from disk again. Returns how many entries were dropped (0: kept).
    pub fn unload_index_if_unused(&self) -> usize {
        self.lock_as_is().unload_if_unused()
    }

    /// True while the local index is in memory (see [`Workspace::unload_index_if_unused`]).
    pub fn index_in_memory(&self) -> bool {
        self.lock_as_is().is_loaded()
    }
}

/// The chunk source of apply during a sync: every needed chunk was staged in the chunk store
/// first, so there is nothing more to give.
struct NoSource;

impl ChunkSource for NoSource {
    fn fetch(&mut self, _id: &Hash, _len: u32) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(None)
    }
}

/// True if the bottom of `e`'s source chain is an out-of-space (or quota) I/O error.
fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}
