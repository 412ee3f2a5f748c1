//! The guards of docs/CONFLICTS.md, end to end with real processes: concurrent sessions against
//! one `botsync serve` never lose a version (the race rule), and deletions are guarded.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::Output;

use common::Peer;

/// Every file's bytes in a workspace: the synced files and the kept conflict copies.
fn everything(p: &Peer) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = p.tree().into_iter().map(|(_, b)| b).collect();
    let conflicts = p.path(".botsync/conflicts");
    for e in std::fs::read_dir(conflicts).unwrap() {
        let path = e.unwrap().path();
        // `records/` holds the conflict records, not versions.
        if path.is_file() {
            out.push(std::fs::read(path).unwrap());
        }
    }
    out
}

fn push_now(p: &Peer, args: &[&str]) -> std::process::Child {
    p.cmd()
        .arg("--json")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A server and two clients that both know it.
fn trio() -> (Peer, Peer, Peer, common::Server) {
    let (server, alpha, gamma) = (Peer::new("server"), Peer::new("alpha"), Peer::new("gamma"));
    let s = server.serve();
    server.add(&alpha, 7474);
    server.add(&gamma, 7475);
    alpha.add(&server, s.port);
    gamma.add(&server, s.port);
    (server, alpha, gamma, s)
}

#[test]
fn two_clients_pushing_one_new_path_at_once_lose_no_version() {
    let (server, alpha, gamma, _s) = trio();
    for round in 0..3 {
        let path = format!("memory/race-{round}.md");
        let (a_text, g_text) = (
            format!("alpha wrote round {round}\n"),
            format!("gamma wrote round {round}\n"),
        );
        alpha.write(&path, &a_text);
        gamma.write(&path, &g_text);
        let a = push_now(&alpha, &["push", "server"]);
        let g = push_now(&gamma, &["push", "server"]);
        let (a, g) = (a.wait_with_output().unwrap(), g.wait_with_output().unwrap());
        let codes = [code(&a), code(&g)];
        assert!(
            codes.iter().all(|c| *c == 0 || *c == 3),
            "{codes:?}\n{}\n{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&g.stderr)
        );
        // Every client syncs until all agree; the exit codes of the whole round are kept.
        let mut all_codes = codes.to_vec();
        for p in [&alpha, &gamma, &alpha] {
            let (c, _, _) = p.run(&["sync", "server"]);
            all_codes.push(c);
        }
        let kept: Vec<Vec<u8>> = [&server, &alpha, &gamma]
            .iter()
            .flat_map(|p| everything(p))
            .collect();
        for text in [&a_text, &g_text] {
            assert!(
                kept.iter().any(|b| b == text.as_bytes()),
                "round {round}: {text:?} was lost everywhere (exit codes {all_codes:?})"
            );
        }
        assert!(
            all_codes.contains(&3),
            "round {round}: a conflict was resolved without any sync saying so ({all_codes:?})"
        );
        assert_eq!(alpha.read(&path), gamma.read(&path), "round {round}");
    }
}

/// Eight notes on both sides of a synced pair.
fn synced_notes() -> (Peer, Peer, common::Server) {
    let (a, b, server) = common::pair();
    for i in 0..8 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    a.write("MEMORY.md", "# memory\n");
    a.ok(&["sync", "beta"]);
    assert_eq!(a.tree(), b.tree());
    (a, b, server)
}

fn notes_left(p: &Peer) -> usize {
    (0..8)
        .filter(|i| p.read(&format!("memory/n{i}.md")).is_some())
        .count()
}

/// The one error line a failed verb printed on stderr.
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("botsync: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

#[test]
fn emptying_memory_on_the_serving_side_stops_the_pull_until_forced() {
    let (a, b, _server) = synced_notes();
    for i in 0..8 {
        b.remove(&format!("memory/n{i}.md"));
    }
    let (code, json, stderr) = a.run(&["sync", "beta"]);
    assert_eq!(code, 1, "{json}");
    let line = error_line(&stderr);
    assert!(
        line.contains("would delete 8 of 9 synced files") && line.contains("--force"),
        "{line}"
    );
    assert!(!line.contains("internal"), "{line}");
    assert_eq!(notes_left(&a), 8, "the guard let deletions through");

    a.ok(&["pull", "beta", "--force"]);
    assert_eq!(notes_left(&a), 0);
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn emptying_memory_on_the_client_is_refused_by_the_server_until_forced() {
    let (a, b, _server) = synced_notes();
    for i in 0..8 {
        a.remove(&format!("memory/n{i}.md"));
    }
    for verb in ["push", "sync"] {
        let (code, json, stderr) = a.run(&[verb, "beta"]);
        assert_eq!(code, 1, "{verb}: {json}");
        let line = error_line(&stderr);
        assert!(
            line.contains("refused")
                && line.contains("would delete 8 of 9 synced files")
                && line.contains("--force"),
            "{verb}: {line}"
        );
        assert!(!line.contains("internal"), "{line}");
        assert_eq!(
            notes_left(&b),
            8,
            "{verb}: the server deleted without --force"
        );
    }
    // The server keeps serving after a refusal; with --force the deletions go through.
    a.ok(&["push", "beta", "--force"]);
    assert_eq!(notes_left(&b), 0);
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn deleting_a_single_note_needs_no_force() {
    let (a, b, _server) = synced_notes();
    a.remove("memory/n3.md");
    a.ok(&["sync", "beta"]);
    assert!(b.read("memory/n3.md").is_none());
}

#[test]
fn an_edit_beats_a_concurrent_delete_in_both_directions() {
    let (a, b, _server) = synced_notes();
    a.remove("memory/n1.md");
    b.write("memory/n1.md", "edited on beta\n");
    b.remove("memory/n2.md");
    a.write("memory/n2.md", "edited on alpha\n");
    a.run(&["sync", "beta"]);
    a.ok(&["sync", "beta"]);
    assert_eq!(a.read("memory/n1.md").unwrap(), b"edited on beta\n");
    assert_eq!(b.read("memory/n2.md").unwrap(), b"edited on alpha\n");
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn a_served_workspace_that_vanished_propagates_no_deletion() {
    let (a, b, _server) = synced_notes();
    // The served directory is emptied under the running daemon (a disk unmounted, a wrong
    // `rm -rf`): its marker is gone with the files. End to end the daemon now refuses the
    // connection (its peers.json went with `.botsync/`); were it to answer, its rescan refuses a
    // root without marker (engine/tests/deletes.rs). Either way no deletion reaches alpha.
    for e in std::fs::read_dir(b.root()).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (code, json, stderr) = a.run(&["sync", "beta", "--force"]);
    assert_ne!(code, 0, "{json}");
    assert!(!error_line(&stderr).is_empty());
    assert_eq!(notes_left(&a), 8, "a vanished workspace emptied its peer");
}
