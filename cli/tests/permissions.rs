//! Issue 10: permissions widened in transit (a 0600 file arrived as 0644, 000 as 0644). A file
//! arrives with exactly its source's permission bits, both ways, and a change of mode alone
//! travels too: nothing is ever written wider than its source.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{Peer, pair};

const MODES: [(&str, u32); 5] = [
    ("memory/private.md", 0o600),
    ("memory/run.sh", 0o700),
    ("memory/shared.md", 0o644),
    ("memory/group.md", 0o640),
    ("memory/locked.md", 0o000),
];

fn set_mode(peer: &Peer, rel: &str, mode: u32) {
    fs::set_permissions(peer.path(rel), fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(peer: &Peer, rel: &str) -> Option<u32> {
    fs::metadata(peer.path(rel))
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Write every file of [`MODES`] on `peer`.
fn write_modes(peer: &Peer) {
    for (rel, mode) in MODES {
        peer.write(rel, format!("{rel}\n"));
        set_mode(peer, rel, mode);
    }
}

/// Every file of [`MODES`] arrived from `from` on `to` with exactly its bits.
fn assert_modes_arrived(from: &Peer, to: &Peer) {
    for (rel, mode) in MODES {
        // A file its owner cannot read (000, unless we are root) is skipped by the scan: it
        // does not travel at all, which is never wider either.
        let readable = fs::read(from.path(rel)).is_ok();
        match mode_of(to, rel) {
            Some(arrived) => assert_eq!(arrived, mode, "{rel}: {arrived:o}, source {mode:o}"),
            None => assert!(!readable, "{rel} did not arrive"),
        }
    }
}

#[test]
fn a_private_file_pushed_keeps_its_permissions() {
    let (a, b, _server) = pair();
    write_modes(&a);
    a.ok(&["push", "beta"]);
    assert_modes_arrived(&a, &b);
}

#[test]
fn a_private_file_pulled_keeps_its_permissions() {
    let (a, b, _server) = pair();
    write_modes(&b);
    a.ok(&["pull", "beta"]);
    assert_modes_arrived(&b, &a);
}

#[test]
fn narrowing_a_synced_file_narrows_it_on_the_peer() {
    let (a, b, _server) = pair();
    a.write("memory/notes.md", "notes\n");
    set_mode(&a, "memory/notes.md", 0o644);
    a.ok(&["sync", "beta"]);
    assert_eq!(mode_of(&b, "memory/notes.md"), Some(0o644));
    set_mode(&a, "memory/notes.md", 0o600);
    a.ok(&["sync", "beta"]);
    assert_eq!(mode_of(&b, "memory/notes.md"), Some(0o600));
    // Nothing comes back: the peer's copy is the same version.
    let json = a.ok(&["sync", "beta"]);
    assert_eq!(json["peers"][0]["in_sync"], true, "{json}");
}
