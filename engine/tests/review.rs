//! Reviewing what sync replaced, at the engine seam (docs/CONFLICTS.md, *Kept losers*,
//! *Reviewing and resolving*, *History and restore*): two workspaces in temp dirs exchange
//! versions through `plan` and `apply`, no network.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::conflicts::Side;
use botsync_engine::plan::Outcome;
use botsync_engine::store::HistoryAction;
use botsync_engine::workspace::{Keep, ReviewError, Workspace, WorkspaceError};
use botsync_engine::{Causality, RelPath};

use common::open_workspace;

const NOW: i64 = 1_800_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn write(ws: &Workspace, rel: &str, text: &str) {
    let p = ws.root().join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Send every version of `paths` from `from` to `to` and apply them there.
fn send(from: &Workspace, to: &Workspace, paths: &[&str], now: i64) {
    let paths: Vec<RelPath> = paths.iter().map(|p| RelPath::new(p).unwrap()).collect();
    let plan = to.plan(from.entries(&paths).unwrap()).unwrap();
    for c in to.chunks_needed(&plan).unwrap() {
        let bytes = from.read_chunk(&c.id).unwrap().unwrap();
        to.put_chunk(&c.id, &bytes).unwrap();
    }
    to.apply(plan, now).unwrap();
}

fn read(ws: &Workspace, rel: &str) -> Option<String> {
    fs::read_to_string(ws.root().join(rel)).ok()
}

fn pair(dirs: &[tempfile::TempDir]) -> (Workspace, Workspace) {
    (
        open_workspace(dirs[0].path(), 1),
        open_workspace(dirs[1].path(), 2),
    )
}

/// Alpha's edit of `MEMORY.md` loses to beta's later one on alpha.
fn conflicted(a: &Workspace, b: &Workspace) {
    write(a, "MEMORY.md", "base\n");
    a.refresh(NOW).unwrap();
    send(a, b, &["MEMORY.md"], NOW);
    write(a, "MEMORY.md", "alpha\n");
    a.refresh(NOW + SECOND).unwrap();
    write(b, "MEMORY.md", "beta\n");
    b.refresh(NOW + 2 * SECOND).unwrap();
    send(b, a, &["MEMORY.md"], NOW + 3 * SECOND);
}

#[test]
fn a_losing_version_is_kept_once_with_a_record_of_both_sides() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs);
    conflicted(&a, &b);
    // The same conflict arriving again (a retried session) keeps no second copy.
    send(&b, &a, &["MEMORY.md"], NOW + 4 * SECOND);
    let open = a.conflicts().unwrap();
    assert_eq!(open.len(), 1);
    let r = &open[0];
    assert_eq!(r.lost, Side::Local);
    assert_eq!(r.local.peer, a.local().peer.to_copy_safe());
    assert_eq!(r.remote.peer, b.local().peer.to_copy_safe());
    assert_eq!(
        fs::read_to_string(a.kept_copy(r).unwrap()).unwrap(),
        "alpha\n"
    );
    let copies = fs::read_dir(dirs[0].path().join(".botsync/conflicts"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(copies, 1);
    assert_eq!(read(&a, "MEMORY.md").unwrap(), "beta\n");
}

#[test]
fn a_loser_edited_before_it_could_be_replaced_is_no_conflict() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs);
    write(&a, "MEMORY.md", "base\n");
    a.refresh(NOW).unwrap();
    send(&a, &b, &["MEMORY.md"], NOW);
    write(&a, "MEMORY.md", "alpha\n");
    a.refresh(NOW + SECOND).unwrap();
    write(&b, "MEMORY.md", "beta\n");
    b.refresh(NOW + 2 * SECOND).unwrap();
    let path = RelPath::new("MEMORY.md").unwrap();
    let plan = a
        .plan(b.entries(std::slice::from_ref(&path)).unwrap())
        .unwrap();
    for c in a.chunks_needed(&plan).unwrap() {
        a.put_chunk(&c.id, &b.read_chunk(&c.id).unwrap().unwrap())
            .unwrap();
    }
    // Alpha's agent writes again after the plan: apply leaves the file alone.
    write(&a, "MEMORY.md", "alpha, still typing\n");
    let reports = a.apply(plan, NOW + 3 * SECOND).unwrap();
    assert_eq!(reports[0].outcome, Outcome::LocalChanged);
    assert_eq!(reports[0].conflict_copy, None);
    assert_eq!(
        a.open_conflicts().unwrap(),
        0,
        "nothing lost, nothing to review"
    );
    assert_eq!(read(&a, "MEMORY.md").unwrap(), "alpha, still typing\n");
}

#[test]
fn keeping_the_local_version_is_a_new_version_that_supersedes_both() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs);
    conflicted(&a, &b);
    let dry = a
        .resolve(None, Keep::Local, true, NOW + 5 * SECOND)
        .unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(
        read(&a, "MEMORY.md").unwrap(),
        "beta\n",
        "a dry run writes nothing"
    );
    assert_eq!(a.open_conflicts().unwrap(), 1);

    a.resolve(
        Some(&RelPath::new("MEMORY.md").unwrap()),
        Keep::Local,
        false,
        NOW + 5 * SECOND,
    )
    .unwrap();
    assert_eq!(read(&a, "MEMORY.md").unwrap(), "alpha\n");
    assert_eq!(a.open_conflicts().unwrap(), 0);
    let path = RelPath::new("MEMORY.md").unwrap();
    let ours = a.entries(std::slice::from_ref(&path)).unwrap().remove(0);
    let theirs = b.entries(std::slice::from_ref(&path)).unwrap().remove(0);
    assert_eq!(ours.version.compare(&theirs.version), Causality::Dominates);
    send(&a, &b, &["MEMORY.md"], NOW + 6 * SECOND);
    assert_eq!(read(&b, "MEMORY.md").unwrap(), "alpha\n");
}

#[test]
fn restore_refuses_to_overwrite_an_edit_not_yet_scanned() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs);
    write(&a, "memory/x.md", "one\n");
    a.refresh(NOW).unwrap();
    send(&a, &b, &["memory/x.md"], NOW);
    write(&b, "memory/x.md", "two\n");
    b.refresh(NOW + SECOND).unwrap();
    send(&b, &a, &["memory/x.md"], NOW + 2 * SECOND);
    assert_eq!(read(&a, "memory/x.md").unwrap(), "two\n");

    // An edit the index has not seen: restore must not clobber it.
    write(&a, "memory/x.md", "three, not scanned\n");
    let path = RelPath::new("memory/x.md").unwrap();
    let err = a.restore(&path, None, false, NOW + 3 * SECOND).unwrap_err();
    assert!(
        matches!(&err, WorkspaceError::Review(ReviewError::EditedSinceScan(p)) if *p == path),
        "{err}"
    );
    assert_eq!(read(&a, "memory/x.md").unwrap(), "three, not scanned\n");

    // Once scanned, the edit is a kept local version; restore (no version named) undoes the
    // latest change: back to the peer's "two", and "one" is still there by its hash.
    a.refresh(NOW + 4 * SECOND).unwrap();
    let done = a.restore(&path, None, false, NOW + 5 * SECOND).unwrap();
    assert!(done.written);
    assert_eq!(read(&a, "memory/x.md").unwrap(), "two\n");
    let records = a.history(Some(&path), 100).unwrap();
    let created = records
        .iter()
        .find(|r| r.action == HistoryAction::Created)
        .expect("the first scan kept the version it found");
    let one = created.new_content.unwrap().to_hex();
    a.refresh(NOW + 6 * SECOND).unwrap();
    a.restore(&path, Some(&one[..12]), false, NOW + 7 * SECOND)
        .unwrap();
    assert_eq!(read(&a, "memory/x.md").unwrap(), "one\n");
}

#[test]
fn a_collected_version_is_reported_gone_in_one_line() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = pair(&dirs);
    write(&a, "memory/x.md", "one\n");
    a.refresh(NOW).unwrap();
    send(&a, &b, &["memory/x.md"], NOW);
    fs::remove_file(b.root().join("memory/x.md")).unwrap();
    b.refresh(NOW + SECOND).unwrap();
    send(&b, &a, &["memory/x.md"], NOW + 2 * SECOND);
    assert_eq!(read(&a, "memory/x.md"), None);
    wipe(&dirs[0].path().join(".botsync/store"));
    let err = a
        .restore(
            &RelPath::new("memory/x.md").unwrap(),
            None,
            false,
            NOW + 3 * SECOND,
        )
        .unwrap_err();
    let line = err.to_string();
    assert!(line.contains("is no longer kept"), "{line}");
    assert!(!line.contains('\n'));
}

/// Remove every kept chunk and manifest (what the retention collection does after 30 days).
fn wipe(store: &Path) {
    for e in fs::read_dir(store).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        }
    }
}
