//! Merge policies end to end (docs/CONFLICTS.md, *Merge policies*): two real processes edit the
//! same file at the same time, and after one sync both hold the same merge, or, where the policy
//! cannot merge, the newer version with the other kept for review.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Peer, Server, pair};

fn text(p: &Peer, rel: &str) -> String {
    String::from_utf8(p.read(rel).unwrap()).unwrap()
}

/// Alpha and beta start from the same `content` at `path`, synced.
fn shared(path: &str, content: &str) -> (Peer, Peer, Server) {
    let (a, b, server) = pair();
    a.write(path, content);
    a.ok(&["sync"]);
    assert_eq!(text(&b, path), content);
    (a, b, server)
}

#[test]
fn an_agent_log_appended_on_both_machines_keeps_every_line() {
    let start = "{\"ts\":1,\"msg\":\"boot\"}\n";
    let (a, b, _server) = shared("memory/logs/agent.jsonl", start);
    a.write(
        "memory/logs/agent.jsonl",
        format!("{start}{{\"ts\":3,\"msg\":\"alpha\"}}\n"),
    );
    b.write(
        "memory/logs/agent.jsonl",
        format!("{start}{{\"ts\":2,\"msg\":\"beta\"}}\n{{\"ts\":4,\"msg\":\"beta again\"}}\n"),
    );
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "a clean merge needs no attention: {json}");
    let merged = "{\"ts\":1,\"msg\":\"boot\"}\n{\"ts\":2,\"msg\":\"beta\"}\n{\"ts\":3,\"msg\":\"alpha\"}\n{\"ts\":4,\"msg\":\"beta again\"}\n";
    assert_eq!(text(&a, "memory/logs/agent.jsonl"), merged);
    assert_eq!(text(&b, "memory/logs/agent.jsonl"), merged);
    let item = &json["peers"][0]["pulled"][0];
    assert_eq!(
        (item["action"].as_str(), item["policy"].as_str()),
        (Some("merge"), Some("union")),
        "{json}"
    );
    let (code, json, _) = a.run(&["conflicts", "list"]);
    assert_eq!((code, &json["open"]), (0, &serde_json::json!(0)));
    // Nothing left to do on either side.
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(common::counter(&json, "files_received"), 0, "{json}");
    assert_eq!(common::counter(&json, "files_sent"), 0, "{json}");
}

#[test]
fn a_log_whose_history_was_rewritten_is_a_conflict_not_a_truncation() {
    let (a, b, _server) = shared("memory/run.log", "one\ntwo\n");
    a.write("memory/run.log", "one\nTWO (rewritten)\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write("memory/run.log", "one\ntwo\nthree\n");
    let (code, _, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "a refused merge needs attention");
    // Beta's append is newer: it wins everywhere, alpha's rewrite is kept on alpha.
    assert_eq!(text(&a, "memory/run.log"), "one\ntwo\nthree\n");
    assert_eq!(text(&b, "memory/run.log"), "one\ntwo\nthree\n");
    let (_, json, _) = a.run(&["conflicts", "list"]);
    let c = &json["conflicts"][0];
    assert!(
        c["policy"]
            .as_str()
            .unwrap()
            .starts_with("union (not merged"),
        "{c}"
    );
    let kept = a.path(c["kept"].as_str().unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), b"one\nTWO (rewritten)\n");
}

#[test]
fn memory_edited_in_different_places_on_two_machines_merges() {
    let base = "# Memory\n\n- likes tea\n- works on botsync\n\n## Todo\n\n- nothing\n";
    let (a, b, _server) = shared("MEMORY.md", base);
    a.write("MEMORY.md", base.replace("likes tea", "likes green tea"));
    b.write("MEMORY.md", base.replace("- nothing", "- ship merges"));
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "{json}");
    let want = base
        .replace("likes tea", "likes green tea")
        .replace("- nothing", "- ship merges");
    assert_eq!(text(&a, "MEMORY.md"), want);
    assert_eq!(text(&b, "MEMORY.md"), want);
    // The history says it was a merge, and the version it replaced stays restorable.
    let (_, history, _) = a.run(&["history", "MEMORY.md"]);
    let latest = &history["files"][0];
    assert_eq!(latest["action"], "merged", "{history}");
    let replaced = latest["replaced"].as_str().unwrap().to_owned();
    a.ok(&["restore", &format!("MEMORY.md@{replaced}")]);
    assert_eq!(
        text(&a, "MEMORY.md"),
        base.replace("likes tea", "likes green tea")
    );
}

#[test]
fn overlapping_memory_edits_fall_back_to_the_newer_and_keep_the_other() {
    let (a, b, _server) = shared("MEMORY.md", "- a fact\n");
    a.write("MEMORY.md", "- a fact, says alpha\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write("MEMORY.md", "- a fact, says beta\n");
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(text(&a, "MEMORY.md"), "- a fact, says beta\n");
    assert_eq!(text(&b, "MEMORY.md"), "- a fact, says beta\n");
    let (_, list, _) = a.run(&["conflicts", "list"]);
    let kept = a.path(list["conflicts"][0]["kept"].as_str().unwrap());
    assert_eq!(std::fs::read(kept).unwrap(), b"- a fact, says alpha\n");
}

#[test]
fn two_agents_adding_entries_to_one_json_config_keep_both() {
    let base = "{\n  \"agents\": {\n    \"alpha\": \"100.1.1.1\"\n  },\n  \"db\": \"x\"\n}\n";
    let (a, b, _server) = shared("memory/mesh.json", base);
    a.write(
        "memory/mesh.json",
        "{\n  \"agents\": {\n    \"alpha\": \"100.1.1.1\",\n    \"gamma\": \"100.3.3.3\"\n  },\n  \"db\": \"x\"\n}\n",
    );
    b.write(
        "memory/mesh.json",
        "{\n  \"agents\": {\n    \"alpha\": \"100.1.1.1\",\n    \"beta\": \"100.2.2.2\"\n  },\n  \"db\": \"x\"\n}\n",
    );
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "{json}");
    let got: serde_json::Value =
        serde_json::from_slice(&a.read("memory/mesh.json").unwrap()).unwrap();
    assert_eq!(
        got["agents"],
        serde_json::json!({"alpha": "100.1.1.1", "beta": "100.2.2.2", "gamma": "100.3.3.3"})
    );
    assert_eq!(a.read("memory/mesh.json"), b.read("memory/mesh.json"));
}

#[test]
fn the_same_json_key_changed_on_both_sides_takes_the_newer_and_keeps_the_other() {
    let (a, b, _server) = shared(
        "memory/settings.json",
        "{\"model\": \"small\", \"temp\": 1}\n",
    );
    a.write(
        "memory/settings.json",
        "{\"model\": \"alpha-pick\", \"temp\": 2}\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write(
        "memory/settings.json",
        "{\"model\": \"beta-pick\", \"temp\": 1}\n",
    );
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "a key conflict needs attention: {json}");
    let got: serde_json::Value =
        serde_json::from_slice(&a.read("memory/settings.json").unwrap()).unwrap();
    assert_eq!(got, serde_json::json!({"model": "beta-pick", "temp": 2}));
    assert_eq!(
        a.read("memory/settings.json"),
        b.read("memory/settings.json")
    );
    let (code, list, _) = a.run(&["conflicts", "list"]);
    assert_eq!(code, 3);
    let c = &list["conflicts"][0];
    assert_eq!(c["kind"], "merged_keys", "{c}");
    assert_eq!(c["keys"], serde_json::json!(["/model"]));
    let kept = a.path(c["kept"].as_str().unwrap());
    assert_eq!(
        std::fs::read(kept).unwrap(),
        b"{\"model\": \"alpha-pick\", \"temp\": 2}\n"
    );
}

#[test]
fn manual_keeps_ours_and_the_peers_version_for_review_until_resolved() {
    let (a, b, _server) = pair();
    a.write(
        ".botsync/config.json",
        "{\"merge\": [{\"pattern\": \"plan.txt\", \"policy\": \"manual\"}]}\n",
    );
    a.write("memory/plan.txt", "v1\n");
    a.ok(&["sync"]);
    a.write("memory/plan.txt", "alpha's plan\n");
    b.write("memory/plan.txt", "beta's plan\n");
    let (code, json, _) = a.run(&["pull"]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(text(&a, "memory/plan.txt"), "alpha's plan\n", "ours stays");
    let (_, list, _) = a.run(&["conflicts", "list"]);
    let c = &list["conflicts"][0];
    assert_eq!(
        (c["lost"].as_str(), c["policy"].as_str()),
        (Some("remote"), Some("manual"))
    );
    assert_eq!(
        std::fs::read(a.path(c["kept"].as_str().unwrap())).unwrap(),
        b"beta's plan\n"
    );
    a.ok(&[
        "conflicts",
        "resolve",
        "memory/plan.txt",
        "--keep",
        "remote",
    ]);
    assert_eq!(text(&a, "memory/plan.txt"), "beta's plan\n");
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "the resolution supersedes both versions: {json}");
    assert_eq!(text(&b, "memory/plan.txt"), "beta's plan\n");
    let (code, _, _) = a.run(&["conflicts", "list"]);
    assert_eq!(code, 0);
}

#[test]
fn skip_leaves_both_versions_until_one_side_resolves() {
    let (a, b, _server) = pair();
    a.write(
        ".botsync/config.json",
        "{\"merge\": [{\"pattern\": \"*.bin\", \"policy\": \"skip\"}]}\n",
    );
    a.write("memory/blob.bin", "v1");
    a.ok(&["sync"]);
    a.write("memory/blob.bin", "alpha");
    b.write("memory/blob.bin", "beta");
    let (code, _, _) = a.run(&["pull"]);
    assert_eq!(code, 3);
    assert_eq!(text(&a, "memory/blob.bin"), "alpha");
    assert_eq!(text(&b, "memory/blob.bin"), "beta");
    a.ok(&["conflicts", "resolve", "memory/blob.bin", "--keep", "local"]);
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(text(&b, "memory/blob.bin"), "alpha");
}

#[test]
fn a_push_into_the_peer_merges_there() {
    let (a, b, _server) = shared("memory/2026-12-05.md", "start\n");
    a.write("memory/2026-12-05.md", "start\nalpha\n");
    b.write("memory/2026-12-05.md", "start\nbeta\n");
    let (code, json, _) = a.run(&["push"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(text(&b, "memory/2026-12-05.md"), "start\nalpha\nbeta\n");
    a.ok(&["pull"]);
    assert_eq!(text(&a, "memory/2026-12-05.md"), "start\nalpha\nbeta\n");
}
