//! The bot skill: `skill/handler.sh` driven through each of its commands against two daemons,
//! the way a bot that used the bot-sync skill calls it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Peer, eventually};

/// Run `handler.sh ARGS... WORKSPACE`: (exit code, stdout, stderr).
fn handler(p: &Peer, args: &[&str]) -> (i32, String, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../skill/handler.sh");
    let out = Command::new("sh")
        .arg(script)
        .args(args)
        .arg(p.root())
        .env("BOTSYNC", assert_cmd::cargo::cargo_bin("botsync"))
        .env("BOTSYNC_CONNECT_TIMEOUT_SECS", "3")
        .env_remove("BOTSYNC_WORKSPACE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(p: &Peer, args: &[&str]) -> String {
    let (code, out, err) = handler(p, args);
    assert_eq!(code, 0, "{args:?}: {out}\n{err}");
    out
}

#[test]
fn the_handler_runs_every_command_of_the_skill_against_two_daemons() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let sa = a.serve();
    let sb = b.serve();
    let (ida, idb) = (a.id(), b.id());
    let out = ok(
        &a,
        &["add", "beta", &format!("127.0.0.1:{}", sb.port), &idb],
    );
    assert!(out.contains("✅ Peer beta added."), "{out}");
    ok(
        &b,
        &["add", "alpha", &format!("127.0.0.1:{}", sa.port), &ida],
    );
    // The seed's form without an id says what is missing.
    let (code, _, err) = handler(&a, &["add", "mac", "100.95.193.55"]);
    assert_eq!(code, 2);
    assert!(err.contains("`botsync id`"), "{err}");

    a.write("memory/2026-01-26.md", "today\n");
    a.write("MEMORY.md", "# memory\n");
    b.write("memory/2026-01-25.md", "yesterday\n");
    let out = ok(&a, &["status"]);
    assert!(
        out.contains("peer beta") && out.contains("reachable"),
        "{out}"
    );

    let out = ok(&a, &["diff", "beta"]);
    assert!(out.contains("would receive 1 files"), "{out}");
    assert!(b.read("memory/2026-01-26.md").is_none(), "diff wrote");

    let out = ok(&a, &["push", "beta"]);
    assert!(out.contains("🔄 Pushing to beta (127.0.0.1:"), "{out}");
    assert!(out.contains("• memory/2026-01-26.md"), "{out}");
    assert!(b.read("memory/2026-01-26.md").is_some());
    assert!(a.read("memory/2026-01-25.md").is_none(), "push pulled");

    let out = ok(&a, &["pull", "beta"]);
    assert!(
        out.contains("📥 Pulled from beta: 1 files changed"),
        "{out}"
    );
    assert!(a.read("memory/2026-01-25.md").is_some());

    b.write("memory/2026-01-27.md", "tomorrow\n");
    a.write("memory/2026-01-26.md", "today, edited\n");
    let out = ok(&a, &["sync", "beta"]);
    assert!(
        out.contains("✅ Sync complete! 2 files synchronized."),
        "{out}"
    );
    let out = ok(&a, &["now"]);
    assert!(out.contains("already in sync"), "{out}");

    let out = ok(&a, &["history"]);
    assert!(out.contains("Sync history"), "{out}");
    assert!(
        out.contains("beta"),
        "the sessions with beta are listed: {out}"
    );

    let out = ok(&a, &["auto", "on"]);
    assert!(out.contains("auto-sync on"), "{out}");
    a.write("memory/auto.md", "by itself\n");
    assert!(eventually(20, || b.read("memory/auto.md").is_some()));
    let out = ok(&a, &["auto", "off"]);
    assert!(out.contains("auto-sync off"), "{out}");

    let out = ok(&a, &["remove", "beta"]);
    assert!(out.contains("✅ Peer beta removed."), "{out}");
    let (code, out, _) = handler(&a, &["sync", "beta"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("❌ no peer named \"beta\""), "{out}");
}
