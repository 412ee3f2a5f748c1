//! Deletes (docs/CONFLICTS.md): the mass-delete guard over a real workspace, deleted files
//! restorable from the chunk store, and a vanished workspace recording no deletion.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::chunkstore::ChunkStore;
use botsync_engine::plan::{Action, Outcome};
use botsync_engine::workspace::Workspace;
use botsync_engine::{FileEntry, RelPath};

use common::open_workspace;

const NOW: i64 = 1_800_000_000_000_000_000;
const NOTES: usize = 8;

fn paths() -> Vec<RelPath> {
    (0..NOTES)
        .map(|i| RelPath::new(&format!("memory/n{i}.md")).unwrap())
        .collect()
}

/// Two workspaces holding the same eight notes; `here` has synced them from `there`.
fn synced(here: &Path, there: &Path) -> (Workspace, Workspace) {
    let (h, t) = (open_workspace(here, 1), open_workspace(there, 2));
    fs::create_dir_all(there.join("memory")).unwrap();
    for i in 0..NOTES {
        fs::write(there.join(format!("memory/n{i}.md")), format!("note {i}\n")).unwrap();
    }
    t.refresh(NOW).unwrap();
    let plan = h.plan(t.entries(&paths()).unwrap()).unwrap();
    for c in h.chunks_needed(&plan).unwrap() {
        h.put_chunk(&c.id, &t.read_chunk(&c.id).unwrap().unwrap())
            .unwrap();
    }
    h.apply(plan, NOW).unwrap();
    h.refresh(NOW + 1).unwrap();
    (h, t)
}

/// `there` deletes every note and rescans; its tombstones.
fn delete_all(there_dir: &Path, there: &Workspace) -> Vec<FileEntry> {
    for i in 0..NOTES {
        fs::remove_file(there_dir.join(format!("memory/n{i}.md"))).unwrap();
    }
    there.refresh(NOW + 2).unwrap();
    let tombs = there.entries(&paths()).unwrap();
    assert!(tombs.iter().all(FileEntry::is_tombstone));
    tombs
}

#[test]
fn a_plan_deleting_every_note_is_refused_by_the_guard() {
    let (here_dir, there_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (here, there) = synced(here_dir.path(), there_dir.path());
    let plan = here.plan(delete_all(there_dir.path(), &there)).unwrap();
    assert!(plan.iter().all(|i| i.action == Action::Delete));
    let refused = here.check_deletes(&plan).unwrap_err();
    assert_eq!(
        (refused.deletes, refused.synced),
        (NOTES as u64, NOTES as u64)
    );
    // One deletion alone passes.
    assert!(here.check_deletes(&plan[..1]).is_ok());
}

#[test]
fn a_file_deleted_by_a_peer_stays_restorable_from_the_chunk_store() {
    let (here_dir, there_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (here, there) = synced(here_dir.path(), there_dir.path());
    let before = here.entries(&paths()).unwrap();
    let plan = here.plan(delete_all(there_dir.path(), &there)).unwrap();
    // As with --force: the guard is the caller's step, apply carries the plan out.
    let reports = here.apply(plan, NOW + 4).unwrap();
    assert!(reports.iter().all(|r| r.outcome == Outcome::Done));
    assert!(!here_dir.path().join("memory/n0.md").exists());
    drop(here);
    let store = ChunkStore::open(&here_dir.path().join(".botsync/store")).unwrap();
    for (i, old) in before.iter().enumerate() {
        let manifest = store.manifest(&old.content).unwrap().unwrap();
        let bytes: Vec<u8> = manifest
            .iter()
            .flat_map(|c| store.get(&c.id).unwrap().unwrap())
            .collect();
        assert_eq!(bytes, format!("note {i}\n").as_bytes());
    }
}

#[test]
fn a_workspace_whose_marker_vanished_records_no_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    fs::create_dir_all(dir.path().join("memory")).unwrap();
    for i in 0..NOTES {
        fs::write(dir.path().join(format!("memory/n{i}.md")), "x").unwrap();
    }
    ws.refresh(NOW).unwrap();
    // The tree is emptied under the open workspace, marker included.
    fs::remove_dir_all(dir.path().join("memory")).unwrap();
    fs::remove_dir_all(dir.path().join(".botsync")).unwrap();
    assert!(ws.refresh(NOW + 1).is_err());
    let entries = ws.entries(&paths()).unwrap();
    assert_eq!(entries.len(), NOTES);
    assert!(entries.iter().all(|e| !e.is_tombstone()));
}
