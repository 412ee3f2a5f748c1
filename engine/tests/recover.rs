//! A sync killed in the middle of its apply, as the next start of botsync meets it: files
//! already renamed into place are recorded with the peer's version (never taken for local
//! edits, so never a conflict that did not happen), files it never reached stay as they were,
//! a user's edit made since is kept as a local change, and the temporary files it left are
//! removed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::chunktree::content_hash;
use botsync_engine::entry::EntryKind;
use botsync_engine::store::ApplyIntent;
use botsync_engine::workspace::Workspace;
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, ChunkerParams, FileEntry, Hash, MachineName, Mode, PeerId,
    RelPath, VersionVector,
};
use common::{open_workspace, wall_clock_ns};

const PATH: &str = "memory/note.md";

fn me() -> Attribution {
    Attribution {
        peer: PeerId([1; 32]),
        agent: AgentLabel::new("t"),
        machine: MachineName::default(),
    }
}

fn reopen(dir: &Path) -> Workspace {
    Workspace::open(dir, me()).unwrap().0
}

/// A workspace holding `PATH` with `bytes`, scanned (so the index knows it).
fn workspace_with_note(bytes: &[u8]) -> (tempfile::TempDir, Workspace, FileEntry) {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    write(dir.path(), PATH, bytes);
    ws.refresh(wall_clock_ns()).unwrap();
    let local = entry(&ws);
    (dir, ws, local)
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn entry(ws: &Workspace) -> FileEntry {
    ws.entries(&[RelPath::new(PATH).unwrap()])
        .unwrap()
        .remove(0)
}

/// The peer's next version of `base`: `bytes`, its vector one step past `base`'s on peer 2.
fn peer_version(base: &FileEntry, bytes: &[u8]) -> FileEntry {
    let chunks = vec![ChunkRef {
        id: Hash::of(bytes),
        len: bytes.len() as u32,
    }];
    let mut version: VersionVector = base.version.clone();
    version.increment(PeerId([2; 32])).unwrap();
    FileEntry {
        path: base.path.clone(),
        kind: EntryKind::File,
        size: bytes.len() as u64,
        mtime_ns: base.mtime_ns + 1,
        mode: Mode::default(),
        content: content_hash(&chunks),
        chunks,
        chunker: ChunkerParams::DEFAULT,
        version,
        parent: Some(base.content),
        changed_by: Attribution {
            peer: PeerId([2; 32]),
            agent: AgentLabel::new("laptop"),
            machine: MachineName::default(),
        },
    }
}

/// What a kill between the renames and the index commit leaves: the intent, durable.
fn crash_with_intent(ws: Workspace, target: &FileEntry) {
    ws.store()
        .intents_put(&[ApplyIntent {
            target: target.clone(),
            history: None,
            at_ns: wall_clock_ns(),
        }])
        .unwrap();
    drop(ws);
}

#[test]
fn a_file_renamed_into_place_before_the_crash_keeps_the_peers_version() {
    let (dir, ws, local) = workspace_with_note(b"first\n");
    let remote = peer_version(&local, b"first\nfrom the laptop\n");
    crash_with_intent(ws, &remote);
    // The rename happened: the disk holds the peer's bytes, the index does not know.
    write(dir.path(), PATH, b"first\nfrom the laptop\n");

    let ws = reopen(dir.path());
    let now = entry(&ws);
    assert_eq!(now.content, remote.content);
    assert_eq!(
        now.version, remote.version,
        "the peer's vector, not a local bump"
    );
    let refresh = ws.refresh(wall_clock_ns()).unwrap();
    assert_eq!(
        refresh.scan.modified, 0,
        "not a local edit: {:?}",
        refresh.scan
    );
    assert!(ws.store().intents().unwrap().is_empty());
}

#[test]
fn a_file_the_apply_never_reached_stays_as_it_was() {
    let (dir, ws, local) = workspace_with_note(b"first\n");
    let remote = peer_version(&local, b"first\nfrom the laptop\n");
    crash_with_intent(ws, &remote);

    let ws = reopen(dir.path());
    assert_eq!(entry(&ws), local);
    let refresh = ws.refresh(wall_clock_ns()).unwrap();
    assert_eq!(refresh.scan.modified, 0);
    assert!(ws.store().intents().unwrap().is_empty());
}

#[test]
fn an_edit_made_after_the_crash_is_a_local_change() {
    let (dir, ws, local) = workspace_with_note(b"first\n");
    let remote = peer_version(&local, b"first\nfrom the laptop\n");
    crash_with_intent(ws, &remote);
    write(
        dir.path(),
        PATH,
        b"first\nmy own edit, longer than the peer's\n",
    );

    let ws = reopen(dir.path());
    assert_eq!(
        entry(&ws),
        local,
        "the intent does not match the disk: dropped"
    );
    let refresh = ws.refresh(wall_clock_ns()).unwrap();
    assert_eq!(refresh.scan.modified, 1);
    assert!(entry(&ws).version.counter(&PeerId([1; 32])) > local.version.counter(&PeerId([1; 32])));
}

#[test]
fn a_delete_that_happened_before_the_crash_is_recorded_as_the_peers_tombstone() {
    let (dir, ws, local) = workspace_with_note(b"first\n");
    let mut tombstone = peer_version(&local, b"");
    tombstone.kind = EntryKind::Tombstone;
    tombstone.size = 0;
    tombstone.chunks.clear();
    tombstone.content = content_hash(&[]);
    crash_with_intent(ws, &tombstone);
    fs::remove_file(dir.path().join(PATH)).unwrap();

    let ws = reopen(dir.path());
    let now = entry(&ws);
    assert!(now.is_tombstone());
    assert_eq!(now.version, tombstone.version);
    let refresh = ws.refresh(wall_clock_ns()).unwrap();
    assert_eq!(
        refresh.scan.deleted, 0,
        "already recorded: {:?}",
        refresh.scan
    );
}

#[test]
fn temporary_files_of_an_interrupted_apply_are_removed_by_the_next_scan() {
    let (dir, ws, _) = workspace_with_note(b"first\n");
    write(
        dir.path(),
        "memory/.botsync-tmp-0123456789abcdef",
        b"half a file",
    );
    write(dir.path(), ".botsync-tmp-fedcba9876543210", b"half another");
    // A directory of that name is not one of ours: never touched.
    fs::create_dir_all(dir.path().join("memory/.botsync-tmp-dir")).unwrap();

    let refresh = ws.refresh(wall_clock_ns()).unwrap();
    assert!(
        refresh.scan.skipped.is_empty(),
        "{:?}",
        refresh.scan.skipped
    );
    assert!(
        !dir.path()
            .join("memory/.botsync-tmp-0123456789abcdef")
            .exists()
    );
    assert!(!dir.path().join(".botsync-tmp-fedcba9876543210").exists());
    assert!(dir.path().join("memory/.botsync-tmp-dir").is_dir());
    assert_eq!(fs::read(dir.path().join(PATH)).unwrap(), b"first\n");
}
