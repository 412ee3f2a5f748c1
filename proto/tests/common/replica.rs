//! [`TestReplica`]: a [`Replica`] over the engine's own [`Workspace`], in a temporary directory
//! with its index in memory ([`IndexKind::InMemory`]). Sessions in proto's tests run against
//! the real scan, plan, apply, merges, history and state store, not a re-implementation of
//! them; only the designated mesh config files are kept in memory (the CLI keeps them on disk
//! with its own secret handling, which is not the session's business).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use botsync_engine::config::SyncConfig;
use botsync_engine::guard::MassDelete;
use botsync_engine::mesh;
use botsync_engine::plan::{ItemReport, PlanItem};
use botsync_engine::secrets::SecretRules;
use botsync_engine::state::{Patterns, StateRecord};
use botsync_engine::workspace::{IndexKind, Workspace};
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, FileEntry, Hash, MachineName, PeerId, RelPath,
};
use botsync_proto::messages::{MeshFile, NodeChild, Policy, WireState};
use botsync_proto::replica::{
    self, HeldChunks, MeshChange, Replica, ReplicaError, Snapshot, StateApplied,
};

/// A workspace in a temporary directory, driven by sessions.
#[derive(Debug)]
pub struct TestReplica {
    ws: Workspace,
    /// Where the workspace lives; removed with the replica.
    dir: tempfile::TempDir,
    /// Held while the workspace changes (rescan, apply): concurrent sessions take turns, as
    /// they do in the CLI's replica.
    writer: Mutex<()>,
    /// Chunks received through `put_chunk`.
    received: AtomicU64,
    /// The `state_sync` patterns (the workspace's config has none: they change mid-test).
    state_patterns: Mutex<Vec<String>>,
    /// The selection rules reported to parity checks.
    policy: Mutex<Vec<String>>,
    mesh: Mutex<Mesh>,
    /// Calls of `chunks_needed` so far.
    needed_calls: AtomicU64,
    /// Set by [`TestReplica::gate_next_apply`]: the next apply waits for a `chunks_needed`
    /// call made while it runs; whether one came is recorded in `overlap_seen`.
    apply_gate: AtomicBool,
    overlap_seen: AtomicBool,
    /// Set by [`TestReplica::slow_next_apply`]: how long the next apply sleeps first.
    apply_delay: Mutex<Duration>,
}

/// Designated mesh config files, with their secrets (outside the synced selection), and the
/// stripped version last exchanged with each peer.
#[derive(Debug, Default)]
struct Mesh {
    files: BTreeMap<RelPath, Vec<u8>>,
    bases: HashMap<(PeerId, RelPath), Vec<u8>>,
}

fn now_ns() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

fn err<E: std::error::Error + 'static>(e: E) -> ReplicaError {
    ReplicaError::from_error(&e)
}

impl TestReplica {
    /// An empty workspace of peer `peer`, syncing every path the engine may sync.
    pub fn new(peer: PeerId) -> TestReplica {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        Workspace::init(root, Some("test")).unwrap();
        let config = SyncConfig {
            include: vec!["*".into()],
            ..SyncConfig::default()
        };
        config.save(&root.join(".botsync/config.json")).unwrap();
        let local = Attribution {
            peer,
            agent: AgentLabel::new("memory"),
            machine: MachineName::default(),
        };
        let (ws, _) = Workspace::open_with(root, local, IndexKind::InMemory).unwrap();
        TestReplica {
            ws,
            dir,
            writer: Mutex::new(()),
            received: AtomicU64::new(0),
            state_patterns: Mutex::new(Vec::new()),
            policy: Mutex::new(Vec::new()),
            mesh: Mutex::new(Mesh::default()),
            needed_calls: AtomicU64::new(0),
            apply_gate: AtomicBool::new(false),
            overlap_seen: AtomicBool::new(false),
            apply_delay: Mutex::new(Duration::ZERO),
        }
    }

    /// Make the next apply wait (up to 10 s) until the session asks for the chunks of
    /// something else while it runs: the proof that fetching overlaps applying. Whether that
    /// happened is [`TestReplica::overlap_seen`].
    pub fn gate_next_apply(&self) {
        self.apply_gate.store(true, Ordering::SeqCst);
    }

    /// Make the next apply take `delay` longer, as an apply of 10^6 entries on a slow disk does.
    pub fn slow_next_apply(&self, delay: Duration) {
        *lock(&self.apply_delay) = delay;
    }

    /// True once a gated apply saw a `chunks_needed` call made while it waited.
    pub fn overlap_seen(&self) -> bool {
        self.overlap_seen.load(Ordering::SeqCst)
    }

    /// A local edit: write `bytes` at `path` and record it, as a watcher-driven daemon would.
    pub fn write(&self, path: &str, bytes: &[u8]) {
        self.put_file(path, bytes);
        self.rescan(&[path]);
    }

    /// Local edits of many files, recorded in one rescan.
    pub fn write_many(&self, files: &[(String, Vec<u8>)]) {
        for (path, bytes) in files {
            self.put_file(path, bytes);
        }
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        self.rescan(&paths);
    }

    /// A local deletion, recorded.
    pub fn delete(&self, path: &str) {
        let _ = fs::remove_file(self.dir.path().join(path));
        self.rescan(&[path]);
    }

    fn put_file(&self, path: &str, bytes: &[u8]) {
        let file = self.dir.path().join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, bytes).unwrap();
    }

    fn rescan<S: AsRef<str>>(&self, paths: &[S]) {
        let scopes: Vec<RelPath> = paths
            .iter()
            .map(|p| RelPath::new(p.as_ref()).unwrap())
            .collect();
        let _turn = lock(&self.writer);
        self.ws.refresh_under(&scopes, now_ns()).unwrap();
    }

    /// The bytes of a file (`None` if absent).
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        fs::read(self.dir.path().join(path)).ok()
    }

    /// Paths of the recorded files (not tombstones).
    pub fn files(&self) -> Vec<String> {
        self.ws
            .store()
            .local_all()
            .unwrap()
            .into_values()
            .filter(|l| !l.entry.is_tombstone())
            .map(|l| l.entry.path.to_string())
            .collect()
    }

    /// Write a designated mesh config file (secrets and all); any path written here is
    /// designated, besides [`mesh::DEFAULT_PATH`].
    pub fn write_mesh(&self, path: &str, bytes: &[u8]) {
        let path = RelPath::new(path).unwrap();
        self.mesh().files.insert(path, bytes.to_vec());
    }

    /// A designated mesh config file as it is here.
    pub fn read_mesh(&self, path: &str) -> Option<Vec<u8>> {
        let path = RelPath::new(path).ok()?;
        self.mesh().files.get(&path).cloned()
    }

    /// Set the selection rules reported to parity checks.
    pub fn set_policy(&self, rules: &[&str]) {
        *lock(&self.policy) = rules.iter().map(|r| (*r).to_owned()).collect();
    }

    /// Set the `state_sync` patterns: the skill state keys this replica shares.
    pub fn set_state_sync(&self, patterns: &[&str]) {
        *lock(&self.state_patterns) = patterns.iter().map(|p| (*p).to_owned()).collect();
    }

    /// A local `state set` of `key`.
    pub fn state_set(&self, key: &str, value: &[u8]) {
        self.state_write(key, value, false);
    }

    /// A local `state del` of `key` (a tombstone).
    pub fn state_del(&self, key: &str) {
        self.state_write(key, b"", true);
    }

    fn state_write(&self, key: &str, value: &[u8], deleted: bool) {
        let me = self.ws.local().peer;
        self.ws
            .store()
            .state_write(key, value.to_vec(), deleted, me, "memory", now_ns())
            .unwrap();
    }

    /// The record of `key` (a tombstone too).
    pub fn state(&self, key: &str) -> Option<StateRecord> {
        self.ws.store().state_get(key).unwrap()
    }

    /// The losing values of state conflicts kept for review, as (key, record).
    pub fn state_conflicts(&self) -> Vec<(String, StateRecord)> {
        let all = Patterns::new(&["*"]).unwrap();
        self.ws.store().state_conflicts(&all).unwrap()
    }

    /// Chunks received through [`Replica::put_chunk`] so far.
    pub fn chunks_received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// The Merkle root.
    pub fn root(&self) -> Hash {
        self.ws.snapshot().0
    }

    fn mesh(&self) -> MutexGuard<'_, Mesh> {
        lock(&self.mesh)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Merge one received file into `mesh` (a designated path); the change made, if any.
fn merge_mesh(mesh: &mut Mesh, peer: PeerId, file: MeshFile) -> Option<MeshChange> {
    let rules = SecretRules::default();
    let path = file.path.to_string();
    let refused = |why: String| MeshChange {
        path: path.clone(),
        created: false,
        keys: Vec::new(),
        conflicts: Vec::new(),
        refused: Some(why),
    };
    let (theirs, _) = match mesh::strip_bytes(&file.content, &rules) {
        Ok(t) => t,
        Err(e) => return Some(refused(format!("received version is not JSON: {e}"))),
    };
    let change = match mesh.files.get(&file.path) {
        None => {
            let keys = mesh::diff::diff_bytes(b"{}", &theirs).unwrap_or_default();
            mesh.files.insert(file.path.clone(), theirs.clone());
            MeshChange {
                path,
                created: true,
                keys: keys.into_iter().map(|k| k.pointer).collect(),
                conflicts: Vec::new(),
                refused: None,
            }
        }
        Some(own) => {
            let base = mesh.bases.get(&(peer, file.path.clone()));
            let merged = match mesh::merge_received(own, base.map(Vec::as_slice), &theirs, &rules) {
                Ok(m) => m,
                Err(e) => return Some(refused(e.to_string())),
            };
            let stripped = |b: &[u8]| {
                mesh::strip_bytes(b, &rules)
                    .map(|s| s.0)
                    .unwrap_or_default()
            };
            let keys = mesh::diff::diff_bytes(&stripped(own), &stripped(&merged.bytes))
                .unwrap_or_default();
            if merged.bytes != *own {
                mesh.files.insert(file.path.clone(), merged.bytes);
            }
            MeshChange {
                path,
                created: false,
                keys: keys.into_iter().map(|k| k.pointer).collect(),
                conflicts: merged.conflicts,
                refused: None,
            }
        }
    };
    mesh.bases.insert((peer, file.path), theirs);
    (change.created || !change.keys.is_empty() || !change.conflicts.is_empty()).then_some(change)
}

impl Replica for TestReplica {
    fn local_peer(&self) -> PeerId {
        self.ws.local().peer
    }

    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        let _turn = lock(&self.writer);
        let r = self.ws.refresh(now_ns()).map_err(err)?;
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
            .map(|cs| cs.into_iter().map(NodeChild::from).collect()))
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
        self.needed_calls.fetch_add(1, Ordering::SeqCst);
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

    fn read_delta_base(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        match self.ws.read_chunk(id).map_err(err)? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.ws.read_kept_chunk(id).map_err(err),
        }
    }

    fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), ReplicaError> {
        self.ws.put_chunk(id, bytes).map_err(err)?;
        self.received.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn apply(
        &self,
        items: Vec<PlanItem>,
        _peer: PeerId,
        mut held: HeldChunks,
    ) -> Result<Vec<ItemReport>, ReplicaError> {
        if self.apply_gate.swap(false, Ordering::SeqCst) {
            let before = self.needed_calls.load(Ordering::SeqCst);
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if self.needed_calls.load(Ordering::SeqCst) > before {
                    self.overlap_seen.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let delay = std::mem::take(&mut *lock(&self.apply_delay));
        std::thread::sleep(delay);
        let _turn = lock(&self.writer);
        self.ws.apply_with(items, now_ns(), &mut held).map_err(err)
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
        let rules = SecretRules::default();
        Ok(self
            .mesh()
            .files
            .iter()
            .filter_map(|(path, bytes)| {
                let (content, _) = mesh::strip_bytes(bytes, &rules).ok()?;
                Some(MeshFile {
                    path: path.clone(),
                    content,
                })
            })
            .collect())
    }

    fn take_mesh_config(
        &self,
        peer: PeerId,
        files: Vec<MeshFile>,
    ) -> Result<Vec<MeshChange>, ReplicaError> {
        let mut mesh = self.mesh();
        let mut changes = Vec::new();
        for f in files {
            if f.path.as_str() == mesh::DEFAULT_PATH || mesh.files.contains_key(&f.path) {
                changes.extend(merge_mesh(&mut mesh, peer, f));
            }
        }
        Ok(changes)
    }

    fn mesh_config_agreed(&self, peer: PeerId, ours: &[MeshFile], theirs: &[MeshFile]) -> bool {
        let mut mesh = self.mesh();
        let mut all = true;
        for o in ours {
            let same = theirs
                .iter()
                .any(|t| t.path == o.path && mesh::same_document(&t.content, &o.content));
            if same {
                mesh.bases.insert((peer, o.path.clone()), o.content.clone());
            }
            all &= same;
        }
        all
    }

    fn policy(&self) -> Result<Policy, ReplicaError> {
        Ok(Policy::of(lock(&self.policy).clone()))
    }

    fn state_patterns(&self) -> Vec<String> {
        lock(&self.state_patterns).clone()
    }

    fn state_records(&self, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
        let ours = self.state_patterns();
        replica::state_records(self.ws.store(), &ours, theirs)
    }

    fn apply_state(
        &self,
        records: Vec<WireState>,
        peer: PeerId,
    ) -> Result<StateApplied, ReplicaError> {
        let ours = self.state_patterns();
        replica::take_state(self.ws.store(), &ours, self.ws.local().peer, records, peer)
    }
}
