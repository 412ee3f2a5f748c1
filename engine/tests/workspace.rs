//! The workspace as a sync session sees it: chunks are served only from files it advertises and
//! only while they still hold what was scanned; incoming versions are planned under its own rules.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::plan::Action;
use botsync_engine::workspace::Workspace;
use botsync_engine::{AgentLabel, Attribution, MachineName, PeerId, RelPath};

fn open(dir: &Path) -> Workspace {
    common::open_workspace(dir, 1)
}

#[test]
fn a_chunk_is_served_only_while_its_file_still_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open(dir.path());
    fs::create_dir_all(dir.path().join("memory")).unwrap();
    fs::write(dir.path().join("memory/a.md"), b"original text").unwrap();
    fs::write(dir.path().join("IDENTITY.md"), b"not synced").unwrap();
    ws.refresh(1_000).unwrap();
    let entry = ws
        .entries(&[RelPath::new("memory/a.md").unwrap()])
        .unwrap()
        .remove(0);
    let id = entry.chunks[0].id;
    assert_eq!(ws.read_chunk(&id).unwrap().unwrap(), b"original text");
    // A file the selection does not sync is never advertised, so its bytes are never served.
    assert!(
        ws.read_chunk(&botsync_engine::Hash::of(b"not synced"))
            .unwrap()
            .is_none()
    );
    // The file changes on disk after the scan (same size): the chunk no longer verifies, so it
    // is refused rather than sent torn; the receiver reports it and retries next sync.
    fs::write(dir.path().join("memory/a.md"), b"ORIGINAL text").unwrap();
    assert!(ws.read_chunk(&id).unwrap().is_none());
}

#[test]
fn incoming_versions_are_planned_under_our_own_rules() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    fs::create_dir_all(a_dir.path().join("config")).unwrap();
    fs::write(a_dir.path().join("config/x.json"), b"{}").unwrap();
    fs::write(a_dir.path().join("MEMORY.md"), b"m").unwrap();
    // Pretend alpha syncs config/ (its own rules) by building its entry through a scan of a
    // workspace that includes it.
    let cfg = a_dir.path().join(".botsync/config.json");
    fs::write(&cfg, r#"{"include": ["config/"]}"#).unwrap();
    let local = Attribution {
        peer: PeerId([2; 32]),
        agent: AgentLabel::new("a"),
        machine: MachineName::default(),
    };
    drop(a);
    let a = Workspace::open(a_dir.path(), local).unwrap().0;
    a.refresh(1_000).unwrap();
    let offered = a
        .entries(&[
            RelPath::new("config/x.json").unwrap(),
            RelPath::new("MEMORY.md").unwrap(),
        ])
        .unwrap();
    assert_eq!(offered.len(), 2);
    let plan = b.plan(offered).unwrap();
    let action = |p: &str| {
        plan.iter()
            .find(|i| i.path().as_str() == p)
            .unwrap()
            .action
            .clone()
    };
    assert_eq!(action("config/x.json"), Action::NotSelected);
    assert_eq!(action("MEMORY.md"), Action::Take);
}

#[test]
fn a_corrupt_index_is_rebuilt_from_a_rescan_with_the_same_content() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open(dir.path());
    fs::create_dir_all(dir.path().join("memory")).unwrap();
    for i in 0..20 {
        fs::write(
            dir.path().join(format!("memory/n{i}.md")),
            format!("note {i}\n"),
        )
        .unwrap();
    }
    let before = ws.refresh(1_000).unwrap();
    drop(ws);
    // Garbage over every file of the sled database.
    for e in fs::read_dir(dir.path().join(".botsync/db")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            fs::write(&p, b"this is not a sled database").unwrap();
        }
    }
    let local = Attribution {
        peer: PeerId([1; 32]),
        agent: AgentLabel::new("t"),
        machine: MachineName::default(),
    };
    let (ws, outcome) = Workspace::open(dir.path(), local).unwrap();
    assert!(
        matches!(outcome, botsync_engine::store::OpenOutcome::Rebuilt { .. }),
        "{outcome:?}"
    );
    let after = ws.refresh(2_000).unwrap();
    assert_eq!(after.files, 20);
    assert_eq!(
        after.scan.hashed_files, 20,
        "the rescan rebuilt every entry from the files"
    );
    // Same files, same content: the rebuilt index describes the same workspace.
    let paths: Vec<RelPath> = (0..20)
        .map(|i| RelPath::new(&format!("memory/n{i}.md")).unwrap())
        .collect();
    for e in ws.entries(&paths).unwrap() {
        let i: usize = e.path.as_str()["memory/n".len()..]
            .trim_end_matches(".md")
            .parse()
            .unwrap();
        assert_eq!(
            e.content,
            botsync_engine::chunktree::content_hash(&[botsync_engine::ChunkRef {
                id: botsync_engine::Hash::of(format!("note {i}\n").as_bytes()),
                len: format!("note {i}\n").len() as u32,
            }])
        );
    }
    assert_eq!(before.files, after.files);
}

#[test]
fn a_workspace_whose_index_is_in_memory_takes_the_laptops_rounds_as_one_on_disk_does() {
    use botsync_engine::workspace::IndexKind;
    use common::round;

    let tmp = tempfile::tempdir().unwrap();
    let [laptop, on_disk, in_memory] =
        ["laptop", "on_disk", "in_memory"].map(|n| tmp.path().join(n));
    let laptop_ws = common::open_workspace(&laptop, 1);
    let disk_ws = common::open_workspace(&on_disk, 2);
    Workspace::init(&in_memory, Some("test")).unwrap();
    let local = Attribution {
        peer: PeerId([3; 32]),
        agent: AgentLabel::new("t"),
        machine: MachineName::default(),
    };
    let (memory_ws, _) = Workspace::open_with(&in_memory, local, IndexKind::InMemory).unwrap();

    round::write_all(&laptop, round::FIRST);
    for here in [&disk_ws, &memory_ws] {
        round::pull(here, &laptop_ws);
    }
    round::second_round(&laptop);
    let reports = [&disk_ws, &memory_ws].map(|here| {
        round::pull_reports(here, &laptop_ws)
            .unwrap()
            .into_iter()
            .map(|r| (r.path, r.action, r.outcome))
            .collect::<Vec<_>>()
    });
    assert_eq!(reports[0], reports[1], "the same decisions and outcomes");
    assert_eq!(round::contents(&on_disk), round::contents(&laptop));
    assert_eq!(round::contents(&in_memory), round::contents(&laptop));
    assert_eq!(
        disk_ws.snapshot(),
        memory_ws.snapshot(),
        "the same Merkle root"
    );
    let history = |ws: &Workspace| {
        let records = ws.store().history_recent(100).unwrap();
        records
            .into_iter()
            .map(|r| (r.path, r.action))
            .collect::<Vec<_>>()
    };
    assert_eq!(history(&disk_ws), history(&memory_ws));
    let entries = |dir: &Path| fs::read_dir(dir).map_or(0, |d| d.count());
    assert!(entries(&on_disk.join(".botsync/db")) > 0);
    assert_eq!(
        entries(&in_memory.join(".botsync/db")),
        0,
        "an index in memory leaves nothing on disk"
    );
}
