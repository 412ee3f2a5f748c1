//! `botsync verify` as a user whose disk started to fail: a file whose bytes rotted while its
//! size and times stayed (no scan sees that) is reported, is not sent to peers as an edit, and
//! `verify --repair` takes the good version back: from the local version the scanner kept, or
//! else from a peer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use botsync_engine::store::{LocalUpdate, Store};
use botsync_engine::{RelPath, StatSig};
use common::{Peer, pair};
use serde_json::json;

/// A `newest` path: a `text` one keeps its merge base in the store, and repair would restore it
/// from there without asking the peer.
const NOTE: &str = "memory/note.txt";

/// Write `rel` dated a minute ago (old enough for the stat cache to trust it).
fn write_old(p: &Peer, rel: &str, bytes: &[u8]) {
    p.write(rel, bytes);
    fs::File::options()
        .write(true)
        .open(p.path(rel))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
}

/// Flip a byte of `rel` as a failing disk does: same size and mtime, and the index keeps the
/// stat it recorded (the kernel moves the inode's change time when a test writes; a rotting
/// disk does not, so the index is told the new one). No botsync process may hold `p`.
fn rot(p: &Peer, rel: &str) {
    let path = p.path(rel);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (store, _) = Store::open(&p.path(".botsync/db")).unwrap();
    let mut local = store
        .local_get(&RelPath::new(rel).unwrap())
        .unwrap()
        .unwrap();
    local.stat = Some(StatSig::of(&fs::symlink_metadata(&path).unwrap()));
    store.commit_local([LocalUpdate::Put(local)]).unwrap();
    store.flush().unwrap();
}

#[test]
fn a_rotted_file_is_reported_never_sent_and_repaired_from_a_peer() {
    let (a, b, _server) = pair();
    // No local copy to rebuild it from, as for a file above `local_versions.max_bytes`.
    a.configure(json!({"local_versions": {"max_bytes": 0}}));
    write_old(&a, NOTE, b"the agent's long-term memory\n");
    a.ok(&["push", "beta"]);
    let (code, json, _) = a.run(&["verify"]);
    assert_eq!(code, 0, "a clean workspace: {json}");
    assert_eq!(json["files"], 1);

    rot(&a, NOTE);
    let (code, json, _) = a.run(&["verify"]);
    assert_eq!(code, 3, "damage found: {json}");
    assert_eq!(json["damaged"][0]["path"], NOTE);
    let human = a.cmd().arg("verify").output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("damaged memory/note.txt"), "{text}");
    assert!(text.contains("botsync verify --repair"), "{text}");

    // A sync does not carry the rot to the peer: the stat says nothing changed.
    a.run(&["sync", "beta"]);
    assert_eq!(b.read(NOTE).unwrap(), b"the agent's long-term memory\n");

    let (code, json, stderr) = a.run(&["verify", "--repair"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["repair"]["taken_from_peers"][0], NOTE, "{json}");
    assert_eq!(a.read(NOTE).unwrap(), b"the agent's long-term memory\n");
    let (code, json, _) = a.run(&["verify"]);
    assert_eq!(code, 0, "{json}");
}

#[test]
fn a_rotted_note_is_rebuilt_from_the_version_the_scanner_kept_without_any_peer() {
    let (a, _b, _server) = pair();
    write_old(&a, NOTE, b"the agent's long-term memory\n");
    a.ok(&["status"]);
    rot(&a, NOTE);

    let (code, json, stderr) = a.run(&["verify", "--repair"]);
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(json["repair"]["restored_locally"][0], NOTE, "{json}");
    assert_eq!(json["repair"]["taken_from_peers"], json!([]), "{json}");
    assert_eq!(a.read(NOTE).unwrap(), b"the agent's long-term memory\n");
}
