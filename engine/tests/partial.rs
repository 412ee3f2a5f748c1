//! Partial rescans (what the daemon does with the paths its watcher reports): a rescan of a few
//! paths leaves the index exactly as a full rescan would for those paths, touches nothing else,
//! and falls back to the full rescan whenever a path cannot be vouched for on its own.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::RelPath;
use botsync_engine::workspace::{Refresh, Workspace};

fn open(dir: &Path) -> Workspace {
    common::open_workspace(dir, 1)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn paths(list: &[&str]) -> Vec<RelPath> {
    list.iter().map(|p| RelPath::new(p).unwrap()).collect()
}

fn changes(r: &Refresh) -> u64 {
    r.scan.added + r.scan.modified + r.scan.deleted
}

/// A workspace of 30 notes in three directories, fully scanned.
fn seeded() -> (tempfile::TempDir, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let ws = open(dir.path());
    for d in ["memory/a", "memory/a-b", "memory/c"] {
        for i in 0..10 {
            write(dir.path(), &format!("{d}/{i}.md"), &format!("{d} {i}\n"));
        }
    }
    write(dir.path(), "MEMORY.md", "top\n");
    ws.refresh(1_000).unwrap();
    (dir, ws)
}

#[test]
fn an_edited_note_is_found_by_a_rescan_of_that_note_alone() {
    let (dir, ws) = seeded();
    write(dir.path(), "memory/a/3.md", "edited\n");
    let partial = ws.refresh_under(&paths(&["memory/a/3.md"]), 2_000).unwrap();
    assert_eq!(partial.scan.modified, 1);
    assert_eq!(
        partial.scan.hashed_files, 1,
        "only the reported file was read"
    );
    assert_eq!(partial.scan.unchanged, 0, "nothing else was even looked at");
    let full = ws.refresh(3_000).unwrap();
    assert_eq!(
        changes(&full),
        0,
        "the partial rescan left nothing for the full one"
    );
    assert_eq!(full.root, partial.root);
}

#[test]
fn a_rescan_of_a_directory_finds_new_and_deleted_files_below_it() {
    let (dir, ws) = seeded();
    write(dir.path(), "memory/c/new/deep.md", "new\n");
    fs::remove_file(dir.path().join("memory/c/4.md")).unwrap();
    let partial = ws.refresh_under(&paths(&["memory/c"]), 2_000).unwrap();
    assert_eq!((partial.scan.added, partial.scan.deleted), (1, 1));
    let full = ws.refresh(3_000).unwrap();
    assert_eq!(changes(&full), 0);
    assert_eq!(full.root, partial.root);
}

#[test]
fn a_sibling_that_sorts_between_a_directory_and_its_children_is_left_alone() {
    // "memory/a-b/..." sorts between "memory/a" and "memory/a/...": a rescan of memory/a must
    // neither take its files for deleted nor look at them.
    let (dir, ws) = seeded();
    fs::remove_file(dir.path().join("memory/a-b/1.md")).unwrap();
    write(dir.path(), "memory/a/1.md", "edited\n");
    let partial = ws.refresh_under(&paths(&["memory/a"]), 2_000).unwrap();
    assert_eq!((partial.scan.modified, partial.scan.deleted), (1, 0));
    // The full rescan is what finds the other deletion.
    let full = ws.refresh(3_000).unwrap();
    assert_eq!(full.scan.deleted, 1);
}

#[test]
fn a_vanished_path_falls_back_to_the_full_rescan() {
    let (dir, ws) = seeded();
    fs::remove_dir_all(dir.path().join("memory/a")).unwrap();
    write(dir.path(), "memory/c/0.md", "edited elsewhere\n");
    // The reported path is gone: nothing partial can vouch for it, so everything is scanned,
    // including the edit that was not reported.
    let r = ws.refresh_under(&paths(&["memory/a/2.md"]), 2_000).unwrap();
    assert_eq!((r.scan.deleted, r.scan.modified), (10, 1));
    assert_eq!(changes(&ws.refresh(3_000).unwrap()), 0);
}

#[test]
fn nested_and_repeated_scopes_are_scanned_once() {
    let (dir, ws) = seeded();
    write(dir.path(), "memory/c/1.md", "edited\n");
    let r = ws
        .refresh_under(
            &paths(&["memory/c/1.md", "memory/c", "memory/c/1.md", "MEMORY.md"]),
            2_000,
        )
        .unwrap();
    assert_eq!(r.scan.modified, 1);
    assert_eq!(
        r.scan.hashed_files + r.scan.unchanged,
        11,
        "memory/c and MEMORY.md, once each"
    );
}

#[test]
fn an_unselected_path_finds_nothing_and_changes_nothing() {
    let (dir, ws) = seeded();
    write(dir.path(), "IDENTITY.md", "never synced\n");
    let before = ws.snapshot();
    let r = ws.refresh_under(&paths(&["IDENTITY.md"]), 2_000).unwrap();
    assert_eq!(changes(&r), 0);
    assert_eq!((r.root, r.files), before);
}

#[test]
fn two_spellings_of_one_name_are_left_to_the_full_rescan() {
    // NFC and NFD spellings of "café.md": the full walk reports the collision; a partial walk
    // of either spelling must not quietly pick one.
    let (dir, ws) = seeded();
    write(dir.path(), "memory/c/caf\u{e9}.md", "nfc\n");
    write(dir.path(), "memory/c/cafe\u{301}.md", "nfd\n");
    let r = ws
        .refresh_under(&paths(&["memory/c/caf\u{e9}.md"]), 2_000)
        .unwrap();
    assert_eq!(r.scan.skipped.len(), 1, "{:?}", r.scan.skipped);
    assert_eq!(r.scan.added, 0);
    // A name that exists on disk only in NFD is found by the full walk, not by a partial one.
    fs::remove_file(dir.path().join("memory/c/caf\u{e9}.md")).unwrap();
    let r = ws
        .refresh_under(&paths(&["memory/c/cafe\u{301}.md"]), 3_000)
        .unwrap();
    assert_eq!(r.scan.added, 1, "the NFD-only name syncs as its NFC path");
    assert_eq!(changes(&ws.refresh(4_000).unwrap()), 0);
}

#[test]
fn more_reported_paths_than_a_partial_rescan_takes_are_one_full_rescan() {
    use botsync_engine::scan::MAX_PARTIAL_SCOPES;
    let (dir, ws) = seeded();
    let many: Vec<String> = (0..=MAX_PARTIAL_SCOPES)
        .map(|i| format!("memory/gen/{i}.md"))
        .collect();
    for p in &many {
        write(dir.path(), p, "generated\n");
    }
    write(dir.path(), "memory/c/0.md", "edited, not reported\n");
    let reported: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = ws.refresh_under(&paths(&reported), 2_000).unwrap();
    assert_eq!(r.scan.added, many.len() as u64);
    assert_eq!(
        r.scan.modified, 1,
        "the full rescan also found the unreported edit"
    );
    assert_eq!(changes(&ws.refresh(3_000).unwrap()), 0);
}
