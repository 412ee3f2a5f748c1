//! Generators run by the daemon (issue 14), as a user meets them: two daemons on 127.0.0.1
//! sharing `memory:*`, each with the example memory-manager skill. A memory saved on alpha is
//! rendered into MEMORY.md by each peer's own daemon, identically; a SYNC.json changed on alpha
//! does not run on beta until beta approves it; `generate_before_sync` renders before a sync;
//! with `auto` on, a saved memory reaches the peer with no command; and a generator's own output
//! (or a key no manifest matches) never runs it again.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};

use common::{Peer, Server, eventually};
use serde_json::{Value, json};

const SKILL: &str = "skills/memory-manager";

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/skills/memory-manager")
}

/// Copy a directory tree (permissions too: `fs::copy` keeps them).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Two peers configured with `config` (plus `state_sync: memory:*`), daemons running.
fn two_daemons(config: Value) -> (Peer, Server, Peer, Server) {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    for p in [&a, &b] {
        p.configure(json!({ "state_sync": ["memory:*"] }));
        p.configure(config.clone());
    }
    let (da, db) = (a.serve(), b.serve());
    a.add(&b, db.port);
    b.add(&a, da.port);
    (a, da, b, db)
}

fn memory_md(p: &Peer) -> String {
    String::from_utf8(p.read("MEMORY.md").unwrap_or_default()).unwrap()
}

/// Wait until `p`'s MEMORY.md holds `needle`.
fn rendered(p: &Peer, needle: &str) -> bool {
    eventually(30, || memory_md(p).contains(needle))
}

#[test]
fn a_memory_saved_on_alpha_is_rendered_identically_by_both_daemons() {
    // MEMORY.md itself does not travel: each daemon renders its own from the synced state.
    let (a, _da, b, _db) = two_daemons(json!({ "exclude": ["MEMORY.md"] }));
    for p in [&a, &b] {
        copy_tree(&example(), &p.path(SKILL));
        p.ok(&["gen", "approve", "--skill", "memory-manager"]);
    }
    a.ok(&["state", "set", "memory:editor", "helix with vim keys"]);
    assert!(
        rendered(&a, "- **memory:editor**: helix with vim keys"),
        "alpha's daemon never rendered the memory: {:?}",
        memory_md(&a)
    );
    a.ok(&["sync"]);
    assert!(
        rendered(&b, "- **memory:editor**: helix with vim keys"),
        "beta's daemon never rendered the memory that arrived: {:?}",
        memory_md(&b)
    );
    assert_eq!(
        memory_md(&a),
        memory_md(&b),
        "both peers render the same file"
    );
    // A delete on beta is rendered on both too.
    b.ok(&["state", "del", "memory:editor"]);
    assert!(rendered(&b, "_No memories yet._"));
    b.ok(&["sync"]);
    assert!(rendered(&a, "_No memories yet._"));
    assert_eq!(memory_md(&a), memory_md(&b));
}

#[test]
fn a_sync_json_changed_on_alpha_does_not_run_on_beta_until_approved_there() {
    let (a, _da, b, _db) = two_daemons(json!({ "sync_skills": true, "exclude": ["MEMORY.md"] }));
    copy_tree(&example(), &a.path(SKILL));
    a.ok(&["gen", "approve", "--skill", "memory-manager"]);
    a.ok(&["sync"]);
    assert!(
        b.path(SKILL).join("SYNC.json").exists(),
        "the skill travels"
    );
    b.ok(&["gen", "approve", "--skill", "memory-manager"]);
    a.ok(&["state", "set", "memory:one", "first"]);
    a.ok(&["sync"]);
    assert!(rendered(&b, "memory:one"), "approved: beta renders");

    // Alpha changes the manifest (and approves it there); the change reaches beta.
    let manifest = a.path(SKILL).join("SYNC.json");
    let changed = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("Renders the memory", "Renders (changed) the memory");
    std::fs::write(&manifest, changed).unwrap();
    a.ok(&["gen", "approve", "--skill", "memory-manager"]);
    a.ok(&["sync"]);
    assert!(
        std::fs::read_to_string(b.path(SKILL).join("SYNC.json"))
            .unwrap()
            .contains("(changed)")
    );
    let list = b.ok(&["gen", "list"]);
    assert_eq!(list["skills"][0]["approval"], "changed", "{list}");

    // A state change arrives: beta's daemon must not run the changed skill.
    a.ok(&["state", "set", "memory:two", "second"]);
    a.ok(&["sync"]);
    assert!(rendered(&a, "memory:two"), "alpha runs its approved skill");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !memory_md(&b).contains("memory:two"),
        "beta ran a SYNC.json it never approved: {}",
        memory_md(&b)
    );

    // Approved on beta: the next change renders there.
    b.ok(&["gen", "approve", "--skill", "memory-manager"]);
    b.ok(&["state", "set", "memory:three", "third"]);
    assert!(rendered(&b, "memory:three"));
    assert!(memory_md(&b).contains("memory:two"));
}

#[test]
fn generate_before_sync_renders_before_the_sync_carries_the_file() {
    let (a, _da, b, _db) = two_daemons(json!({ "generate_before_sync": true }));
    copy_tree(&example(), &a.path(SKILL));
    a.ok(&["gen", "approve", "--skill", "memory-manager"]);
    // No output yet: the generator has never run.
    assert!(a.read("MEMORY.md").is_none());
    a.ok(&["sync"]);
    assert!(
        memory_md(&a).contains("_No memories yet._"),
        "the sync ran the generator first: {:?}",
        memory_md(&a)
    );
    assert_eq!(
        memory_md(&b),
        memory_md(&a),
        "the rendered file travelled in that same sync"
    );
}

#[test]
fn with_auto_on_a_saved_memory_reaches_the_peer_with_no_command() {
    let (a, _da, b, _db) = two_daemons(json!({}));
    a.ok(&["auto", "on"]);
    a.ok(&["state", "set", "memory:auto", "travels by itself"]);
    assert!(
        eventually(30, || {
            let (code, json, _) = b.run(&["state", "get", "memory:auto"]);
            code == 0 && json["value"] == "travels by itself"
        }),
        "alpha's daemon never synced the state change"
    );
}

#[test]
fn matching_changes_run_the_generator_and_neither_its_output_nor_other_keys_do() {
    use std::os::unix::fs::PermissionsExt;
    let a = Peer::new("alpha");
    a.configure(json!({ "state_sync": ["memory:*"] }));
    // A generator that counts its runs beside itself and renders the memories.
    let dir = a.path("skills/counter");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("SKILL.md"), "# counter\n").unwrap();
    std::fs::write(
        dir.join("SYNC.json"),
        r#"{"version":"1","outputFile":"MEMORY.md","patterns":["memory:*"],"generator":"./scripts/sync.sh"}"#,
    )
    .unwrap();
    let script = dir.join("scripts/sync.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -eu\necho run >> \"$SKILL_DIR/runs.log\"\nbotsync state list --pattern \"$SYNC_PATTERNS\" > \"$SYNC_OUTPUT_FILE\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    a.ok(&["gen", "approve", "--skill", "counter"]);
    let _daemon = a.serve();
    let runs = || {
        std::fs::read_to_string(dir.join("runs.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    for (k, v) in [("memory:a", "1"), ("memory:b", "2"), ("memory:c", "3")] {
        a.ok(&["state", "set", k, v]);
    }
    assert!(rendered(&a, "memory:c\t3"), "{:?}", memory_md(&a));
    // Long enough for the watcher to see MEMORY.md and for any re-run to happen.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let settled = runs();
    assert!(
        (1..=3).contains(&settled),
        "debounced: at most one run per change, got {settled}"
    );
    // A key no manifest matches runs nothing; the output written above ran nothing either.
    a.ok(&["state", "set", "notes:x", "unrelated"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        runs(),
        settled,
        "the generator ran again without a matching change"
    );
}
