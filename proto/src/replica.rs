//! The seam between a session and a workspace: [`Replica`].
//!
//! A session never touches files. It drives a replica through this narrow trait: bring the
//! index up to date, show Merkle nodes and entries, decide on incoming versions, say which chunks
//! are needed, read and keep chunks, and carry out a plan. `botsync`'s CLI implements it over the
//! engine's workspace, and so does the test replica of proto's own tests (`tests/common/
//! replica.rs`: a workspace in a temporary directory with its index in memory).

use std::collections::HashMap;

use botsync_engine::guard::MassDelete;
use botsync_engine::plan::{ItemReport, PlanItem};
use botsync_engine::{ChunkRef, FileEntry, Hash, PeerId, RelPath};

use crate::messages::{MeshFile, NodeChild, Policy, WireState};

mod state;

pub use state::{state_records, take_state};

/// Verified chunks a session received and holds in memory for the apply that follows, instead
/// of keeping them with [`Replica::put_chunk`]: the single-chunk files of a group, which a
/// session lost before its apply simply fetches again.
pub type HeldChunks = HashMap<Hash, Vec<u8>>;

/// The state of a replica after a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Merkle root over the synced selection.
    pub root: Hash,
    /// Number of files (not tombstones).
    pub files: u64,
    /// Selected files the rescan could not read (`path: reason`), whose changes this session
    /// cannot carry: while any is listed, the session does not report "in sync".
    pub skipped: Vec<String>,
}

/// A designated mesh config file changed by a peer's version (merged into ours, or created).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MeshChange {
    /// The file, workspace-relative.
    pub path: String,
    /// True if the file did not exist here and was created from the peer's version.
    pub created: bool,
    /// JSON pointers of the keys whose value changed here.
    pub keys: Vec<String>,
    /// JSON pointers of keys both sides changed differently (ours was kept).
    pub conflicts: Vec<String>,
    /// Set when the peer's version was not taken: why (our file is not JSON, a disk error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// What taking a peer's state records did ([`Replica::apply_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateApplied {
    /// Keys whose record here changed.
    pub changed: Vec<String>,
    /// Of those, keys where a concurrent write lost and its value was kept for review.
    pub conflicts: Vec<String>,
    /// Records refused (`key: why`): claims this replica cannot believe.
    pub refused: Vec<String>,
}

impl StateApplied {
    /// Add what another batch did.
    pub fn extend(&mut self, other: StateApplied) {
        self.changed.extend(other.changed);
        self.conflicts.extend(other.conflicts);
        self.refused.extend(other.refused);
    }
}

/// A failure inside the replica (disk, index); the session reports it and ends.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReplicaError {
    /// What kind of failure, for the peer and the user (a full disk is said by name).
    pub kind: ReplicaErrorKind,
    /// One line: what failed, where.
    pub message: String,
}

/// The kinds of [`ReplicaError`] a session treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaErrorKind {
    /// The file system is out of space or quota (`ENOSPC`, `EDQUOT`): freeing space fixes it.
    DiskFull,
    /// Anything else (I/O, index, a bug).
    Other,
}

impl ReplicaError {
    /// A failure of kind [`ReplicaErrorKind::Other`] with this text.
    pub fn other(message: impl Into<String>) -> ReplicaError {
        ReplicaError {
            kind: ReplicaErrorKind::Other,
            message: message.into(),
        }
    }

    /// Wrap any error as its one-line text.
    pub fn from_display(e: impl std::fmt::Display) -> ReplicaError {
        ReplicaError::other(e.to_string())
    }

    /// Wrap an error, classified by the I/O error at the bottom of its source chain.
    pub fn from_error(e: &(dyn std::error::Error + 'static)) -> ReplicaError {
        let mut kind = ReplicaErrorKind::Other;
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            {
                kind = ReplicaErrorKind::DiskFull;
            }
            cur = err.source();
        }
        ReplicaError {
            kind,
            message: e.to_string(),
        }
    }

    /// True if the file system is full: the one failure the user fixes by freeing space.
    pub fn is_disk_full(&self) -> bool {
        self.kind == ReplicaErrorKind::DiskFull
    }
}

/// What a session needs from a workspace. Calls are synchronous and may block on disk: the
/// session runs them on a blocking thread.
pub trait Replica: Send + Sync + 'static {
    /// The id of the peer this replica belongs to: whose changes it counts.
    fn local_peer(&self) -> PeerId;

    /// Bring the index up to date with the files (a stat-cache rescan) and return the root.
    fn refresh(&self) -> Result<Snapshot, ReplicaError>;

    /// The paths whose entries changed here since our tree last had `root`, each once, if this
    /// replica remembers that root and every change since (`None` otherwise: the session walks
    /// the tree). A peer whose root is `root` holds the entries we held then, so it differs from
    /// us at most at these paths (feature `direct-offer`).
    fn changed_since(&self, root: Hash) -> Result<Option<Vec<RelPath>>, ReplicaError> {
        let _ = root;
        Ok(None)
    }

    /// The children of a directory of the current Merkle tree (`None`: no such directory).
    fn children(&self, dir: &RelPath) -> Result<Option<Vec<NodeChild>>, ReplicaError>;

    /// Every entry path (files and tombstones) at or below each of `dirs` in the current Merkle
    /// tree: what the other side lacks when it has none of a directory.
    fn paths_under(&self, dirs: &[RelPath]) -> Result<Vec<RelPath>, ReplicaError>;

    /// The current entries (files and tombstones) of these paths; unknown paths are skipped.
    fn entries(&self, paths: &[RelPath]) -> Result<Vec<FileEntry>, ReplicaError>;

    /// Decide, as the receiver, what to do with each incoming version (own selection rules,
    /// reconciliation rule, chunks needed).
    fn plan(&self, incoming: Vec<FileEntry>) -> Result<Vec<PlanItem>, ReplicaError>;

    /// Refuse planned items that would delete more files here than this replica's delete
    /// threshold allows (the session skips the check for `--force` and dry runs).
    fn check_deletes(&self, items: &[PlanItem]) -> Result<(), MassDelete>;

    /// The chunks these items need that exist nowhere locally, each once.
    fn chunks_needed(&self, items: &[PlanItem]) -> Result<Vec<ChunkRef>, ReplicaError>;

    /// A chunk of a file this replica currently advertises, verified (`None` if unavailable, for
    /// instance because the file changed since it was scanned).
    fn read_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError>;

    /// The chunk lists of our current versions of `paths` (files only; unknown paths and
    /// tombstones are left out): where a fetch looks for delta bases (feature `delta`). A
    /// replica that offers none gets whole chunks.
    fn current_chunks(
        &self,
        paths: &[RelPath],
    ) -> Result<Vec<(RelPath, Vec<ChunkRef>)>, ReplicaError> {
        let _ = paths;
        Ok(Vec::new())
    }

    /// The bytes of chunk `id`, verified, to compress a chunk against for a peer that says it
    /// holds `id` (feature `delta`): from our current files like [`Replica::read_chunk`], or from
    /// a version we keep. Never sent to the peer; `None` if we have it nowhere.
    fn read_delta_base(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        self.read_chunk(id)
    }

    /// Keep a received chunk whose bytes were verified against `id`; a re-run of an interrupted
    /// session finds it here and does not fetch it again.
    fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), ReplicaError>;

    /// The disk is full: give back every chunk kept by [`Self::put_chunk`] and not yet applied
    /// (a cache of what an interrupted session would not fetch again), so the retry after the
    /// user frees space fits. Called once a fetch that failed for a full disk has stopped:
    /// streams still reading when one failed may have kept chunks after `put_chunk` itself
    /// released them. A replica that keeps nothing ignores it.
    fn release_kept_chunks(&self) {}

    /// Carry out planned items received from `peer`, in order; report each. Chunks the items
    /// need that are neither in local files nor kept ([`Self::put_chunk`]) come from `held`.
    fn apply(
        &self,
        items: Vec<PlanItem>,
        peer: PeerId,
        held: HeldChunks,
    ) -> Result<Vec<ItemReport>, ReplicaError>;

    /// Remember what `peer` had after a session (its entries seen and its root).
    fn record_peer(
        &self,
        peer: PeerId,
        root: Hash,
        entries: &[FileEntry],
    ) -> Result<(), ReplicaError>;

    /// The peer took our current versions of `paths`: both sides hold them now, so each is the
    /// common ancestor of that path's next merge (docs/CONFLICTS.md, *Merge policies*). Best
    /// effort; a replica without merge policies ignores it.
    fn record_merge_bases(&self, paths: &[RelPath]) {
        let _ = paths;
    }

    /// Our designated mesh config files, stripped of their secrets: what may go to a peer. A
    /// replica without mesh config has none.
    fn mesh_config(&self) -> Result<Vec<MeshFile>, ReplicaError> {
        Ok(Vec::new())
    }

    /// Merge `peer`'s stripped mesh config files into ours, keeping our secrets; files that are
    /// not designated here are ignored. Returns the files that changed.
    fn take_mesh_config(
        &self,
        peer: PeerId,
        files: Vec<MeshFile>,
    ) -> Result<Vec<MeshChange>, ReplicaError> {
        let _ = (peer, files);
        Ok(Vec::new())
    }

    /// `ours` (from [`Replica::mesh_config`]) and `theirs` (what `peer` holds now): the files
    /// both hold with the same content (as JSON documents, key order aside) are the common
    /// ancestor of the next merge with `peer`. True if every file of `ours` is agreed. Best
    /// effort on the recording.
    fn mesh_config_agreed(&self, peer: PeerId, ours: &[MeshFile], theirs: &[MeshFile]) -> bool {
        let _ = peer;
        ours.iter().all(|o| theirs.contains(o))
    }

    /// Our selection rules, for a parity check.
    fn policy(&self) -> Result<Policy, ReplicaError> {
        Ok(Policy::default())
    }

    /// This replica's `state_sync` patterns: the skill state keys it shares (none by default:
    /// no state travels).
    fn state_patterns(&self) -> Vec<String> {
        Vec::new()
    }

    /// The current records (tombstones too) of the keys that match both our `state_sync`
    /// patterns and the peer's `theirs` (none if either list is empty), in key order (the
    /// state digest is taken over them in this order).
    fn state_records(&self, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
        let _ = theirs;
        Ok(Vec::new())
    }

    /// Take state records received from `peer`: keys outside our `state_sync` are ignored,
    /// versions whose claims we cannot believe refused, the rest merged per key.
    fn apply_state(
        &self,
        records: Vec<WireState>,
        peer: PeerId,
    ) -> Result<StateApplied, ReplicaError> {
        let _ = (records, peer);
        Ok(StateApplied::default())
    }
}
