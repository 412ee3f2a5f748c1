//! [`MemoryReplica`]: a [`Replica`] that keeps a workspace in memory, for proto's own tests
//! (sessions between two replicas over real QUIC without touching a file system).
//!
//! It follows the engine's rules (chunking, version vectors, [`plan::decide`], the Merkle tree)
//! but has no selection rules, no stat cache and no crash safety: it is a test double.

mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use botsync_engine::chunktree::content_hash;
use botsync_engine::config::DeleteThreshold;
use botsync_engine::guard::{self, MassDelete};
use botsync_engine::merkle::MerkleTree;
use botsync_engine::plan::{self, Action, ItemReport, Outcome, PlanItem};
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, Chunker, ChunkerParams, EntryKind, FileEntry, Hash,
    MachineName, Mode, PeerId, RelPath,
};

use botsync_engine::mesh;
use botsync_engine::secrets::SecretRules;

use crate::messages::{MeshFile, NodeChild, Policy, WireState};
use crate::replica::{HeldChunks, MeshChange, Replica, ReplicaError, Snapshot, StateApplied};

/// An in-memory workspace.
#[derive(Debug)]
pub struct MemoryReplica {
    local: Attribution,
    state: Mutex<State>,
    kv: state::MemoryState,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<RelPath, FileEntry>,
    /// Bytes of every chunk of every current file, plus staged (received) chunks.
    chunks: HashMap<Hash, Vec<u8>>,
    /// Chunks received through `put_chunk`.
    received: u64,
    clock: i64,
    /// The mass-delete guard's threshold (the default of config.json unless set).
    delete_threshold: DeleteThreshold,
    /// The Merkle tree over `entries`, built on demand and dropped by every change (a session
    /// asks for many directories between changes).
    tree: Option<MerkleTree>,
    /// Designated mesh config files, with their secrets (outside the synced selection).
    mesh: BTreeMap<RelPath, Vec<u8>>,
    /// The stripped mesh config last exchanged with each peer, per file.
    mesh_bases: HashMap<(PeerId, RelPath), Vec<u8>>,
    /// The selection rules reported to parity checks.
    policy: Vec<String>,
}

impl MemoryReplica {
    /// An empty replica for peer `peer`.
    pub fn new(peer: PeerId) -> MemoryReplica {
        MemoryReplica {
            local: Attribution {
                peer,
                agent: AgentLabel::new("memory"),
                machine: MachineName::default(),
            },
            state: Mutex::new(State {
                clock: 1_000_000_000,
                ..State::default()
            }),
            kv: state::MemoryState::default(),
        }
    }

    /// Set the mass-delete guard's threshold.
    pub fn set_delete_threshold(&self, threshold: DeleteThreshold) {
        self.lock().delete_threshold = threshold;
    }

    /// Write a designated mesh config file (secrets and all); any path written here is
    /// designated, besides [`mesh::DEFAULT_PATH`].
    pub fn write_mesh(&self, path: &str, bytes: &[u8]) {
        if let Ok(path) = RelPath::new(path) {
            self.lock().mesh.insert(path, bytes.to_vec());
        }
    }

    /// A designated mesh config file as it is here.
    pub fn read_mesh(&self, path: &str) -> Option<Vec<u8>> {
        let path = RelPath::new(path).ok()?;
        self.lock().mesh.get(&path).cloned()
    }

    /// Set the selection rules reported to parity checks.
    pub fn set_policy(&self, rules: &[&str]) {
        self.lock().policy = rules.iter().map(|r| (*r).to_owned()).collect();
    }

    /// A local edit: write `bytes` at `path` (bumps our counter, records the parent).
    pub fn write(&self, path: &str, bytes: &[u8]) {
        let Ok(path) = RelPath::new(path) else { return };
        let mut st = self.lock();
        st.clock += 1_000;
        let chunks = Chunker::new(ChunkerParams::DEFAULT)
            .chunk_reader(bytes)
            .unwrap_or_default();
        let mut offset = 0usize;
        for c in &chunks {
            st.chunks
                .insert(c.id, bytes[offset..offset + c.len as usize].to_vec());
            offset += c.len as usize;
        }
        let prev = st.entries.get(&path).cloned();
        let mut version = prev.as_ref().map(|p| p.version.clone()).unwrap_or_default();
        // As the scanner: a change that cannot be counted is not recorded.
        if version.increment(self.local.peer).is_err() {
            return;
        }
        let entry = FileEntry {
            path: path.clone(),
            kind: EntryKind::File,
            size: bytes.len() as u64,
            mtime_ns: st.clock,
            mode: Mode::default(),
            content: content_hash(&chunks),
            chunks,
            chunker: ChunkerParams::DEFAULT,
            version,
            parent: prev.filter(|p| !p.is_tombstone()).map(|p| p.content),
            changed_by: self.local.clone(),
        };
        st.entries.insert(path, entry);
        st.tree = None;
    }

    /// A local deletion: the path becomes a tombstone.
    pub fn delete(&self, path: &str) {
        let Ok(path) = RelPath::new(path) else { return };
        let mut st = self.lock();
        st.clock += 1_000;
        let clock = st.clock;
        st.tree = None;
        if let Some(e) = st.entries.get_mut(&path) {
            if e.version.increment(self.local.peer).is_err() {
                return;
            }
            e.parent = Some(e.content);
            e.kind = EntryKind::Tombstone;
            e.content = Hash::ZERO;
            e.chunks.clear();
            e.size = 0;
            e.mtime_ns = clock;
            e.changed_by = self.local.clone();
        }
    }

    /// The bytes of a file (`None` if absent or deleted).
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        let e = st.entries.get(&RelPath::new(path).ok()?)?;
        if e.is_tombstone() {
            return None;
        }
        assemble(&st.chunks, &e.chunks)
    }

    /// Paths of the current (non-deleted) files.
    pub fn files(&self) -> Vec<String> {
        self.lock()
            .entries
            .values()
            .filter(|e| !e.is_tombstone())
            .map(|e| e.path.to_string())
            .collect()
    }

    /// Set the `state_sync` patterns: the skill state keys this replica shares.
    pub fn set_state_sync(&self, patterns: &[&str]) {
        self.kv.set_patterns(patterns);
    }

    /// A local `state set` of `key`.
    pub fn state_set(&self, key: &str, value: &[u8]) {
        self.kv.write(key, Some(value), self.local.peer);
    }

    /// A local `state del` of `key` (a tombstone).
    pub fn state_del(&self, key: &str) {
        self.kv.write(key, None, self.local.peer);
    }

    /// The record of `key` (a tombstone too).
    pub fn state(&self, key: &str) -> Option<botsync_engine::state::StateRecord> {
        self.kv.get(key)
    }

    /// The losing values of state conflicts kept for review, as (key, record).
    pub fn state_conflicts(&self) -> Vec<(String, botsync_engine::state::StateRecord)> {
        self.kv.losers()
    }

    /// Chunks received through [`Replica::put_chunk`] so far.
    pub fn chunks_received(&self) -> u64 {
        self.lock().received
    }

    /// The Merkle root.
    pub fn root(&self) -> Hash {
        self.with_tree(MerkleTree::root)
    }

    fn with_tree<T>(&self, f: impl FnOnce(&MerkleTree) -> T) -> T {
        let mut st = self.lock();
        let tree = match st.tree.take() {
            Some(t) => t,
            None => MerkleTree::build(st.entries.values()),
        };
        let out = f(&tree);
        st.tree = Some(tree);
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn assemble(chunks: &HashMap<Hash, Vec<u8>>, list: &[ChunkRef]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for c in list {
        out.extend_from_slice(chunks.get(&c.id)?);
    }
    Some(out)
}

/// Merge one received file into `st` (a designated path); the change made, if any.
fn merge_mesh(st: &mut State, peer: PeerId, file: MeshFile) -> Option<MeshChange> {
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
    let change = match st.mesh.get(&file.path) {
        None => {
            let keys = mesh::diff::diff_bytes(b"{}", &theirs).unwrap_or_default();
            st.mesh.insert(file.path.clone(), theirs.clone());
            MeshChange {
                path,
                created: true,
                keys: keys.into_iter().map(|k| k.pointer).collect(),
                conflicts: Vec::new(),
                refused: None,
            }
        }
        Some(own) => {
            let base = st.mesh_bases.get(&(peer, file.path.clone()));
            let merged = match mesh::merge_received(own, base.map(Vec::as_slice), &theirs, &rules) {
                Ok(m) => m,
                Err(e) => return Some(refused(e.to_string())),
            };
            let before = mesh::strip_bytes(own, &rules)
                .map(|s| s.0)
                .unwrap_or_default();
            let after = mesh::strip_bytes(&merged.bytes, &rules)
                .map(|s| s.0)
                .unwrap_or_default();
            let keys = mesh::diff::diff_bytes(&before, &after).unwrap_or_default();
            if merged.bytes != *own {
                st.mesh.insert(file.path.clone(), merged.bytes);
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
    st.mesh_bases.insert((peer, file.path), theirs);
    (change.created || !change.keys.is_empty() || !change.conflicts.is_empty()).then_some(change)
}

impl Replica for MemoryReplica {
    fn local_peer(&self) -> PeerId {
        self.local.peer
    }

    fn refresh(&self) -> Result<Snapshot, ReplicaError> {
        let files = self
            .lock()
            .entries
            .values()
            .filter(|e| !e.is_tombstone())
            .count() as u64;
        Ok(Snapshot {
            root: self.root(),
            files,
            skipped: Vec::new(),
        })
    }

    fn children(&self, dir: &RelPath) -> Result<Option<Vec<NodeChild>>, ReplicaError> {
        Ok(self.with_tree(|t| {
            t.children(dir)
                .map(|cs| cs.into_iter().map(NodeChild::from).collect())
        }))
    }

    fn paths_under(&self, dirs: &[RelPath]) -> Result<Vec<RelPath>, ReplicaError> {
        Ok(self.with_tree(|t| dirs.iter().flat_map(|d| t.entry_paths_under(d)).collect()))
    }

    fn entries(&self, paths: &[RelPath]) -> Result<Vec<FileEntry>, ReplicaError> {
        let st = self.lock();
        Ok(paths
            .iter()
            .filter_map(|p| st.entries.get(p).cloned())
            .collect())
    }

    fn plan(&self, incoming: Vec<FileEntry>) -> Result<Vec<PlanItem>, ReplicaError> {
        let st = self.lock();
        Ok(incoming
            .into_iter()
            .map(|remote| {
                let local = st.entries.get(&remote.path);
                let action = plan::decide(local, &remote);
                let base = local.map(plan::Base::of);
                let bytes_needed = if action.writes_file() {
                    remote
                        .chunks
                        .iter()
                        .filter(|c| !st.chunks.contains_key(&c.id))
                        .map(|c| u64::from(c.len))
                        .sum()
                } else {
                    0
                };
                PlanItem {
                    remote,
                    action,
                    bytes_needed,
                    base,
                    policy: botsync_engine::reconcile::MergePolicy::Newest,
                }
            })
            .collect())
    }

    fn check_deletes(&self, items: &[PlanItem]) -> Result<(), MassDelete> {
        let st = self.lock();
        let synced = st.entries.values().filter(|e| !e.is_tombstone()).count() as u64;
        guard::check(&st.delete_threshold, synced, items)
    }

    fn chunks_needed(&self, items: &[PlanItem]) -> Result<Vec<ChunkRef>, ReplicaError> {
        let st = self.lock();
        let mut seen = std::collections::HashSet::new();
        Ok(items
            .iter()
            .filter(|i| i.action.writes_file())
            .flat_map(|i| i.remote.chunks.iter().copied())
            .filter(|c| !st.chunks.contains_key(&c.id) && seen.insert(c.id))
            .collect())
    }

    fn read_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        let st = self.lock();
        let advertised = st
            .entries
            .values()
            .any(|e| e.chunks.iter().any(|c| c.id == *id));
        Ok(advertised.then(|| st.chunks.get(id).cloned()).flatten())
    }

    fn current_chunks(
        &self,
        paths: &[RelPath],
    ) -> Result<Vec<(RelPath, Vec<ChunkRef>)>, ReplicaError> {
        let st = self.lock();
        Ok(paths
            .iter()
            .filter_map(|p| st.entries.get(p))
            .filter(|e| !e.is_tombstone())
            .map(|e| (e.path.clone(), e.chunks.clone()))
            .collect())
    }

    /// Every chunk this replica ever held (it forgets none): like a workspace's store of kept
    /// versions, it still has the version a peer last took after a local edit replaced it.
    fn read_delta_base(&self, id: &Hash) -> Result<Option<Vec<u8>>, ReplicaError> {
        Ok(self.lock().chunks.get(id).cloned())
    }

    fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), ReplicaError> {
        if Hash::of(bytes) != *id {
            return Err(ReplicaError::other(format!(
                "chunk {id} does not match its bytes"
            )));
        }
        let mut st = self.lock();
        st.chunks.insert(*id, bytes.to_vec());
        st.received += 1;
        Ok(())
    }

    fn apply(
        &self,
        items: Vec<PlanItem>,
        _peer: PeerId,
        held: HeldChunks,
    ) -> Result<Vec<ItemReport>, ReplicaError> {
        let mut st = self.lock();
        st.tree = None;
        // Like a workspace, a memory replica keeps what it wrote: held chunks join its store.
        st.chunks.extend(held);
        let mut out = Vec::new();
        for item in items {
            let local = st.entries.get(&item.remote.path).cloned();
            let action = item.action_now(local.as_ref());
            let mut target = item.remote.clone();
            target.version = plan::merged_version(local.as_ref(), &item.remote);
            let outcome = match action {
                Action::Take | Action::TakeConflict | Action::Delete => {
                    if target.is_tombstone() || assemble(&st.chunks, &target.chunks).is_some() {
                        st.entries.insert(target.path.clone(), target);
                        Outcome::Done
                    } else {
                        Outcome::MissingChunks
                    }
                }
                Action::MergeVersion | Action::RecordTombstone => {
                    let mut e = local.unwrap_or(target.clone());
                    e.version = target.version;
                    st.entries.insert(e.path.clone(), e);
                    Outcome::Unchanged
                }
                _ => Outcome::Unchanged,
            };
            out.push(ItemReport {
                path: item.remote.path.clone(),
                action,
                outcome,
                size: item.remote.size,
                bytes_fetched: item.bytes_needed,
                conflict_copy: None,
                changed_by: Some(item.remote.changed_by.clone()),
                mtime_ns: item.remote.mtime_ns,
            });
        }
        Ok(out)
    }

    fn record_peer(
        &self,
        _peer: PeerId,
        _root: Hash,
        _entries: &[FileEntry],
    ) -> Result<(), ReplicaError> {
        Ok(())
    }

    fn mesh_config(&self) -> Result<Vec<MeshFile>, ReplicaError> {
        let rules = SecretRules::default();
        Ok(self
            .lock()
            .mesh
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
        let mut st = self.lock();
        let mut changes = Vec::new();
        for f in files {
            if f.path.as_str() == mesh::DEFAULT_PATH || st.mesh.contains_key(&f.path) {
                changes.extend(merge_mesh(&mut st, peer, f));
            }
        }
        Ok(changes)
    }

    fn mesh_config_agreed(&self, peer: PeerId, ours: &[MeshFile], theirs: &[MeshFile]) -> bool {
        let mut st = self.lock();
        let mut all = true;
        for o in ours {
            let same = theirs
                .iter()
                .any(|t| t.path == o.path && mesh::same_document(&t.content, &o.content));
            if same {
                st.mesh_bases
                    .insert((peer, o.path.clone()), o.content.clone());
            }
            all &= same;
        }
        all
    }

    fn policy(&self) -> Result<Policy, ReplicaError> {
        Ok(Policy::of(self.lock().policy.clone()))
    }

    fn state_patterns(&self) -> Vec<String> {
        self.kv.patterns()
    }

    fn state_records(&self, theirs: &[String]) -> Result<Vec<WireState>, ReplicaError> {
        self.kv.records(theirs)
    }

    fn apply_state(
        &self,
        records: Vec<WireState>,
        _peer: PeerId,
    ) -> Result<StateApplied, ReplicaError> {
        self.kv.apply(records, self.local.peer)
    }
}
