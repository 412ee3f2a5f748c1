//! The skill state store (`botsync state set|get|list|del`), end to end through the real binary:
//! an agent keeps memories under keys, reads them back, lists them by pattern, with and without
//! a daemon holding the workspace.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{Peer, human};

/// `state set KEY` with the value on stdin.
fn set_from_stdin(p: &Peer, key: &str, value: &[u8]) -> (i32, String) {
    let mut child = p
        .cmd()
        .args(["state", "set", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child may refuse before reading all of an oversize value: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(value);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn keys(list: &serde_json::Value) -> Vec<String> {
    list["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect()
}

/// Everything a story needs from the store, checked once without and once with a daemon.
fn remember_recall_list_and_forget(a: &Peer) {
    a.ok(&[
        "--agent",
        "tester",
        "state",
        "set",
        "memory:rust",
        "prefers 2024 edition",
    ]);
    let (code, _) = set_from_stdin(a, "memory:editor", b"helix\nwith vim keys\n");
    assert_eq!(code, 0);
    a.ok(&["state", "set", "notes:todo", "ship it"]);

    let (code, out, _) = human(a, &["state", "get", "memory:rust"]);
    assert_eq!((code, out.as_str()), (0, "prefers 2024 edition\n"));
    let (_, out, _) = human(a, &["state", "get", "memory:editor"]);
    assert_eq!(out, "helix\nwith vim keys\n", "stdin is stored as given");

    let all = a.ok(&["state", "list"]);
    assert_eq!(keys(&all), ["memory:editor", "memory:rust", "notes:todo"]);
    let mem = a.ok(&["state", "list", "--pattern", "memory:*"]);
    assert_eq!(keys(&mem), ["memory:editor", "memory:rust"]);
    let entry = &mem["state"][1];
    assert_eq!(entry["value"], "prefers 2024 edition");
    assert_eq!(entry["author"]["peer_name"], a.name.as_str());
    assert_eq!(entry["author"]["agent"], "tester");
    assert!(entry["time"].as_str().unwrap().starts_with("20"), "{entry}");
    let both = a.ok(&[
        "state",
        "list",
        "--pattern",
        "notes:*",
        "--pattern",
        "memory:r*",
    ]);
    assert_eq!(keys(&both), ["memory:rust", "notes:todo"]);

    let (code, out, _) = human(a, &["state", "list", "--pattern", "memory:*"]);
    assert_eq!(code, 0);
    assert_eq!(
        out, "memory:editor\thelix\\nwith vim keys\\n\nmemory:rust\tprefers 2024 edition\n",
        "one line per key, newlines escaped"
    );

    a.ok(&["state", "set", "memory:rust", "prefers 2021 edition"]);
    let (_, out, _) = human(a, &["state", "get", "memory:rust"]);
    assert_eq!(out, "prefers 2021 edition\n", "a set replaces the value");

    a.ok(&["state", "set", "memory:balance", "-12"]);
    let (_, out, _) = human(a, &["state", "get", "memory:balance"]);
    assert_eq!(out, "-12\n", "a value may start with a dash");
    a.ok(&["state", "del", "memory:balance"]);

    a.ok(&["state", "del", "memory:rust"]);
    let (code, _, err) = human(a, &["state", "get", "memory:rust"]);
    assert_eq!(code, 1, "a deleted key is missing");
    assert!(err.contains("\"memory:rust\" is not set"), "{err}");
    assert_eq!(
        keys(&a.ok(&["state", "list", "--pattern", "memory:*"])),
        ["memory:editor"]
    );
}

#[test]
fn an_agent_remembers_recalls_lists_and_forgets_without_a_daemon() {
    let a = Peer::new("alpha");
    remember_recall_list_and_forget(&a);
}

#[test]
fn the_same_verbs_work_through_a_running_daemon() {
    let a = Peer::new("alpha");
    let _daemon = a.serve();
    remember_recall_list_and_forget(&a);
}

#[test]
fn a_missing_key_fails_with_one_line_and_exit_code_1() {
    let a = Peer::new("alpha");
    let (code, out, err) = human(&a, &["state", "get", "memory:nothing"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`botsync state list`"), "{err}");
    let (code, json, _) = a.run(&["state", "del", "memory:nothing"]);
    assert_eq!(code, 1);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("nothing to delete"),
        "{json}"
    );
}

#[test]
fn bad_keys_and_patterns_are_refused_as_usage_errors() {
    let a = Peer::new("alpha");
    for key in ["", "has space", "glob*", "new\nline"] {
        let (code, _, err) = human(&a, &["state", "set", key, "v"]);
        assert_eq!(code, 2, "{key:?}");
        assert!(err.contains("invalid state key"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (code, _, err) = human(&a, &["state", "list", "--pattern", "memory:["]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid pattern \"memory:[\""), "{err}");
    assert!(
        keys(&a.ok(&["state", "list"])).is_empty(),
        "nothing was stored"
    );
}

#[test]
fn a_value_over_64_kib_is_refused_and_one_at_the_limit_is_kept() {
    let a = Peer::new("alpha");
    let (code, err) = set_from_stdin(&a, "blob:big", &vec![b'x'; 64 * 1024 + 1]);
    assert_eq!(code, 2);
    assert!(err.contains("more than the 65536"), "{err}");
    let (code, _, _) = human(&a, &["state", "get", "blob:big"]);
    assert_eq!(code, 1, "the oversize value was not stored");
    let (code, err) = set_from_stdin(&a, "blob:max", &vec![b'x'; 64 * 1024]);
    assert_eq!(code, 0, "{err}");
    let got = a.ok(&["state", "get", "blob:max"]);
    assert_eq!(got["bytes"], 64 * 1024);

    // Through the daemon's control socket too, with the bytes that take the most room there.
    let _daemon = a.serve();
    let (code, err) = set_from_stdin(&a, "blob:high", &vec![0xff; 64 * 1024]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(a.ok(&["state", "get", "blob:high"])["bytes"], 64 * 1024);
    let (code, err) = set_from_stdin(&a, "blob:big", &vec![b'x'; 64 * 1024 + 1]);
    assert_eq!(code, 2);
    assert!(err.contains("more than the 65536"), "{err}");
}

/// Many callers at once: `set` and `list` interleaved, with the daemon running and without.
fn many_callers_at_once(a: &Peer) {
    let children: Vec<_> = (0..8)
        .map(|i| {
            let args: Vec<String> = if i % 2 == 0 {
                vec![
                    "state".into(),
                    "set".into(),
                    format!("memory:n{i}"),
                    format!("v{i}"),
                ]
            } else {
                vec![
                    "state".into(),
                    "list".into(),
                    "--pattern".into(),
                    "memory:*".into(),
                ]
            };
            a.cmd()
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a concurrent caller failed: {err}");
        assert!(!err.contains("locked"), "{err}");
    }
    assert_eq!(
        keys(&a.ok(&["state", "list", "--pattern", "memory:n*"])),
        ["memory:n0", "memory:n2", "memory:n4", "memory:n6"]
    );
}

#[test]
fn concurrent_callers_never_see_a_locked_index_with_a_daemon() {
    let a = Peer::new("alpha");
    let _daemon = a.serve();
    many_callers_at_once(&a);
}

#[test]
fn concurrent_callers_take_turns_without_a_daemon() {
    let a = Peer::new("alpha");
    many_callers_at_once(&a);
}
