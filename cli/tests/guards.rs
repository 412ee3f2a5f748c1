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
        out.push(std::fs::read(e.unwrap().path()).unwrap());
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
