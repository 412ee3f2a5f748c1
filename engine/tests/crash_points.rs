//! A sync killed at every crash point of apply, as the next start of botsync meets it.
//!
//! For each point of `apply/batch.rs`, a child process (this test binary, re-run) applies a
//! laptop's edits, deletes and new files and aborts at that point: no destructor, no flush,
//! what a `kill -9` or a power cut leaves. The parent then opens the workspace as the next
//! start does and checks the promise of docs/SECURITY.md: every file holds its old bytes or
//! its new ones, never a mix; the rescan finds no phantom local change (so no conflict that
//! did not happen); no temporary file is left; and the sync run again completes, with the
//! same tree as the laptop's.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use botsync_engine::workspace::Workspace;
use common::round::{ALL, FIRST, contents, pull, second_round, temp_files, write_all};
use common::{open_workspace, wall_clock_ns};

/// The crash points of `apply::batch::run`, in the order a batch passes them, each with the
/// pass at which to abort (`apply::placed` is passed once per file: after the first rename and
/// in the middle of the batch).
const POINTS: &[(&str, usize)] = &[
    ("apply::staged", 1),
    ("apply::durable", 1),
    ("apply::intended", 1),
    ("apply::placed", 1),
    ("apply::placed", 3),
    ("apply::dirs-durable", 1),
    ("apply::recorded", 1),
];

const CRASH_AT: &str = "BOTSYNC_CRASH_AT";
const CRASH_PASS: &str = "BOTSYNC_CRASH_PASS";
const CRASH_HERE: &str = "BOTSYNC_CRASH_HERE";
const CRASH_LAPTOP: &str = "BOTSYNC_CRASH_LAPTOP";

/// The child: apply the laptop's second round and abort at `BOTSYNC_CRASH_AT`. Not a test of
/// its own: without the environment it returns at once.
#[test]
fn crash_child() {
    let (Ok(point), Ok(pass), Ok(here), Ok(laptop)) = (
        std::env::var(CRASH_AT),
        std::env::var(CRASH_PASS),
        std::env::var(CRASH_HERE),
        std::env::var(CRASH_LAPTOP),
    ) else {
        return;
    };
    let here = open_workspace(Path::new(&here), 1);
    let laptop = open_workspace(Path::new(&laptop), 2);
    let pass: usize = pass.parse().unwrap();
    let passed = std::sync::atomic::AtomicUsize::new(0);
    fail::cfg_callback(point, move || {
        if passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == pass {
            std::process::abort();
        }
    })
    .unwrap();
    pull(&here, &laptop);
    // Reaching this line means the point was never passed: the parent reports it.
    std::process::exit(0);
}

#[test]
fn a_sync_killed_at_any_crash_point_leaves_old_or_new_files_and_completes_when_run_again() {
    for &(name, pass) in POINTS {
        let point = format!("{name} (pass {pass})");
        let tmp = tempfile::tempdir().unwrap();
        let (here_dir, laptop_dir) = (tmp.path().join("here"), tmp.path().join("laptop"));
        fs::create_dir_all(&here_dir).unwrap();
        fs::create_dir_all(&laptop_dir).unwrap();
        let before;
        let after;
        {
            let here = open_workspace(&here_dir, 1);
            let laptop = open_workspace(&laptop_dir, 2);
            write_all(&laptop_dir, FIRST);
            pull(&here, &laptop);
            assert_eq!(contents(&here_dir), contents(&laptop_dir));
            before = contents(&here_dir);
            second_round(&laptop_dir);
            after = contents(&laptop_dir);
        }

        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_AT, name)
            .env(CRASH_PASS, pass.to_string())
            .env(CRASH_HERE, &here_dir)
            .env(CRASH_LAPTOP, &laptop_dir)
            .status()
            .unwrap();
        assert!(
            status.code().is_none() || status.code() == Some(134),
            "{point}: the child was to abort there, but exited with {status}"
        );

        // The next start: open (settles the intents), rescan.
        let here = Workspace::open(
            &here_dir,
            botsync_engine::Attribution {
                peer: botsync_engine::PeerId([1; 32]),
                agent: botsync_engine::AgentLabel::new("t"),
                machine: botsync_engine::MachineName::default(),
            },
        )
        .unwrap()
        .0;
        for ((path, now), (old, new)) in ALL
            .iter()
            .zip(contents(&here_dir))
            .zip(before.iter().zip(&after))
        {
            assert!(
                now == *old || now == *new,
                "{point}: {path} is neither its old nor its new version: {:?}",
                now.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
        let refresh = here.refresh(wall_clock_ns()).unwrap();
        let s = &refresh.scan;
        assert_eq!(
            (s.added, s.modified, s.deleted, s.metadata_only),
            (0, 0, 0, 0),
            "{point}: the crash left a phantom local change: {s:?}"
        );
        assert!(
            temp_files(&here_dir).is_empty(),
            "{point}: temporary files left: {:?}",
            temp_files(&here_dir)
        );

        let laptop = open_workspace(&laptop_dir, 2);
        pull(&here, &laptop);
        assert_eq!(
            contents(&here_dir),
            after,
            "{point}: the sync run again completes"
        );
        let (here_root, _) = here.snapshot();
        let (laptop_root, _) = laptop.snapshot();
        assert_eq!(here_root, laptop_root, "{point}: both trees are the same");
    }
}
