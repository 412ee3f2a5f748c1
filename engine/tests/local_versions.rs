//! Local versions the scanner keeps (docs/CONFLICTS.md, *History and restore*): an agent that
//! overwrites a note, with no sync involved, can get the earlier version back; what is kept is
//! bounded by `local_versions` (size, one per path per interval, never append-only logs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::RelPath;
use botsync_engine::config::SyncConfig;
use botsync_engine::store::HistoryAction;
use botsync_engine::workspace::{INLINE_KEEP, ReviewError, Workspace, WorkspaceError};
use common::{content_of, open_workspace, open_workspace_with};

const NOW: i64 = 1_800_000_000_000_000_000;
const MINUTE: i64 = 60 * 1_000_000_000;

fn write(ws: &Workspace, rel: &str, text: &str) {
    let p = ws.root().join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn read(ws: &Workspace, rel: &str) -> String {
    fs::read_to_string(ws.root().join(rel)).unwrap()
}

fn path(rel: &str) -> RelPath {
    RelPath::new(rel).unwrap()
}

#[test]
fn an_overwritten_note_comes_back_without_any_sync() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    write(&ws, "memory/plan.md", "the careful plan\n");
    ws.refresh(NOW).unwrap();
    write(&ws, "memory/plan.md", "oops\n");
    ws.refresh(NOW + 2 * MINUTE).unwrap();

    let history = ws.history(Some(&path("memory/plan.md")), 10).unwrap();
    let actions: Vec<_> = history.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [HistoryAction::Modified, HistoryAction::Created],
        "{history:?}"
    );
    assert_eq!(history[0].from_peer, ws.local().peer);
    assert_eq!(
        history[0].old_content,
        Some(content_of(b"the careful plan\n"))
    );

    let restored = ws
        .restore(&path("memory/plan.md"), None, false, NOW + 3 * MINUTE)
        .unwrap();
    assert!(restored.written);
    assert_eq!(read(&ws, "memory/plan.md"), "the careful plan\n");
    // The restore is itself a change: "oops" can be had back by its hash.
    let oops = content_of(b"oops\n").to_hex();
    ws.restore(
        &path("memory/plan.md"),
        Some(&oops[..10]),
        false,
        NOW + 4 * MINUTE,
    )
    .unwrap();
    assert_eq!(read(&ws, "memory/plan.md"), "oops\n");
}

#[test]
fn a_deleted_note_comes_back_and_the_deletion_is_in_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    write(&ws, "memory/todo.txt", "buy milk\n");
    ws.refresh(NOW).unwrap();
    fs::remove_file(ws.root().join("memory/todo.txt")).unwrap();
    ws.refresh(NOW + MINUTE).unwrap();
    let history = ws.history(Some(&path("memory/todo.txt")), 10).unwrap();
    assert_eq!(history[0].action, HistoryAction::Deleted, "{history:?}");
    ws.restore(&path("memory/todo.txt"), None, false, NOW + 2 * MINUTE)
        .unwrap();
    assert_eq!(read(&ws, "memory/todo.txt"), "buy milk\n");
}

#[test]
fn rewrites_within_the_interval_keep_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    for (i, text) in ["v1\n", "v2\n", "v3\n", "v4\n"].iter().enumerate() {
        write(&ws, "MEMORY.md", text);
        ws.refresh(NOW + i as i64 * 10 * 1_000_000_000).unwrap();
    }
    let kept = ws.history(Some(&path("MEMORY.md")), 10).unwrap();
    assert_eq!(kept.len(), 1, "one version a minute: {kept:?}");
    assert_eq!(kept[0].new_content, Some(content_of(b"v1\n")));
    // A minute after the kept one, the next rewrite is kept again.
    write(&ws, "MEMORY.md", "v5\n");
    ws.refresh(NOW + MINUTE).unwrap();
    assert_eq!(ws.history(Some(&path("MEMORY.md")), 10).unwrap().len(), 2);
}

#[test]
fn append_only_logs_large_files_and_a_zero_limit_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SyncConfig::default();
    config.local_versions.max_bytes = 1000;
    let ws = open_workspace_with(dir.path(), 1, &config);
    write(&ws, "logs/agent.jsonl", "{\"a\":1}\n");
    write(&ws, "memory/big.md", &"x".repeat(1001));
    write(&ws, "memory/small.md", "small\n");
    ws.refresh(NOW).unwrap();
    assert!(
        ws.history(Some(&path("logs/agent.jsonl")), 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        ws.history(Some(&path("memory/big.md")), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ws.history(Some(&path("memory/small.md")), 10)
            .unwrap()
            .len(),
        1
    );
    let err = ws
        .restore(&path("memory/big.md"), None, false, NOW + MINUTE)
        .unwrap_err();
    assert!(
        matches!(err, WorkspaceError::Review(ReviewError::NoHistory(_))),
        "{err}"
    );
    assert!(
        err.to_string().contains("local_versions.max_bytes"),
        "{err}"
    );

    let off = tempfile::tempdir().unwrap();
    let mut config = SyncConfig::default();
    config.local_versions.max_bytes = 0;
    let ws = open_workspace_with(off.path(), 1, &config);
    write(&ws, "memory/small.md", "small\n");
    ws.refresh(NOW).unwrap();
    assert!(ws.history(None, 10).unwrap().is_empty());
}

/// A first scan of `INLINE_KEEP + beyond` new notes; returns the workspace and one note whose
/// copy the scan deferred.
fn first_scan_of_many(dir: &Path, beyond: usize) -> (Workspace, String) {
    let ws = open_workspace(dir, 1);
    let names: Vec<String> = (0..INLINE_KEEP + beyond)
        .map(|i| format!("memory/n{i:04}.md"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        write(&ws, name, &format!("note {i}\n"));
    }
    ws.refresh(NOW).unwrap();
    let deferred = names
        .into_iter()
        .find(|p| ws.history(Some(&path(p)), 1).unwrap().is_empty())
        .unwrap();
    (ws, deferred)
}

#[test]
fn a_first_scan_of_many_files_defers_most_copies_and_the_deferred_ones_come_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, deferred) = first_scan_of_many(dir.path(), 44);
    // The scan itself copied only INLINE_KEEP versions and noted the rest.
    assert_eq!(ws.history(None, 1000).unwrap().len(), INLINE_KEEP);
    assert!(ws.has_deferred_versions());

    // A run told to stop keeps nothing and leaves the rest deferred.
    assert_eq!(ws.keep_deferred_versions(|| true).kept, 0);
    assert!(ws.has_deferred_versions());
    let done = ws.keep_deferred_versions(|| false);
    assert_eq!(done.kept, 44, "{done:?}");
    assert_eq!(done.skipped, 0);
    assert!(!ws.has_deferred_versions());
    // Nothing left: a second run keeps nothing.
    assert_eq!(ws.keep_deferred_versions(|| false).kept, 0);

    let original = read(&ws, &deferred);
    write(&ws, &deferred, "overwritten by a careless agent\n");
    ws.refresh(NOW + 2 * MINUTE).unwrap();
    ws.restore(&path(&deferred), None, false, NOW + 3 * MINUTE)
        .unwrap();
    assert_eq!(read(&ws, &deferred), original);
}

#[test]
fn a_deferred_version_that_changed_before_it_was_kept_is_skipped_not_stored_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, deferred) = first_scan_of_many(dir.path(), 1);
    write(&ws, &deferred, "changed before the background copy\n");

    let done = ws.keep_deferred_versions(|| false);
    assert_eq!((done.kept, done.skipped), (0, 1), "{done:?}");
    // The next scan sees the change and keeps that version itself.
    ws.refresh(NOW + 2 * MINUTE).unwrap();
    let history = ws.history(Some(&path(&deferred)), 10).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        history[0].new_content,
        Some(content_of(b"changed before the background copy\n"))
    );
}
