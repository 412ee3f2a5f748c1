//! `botsync status` as a user reads it: each peer reachable or not (and why), whether the trees
//! match, what waits to move, when the last sync was, and open conflicts.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Peer, eventually, pair};

fn peer0(json: &serde_json::Value) -> &serde_json::Value {
    &json["peers"][0]
}

#[test]
fn status_shows_each_peer_reachable_its_parity_what_waits_and_the_last_sync() {
    let (a, _b, _server) = pair();
    a.write("memory/note.md", "x".repeat(5000));
    let before = a.ok(&["status"]);
    let p = peer0(&before);
    assert_eq!(p["reachable"], true, "{before}");
    assert_eq!(p["roots_match"], false, "{before}");
    assert_eq!(p["send"]["files"], 1, "{before}");
    assert!(p["send"]["bytes"].as_u64().unwrap() > 0, "{before}");
    assert_eq!(p["receive"]["files"], 0, "{before}");
    assert!(p["last_sync"].is_null(), "{before}");
    assert_eq!(before["pending_changes"], 1, "{before}");
    assert_eq!(before["local_changes"]["added"], 1, "{before}");
    assert!(a.read("memory/note.md").is_some());

    a.ok(&["sync"]);
    let after = a.ok(&["status"]);
    let p = peer0(&after);
    assert_eq!(p["roots_match"], true, "{after}");
    assert_eq!(p["last_sync"]["ok"], true, "{after}");
    assert_eq!(after["pending_changes"], 0, "{after}");
    let out = a.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reachable, in sync"), "{text}");
    assert!(text.contains("last sync just now ok"), "{text}");
    // The bare command is status.
    let bare = a.cmd().output().unwrap();
    assert!(String::from_utf8_lossy(&bare.stdout).contains("reachable, in sync"));
}

#[test]
fn an_unreachable_peer_is_named_with_the_reason_within_seconds() {
    let a = Peer::new("alpha");
    let b = Peer::new("beta");
    // A UDP port nobody answers QUIC on.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    a.add(&b, port);
    let started = Instant::now();
    let json = a.ok(&["status"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "status waited {:?}",
        started.elapsed()
    );
    let p = peer0(&json);
    assert_eq!(p["reachable"], false, "{json}");
    assert!(!p["error"].as_str().unwrap().is_empty(), "{json}");
    assert!(json["pending_changes"].is_null(), "{json}");
    let out = a.cmd().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unreachable ("), "{text}");
    assert!(text.contains("never synced"), "{text}");
}

#[test]
fn status_through_the_daemon_uses_its_kept_links() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let sb = b.serve();
    let sa = a.serve();
    a.add(&b, sb.port);
    b.add(&a, sa.port);
    a.write("memory/x.md", "x\n");
    let ok = eventually(20, || {
        let j = a.ok(&["status"]);
        j["daemon"].is_object() && peer0(&j)["reachable"] == true
    });
    assert!(ok, "{}", a.ok(&["status"]));
    a.ok(&["sync"]);
    let j = a.ok(&["status"]);
    assert_eq!(peer0(&j)["roots_match"], true, "{j}");
    assert_eq!(peer0(&j)["last_sync"]["ok"], true, "{j}");
}

#[test]
fn open_conflicts_and_private_includes_are_reported() {
    let (a, b, _server) = pair();
    a.write("memory/x.md", "base\n");
    a.ok(&["sync"]);
    a.write("memory/x.md", "alpha's edit\n");
    std::thread::sleep(Duration::from_millis(20));
    b.write("memory/x.md", "beta's later edit\n");
    let (code, _, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "a conflict needs attention");
    let cfg = a.path(".botsync/config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["include"] = serde_json::json!(["IDENTITY.md"]);
    std::fs::write(&cfg, v.to_string()).unwrap();
    let (code, json, _) = a.run(&["status"]);
    assert_eq!(code, 3, "open conflicts need attention: {json}");
    assert_eq!(json["open_conflicts"], 1, "{json}");
    assert_eq!(json["private_included"], serde_json::json!(["IDENTITY.md"]));
    let text =
        String::from_utf8_lossy(&a.cmd().arg("status").output().unwrap().stdout).into_owned();
    assert!(text.contains("1 open conflicts"), "{text}");
    assert!(text.contains("IDENTITY.md is private by default"), "{text}");
}
