//! The index and the chunk store as a workspace lives with them: restarts, corruption, renames.

// Test helpers unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use botsync_engine::chunkstore::ChunkStore;
use botsync_engine::store::{
    HistoryAction, HistoryRecord, LocalUpdate, OpenOutcome, PeerMeta, Store,
};
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, EntryKind, FileEntry, Hash, LocalEntry, MachineName, Mode,
    PeerId, RelPath, StatSig, VersionVector,
};

const ME: PeerId = PeerId([1; 32]);
const LAPTOP: PeerId = PeerId([2; 32]);

/// A workspace's `.botsync/` directory in a temp dir.
struct State {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl State {
    fn new() -> State {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".botsync");
        fs::create_dir(&dir).unwrap();
        State { _tmp: tmp, dir }
    }

    fn db(&self) -> PathBuf {
        self.dir.join("db")
    }
}

fn file(path: &str, parts: &[&[u8]]) -> LocalEntry {
    let chunks: Vec<ChunkRef> = parts
        .iter()
        .map(|b| ChunkRef {
            id: Hash::of(b),
            len: b.len() as u32,
        })
        .collect();
    let mut version = VersionVector::new();
    version.increment(ME).unwrap();
    LocalEntry {
        entry: FileEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            mtime_ns: 1_000,
            mode: Mode::default(),
            content: botsync_engine::chunktree::content_hash(&chunks),
            chunks,
            chunker: Default::default(),
            version,
            parent: None,
            changed_by: Attribution {
                peer: ME,
                agent: AgentLabel::new("claude"),
                machine: MachineName::default(),
            },
        },
        stat: Some(StatSig {
            size: 1,
            mtime_ns: 1_000,
            ctime_ns: 1_000,
            ino: 7,
            dev: 1,
        }),
        recorded_at_ns: 2_000,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    names.sort();
    names
}

#[test]
fn everything_recorded_survives_a_restart() {
    let state = State::new();
    let (store, outcome) = Store::open(&state.db()).unwrap();
    assert_eq!(outcome, OpenOutcome::Created);
    let notes = file("memory/notes.md", &[b"# Notes\n", b"- buy milk\n"]);
    store
        .commit_local([LocalUpdate::Put(notes.clone())])
        .unwrap();
    store.peer_put(&LAPTOP, &notes.entry).unwrap();
    let meta = PeerMeta {
        last_sync_ns: Some(5_000),
        merkle_root: Some(Hash::of(b"root")),
        local_root: None,
    };
    store.peer_meta_put(&LAPTOP, &meta).unwrap();
    store
        .history_append(&HistoryRecord {
            at_ns: 3_000,
            path: notes.entry.path.clone(),
            action: HistoryAction::Created,
            from_peer: LAPTOP,
            agent: AgentLabel::new("claude"),
            machine: MachineName::new("laptop"),
            old_content: None,
            new_content: Some(notes.entry.content),
            bytes: notes.entry.size,
        })
        .unwrap();
    store
        .kv_put("locks", "memory/notes.md", b"laptop until 6000")
        .unwrap();
    store.set_local_peer(ME).unwrap();
    store.flush().unwrap();
    drop(store);

    // The daemon restarts.
    let (store, outcome) = Store::open(&state.db()).unwrap();
    assert_eq!(outcome, OpenOutcome::Opened);
    assert_eq!(
        store.local_get(&notes.entry.path).unwrap(),
        Some(notes.clone())
    );
    assert_eq!(
        store.locate_chunk(&Hash::of(b"- buy milk\n")).unwrap()[0].offset,
        8
    );
    assert_eq!(
        store.peer_get(&LAPTOP, &notes.entry.path).unwrap(),
        Some(notes.entry.clone())
    );
    assert_eq!(store.peer_meta_get(&LAPTOP).unwrap(), meta);
    assert_eq!(
        store.history_for(&notes.entry.path, 5).unwrap()[0].from_peer,
        LAPTOP
    );
    assert_eq!(
        store.kv_get("locks", "memory/notes.md").unwrap(),
        Some(b"laptop until 6000".to_vec())
    );
    assert_eq!(store.local_peer().unwrap(), Some(ME));
    assert!(store.take_corruption().is_empty());
}

#[test]
fn a_rename_moves_chunk_locations_in_one_commit() {
    let state = State::new();
    let (store, _) = Store::open(&state.db()).unwrap();
    let old = file("memory/draft.md", &[b"shared paragraph"]);
    store.commit_local([LocalUpdate::Put(old.clone())]).unwrap();

    // The scanner sees memory/draft.md renamed to memory/final.md.
    let new = file("memory/final.md", &[b"shared paragraph"]);
    store
        .commit_local([
            LocalUpdate::Remove(old.entry.path.clone()),
            LocalUpdate::Put(new.clone()),
        ])
        .unwrap();
    let locations = store.locate_chunk(&Hash::of(b"shared paragraph")).unwrap();
    assert_eq!(locations.len(), 1);
    assert_eq!(locations[0].path, new.entry.path);
    let all = store.local_all().unwrap();
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        vec![new.entry.path.clone()]
    );
}

#[test]
fn garbage_over_the_index_files_is_rebuilt_and_kept_aside() {
    let state = State::new();
    let (store, _) = Store::open(&state.db()).unwrap();
    store
        .commit_local([LocalUpdate::Put(file("MEMORY.md", &[b"remember"]))])
        .unwrap();
    store.flush().unwrap();
    drop(store);

    // A disk error scribbles over every file of the index.
    for name in files_in(&state.db()) {
        let path = state.db().join(&name);
        if path.is_file() {
            let len = fs::metadata(&path).unwrap().len() as usize;
            fs::write(&path, vec![0x5Au8; len.max(64)]).unwrap();
        }
    }
    let (store, outcome) = Store::open(&state.db()).unwrap();
    let OpenOutcome::Rebuilt { reason } = outcome else {
        panic!("expected a rebuild, got {outcome:?}")
    };
    assert!(reason.contains("db.corrupt-1"), "{reason}");
    assert!(files_in(&state.dir).contains(&"db.corrupt-1".to_owned()));
    assert!(
        !files_in(&state.dir.join("db.corrupt-1")).is_empty(),
        "the old files are kept"
    );

    // The fresh index works; the caller rescans into it.
    assert!(store.local_all().unwrap().is_empty());
    store
        .commit_local([LocalUpdate::Put(file("MEMORY.md", &[b"remember"]))])
        .unwrap();
    assert_eq!(store.local_all().unwrap().len(), 1);
    drop(store);
    assert_eq!(Store::open(&state.db()).unwrap().1, OpenOutcome::Opened);
}

#[test]
fn a_truncated_data_file_is_rebuilt() {
    let state = State::new();
    let (store, _) = Store::open(&state.db()).unwrap();
    store.kv_put("state", "k", b"v").unwrap();
    store.flush().unwrap();
    drop(store);
    fs::write(state.db().join("db"), b"").unwrap();
    fs::write(state.db().join("conf"), b"\x00\x01").unwrap();
    let (_store, outcome) = Store::open(&state.db()).unwrap();
    assert!(
        matches!(outcome, OpenOutcome::Rebuilt { .. }),
        "{outcome:?}"
    );
}

#[test]
fn a_corrupt_chunk_is_detected_deleted_and_healed() {
    let state = State::new();
    let chunks = ChunkStore::open(&state.dir.join("store")).unwrap();
    let id = chunks.put(b"yesterday's notes").unwrap();
    let hex = id.to_hex();
    let on_disk = state.dir.join("store").join(&hex[..2]).join(&hex[2..]);

    // Bit rot: one byte flips.
    let mut bytes = fs::read(&on_disk).unwrap();
    bytes[3] ^= 0x01;
    fs::write(&on_disk, &bytes).unwrap();

    assert_eq!(
        chunks.get(&id).unwrap(),
        None,
        "a corrupt chunk must never be returned"
    );
    assert_eq!(chunks.corrupt_removed(), 1);
    assert!(!on_disk.exists());
    assert!(!chunks.has(&id), "so a sync fetches it again");
    chunks.put_staged(&id, b"yesterday's notes").unwrap();
    assert_eq!(
        chunks.get(&id).unwrap(),
        Some(b"yesterday's notes".to_vec())
    );
}
