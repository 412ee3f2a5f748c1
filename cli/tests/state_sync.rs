//! Skill state that travels (issue 14), as a user meets it: two daemons on 127.0.0.1 whose
//! configs share `memory:*`; a key set on alpha appears on beta after a sync, concurrent sets
//! of one key converge with the losing value kept, a delete travels, keys outside `state_sync`
//! stay home, and `state list --json` says who wrote each key and when.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Peer, Server};
use serde_json::Value;

/// Two peers sharing `state_sync` patterns, each with a running daemon.
fn two_daemons(alpha: Value, beta: Value) -> (Peer, Server, Peer, Server) {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    a.configure(alpha);
    b.configure(beta);
    let (da, db) = (a.serve(), b.serve());
    a.add(&b, db.port);
    b.add(&a, da.port);
    (a, da, b, db)
}

fn shared() -> (Peer, Server, Peer, Server) {
    let both = serde_json::json!({ "state_sync": ["memory:*", "notes:*"] });
    two_daemons(both.clone(), both)
}

/// The value of `key` on `p`, if set.
fn value(p: &Peer, key: &str) -> Option<String> {
    let (code, json, _) = p.run(&["state", "get", key]);
    (code == 0).then(|| json["value"].as_str().unwrap().to_owned())
}

fn listed(p: &Peer) -> Value {
    p.ok(&["state", "list"])
}

#[test]
fn a_key_set_on_alpha_appears_on_beta_after_a_sync_with_its_author_and_time() {
    let (a, _da, b, _db) = shared();
    a.ok(&[
        "--agent",
        "claude",
        "state",
        "set",
        "memory:editor",
        "helix",
    ]);
    assert_eq!(value(&b, "memory:editor"), None);
    let sync = a.ok(&["sync"]);
    assert_eq!(
        sync["peers"][0]["state"]["pushed"], 1,
        "the sync report counts the record sent: {sync}"
    );
    assert_eq!(value(&b, "memory:editor").as_deref(), Some("helix"));
    let row = &listed(&b)["state"][0];
    assert_eq!(row["key"], "memory:editor");
    assert_eq!(row["author"]["peer"], a.id().as_str(), "{row}");
    assert_eq!(row["author"]["agent"], "claude");
    assert_eq!(row["author"]["peer_name"], "alpha");
    assert!(row["time"].as_str().unwrap().starts_with("20"), "{row}");
    // Beta's own key travels back on alpha's next sync.
    b.ok(&["state", "set", "notes:todo", "milk"]);
    a.ok(&["sync"]);
    assert_eq!(value(&a, "notes:todo").as_deref(), Some("milk"));
}

#[test]
fn concurrent_sets_of_one_key_converge_on_both_with_the_loser_kept() {
    let (a, _da, b, _db) = shared();
    a.ok(&["state", "set", "memory:plan", "from alpha"]);
    b.ok(&["state", "set", "memory:plan", "from beta"]);
    let (code, sync, _) = a.run(&["sync"]);
    assert_eq!(
        code, 3,
        "a conflict kept for review needs attention: {sync}"
    );
    assert_eq!(
        sync["peers"][0]["state"]["pulled"]["conflicts"][0],
        "memory:plan"
    );
    let (va, vb) = (value(&a, "memory:plan"), value(&b, "memory:plan"));
    assert_eq!(va, vb, "both sides hold one value");
    // Beta wrote last: the newest write wins, as for files.
    assert_eq!(va.as_deref(), Some("from beta"));
    for p in [&a, &b] {
        let list = listed(p);
        let conflicts = list["conflicts"].as_array().unwrap();
        assert_eq!(conflicts.len(), 1, "{}: {list}", p.name);
        assert_eq!(conflicts[0]["key"], "memory:plan");
        assert_eq!(conflicts[0]["value"], "from alpha");
        assert_eq!(conflicts[0]["author"]["peer_name"], "alpha");
    }
    let (_, human, _) = common::human(&a, &["state", "list"]);
    assert!(human.contains("kept for review"), "{human}");
    // Converged: another sync changes nothing on either side.
    let again = a.ok(&["sync"]);
    assert_eq!(again["peers"][0]["state"]["pushed"], 0, "{again}");
    assert_eq!(
        again["peers"][0]["state"]["received"], 0,
        "equal digests: beta sends no record: {again}"
    );
    assert_eq!(
        again["peers"][0]["state"]["pulled"]["changed"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_conflict_is_ended_by_keeping_the_kept_value_which_then_travels() {
    let (a, _da, b, _db) = shared();
    a.ok(&["state", "set", "memory:plan", "from alpha"]);
    b.ok(&["state", "set", "memory:plan", "from beta"]);
    a.run(&["sync"]);
    assert_eq!(value(&a, "memory:plan").as_deref(), Some("from beta"));
    // Nothing to resolve on a key without conflicts; a bad --keep is a usage error.
    let (code, _, err) = common::human(&a, &["state", "resolve", "memory:other"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no kept losing values"), "{err}");
    let (code, _, err) = common::human(&a, &["state", "resolve", "memory:plan", "--keep", "mine"]);
    assert_eq!(code, 2, "{err}");
    // `conflicts list` counts the state key too, and asks for attention.
    let (code, listed_conflicts, _) = common::human(&a, &["conflicts", "list"]);
    assert_eq!(code, 3);
    assert!(
        listed_conflicts.contains("memory:plan")
            && listed_conflicts.contains("botsync state resolve KEY"),
        "{listed_conflicts}"
    );
    // Alpha keeps its own (the kept) value: a new write, so it wins everywhere.
    let resolved = a.ok(&["state", "resolve", "memory:plan", "--keep", "kept"]);
    assert_eq!(resolved["forgotten"], 1);
    assert_eq!(value(&a, "memory:plan").as_deref(), Some("from alpha"));
    assert!(listed(&a)["conflicts"].as_array().unwrap().is_empty());
    assert_eq!(common::human(&a, &["conflicts", "list"]).0, 0);
    a.ok(&["sync"]);
    assert_eq!(value(&b, "memory:plan").as_deref(), Some("from alpha"));
    // Beta ends its copy of the conflict keeping what it now holds.
    let resolved = b.ok(&["state", "resolve", "memory:plan"]);
    assert_eq!(resolved["kept"], "current");
    assert!(listed(&b)["conflicts"].as_array().unwrap().is_empty());
    assert_eq!(value(&b, "memory:plan").as_deref(), Some("from alpha"));
}

#[test]
fn a_delete_travels_as_a_tombstone() {
    let (a, _da, b, _db) = shared();
    a.ok(&["state", "set", "memory:old", "soon gone"]);
    a.ok(&["sync"]);
    assert_eq!(value(&b, "memory:old").as_deref(), Some("soon gone"));
    a.ok(&["state", "del", "memory:old"]);
    a.ok(&["sync"]);
    assert_eq!(value(&b, "memory:old"), None);
    assert_eq!(listed(&b)["state"].as_array().unwrap().len(), 0);
    // Beta's sync does not bring it back to alpha either.
    b.ok(&["sync"]);
    assert_eq!(value(&a, "memory:old"), None);
}

#[test]
fn keys_outside_either_sides_state_sync_stay_home() {
    let (a, _da, b, _db) = two_daemons(
        serde_json::json!({ "state_sync": ["memory:*", "secret:*"] }),
        serde_json::json!({ "state_sync": ["memory:*", "notes:*"] }),
    );
    a.ok(&["state", "set", "secret:token", "hunter2"]);
    a.ok(&["state", "set", "notes:x", "alpha does not share notes"]);
    a.ok(&["state", "set", "local:scratch", "never configured"]);
    a.ok(&["state", "set", "memory:shared", "yes"]);
    a.ok(&["sync"]);
    assert_eq!(value(&b, "memory:shared").as_deref(), Some("yes"));
    for key in ["secret:token", "notes:x", "local:scratch"] {
        assert_eq!(value(&b, key), None, "{key} travelled");
    }
}

#[test]
fn without_state_sync_no_state_travels() {
    let (a, _da, b, _db) = two_daemons(serde_json::json!({}), serde_json::json!({}));
    a.ok(&["state", "set", "memory:x", "stays"]);
    let sync = a.ok(&["sync"]);
    assert_eq!(sync["peers"][0]["state"]["exchanged"], false, "{sync}");
    assert_eq!(value(&b, "memory:x"), None);
}

#[test]
fn an_invalid_state_sync_pattern_is_one_clear_error() {
    let p = Peer::new("alpha");
    p.configure(serde_json::json!({ "state_sync": ["memory:["] }));
    let (code, _, stderr) = p.run(&["state", "list"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("state_sync: invalid pattern"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
