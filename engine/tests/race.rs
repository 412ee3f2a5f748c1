//! The race rule of docs/CONFLICTS.md: two sessions against one replica plan against the same
//! index, then apply one after the other. The second apply must see that the path changed
//! since its plan and never replace a version it did not see.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::Path;

use botsync_engine::plan::{Action, Outcome, PlanItem};
use botsync_engine::workspace::Workspace;
use botsync_engine::{FileEntry, RelPath};

use common::open_workspace;

const NOW: i64 = 1_800_000_000_000_000_000;

/// A client workspace holding one new file; returns it with its entry.
fn client_with(dir: &Path, peer: u8, path: &str, text: &str) -> (Workspace, FileEntry) {
    let ws = open_workspace(dir, peer);
    let fs_path = dir.join(path);
    fs::create_dir_all(fs_path.parent().unwrap()).unwrap();
    fs::write(&fs_path, text).unwrap();
    ws.refresh(NOW).unwrap();
    let entry = ws
        .entries(&[RelPath::new(path).unwrap()])
        .unwrap()
        .remove(0);
    (ws, entry)
}

/// The server fetches what `plan` needs from `client`, as a push does.
fn fetch(server: &Workspace, client: &Workspace, plan: &[PlanItem]) {
    for c in server.chunks_needed(plan).unwrap() {
        let bytes = client.read_chunk(&c.id).unwrap().unwrap();
        server.put_chunk(&c.id, &bytes).unwrap();
    }
}

/// Every file under `.botsync/conflicts/` of a workspace, as text.
fn conflict_copies(root: &Path) -> Vec<String> {
    fs::read_dir(root.join(".botsync/conflicts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // `records/` holds the conflict records, not versions.
        .filter(|p| p.is_file())
        .map(|p| fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn two_clients_creating_one_path_at_once_lose_no_version() {
    let tmp: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let server = open_workspace(tmp[0].path(), 1);
    server.refresh(NOW).unwrap();
    let (alpha, from_alpha) = client_with(tmp[1].path(), 2, "memory/new.md", "from alpha\n");
    let (gamma, from_gamma) = client_with(tmp[2].path(), 3, "memory/new.md", "from gamma\n");

    // Both sessions plan before either applies: each sees a path the server does not have.
    let plan_alpha = server.plan(vec![from_alpha]).unwrap();
    let plan_gamma = server.plan(vec![from_gamma]).unwrap();
    assert_eq!(plan_alpha[0].action, Action::Take);
    assert_eq!(plan_gamma[0].action, Action::Take);
    fetch(&server, &alpha, &plan_alpha);
    fetch(&server, &gamma, &plan_gamma);

    let first = server.apply(plan_alpha, NOW).unwrap();
    assert_eq!(first[0].outcome, Outcome::Done);
    let second = server.apply(plan_gamma, NOW).unwrap();

    // The second apply found alpha's version, which its plan never saw: a conflict.
    assert!(second[0].action.is_conflict(), "{:?}", second[0]);
    let current = fs::read_to_string(tmp[0].path().join("memory/new.md")).unwrap();
    let kept = conflict_copies(tmp[0].path());
    match second[0].action {
        // Gamma's version won: alpha's is kept in the server's conflicts/.
        Action::TakeConflict => {
            assert_eq!(current, "from gamma\n");
            assert_eq!(kept, ["from alpha\n"]);
            assert_eq!(second[0].outcome, Outcome::Done);
        }
        // Alpha's version won: it stays, and gamma is told (it keeps its own until it pulls).
        Action::KeepConflict => {
            assert_eq!(current, "from alpha\n");
            assert!(kept.is_empty());
        }
        ref other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_local_edit_scanned_between_plan_and_apply_is_not_overwritten() {
    let tmp: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (server, _) = client_with(tmp[0].path(), 1, "MEMORY.md", "v1\n");
    let (peer, _) = client_with(tmp[1].path(), 2, "MEMORY.md", "v1\n");
    // Bring the peer to the server's version, then let it edit.
    let ours = server
        .entries(&[RelPath::new("MEMORY.md").unwrap()])
        .unwrap();
    peer.apply(peer.plan(ours).unwrap(), NOW).unwrap();
    fs::write(tmp[1].path().join("MEMORY.md"), "v2 from the peer\n").unwrap();
    peer.refresh(NOW + 1).unwrap();
    let offered = peer.entries(&[RelPath::new("MEMORY.md").unwrap()]).unwrap();
    let plan = server.plan(offered).unwrap();
    assert_eq!(plan[0].action, Action::Take, "a fast-forward when planned");
    fetch(&server, &peer, &plan);

    // Another session's rescan picks up a local edit before this apply.
    fs::write(tmp[0].path().join("MEMORY.md"), "v2 on the server\n").unwrap();
    server.refresh(NOW + 3).unwrap();
    let report = server.apply(plan, NOW + 4).unwrap();

    assert!(report[0].action.is_conflict(), "{:?}", report[0]);
    let current = fs::read_to_string(tmp[0].path().join("MEMORY.md")).unwrap();
    let mut both = conflict_copies(tmp[0].path());
    both.push(current);
    both.sort();
    if report[0].action == Action::TakeConflict {
        assert_eq!(both, ["v2 from the peer\n", "v2 on the server\n"]);
    } else {
        assert_eq!(both, ["v2 on the server\n"]);
    }
}
