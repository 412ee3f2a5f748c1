//! Reviewing and resolving conflicts, history and restore (docs/CONFLICTS.md), end to end with
//! two real processes: alpha runs the verbs, beta runs `botsync serve`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Peer, Server, human, pair};

/// Alpha and beta both edit `path` after a first sync; beta's edit is later, so alpha's
/// version loses and is kept on alpha.
fn conflicted_at(path: &str) -> (Peer, Peer, Server) {
    let (a, b, server) = pair();
    a.write(path, "base\n");
    a.ok(&["sync"]);
    a.write(path, "alpha's edit\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write(path, "beta's later edit\n");
    let (code, _, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "a conflict needs attention");
    (a, b, server)
}

fn conflicted() -> (Peer, Peer, Server) {
    conflicted_at("MEMORY.md")
}

#[test]
fn a_conflict_is_listed_shown_and_says_truthfully_where_the_loser_is() {
    let (a, b, _server) = pair();
    a.write("MEMORY.md", "base\n");
    a.ok(&["sync"]);
    a.write("MEMORY.md", "alpha's edit\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write("MEMORY.md", "beta's later edit\n");
    let (code, out, _) = human(&a, &["sync"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("our version lost to beta's, kept here in .botsync/conflicts/"),
        "{out}"
    );

    let (code, json, _) = a.run(&["conflicts", "list"]);
    assert_eq!(code, 3, "open conflicts need attention: {json}");
    assert_eq!(json["open"], 1);
    let c = &json["conflicts"][0];
    assert_eq!(c["path"], "MEMORY.md");
    assert_eq!(c["kind"], "content");
    assert_eq!(c["lost"], "local");
    assert_eq!(c["kept_on"], a.id().as_str());
    assert_eq!(c["local"]["size"], 13);
    assert_eq!(c["remote"]["peer"], b.id().as_str());
    let kept = a.path(c["kept"].as_str().unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), b"alpha's edit\n");

    let (code, out, _) = human(&a, &["conflicts", "list"]);
    assert_eq!(code, 3);
    assert!(out.contains("1 open conflict"), "{out}");
    assert!(
        out.contains(
            "MEMORY.md  the local version (alpha, 13 B) lost to the remote one (beta, 18 B)"
        ),
        "{out}"
    );

    let (code, out, _) = human(&a, &["conflicts", "show", "MEMORY.md"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("-alpha's edit"), "{out}");
    assert!(out.contains("+beta's later edit"), "{out}");

    let (code, status, _) = a.run(&["status"]);
    assert_eq!(code, 3, "status says attention is needed: {status}");
    assert_eq!(status["open_conflicts"], 1);
}

#[test]
fn the_peers_losing_version_is_reported_as_kept_on_the_peer() {
    let (a, b, _server) = pair();
    a.write("MEMORY.md", "base\n");
    a.ok(&["sync"]);
    b.write("MEMORY.md", "beta's edit\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    a.write("MEMORY.md", "alpha's later edit\n");
    let (code, out, _) = human(&a, &["sync"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("beta's version lost to ours, kept on beta in .botsync/conflicts/"),
        "{out}"
    );
    assert!(!out.contains("our version lost"), "{out}");
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    assert_eq!(b.read("MEMORY.md").unwrap(), b"alpha's later edit\n");
}

#[test]
fn resolving_with_remote_closes_the_conflict() {
    let (a, b, _server) = conflicted();
    let dry = a.ok(&[
        "conflicts",
        "resolve",
        "MEMORY.md",
        "--keep",
        "remote",
        "--dry-run",
    ]);
    assert_eq!(dry["open"], 1, "a dry run changes nothing: {dry}");
    let done = a.ok(&["conflicts", "resolve", "MEMORY.md", "--keep", "remote"]);
    assert_eq!(done["open"], 0, "{done}");
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    a.ok(&["sync"]);
    assert_eq!(a.read("MEMORY.md").unwrap(), b"beta's later edit\n");
    assert_eq!(b.read("MEMORY.md").unwrap(), b"beta's later edit\n");
}

#[test]
fn resolving_with_local_brings_our_version_back_and_it_syncs() {
    let (a, b, _server) = conflicted();
    a.ok(&["conflicts", "resolve", "MEMORY.md", "--keep", "local"]);
    assert_eq!(a.read("MEMORY.md").unwrap(), b"alpha's edit\n");
    assert_eq!(a.ok(&["conflicts", "list"])["open"], 0);
    a.ok(&["sync"]);
    assert_eq!(b.read("MEMORY.md").unwrap(), b"alpha's edit\n");
}

#[test]
fn resolving_with_both_keeps_the_remote_beside_and_both_sync() {
    let (a, b, _server) = conflicted_at("memory/notes.md");
    let done = a.ok(&["conflicts", "resolve", "--all", "--keep", "both"]);
    let beside = format!("memory/notes.conflict-{}.md", short(&b.id()));
    assert_eq!(done["resolved"][0]["changed"][0], beside.as_str(), "{done}");
    assert_eq!(a.read("memory/notes.md").unwrap(), b"alpha's edit\n");
    assert_eq!(a.read(&beside).unwrap(), b"beta's later edit\n");
    a.ok(&["sync"]);
    assert_eq!(b.read("memory/notes.md").unwrap(), b"alpha's edit\n");
    assert_eq!(b.read(&beside).unwrap(), b"beta's later edit\n");
}

#[test]
fn a_both_copy_outside_the_selection_is_said_to_stay_here() {
    let (a, b, _server) = conflicted();
    let (code, out, _) = human(&a, &["conflicts", "resolve", "MEMORY.md", "--keep", "both"]);
    assert_eq!(code, 0, "{out}");
    let beside = format!("MEMORY.conflict-{}.md", short(&b.id()));
    assert!(
        out.contains(&format!("{beside} is outside what this workspace syncs")),
        "{out}"
    );
    assert_eq!(a.read(&beside).unwrap(), b"beta's later edit\n");
}

#[test]
fn resolving_a_path_without_conflict_is_one_line() {
    let (a, _b, _server) = pair();
    let (code, json, stderr) = a.run(&["conflicts", "resolve", "MEMORY.md", "--keep", "local"]);
    assert_eq!(code, 2, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no open conflict for MEMORY.md"),
        "{json} {stderr}"
    );
}

#[test]
fn history_lists_a_remote_replacement_and_the_sync() {
    let (a, b, _server) = pair();
    a.write("memory/notes.md", "v1\n");
    a.ok(&["sync"]);
    b.write("memory/notes.md", "v2 from beta\n");
    a.ok(&["sync"]);
    let all = a.ok(&["history"]);
    let sessions = all["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{all}");
    assert_eq!(sessions[0]["peer"], "beta");
    assert_eq!(sessions[0]["direction"], "sync");
    assert_eq!(sessions[0]["received"], 1);
    let file = a.ok(&["history", "memory/notes.md"]);
    let latest = &file["files"][0];
    assert_eq!(latest["action"], "modified", "{file}");
    assert_eq!(latest["peer"], short(&b.id()).as_str());
    assert_eq!(latest["peer_name"], "beta");
    assert_eq!(latest["size"], 13);
    assert!(latest["replaced"].is_string(), "{file}");
    // Beta answered both sessions (its daemon): what alpha pushed is in its log.
    let served = b.ok(&["history"]);
    assert_eq!(served["sessions"][0]["direction"], "served", "{served}");
    assert_eq!(served["sessions"][0]["peer"], "alpha");
    assert_eq!(served["sessions"][0]["received"], 1);
    let (code, out, _) = human(&a, &["history", "memory/notes.md"]);
    assert_eq!(code, 0);
    assert!(out.contains("modified memory/notes.md"), "{out}");
}

#[test]
fn restore_brings_back_a_file_a_peer_deleted_and_it_syncs_back() {
    let (a, b, _server) = pair();
    a.write("memory/keep.md", "precious\n");
    a.write("memory/other.md", "other\n");
    a.ok(&["sync"]);
    b.remove("memory/keep.md");
    a.ok(&["sync"]);
    assert!(a.read("memory/keep.md").is_none(), "the deletion synced");

    let dry = a.ok(&["restore", "--dry-run", "memory/keep.md"]);
    assert_eq!(
        (&dry["would_write"], &dry["written"]),
        (&serde_json::json!(true), &serde_json::json!(false)),
        "{dry}"
    );
    assert!(
        a.read("memory/keep.md").is_none(),
        "a dry run changes nothing"
    );
    let restored = a.ok(&["restore", "memory/keep.md"]);
    assert_eq!(restored["written"], true, "{restored}");
    assert_eq!(a.read("memory/keep.md").unwrap(), b"precious\n");
    a.ok(&["sync"]);
    assert_eq!(b.read("memory/keep.md").unwrap(), b"precious\n");

    let (code, json, _) = a.run(&["restore", "memory/never.md"]);
    assert_eq!(code, 2, "an unknown path is a usage error");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("memory/never.md is unknown here"),
        "{json}"
    );
    let (code, json, _) = a.run(&["restore", "memory/keep.md@0000000000"]);
    assert_eq!(code, 1);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no version 0000000000"),
        "{json}"
    );
}

/// The short form of a copy-safe peer id: its first 8 characters.
fn short(id: &str) -> String {
    id.chars().filter(|c| *c != '-').take(8).collect()
}

#[test]
fn resolving_as_merged_takes_the_file_as_edited_and_it_syncs() {
    let (a, b, _server) = conflicted();
    a.write("MEMORY.md", "alpha's edit\nbeta's later edit\n");
    let done = a.ok(&["conflicts", "resolve", "MEMORY.md", "--keep", "merged"]);
    assert_eq!(done["open"], 0, "{done}");
    a.ok(&["sync"]);
    assert_eq!(
        b.read("MEMORY.md").unwrap(),
        b"alpha's edit\nbeta's later edit\n"
    );
}

#[test]
fn an_agent_that_overwrote_its_memory_gets_it_back_without_any_peer() {
    let a = Peer::new("alpha");
    a.configure(serde_json::json!({ "local_versions": { "every_secs": 0 } }));
    a.write("MEMORY.md", "# Memory\n- the user prefers helix\n");
    a.ok(&["scan"]);
    a.write("MEMORY.md", "# Memory\n");
    a.ok(&["scan"]);

    let (code, out, _) = human(&a, &["history", "MEMORY.md"]);
    assert_eq!(code, 0);
    assert!(out.contains("modified MEMORY.md  by alpha"), "{out}");
    assert!(out.contains("`botsync restore MEMORY.md@"), "{out}");
    let restored = a.ok(&["restore", "MEMORY.md"]);
    assert_eq!(restored["written"], true, "{restored}");
    assert_eq!(
        a.read("MEMORY.md").unwrap(),
        b"# Memory\n- the user prefers helix\n"
    );
}

#[test]
fn the_daemon_keeps_in_the_background_what_a_large_first_scan_deferred() {
    let a = Peer::new("alpha");
    let n = botsync_engine::workspace::INLINE_KEEP + 40;
    for i in 0..n {
        a.write(&format!("memory/n{i:04}.md"), format!("note {i}\n"));
    }
    let _daemon = a.serve();
    a.ok(&["status"]);
    // The scan copied INLINE_KEEP versions itself; the daemon keeps the other 40 shortly after.
    let manifests = || walk_files(&a.path(".botsync/store/manifests"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while manifests() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} versions kept after 60 s",
            manifests()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let last = format!("memory/n{:04}.md", n - 1);
    a.write(&last, "overwritten\n");
    a.ok(&["scan"]);
    a.ok(&["restore", &last]);
    assert_eq!(
        a.read(&last).unwrap(),
        format!("note {}\n", n - 1).as_bytes()
    );
}

/// Regular files under `dir`, at any depth.
fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}
