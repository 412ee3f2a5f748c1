//! A long sync draws a progress bar on a terminal, and none when its output is piped.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::Command;

use common::{noise, pair};

/// True if `script` (util-linux) can run a command under a pseudo-terminal here.
fn script_works() -> bool {
    Command::new("script")
        .args(["-qec", "true", "/dev/null"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_sync_on_a_terminal_shows_a_progress_bar_and_a_piped_one_none() {
    let (a, b, _server) = pair();
    // Piped: no bar, no escape codes.
    b.write("memory/big2.bin", noise(3_000_000, 8));
    let out = a.cmd().args(["pull", "beta"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("B/s"),
        "a bar was drawn into a pipe: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a pipe: {stderr:?}"
    );

    if !script_works() {
        eprintln!("skipped the terminal half: `script` (util-linux) is not available");
        return;
    }
    b.write("memory/big3.bin", noise(3_000_000, 9));
    let mut line = format!(
        "'{}' -w '{}' pull beta",
        assert_cmd::cargo::cargo_bin("botsync").display(),
        a.root().display()
    );
    line.push_str(" 2>&1");
    let tty = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("BOTSYNC_CONNECT_TIMEOUT_SECS", "3")
        .env_remove("BOTSYNC_WORKSPACE")
        .output()
        .unwrap();
    assert!(tty.status.success(), "{tty:?}");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("beta ["), "no bar on a terminal: {text}");
    assert!(text.contains("MiB"), "no byte counts on the bar: {text}");
    assert!(a.read("memory/big3.bin").is_some());
}
