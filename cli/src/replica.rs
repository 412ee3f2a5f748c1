//! The session seam over a real workspace: `botsync_proto::Replica` for the engine's
//! [`Workspace`], with the clock read here (the engine reads none).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use botsync_engine::plan::{ItemReport, PlanItem};
use botsync_engine::workspace::Workspace;
use botsync_engine::{ChunkRef, FileEntry, Hash, PeerId, RelPath};
use botsync_proto::messages::NodeChild;
use botsync_proto::replica::{Replica, ReplicaError, Snapshot};

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
}

impl LiveReplica {
    /// Wrap an opened workspace.
    pub fn new(ws: Workspace) -> LiveReplica {
        let abort_after = std::env::var(ABORT_AFTER_CHUNKS_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        LiveReplica {
            ws,
            abort_after,
            received: AtomicU64::new(0),
            writer: Mutex::new(()),
        }
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

fn err(e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::from_display(e)
}

impl Replica for LiveReplica {
    fn local_peer(&self) -> PeerId {
        self.ws.local().peer
    }

    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        let _turn = self.turn();
        let r = self.ws.refresh(now_ns()).map_err(err)?;
        Ok(Snapshot {
            root: r.root,
            files: r.files,
        })
    }

    fn children(&self, dir: &RelPath) -> Result<Option<Vec<NodeChild>>, ReplicaError> {
        Ok(self
            .ws
            .children(dir)
            .map(|children| children.into_iter().map(NodeChild::from).collect()))
    }

    fn entries(&self, paths: &[RelPath]) -> Result<Vec<FileEntry>, ReplicaError> {
        self.ws.entries(paths).map_err(err)
    }

    fn plan(&self, incoming: Vec<FileEntry>) -> Result<Vec<PlanItem>, ReplicaError> {
        self.ws.plan(incoming, now_ns()).map_err(err)
    }

    fn chunks_needed(&self, items: &[PlanItem]) -> Result<Vec<ChunkRef>, ReplicaError> {
        self.ws.chunks_needed(items).map_err(err)
    }

    fn read_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        self.ws.read_chunk(id).map_err(err)
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

    fn apply(&self, items: Vec<PlanItem>, _peer: PeerId) -> Result<Vec<ItemReport>, ReplicaError> {
        let _turn = self.turn();
        let reports = self.ws.apply(items, now_ns()).map_err(err)?;
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
}
