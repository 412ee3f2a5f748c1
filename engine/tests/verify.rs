//! `botsync verify` as a user with a failing disk meets it: bytes that rotted under an
//! unchanged stat (which no scan notices) are found, a normal edit is not mistaken for damage,
//! a repair rebuilds from local copies where it can and otherwise lets the next pull take the
//! good version back, and a damaged file is never offered to a peer as an edit.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::config::SyncConfig;
use botsync_engine::plan::Action;
use botsync_engine::store::LocalUpdate;
use botsync_engine::workspace::Workspace;
use botsync_engine::{AgentLabel, Attribution, MachineName, PeerId, RelPath, StatSig};
use common::{open_workspace, open_workspace_with, wall_clock_ns};

fn me() -> Attribution {
    Attribution {
        peer: PeerId([1; 32]),
        agent: AgentLabel::new("t"),
        machine: MachineName::default(),
    }
}

fn rel(p: &str) -> RelPath {
    RelPath::new(p).unwrap()
}

/// Write `p`, dated a minute ago: old enough for the stat cache to trust it (not racy).
fn write(root: &Path, p: &str, bytes: &[u8]) {
    let path = root.join(p);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(a_minute_ago)
        .unwrap();
}

/// Flip a byte of `p` the way a disk does: the index keeps believing the stat it recorded, so
/// the rotted file's new stat is written back into the index (a real rot changes no stat).
fn rot(ws: Workspace, root: &Path, p: &str) -> Workspace {
    let path = root.join(p);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let mut local = ws.store().local_get(&rel(p)).unwrap().unwrap();
    local.stat = Some(StatSig::of(&fs::symlink_metadata(&path).unwrap()));
    ws.store().commit_local([LocalUpdate::Put(local)]).unwrap();
    drop(ws);
    Workspace::open(root, me()).unwrap().0
}

#[test]
fn rot_under_an_unchanged_stat_is_found_and_an_edit_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    write(dir.path(), "memory/a.md", b"alpha notes\n");
    write(dir.path(), "memory/b.md", b"beta notes\n");
    ws.refresh(wall_clock_ns()).unwrap();
    let clean = ws.verify().unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.files, 2);

    let ws = rot(ws, dir.path(), "memory/a.md");
    write(dir.path(), "memory/b.md", b"beta notes, edited\n");
    let report = ws.verify().unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].path, rel("memory/a.md"));
    assert_eq!(report.changed, vec![rel("memory/b.md")]);
    assert!(!report.is_clean());
    // A scan does not see the rot (the stat is unchanged) and records only the edit.
    let scan = ws.refresh(wall_clock_ns()).unwrap().scan;
    assert_eq!(scan.modified, 1);
}

#[test]
fn rot_is_repaired_from_another_local_copy_of_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    write(dir.path(), "memory/a.md", b"shared bytes\n");
    write(dir.path(), "memory/copy.md", b"shared bytes\n");
    ws.refresh(wall_clock_ns()).unwrap();
    let ws = rot(ws, dir.path(), "memory/a.md");

    let damaged: Vec<RelPath> = ws
        .verify()
        .unwrap()
        .damaged
        .into_iter()
        .map(|d| d.path)
        .collect();
    let repair = ws.repair(&damaged, wall_clock_ns()).unwrap();
    assert_eq!(repair.restored, vec![rel("memory/a.md")], "{repair:?}");
    assert_eq!(
        fs::read(dir.path().join("memory/a.md")).unwrap(),
        b"shared bytes\n"
    );
    assert!(ws.verify().unwrap().is_clean());
}

/// A workspace that keeps no local versions (as for a file larger than `local_versions.max_bytes`).
fn without_local_versions(dir: &Path) -> Workspace {
    let mut config = SyncConfig::default();
    config.local_versions.max_bytes = 0;
    open_workspace_with(dir, 1, &config)
}

#[test]
fn rot_of_a_version_the_scanner_kept_is_repaired_from_that_copy() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    write(dir.path(), "memory/a.md", b"only copy on disk\n");
    ws.refresh(wall_clock_ns()).unwrap();
    let ws = rot(ws, dir.path(), "memory/a.md");

    let repair = ws.repair(&[rel("memory/a.md")], wall_clock_ns()).unwrap();
    assert_eq!(repair.restored, vec![rel("memory/a.md")], "{repair:?}");
    assert_eq!(
        fs::read(dir.path().join("memory/a.md")).unwrap(),
        b"only copy on disk\n"
    );
    assert!(ws.verify().unwrap().is_clean());
}

#[test]
fn rot_with_no_local_copy_waits_for_a_peer_and_is_never_offered_as_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let ws = without_local_versions(dir.path());
    write(dir.path(), "memory/a.md", b"only copy\n");
    ws.refresh(wall_clock_ns()).unwrap();
    let good = ws.entries(&[rel("memory/a.md")]).unwrap().remove(0);
    let ws = rot(ws, dir.path(), "memory/a.md");

    let repair = ws.repair(&[rel("memory/a.md")], wall_clock_ns()).unwrap();
    assert_eq!(repair.awaiting_peer, vec![rel("memory/a.md")], "{repair:?}");
    // Nothing is offered or served for it: it claims nothing.
    assert!(ws.entries(&[rel("memory/a.md")]).unwrap().is_empty());
    assert_eq!(ws.verify().unwrap().awaiting_peer, vec![rel("memory/a.md")]);
    // A peer holding the good version: it is taken back.
    let plan = ws.plan(vec![good]).unwrap();
    assert_eq!(plan[0].action, Action::Take);
    // A rescan does not turn the damage into an edit either.
    assert_eq!(ws.refresh(wall_clock_ns()).unwrap().scan.modified, 0);
}

#[test]
fn a_corrupt_chunk_in_the_store_is_found_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    let id = botsync_engine::Hash::of(b"a kept chunk");
    ws.put_chunk(&id, b"a kept chunk").unwrap();
    assert_eq!(ws.verify().unwrap().chunks.checked, 1);
    let hex = id.to_hex();
    let staged = dir
        .path()
        .join(".botsync/store/staging")
        .join(&hex[..2])
        .join(&hex[2..]);
    fs::write(&staged, b"a kept chunK").unwrap();

    let report = ws.verify().unwrap();
    assert_eq!(report.chunks.corrupt, 1);
    assert!(!staged.exists());
}
