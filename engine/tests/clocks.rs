//! Causality and clocks (docs/CONFLICTS.md): the time a version competes with is bounded by
//! when it was observed, so a file dated in the future never outranks a real edit made after it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use botsync_engine::RelPath;
use botsync_engine::plan::Action;

use common::{open_workspace, wall_clock_ns};

/// A path under the `newest` policy (MEMORY.md itself would be merged as text).
fn memory() -> Vec<RelPath> {
    vec![RelPath::new("memory/notes.txt").unwrap()]
}

#[test]
fn an_edit_made_after_a_version_dated_2100_wins_on_both_sides() {
    let (x_dir, y_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (x, y) = (
        open_workspace(x_dir.path(), 1),
        open_workspace(y_dir.path(), 2),
    );
    fs::create_dir_all(x_dir.path().join("memory")).unwrap();
    fs::write(x_dir.path().join("memory/notes.txt"), "v1\n").unwrap();
    x.refresh(wall_clock_ns()).unwrap();
    let plan = y.plan(x.entries(&memory()).unwrap()).unwrap();
    for c in y.chunks_needed(&plan).unwrap() {
        y.put_chunk(&c.id, &x.read_chunk(&c.id).unwrap().unwrap())
            .unwrap();
    }
    y.apply(plan, wall_clock_ns()).unwrap();
    y.refresh(wall_clock_ns()).unwrap();

    // On X, a tool writes a version and dates it in 2100.
    let p = x_dir.path().join("memory/notes.txt");
    fs::write(&p, "x, dated 2100\n").unwrap();
    let year_2100 = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(year_2100)
        .unwrap();
    // A moment later, a real edit on Y.
    std::thread::sleep(Duration::from_millis(50));
    fs::write(y_dir.path().join("memory/notes.txt"), "y, a real edit\n").unwrap();

    // Both sides scan when the sync starts, after both changes.
    let now = wall_clock_ns();
    x.refresh(now).unwrap();
    y.refresh(now).unwrap();
    let from_x = x.entries(&memory()).unwrap();
    let from_y = y.entries(&memory()).unwrap();
    let at_y = y.plan(from_x).unwrap().remove(0).action;
    let at_x = x.plan(from_y).unwrap().remove(0).action;
    assert_eq!(at_y, Action::KeepConflict, "Y keeps its real edit");
    assert_eq!(at_x, Action::TakeConflict, "X takes Y's edit");
}
