//! A sync of many files under a low open-files limit: found when a daemon started with the usual
//! soft limit of 1,024 (`ulimit -n 1024`) received 1,200 edited notes and failed 18 of them with
//! "creating temporary file ...: Too many open files": a batch of 512 entries held a temp file
//! and the replaced file open for each. This test lowers the limit of its own process (it is the
//! only test of this binary, so nothing else runs under it).

#![allow(clippy::unwrap_used)] // a panic is a failed test

mod common;

use std::fs;

use botsync_engine::FileEntry;
use botsync_engine::apply::batch_files;
use botsync_engine::plan::Outcome;
use common::{open_workspace, wall_clock_ns};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

const NOTES: usize = 700;

#[test]
fn hundreds_of_edited_notes_apply_under_a_limit_of_256_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let (here_dir, laptop_dir) = (dir.path().join("here"), dir.path().join("laptop"));
    for root in [&here_dir, &laptop_dir] {
        fs::create_dir_all(root.join("memory/notes")).unwrap();
        for i in 0..NOTES {
            fs::write(
                root.join(format!("memory/notes/n{i}.md")),
                format!("note {i}\n"),
            )
            .unwrap();
        }
    }
    let here = open_workspace(&here_dir, 1);
    let laptop = open_workspace(&laptop_dir, 2);
    // Both sides index the same notes; then the laptop edits every one of them.
    let later = wall_clock_ns() + 10_000_000_000;
    here.refresh(later).unwrap();
    laptop.refresh(later).unwrap();
    for i in 0..NOTES {
        fs::write(
            laptop_dir.join(format!("memory/notes/n{i}.md")),
            format!("note {i}, edited on the laptop\n"),
        )
        .unwrap();
    }
    laptop.refresh(later + 10_000_000_000).unwrap();

    let before = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(256),
            maximum: before.maximum,
        },
    )
    .unwrap();
    assert!(batch_files() * 3 + 128 <= 256, "batches fit the limit");

    let paths: Vec<_> = (0..NOTES)
        .map(|i| botsync_engine::RelPath::new(&format!("memory/notes/n{i}.md")).unwrap())
        .collect();
    let offered: Vec<FileEntry> = laptop.entries(&paths).unwrap();
    let items = here.plan(offered).unwrap();
    for chunk in here.chunks_needed(&items).unwrap() {
        let bytes = laptop.read_chunk(&chunk.id).unwrap().unwrap();
        here.put_chunk(&chunk.id, &bytes).unwrap();
    }
    let reports = here.apply(items, wall_clock_ns()).unwrap();
    setrlimit(Resource::Nofile, before).unwrap();

    let failed: Vec<_> = reports
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Done))
        .map(|r| format!("{}: {:?}", r.path, r.outcome))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    for i in 0..NOTES {
        assert_eq!(
            fs::read_to_string(here_dir.join(format!("memory/notes/n{i}.md"))).unwrap(),
            format!("note {i}, edited on the laptop\n")
        );
    }
}
