//! A local write that lands on a file in the instant a peer's version replaces it (after the
//! last check, before the rename) is not lost: the apply puts the local bytes back, reports the
//! path as changed locally, and the next sync merges both. Found by the five-daemon soak
//! (`cli/tests/soak.rs`), where agents appending to a shared log lost a line now and then.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::path::Path;

use botsync_engine::plan::Outcome;
use botsync_engine::workspace::Workspace;
use botsync_engine::{FileEntry, RelPath};
use common::{open_workspace, wall_clock_ns};

const LOG: &str = "memory/shared.jsonl";

fn append(root: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join(LOG))
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// One sync from `from` into `into`; the outcome of the log's item.
fn pull(into: &Workspace, from: &Workspace) -> Outcome {
    from.refresh(wall_clock_ns()).unwrap();
    into.refresh(wall_clock_ns()).unwrap();
    let offered: Vec<FileEntry> = from.entries(&[RelPath::new(LOG).unwrap()]).unwrap();
    let items = into.plan(offered).unwrap();
    for chunk in into.chunks_needed(&items).unwrap() {
        let bytes = from.read_chunk(&chunk.id).unwrap().unwrap();
        into.put_chunk(&chunk.id, &bytes).unwrap();
    }
    let reports = into.apply(items, wall_clock_ns()).unwrap();
    reports
        .into_iter()
        .find(|r| r.path.as_str() == LOG)
        .map(|r| r.outcome)
        .unwrap_or(Outcome::Unchanged)
}

#[test]
fn a_line_appended_while_a_peers_version_replaces_the_log_is_kept_and_merged() {
    let (laptop_dir, here_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::create_dir_all(laptop_dir.path().join("memory")).unwrap();
    std::fs::write(laptop_dir.path().join(LOG), "{\"n\":1}\n").unwrap();
    let laptop = open_workspace(laptop_dir.path(), 1);
    let here = open_workspace(here_dir.path(), 2);
    assert_eq!(pull(&here, &laptop), Outcome::Done);

    // The laptop appends a line; here, an agent appends one in the instant the laptop's
    // version is about to be renamed over the file.
    append(laptop_dir.path(), "{\"n\":2,\"from\":\"laptop\"}\n");
    let root = here_dir.path().to_path_buf();
    fail::cfg_callback("apply::before-rename", move || {
        append(&root, "{\"n\":3,\"from\":\"here\"}\n");
    })
    .unwrap();
    let outcome = pull(&here, &laptop);
    fail::remove("apply::before-rename");
    assert_eq!(outcome, Outcome::LocalChanged, "the apply lost the race");
    let now = std::fs::read_to_string(here_dir.path().join(LOG)).unwrap();
    assert!(
        now.contains("\"from\":\"here\""),
        "the local line is back: {now:?}"
    );

    // The next sync sees here's line as a local change and merges it with the laptop's.
    let again = pull(&here, &laptop);
    assert_eq!(
        again,
        Outcome::Done,
        "{:?}",
        std::fs::read_to_string(here_dir.path().join(LOG))
    );
    let merged = std::fs::read_to_string(here_dir.path().join(LOG)).unwrap();
    for line in ["{\"n\":1}", "\"from\":\"laptop\"", "\"from\":\"here\""] {
        assert!(merged.contains(line), "{line} missing from {merged:?}");
    }
    let left: Vec<_> = std::fs::read_dir(here_dir.path().join("memory"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".botsync-tmp-"))
        .collect();
    assert!(left.is_empty(), "no temporary file is left");
}
