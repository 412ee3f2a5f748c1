//! A disk that fails during a sync: `EIO` or `ENOSPC` injected at each I/O step of apply (a
//! chunk written into the temporary file, the flush barrier, the rename into place, the index
//! commit), through the fault points of `apply/` and `store/local.rs`.
//!
//! For each fault the promise of docs/SECURITY.md holds: the failure is reported on the file it
//! hit, with the path and the system's reason ("disk full" by name); every file holds its old
//! bytes or its new ones; no temporary file is left; the next scan finds no local change that
//! did not happen (so no false conflict); and once the fault is gone the same sync completes.
//!
//! The same for a local version the scanner keeps (issue 11): a copy that the disk refuses is
//! logged, never fails the scan, and later versions are kept again once the disk works.
//!
//! Fault points are process-wide: each test holds `fail::FailScenario`, which runs them one at
//! a time.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;

use botsync_engine::plan::Outcome;
use common::round::{
    FIRST, contents, paths, pull, pull_reports, second_round, temp_files, write_all,
};
use common::{open_workspace, wall_clock_ns};

/// (fault point, `fail` action, what the reason must say).
const FAULTS: &[(&str, &str, &str)] = &[
    ("apply::write", "return(EIO)", "Input/output error"),
    ("apply::write", "return(ENOSPC)", "disk full"),
    ("apply::sync", "return(EIO)", "Input/output error"),
    ("apply::rename", "return(EIO)", "Input/output error"),
    ("apply::rename", "return(ENOSPC)", "disk full"),
    ("store::commit", "return(EIO)", "Input/output error"),
];

#[test]
fn a_disk_that_fails_at_any_step_of_a_sync_loses_nothing_and_the_sync_completes_once_it_works() {
    let scenario = fail::FailScenario::setup();
    for &(point, action, says) in FAULTS {
        let fault = format!("{point} {action}");
        let tmp = tempfile::tempdir().unwrap();
        let (here_dir, laptop_dir) = (tmp.path().join("here"), tmp.path().join("laptop"));
        fs::create_dir_all(&here_dir).unwrap();
        fs::create_dir_all(&laptop_dir).unwrap();
        let here = open_workspace(&here_dir, 1);
        let laptop = open_workspace(&laptop_dir, 2);
        write_all(&laptop_dir, FIRST);
        pull(&here, &laptop);
        let before = contents(&here_dir);
        second_round(&laptop_dir);
        let after = contents(&laptop_dir);

        // Plan and move the chunks, then the apply meets the fault (fault points are
        // process-wide: the laptop's own scan and commits must come before it).
        laptop.refresh(wall_clock_ns()).unwrap();
        let items = here.plan(laptop.entries(&paths()).unwrap()).unwrap();
        for chunk in here.chunks_needed(&items).unwrap() {
            let bytes = laptop.read_chunk(&chunk.id).unwrap().unwrap();
            here.put_chunk(&chunk.id, &bytes).unwrap();
        }
        fail::cfg(point, action).unwrap();
        let result = here.apply(items, wall_clock_ns());
        fail::remove(point);

        // Reported on the files it hit, with the path and the reason.
        let failures: Vec<String> = match &result {
            Ok(reports) => reports
                .iter()
                .filter_map(|r| match &r.outcome {
                    Outcome::Failed { reason } => Some(format!("{}: {reason}", r.path)),
                    _ => None,
                })
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        assert!(
            !failures.is_empty(),
            "{fault}: the sync reported no failure"
        );
        for f in &failures {
            assert!(
                f.contains(says),
                "{fault}: the reason does not say {says:?}: {f}"
            );
            assert!(
                f.contains("memory") || f.contains("MEMORY"),
                "{fault}: no path: {f}"
            );
        }

        // Old or new, never a mix; nothing left behind.
        for ((now, old), new) in contents(&here_dir).iter().zip(&before).zip(&after) {
            assert!(
                now == old || now == new,
                "{fault}: a file is neither old nor new"
            );
        }
        assert!(
            temp_files(&here_dir).is_empty(),
            "{fault}: temporary files left: {:?}",
            temp_files(&here_dir)
        );
        let refresh = here.refresh(wall_clock_ns()).unwrap();
        let s = &refresh.scan;
        assert_eq!(
            (s.added, s.modified, s.deleted, s.metadata_only),
            (0, 0, 0, 0),
            "{fault}: the failure left a phantom local change: {s:?}"
        );

        // The disk works again: the same sync completes.
        let reports = pull_reports(&here, &laptop).unwrap();
        assert!(
            reports
                .iter()
                .all(|r| !matches!(r.outcome, Outcome::Failed { .. } | Outcome::LocalChanged)),
            "{fault}: the retry did not complete: {reports:?}"
        );
        assert_eq!(contents(&here_dir), after, "{fault}: the retry completes");
        assert_eq!(
            here.snapshot().0,
            laptop.snapshot().0,
            "{fault}: trees differ"
        );
    }
    scenario.teardown();
}

#[test]
fn a_local_version_the_disk_refuses_to_keep_never_fails_the_scan() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    let plan = dir.path().join("memory/plan.md");
    let path = botsync_engine::RelPath::new("memory/plan.md").unwrap();
    fs::create_dir_all(plan.parent().unwrap()).unwrap();
    const MINUTE: i64 = 60 * 1_000_000_000;
    let now = wall_clock_ns();

    // The chunk store's disk is full while the first version is scanned.
    fs::write(&plan, "v1\n").unwrap();
    fail::cfg("chunkstore::write", "return(ENOSPC)").unwrap();
    let refresh = ws.refresh(now).unwrap();
    fail::remove("chunkstore::write");
    assert_eq!(
        refresh.scan.added, 1,
        "the scan went on: {:?}",
        refresh.scan
    );
    assert_eq!(ws.snapshot().1, 1, "the file is in the index");

    // v1 was never kept, so with v2 in place there is nothing older to restore.
    fs::write(&plan, "v2\n").unwrap();
    ws.refresh(now + 2 * MINUTE).unwrap();
    assert!(ws.restore(&path, None, false, now + 3 * MINUTE).is_err());

    // The disk works: v2 was kept, and comes back after an overwrite.
    fs::write(&plan, "v3\n").unwrap();
    ws.refresh(now + 4 * MINUTE).unwrap();
    ws.restore(&path, None, false, now + 5 * MINUTE).unwrap();
    assert_eq!(fs::read_to_string(&plan).unwrap(), "v2\n");
    scenario.teardown();
}

/// The versions a large first scan deferred, kept while the store's disk is full: the copies
/// fail, stay deferred, and are kept by the next run once the disk works.
#[test]
fn deferred_local_versions_the_disk_refused_are_kept_by_a_later_run() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    let total = botsync_engine::workspace::INLINE_KEEP + 20;
    for i in 0..total {
        let p = dir.path().join(format!("memory/n{i:04}.md"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("note {i}\n")).unwrap();
    }
    ws.refresh(wall_clock_ns()).unwrap();
    assert!(ws.has_deferred_versions());

    fail::cfg("chunkstore::write", "return(ENOSPC)").unwrap();
    let refused = ws.keep_deferred_versions(|| false);
    fail::remove("chunkstore::write");
    assert_eq!((refused.kept, refused.failed), (0, 20), "{refused:?}");
    assert!(
        ws.has_deferred_versions(),
        "what the disk refused stays deferred"
    );

    let kept = ws.keep_deferred_versions(|| false);
    assert_eq!((kept.kept, kept.failed), (20, 0), "{kept:?}");
    assert!(!ws.has_deferred_versions());
    scenario.teardown();
}

/// Settling identical notes records merged version vectors in index writes of several items:
/// when such a write fails, each of its items reports the failure (nothing on disk changes) and
/// the next sync records them.
#[test]
fn settled_versions_whose_index_write_fails_are_each_reported_and_recorded_next_time() {
    use botsync_engine::plan::Action;
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let names: Vec<String> = (0..600).map(|i| format!("memory/n{i:04}.md")).collect();
    for dir in [&a_dir, &b_dir] {
        fs::create_dir_all(dir.join("memory")).unwrap();
        for n in &names {
            fs::write(dir.join(n), format!("the same note {n}\n")).unwrap();
        }
    }
    let (a, b) = (open_workspace(&a_dir, 1), open_workspace(&b_dir, 2));
    let now = wall_clock_ns();
    a.refresh(now).unwrap();
    b.refresh(now).unwrap();
    let paths: Vec<botsync_engine::RelPath> = names
        .iter()
        .map(|n| botsync_engine::RelPath::new(n).unwrap())
        .collect();
    let notes = |dir: &std::path::Path| -> Vec<Vec<u8>> {
        names
            .iter()
            .map(|n| fs::read(dir.join(n)).unwrap())
            .collect()
    };
    let before = notes(&b_dir);

    let items = b.plan(a.entries(&paths).unwrap()).unwrap();
    assert!(items.iter().all(|i| i.action == Action::MergeVersion));
    fail::cfg("store::commit", "return(EIO)").unwrap();
    let reports = b.apply(items, now).unwrap();
    fail::remove("store::commit");
    assert_eq!(reports.len(), 600);
    for r in &reports {
        assert!(
            matches!(&r.outcome, Outcome::Failed { reason } if reason.contains("Input/output error")),
            "{}: {:?}",
            r.path,
            r.outcome
        );
    }
    assert_eq!(notes(&b_dir), before, "no file touched");
    assert!(temp_files(&b_dir).is_empty());

    let items = b.plan(a.entries(&paths).unwrap()).unwrap();
    assert!(items.iter().all(|i| i.action == Action::MergeVersion));
    let reports = b.apply(items, now).unwrap();
    assert!(reports.iter().all(|r| r.outcome == Outcome::Unchanged));
    let again = b.plan(a.entries(&paths).unwrap()).unwrap();
    assert!(
        again.iter().all(|i| i.action == Action::Nothing),
        "recorded: b's vectors now dominate a's"
    );
    scenario.teardown();
}
