//! The session seam over a real workspace: `botsync_proto::Replica` for the engine's
//! [`Workspace`], with the clock read here (the engine reads none).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use botsync_engine::guard::MassDelete;
use botsync_engine::plan::{ItemReport, Outcome, PlanItem};
use botsync_engine::workspace::{Refresh, RepairReport, VerifyReport, Workspace, WorkspaceError};
use botsync_engine::{ChunkRef, FileEntry, Hash, PeerId, RelPath};
use botsync_proto::messages::{MeshFile, NodeChild, Policy, WireState};
use botsync_proto::replica::{
    HeldChunks, MeshChange, Replica, ReplicaError, Snapshot, StateApplied,
};

use super::cookie::{BARRIER_TIMEOUT, Cookies};
use super::mesh_config::MeshConfigs;
use super::own_writes::OwnWrites;
use super::pending::{Pending, PendingScan};
use super::state_sync::{self, StateChanges};

/// Environment variable for tests: abort the process after this many received chunks, to
/// simulate a sync killed mid-transfer at a reproducible point.
pub const ABORT_AFTER_CHUNKS_ENV: &str = "BOTSYNC_TEST_ABORT_AFTER_CHUNKS";

/// A workspace driven by sessions.
#[derive(Debug)]
pub struct LiveReplica {
    ws: Workspace,
    /// Held while the workspace changes (rescan, apply): concurrent sessions take turns there.
    writer: Mutex<()>,
    abort_after: Option<u64>,
    received: AtomicU64,
    /// Set when a watcher reports every change: a refresh rescans only when something may have
    /// changed since the last one. Unset (no watcher): every refresh rescans.
    watched: AtomicBool,
    /// What may have changed since the last rescan (meaningful only when `watched`).
    pending: PendingScan,
    /// The barrier a refresh passes before it trusts `pending` (see `cookie.rs`).
    cookies: Cookies,
    /// Files this process wrote by applying remote versions: their file-system events are our
    /// own doing, not local changes.
    own: OwnWrites,
    /// The Merkle root after every rescan and apply, for whoever waits for changes (the daemon).
    root: tokio::sync::watch::Sender<RootChange>,
    /// Rescans that walked the tree (for status and tests).
    rescans: AtomicU64,
    /// Of those, the ones that walked only the paths the watcher reported.
    partial_rescans: AtomicU64,
    /// Skill state keys changed since the daemon last looked (regeneration).
    state: StateChanges,
}

/// The workspace's Merkle root changed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootChange {
    /// The root now.
    pub root: Hash,
    /// True if a rescan found local changes; false if a peer's versions were applied.
    pub local: bool,
}

impl LiveReplica {
    /// Wrap an opened workspace.
    pub fn new(ws: Workspace) -> LiveReplica {
        let abort_after = std::env::var(ABORT_AFTER_CHUNKS_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        let (root, _) = ws.snapshot();
        let own = OwnWrites::new(ws.root());
        LiveReplica {
            ws,
            abort_after,
            received: AtomicU64::new(0),
            writer: Mutex::new(()),
            watched: AtomicBool::new(false),
            pending: PendingScan::default(),
            cookies: Cookies::default(),
            own,
            root: tokio::sync::watch::Sender::new(RootChange { root, local: false }),
            rescans: AtomicU64::new(0),
            partial_rescans: AtomicU64::new(0),
            state: StateChanges::default(),
        }
    }

    /// The skill state keys changed since the daemon last took them.
    pub fn state_changes(&self) -> &StateChanges {
        &self.state
    }

    /// A watcher now reports every change: refreshes skip the rescan while nothing changed.
    pub fn set_watched(&self, on: bool) {
        self.watched.store(on, Ordering::SeqCst);
        self.pending.everything();
    }

    /// Anything in the workspace may have changed: the next refresh rescans it all.
    pub fn mark_dirty(&self) {
        self.pending.everything();
    }

    /// These paths (workspace-relative, reported by the watcher) may have changed: the next
    /// refresh rescans them, not the whole workspace.
    pub fn note_changed<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        self.pending.paths(paths);
    }

    /// The watcher saw the file `name` in the workspace root: true if it is one of our cookies
    /// (then it is no change, and the refresh waiting for it goes on).
    pub fn note_cookie(&self, name: &str) -> bool {
        match Cookies::parse(name) {
            Some(n) => {
                self.cookies.seen(n);
                true
            }
            None => false,
        }
    }

    /// Forget the expired notes of our own writes and the memory they took (the daemon's
    /// periodic tidy-up: without events nothing else expires them).
    pub fn forget_old_writes(&self) {
        self.own.expire();
    }

    /// True if the file-system event on `rel` is our own apply's doing.
    pub fn is_own_write(&self, rel: &str) -> bool {
        self.own.is_ours(rel)
    }

    /// Rescans since the workspace was opened: all of them, and the partial ones among them.
    pub fn rescans(&self) -> (u64, u64) {
        (
            self.rescans.load(Ordering::SeqCst),
            self.partial_rescans.load(Ordering::SeqCst),
        )
    }

    /// Follow the Merkle root: every rescan that changed it and every apply.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<RootChange> {
        self.root.subscribe()
    }

    /// Rescan now, whatever the watcher says (`botsync scan`, the periodic full rescan).
    pub fn rescan(&self) -> Result<Refresh, WorkspaceError> {
        let _turn = self.turn();
        self.pending.take();
        self.rescan_locked(None)
    }

    /// Make a local change through the engine (`conflicts resolve`, `restore`): under the
    /// writer lock, after a rescan (so edits made so far are recorded and kept, never
    /// clobbered); the new root is announced like any local change.
    pub fn local_change<T>(
        &self,
        change: impl FnOnce(&Workspace, i64) -> Result<T, WorkspaceError>,
    ) -> Result<T, WorkspaceError> {
        let _turn = self.turn();
        self.pending.take();
        self.rescan_locked(None)?;
        let out = change(&self.ws, now_ns());
        let (root, _) = self.ws.snapshot();
        self.root.send_if_modified(|c| {
            let changed = c.root != root;
            if changed {
                *c = RootChange { root, local: true };
            }
            changed
        });
        out
    }

    /// Wait until no rescan or apply runs, and keep it so while the guard lives (shutdown).
    pub fn quiesce(&self) -> std::sync::MutexGuard<'_, ()> {
        self.turn()
    }

    /// Rescan `scopes` (the paths the watcher reported), or everything.
    fn rescan_locked(&self, scopes: Option<&[RelPath]>) -> Result<Refresh, WorkspaceError> {
        self.rescans.fetch_add(1, Ordering::SeqCst);
        let r = match scopes {
            Some(scopes) => {
                self.partial_rescans.fetch_add(1, Ordering::SeqCst);
                self.ws.refresh_under(scopes, now_ns())
            }
            None => self.ws.refresh(now_ns()),
        };
        match &r {
            // A skipped file (changed while read) must be looked at again.
            Ok(r) if !r.scan.skipped.is_empty() => self.mark_dirty(),
            Ok(_) => {}
            Err(_) => self.mark_dirty(),
        }
        let r = r?;
        self.root.send_if_modified(|c| {
            let changed = c.root != r.root;
            if changed {
                *c = RootChange {
                    root: r.root,
                    local: true,
                };
            }
            changed
        });
        Ok(r)
    }

    /// Re-read every synced file and stored chunk against the index (`botsync verify`).
    pub fn verify(&self) -> Result<VerifyReport, WorkspaceError> {
        self.ws.verify()
    }

    /// Repair damaged files (`verify --repair`), as an apply: under the writer turn, its
    /// writes known as our own, the new root published.
    pub fn repair(&self, paths: &[RelPath]) -> Result<RepairReport, WorkspaceError> {
        let _turn = self.turn();
        self.own.applying(paths.iter().map(|p| p.as_str()));
        let report = self.ws.repair(paths, now_ns());
        let restored = report
            .as_ref()
            .map(|r| r.restored.clone())
            .unwrap_or_default();
        self.own
            .applied(paths.iter().map(|p| (p.as_str(), restored.contains(p))));
        let report = report?;
        let (root, _) = self.ws.snapshot();
        self.root.send_if_modified(|c| {
            let changed = c.root != root;
            if changed {
                *c = RootChange { root, local: true };
            }
            changed
        });
        Ok(report)
    }

    /// The workspace.
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    fn turn(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a poisoned lock carries no broken state.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn err<E: std::error::Error + 'static>(e: E) -> ReplicaError {
    ReplicaError::from_error(&e)
}

impl Replica for LiveReplica {
    fn local_peer(&self) -> PeerId {
        self.ws.local().peer
    }

    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        let _turn = self.turn();
        // What the watcher noted is complete only once it has read every event queued so far:
        // a file written a moment ago may still wait in the kernel's queue.
        if self.watched.load(Ordering::SeqCst)
            && !self.cookies.barrier(self.ws.root(), BARRIER_TIMEOUT)
        {
            self.pending.everything();
        }
        let pending = self.pending.take();
        let scopes: Option<Vec<RelPath>> = match pending {
            _ if !self.watched.load(Ordering::SeqCst) => None,
            Pending::Clean => {
                // The watcher saw nothing since the last rescan: the index is the tree.
                // (A rescan that skipped a file left everything pending: nothing is skipped.)
                let (root, files) = self.ws.snapshot();
                return Ok(Snapshot {
                    root,
                    files,
                    skipped: Vec::new(),
                });
            }
            Pending::Paths(paths) => Some(paths.into_iter().collect()),
            Pending::Everything => None,
        };
        let r = self.rescan_locked(scopes.as_deref()).map_err(err)?;
        Ok(Snapshot {
            root: r.root,
            files: r.files,
            skipped: r
                .scan
                .skipped
                .iter()
                .filter(|s| s.reason.leaves_changes_unsynced())
                .map(|s| s.to_string())
                .collect(),
        })
    }

    fn changed_since(&self, root: Hash) -> Result<Option<Vec<RelPath>>, ReplicaError> {
        self.ws.changed_since(root).map_err(err)
    }

    fn children(&self, dir: &RelPath) -> Result<Option<Vec<NodeChild>>, ReplicaError> {
        Ok(self
            .ws
            .children(dir)
            .map_err(err)?
            .map(|children| children.into_iter().map(NodeChild::from).collect()))
    }

    fn paths_under(&self, dirs: &[RelPath]) -> Result<Vec<RelPath>, ReplicaError> {
        self.ws.paths_under(dirs).map_err(err)
    }

    fn entries(&self, paths: &[RelPath]) -> Result<Vec<FileEntry>, ReplicaError> {
        self.ws.entries(paths).map_err(err)
    }

    fn plan(&self, incoming: Vec<FileEntry>) -> Result<Vec<PlanItem>, ReplicaError> {
        self.ws.plan(incoming).map_err(err)
    }

    fn check_deletes(&self, items: &[PlanItem]) -> Result<(), MassDelete> {
        self.ws.check_deletes(items)
    }

    fn chunks_needed(&self, items: &[PlanItem]) -> Result<Vec<ChunkRef>, ReplicaError> {
        self.ws.chunks_needed(items).map_err(err)
    }

    fn read_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        self.ws.read_chunk(id).map_err(err)
    }

    fn current_chunks(
        &self,
        paths: &[RelPath],
    ) -> Result<Vec<(RelPath, Vec<ChunkRef>)>, ReplicaError> {
        let entries = self.ws.entries(paths).map_err(err)?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_tombstone())
            .map(|e| (e.path, e.chunks))
            .collect())
    }

    /// Our current files first, then the chunk store: after a local edit, the version the peer
    /// holds is still there as the merge base this side kept when the peer took it.
    fn read_delta_base(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        match self.ws.read_chunk(id).map_err(err)? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.ws.read_kept_chunk(id).map_err(err),
        }
    }

    fn state_patterns(&self) -> Vec<String> {
        self.ws.config().state_sync.clone()
    }

    fn state_records(&self, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
        state_sync::records(&self.ws, theirs)
    }

    fn apply_state(
        &self,
        records: Vec<WireState>,
        peer: PeerId,
    ) -> Result<StateApplied, ReplicaError> {
        let applied = state_sync::apply(&self.ws, records, peer)?;
        self.state.note(applied.changed.iter().cloned(), false);
        Ok(applied)
    }

    fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), ReplicaError> {
        self.ws.put_chunk(id, bytes).map_err(err)?;
        let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_after.is_some_and(|limit| n >= limit) {
            eprintln!("botsync: test abort after {n} chunks ({ABORT_AFTER_CHUNKS_ENV})");
            std::process::exit(86);
        }
        Ok(())
    }

    fn apply(
        &self,
        items: Vec<PlanItem>,
        _peer: PeerId,
        mut held: HeldChunks,
    ) -> Result<Vec<ItemReport>, ReplicaError> {
        let _turn = self.turn();
        // Noted before the files change: their watcher events may arrive before we return.
        self.own.applying(items.iter().map(|i| i.path().as_str()));
        let reports = self.ws.apply_with(items, now_ns(), &mut held);
        let reports = match reports {
            Ok(r) => r,
            Err(e) => {
                self.own.applied(std::iter::empty());
                self.mark_dirty();
                return Err(err(e));
            }
        };
        self.own.applied(reports.iter().map(|r| {
            let done = matches!(r.outcome, Outcome::Done | Outcome::Unchanged);
            (r.path.as_str(), done)
        }));
        // A path the apply found changed on disk holds a local edit the index has not seen yet
        // (made in the instant before the apply): the next refresh rescans it.
        self.note_changed(
            reports
                .iter()
                .filter(|r| r.outcome == Outcome::LocalChanged)
                .map(|r| r.path.as_str()),
        );
        let (root, _) = self.ws.snapshot();
        self.root.send_if_modified(|c| {
            let changed = c.root != root;
            if changed {
                *c = RootChange { root, local: false };
            }
            changed
        });
        // Retention is enforced where the store grows, at most once a day. A failed collection
        // costs only disk space until the next one: it must not fail the sync.
        if let Err(e) = self.ws.collect_garbage(now_ns()) {
            tracing::warn!(error = %e, "chunk store collection failed; retried at the next sync");
        }
        Ok(reports)
    }

    fn record_peer(
        &self,
        peer: PeerId,
        _root: Hash,
        entries: &[FileEntry],
    ) -> Result<(), ReplicaError> {
        self.ws.record_peer(peer, entries).map_err(err)
    }

    fn record_merge_bases(&self, paths: &[RelPath]) {
        self.ws.record_merge_bases(paths);
    }

    fn release_kept_chunks(&self) {
        self.ws.release_staged_chunks();
    }

    fn mesh_config(&self) -> Result<Vec<MeshFile>, ReplicaError> {
        Ok(self.mesh()?.stripped())
    }

    fn take_mesh_config(
        &self,
        peer: PeerId,
        files: Vec<MeshFile>,
    ) -> Result<Vec<MeshChange>, ReplicaError> {
        // Two sessions merging into the same file take turns.
        let _turn = self.turn();
        let mesh = self.mesh()?;
        // Our writes of these files are not edits: the watcher must not start a sync for them.
        let designated = self.mesh_paths();
        self.own.applying(designated.iter().map(String::as_str));
        let changes = mesh.take(peer, files);
        self.own
            .applied(designated.iter().map(|p| (p.as_str(), true)));
        Ok(changes)
    }

    fn mesh_config_agreed(&self, peer: PeerId, ours: &[MeshFile], theirs: &[MeshFile]) -> bool {
        match self.mesh() {
            Ok(m) => m.record_agreed(peer, ours, theirs),
            Err(_) => false,
        }
    }

    fn policy(&self) -> Result<Policy, ReplicaError> {
        Ok(Policy::of(botsync_engine::rules::describe(
            self.ws.config(),
        )))
    }
}

impl LiveReplica {
    /// The workspace-relative paths of the designated mesh config files (none if the config
    /// names an invalid one: `config validate` says which).
    pub fn mesh_paths(&self) -> Vec<String> {
        self.ws
            .config()
            .mesh_config_paths()
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// The workspace's designated mesh config files.
    fn mesh(&self) -> Result<MeshConfigs<'_>, ReplicaError> {
        MeshConfigs::new(self.ws.root(), self.ws.config())
            .map(|m| m.posting_as(botsync_proto::replica::Replica::local_peer(self)))
            .map_err(|e| ReplicaError::other(format!("{e:#}")))
    }
}
