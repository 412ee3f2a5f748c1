//! Merge bases kept by an apply: the version of a note a session just applied becomes the common
//! ancestor of the next merge of that note, taken from the chunks the session holds in memory
//! or has staged (not read back from the file and chunked again: on an initial sync of an agent
//! workspace that was about a tenth of the receiver's CPU).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::fs;

use botsync_engine::apply::{ChunkSource, SourceError};
use botsync_engine::plan::{Action, Outcome};
use botsync_engine::workspace::Workspace;
use botsync_engine::{Hash, RelPath};

use common::open_workspace;

const NOW: i64 = 1_800_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;
const NOTE: &str = "memory/plan.md";

fn lines(edits: &[(usize, &str)]) -> String {
    let mut lines: Vec<String> = (0..12).map(|i| format!("- step {i} of the plan")).collect();
    for (at, text) in edits {
        lines[*at] = (*text).to_owned();
    }
    lines.join("\n") + "\n"
}

fn write(ws: &Workspace, text: &str, now: i64) {
    let p = ws.root().join(NOTE);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    ws.refresh(now).unwrap();
}

/// Chunks a session holds in memory, counting how often the apply asks for one.
#[derive(Default)]
struct Held {
    chunks: HashMap<Hash, Vec<u8>>,
    asked: usize,
}

impl ChunkSource for Held {
    fn fetch(&mut self, id: &Hash, _len: u32) -> Result<Option<Vec<u8>>, SourceError> {
        self.asked += 1;
        Ok(self.chunks.get(id).cloned())
    }

    fn holds(&self, id: &Hash) -> bool {
        self.chunks.contains_key(id)
    }
}

/// Send `from`'s version of the note to `to` the way a session does: the chunks of a plain take
/// are held in memory and applied from there, those of a merge are staged (the merge reads
/// them from the store). Returns what was held.
fn send(from: &Workspace, to: &Workspace, now: i64) -> Held {
    let paths = [RelPath::new(NOTE).unwrap()];
    let plan = to.plan(from.entries(&paths).unwrap()).unwrap();
    let mut held = Held::default();
    for c in to.chunks_needed(&plan).unwrap() {
        let bytes = from.read_chunk(&c.id).unwrap().unwrap();
        if plan[0].action == Action::Take {
            held.chunks.insert(c.id, bytes);
        } else {
            to.put_chunk(&c.id, &bytes).unwrap();
        }
    }
    let reports = to.apply_with(plan, now, &mut held).unwrap();
    assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
    held
}

#[test]
fn a_note_applied_from_memory_is_the_ancestor_of_the_next_merge() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alpha, beta) = (open_workspace(da.path(), 1), open_workspace(db.path(), 2));
    write(&alpha, &lines(&[]), NOW);
    let held = send(&alpha, &beta, NOW);
    assert_eq!(
        held.asked, 2,
        "the session's copy of the note is asked twice: to write the file, to keep its base"
    );

    // Both edit the note, different lines, before the next sync: only a common ancestor lets
    // the text policy merge them cleanly.
    write(
        &alpha,
        &lines(&[(2, "- step 2, done by alpha")]),
        NOW + SECOND,
    );
    write(
        &beta,
        &lines(&[(9, "- step 9, done by beta")]),
        NOW + 2 * SECOND,
    );
    send(&alpha, &beta, NOW + 3 * SECOND);
    assert_eq!(
        fs::read_to_string(db.path().join(NOTE)).unwrap(),
        lines(&[
            (2, "- step 2, done by alpha"),
            (9, "- step 9, done by beta")
        ])
    );
}

#[test]
fn a_note_applied_from_staged_chunks_is_the_ancestor_of_the_next_merge() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alpha, beta) = (open_workspace(da.path(), 1), open_workspace(db.path(), 2));
    write(&alpha, &lines(&[]), NOW);
    // Nothing held in memory: the chunks are staged, the way a session that fetched them
    // before an interruption leaves them; the apply moves them into the store as the base.
    let paths = [RelPath::new(NOTE).unwrap()];
    let plan = beta.plan(alpha.entries(&paths).unwrap()).unwrap();
    for c in beta.chunks_needed(&plan).unwrap() {
        beta.put_chunk(&c.id, &alpha.read_chunk(&c.id).unwrap().unwrap())
            .unwrap();
    }
    beta.apply(plan, NOW).unwrap();
    write(&alpha, &lines(&[(0, "- step 0, by alpha")]), NOW + SECOND);
    write(
        &beta,
        &lines(&[(11, "- step 11, by beta")]),
        NOW + 2 * SECOND,
    );
    send(&alpha, &beta, NOW + 3 * SECOND);
    assert_eq!(
        fs::read_to_string(db.path().join(NOTE)).unwrap(),
        lines(&[(0, "- step 0, by alpha"), (11, "- step 11, by beta")])
    );
}

/// A session of 1,100 notes: more bases than one index write records (they are written a slice
/// at a time, so a sync of 20,000 notes does not hold one 65 MiB batch). Every note has its
/// base on both sides, the receiver's kept by the apply, the sender's by `record_merge_bases`.
#[test]
fn every_base_of_a_large_session_is_recorded_on_both_sides() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alpha, beta) = (open_workspace(da.path(), 1), open_workspace(db.path(), 2));
    let paths: Vec<RelPath> = (0..1_100)
        .map(|i| RelPath::new(&format!("memory/n{i:04}.md")).unwrap())
        .collect();
    fs::create_dir_all(da.path().join("memory")).unwrap();
    for p in &paths {
        fs::write(p.on_disk(da.path()), format!("note {p}\n")).unwrap();
    }
    alpha.refresh(NOW).unwrap();
    let plan = beta.plan(alpha.entries(&paths).unwrap()).unwrap();
    let mut held = Held::default();
    for c in beta.chunks_needed(&plan).unwrap() {
        held.chunks
            .insert(c.id, alpha.read_chunk(&c.id).unwrap().unwrap());
    }
    let reports = beta.apply_with(plan, NOW, &mut held).unwrap();
    assert!(reports.iter().all(|r| r.outcome == Outcome::Done));
    alpha.record_merge_bases(&paths);
    for ws in [&alpha, &beta] {
        let missing = paths
            .iter()
            .filter(|p| {
                ws.store()
                    .kv_get("merge-base", p.as_str())
                    .unwrap()
                    .is_none()
            })
            .count();
        assert_eq!(missing, 0, "bases not recorded in {}", ws.root().display());
    }
}

/// Two workspaces that hold the same notes, made identical without botsync (a copy, a restore)
/// and each scanned on its own, settled by a sync: every note is a merged version vector and an
/// agreed merge base. Copying each base into the store within the session made settling 10^5
/// notes take minutes on both sides; past the first 256 they are recorded at once and copied
/// by the keeper, and a deferred base is then the ancestor of a merge like any other.
#[test]
fn settling_identical_workspaces_defers_most_base_copies_to_the_keeper() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = botsync_engine::config::SyncConfig::default();
    config.local_versions.max_bytes = 0; // no local versions: the store holds only bases
    let alpha = common::open_workspace_with(da.path(), 1, &config);
    let beta = common::open_workspace_with(db.path(), 2, &config);
    let paths: Vec<RelPath> = (0..300)
        .map(|i| RelPath::new(&format!("memory/n{i:04}.md")).unwrap())
        .collect();
    for dir in [da.path(), db.path()] {
        fs::create_dir_all(dir.join("memory")).unwrap();
        for p in &paths {
            fs::write(p.on_disk(dir), lines(&[(0, p.as_str())])).unwrap();
        }
    }
    alpha.refresh(NOW).unwrap();
    beta.refresh(NOW).unwrap();

    // Both directions, as a sync does: each side records the merged vectors.
    for (to, from) in [(&beta, &alpha), (&alpha, &beta)] {
        let plan = to.plan(from.entries(&paths).unwrap()).unwrap();
        assert!(plan.iter().all(|i| i.action == Action::MergeVersion));
        let reports = to.apply(plan, NOW + SECOND).unwrap();
        assert!(reports.iter().all(|r| r.outcome == Outcome::Unchanged));
        assert!(to.has_deferred_versions(), "bases past the first 256 wait");
    }
    for ws in [&alpha, &beta] {
        let kept = ws.keep_deferred_versions(|| false);
        assert_eq!((kept.kept, kept.skipped, kept.failed), (300 - 256, 0, 0));
        assert!(!ws.has_deferred_versions());
        assert_eq!(ws.keep_deferred_versions(|| false).kept, 0, "nothing twice");
    }

    // The last note's base was deferred: both edit it, different lines, and it merges.
    let last = paths.last().unwrap();
    let base = lines(&[(0, last.as_str())]);
    let ours: Vec<String> = base.lines().map(str::to_owned).collect();
    let edit = |ws: &Workspace, at: usize, text: &str, now: i64| {
        let mut l = ours.clone();
        l[at] = text.to_owned();
        fs::write(last.on_disk(ws.root()), l.join("\n") + "\n").unwrap();
        ws.refresh(now).unwrap();
    };
    edit(&alpha, 3, "- step 3, by alpha", NOW + 2 * SECOND);
    edit(&beta, 8, "- step 8, by beta", NOW + 3 * SECOND);
    let plan = beta
        .plan(alpha.entries(std::slice::from_ref(last)).unwrap())
        .unwrap();
    for c in beta.chunks_needed(&plan).unwrap() {
        beta.put_chunk(&c.id, &alpha.read_chunk(&c.id).unwrap().unwrap())
            .unwrap();
    }
    let reports = beta.apply(plan, NOW + 4 * SECOND).unwrap();
    assert_eq!(reports[0].outcome, Outcome::Done, "{reports:?}");
    assert_eq!(reports[0].conflict_copy, None, "merged, not a conflict");
    let mut both = ours.clone();
    both[3] = "- step 3, by alpha".into();
    both[8] = "- step 8, by beta".into();
    assert_eq!(
        fs::read_to_string(last.on_disk(db.path())).unwrap(),
        both.join("\n") + "\n"
    );
}
