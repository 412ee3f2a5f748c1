//! The user's story of two machines syncing: real `botsync serve` and client processes on
//! 127.0.0.1 with temporary workspaces.

mod common;

use common::{Peer, count_files, counter, noise, pair, staged_chunks};

#[test]
fn first_sync_copies_the_selected_files_and_nothing_else() {
    let (a, b, _server) = pair();
    a.write("MEMORY.md", "# memory\n- likes tea\n");
    a.write("memory/2026-11-21.md", "today\n");
    a.write("memory/deep/topic/rust.md", "ownership\n");
    a.write("IDENTITY.md", "alpha only\n");
    a.write("config/local.json", "{}\n");
    a.write("memory/.env", "SECRET=1\n");
    a.write("memory/keys/server.pem", "-----BEGIN\n");
    let json = a.ok(&["sync", "beta"]);
    assert_eq!(json["ok"], true);
    assert_eq!(b.read("MEMORY.md").unwrap(), b"# memory\n- likes tea\n");
    assert_eq!(b.read("memory/deep/topic/rust.md").unwrap(), b"ownership\n");
    for private in [
        "IDENTITY.md",
        "config/local.json",
        "memory/.env",
        "memory/keys/server.pem",
    ] {
        assert!(b.read(private).is_none(), "{private} left alpha");
    }
}

#[test]
fn changes_on_either_side_flow_both_ways() {
    let (a, b, _server) = pair();
    for i in 0..10 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    a.ok(&["sync"]);
    // alpha edits, adds, deletes and renames; beta does the same to other files.
    a.write("memory/n0.md", "edited on alpha\n");
    a.write("memory/new-a.md", "new on alpha\n");
    a.remove("memory/n1.md");
    a.rename("memory/n2.md", "memory/archive/n2.md");
    b.write("memory/n3.md", "edited on beta\n");
    b.write("memory/new-b.md", "new on beta\n");
    b.remove("memory/n4.md");
    b.rename("memory/n5.md", "memory/n5-renamed.md");
    a.ok(&["sync", "beta"]);
    assert_eq!(a.tree(), b.tree());
    assert_eq!(b.read("memory/n0.md").unwrap(), b"edited on alpha\n");
    assert_eq!(a.read("memory/n3.md").unwrap(), b"edited on beta\n");
    assert!(a.read("memory/n4.md").is_none() && b.read("memory/n1.md").is_none());
    assert!(b.read("memory/archive/n2.md").is_some() && a.read("memory/n5-renamed.md").is_some());
    // And the next sync has nothing to do.
    let json = a.ok(&["sync"]);
    assert_eq!(json["peers"][0]["in_sync"], true);
}

#[test]
fn push_only_sends_and_pull_only_receives() {
    let (a, b, _server) = pair();
    a.write("memory/from-a.md", "a\n");
    b.write("memory/from-b.md", "b\n");
    a.ok(&["push", "beta"]);
    assert!(b.read("memory/from-a.md").is_some());
    assert!(a.read("memory/from-b.md").is_none(), "push must not pull");
    a.ok(&["pull"]);
    assert!(a.read("memory/from-b.md").is_some());
}

#[test]
fn a_sync_with_nothing_to_do_costs_one_round_trip() {
    let (a, _b, _server) = pair();
    for i in 0..50 {
        a.write(&format!("memory/n{i}.md"), format!("note {i}\n"));
    }
    a.ok(&["sync"]);
    let json = a.ok(&["sync"]);
    assert_eq!(json["peers"][0]["in_sync"], true);
    assert_eq!(counter(&json, "round_trips"), 1);
    assert_eq!(
        counter(&json, "messages_sent"),
        3,
        "hello, summary, goodbye"
    );
}

#[test]
fn dry_run_and_diff_show_the_plan_and_write_nothing() {
    let (a, b, _server) = pair();
    a.write("memory/a.md", "from a\n");
    a.ok(&["sync"]);
    a.write("memory/a.md", "edited on a\n");
    a.write("memory/only-a.md", "new\n");
    b.write("memory/only-b.md", "new on b\n");
    let (before_a, before_b) = (a.tree(), b.tree());
    let dry = a.ok(&["sync", "--dry-run"]);
    let diff = a.ok(&["diff", "beta"]);
    assert_eq!(
        (a.tree(), b.tree()),
        (before_a, before_b),
        "a dry run wrote something"
    );
    for json in [&dry, &diff] {
        let peer = &json["peers"][0];
        let pulled: Vec<&str> = peer["pulled"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        let pushed: Vec<&str> = peer["pushed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        assert_eq!(pulled, ["memory/only-b.md"]);
        assert_eq!(pushed, ["memory/a.md", "memory/only-a.md"]);
    }
    // The real run does exactly what the plan said.
    let real = a.ok(&["sync"]);
    let paths = |j: &serde_json::Value, dir: &str| -> Vec<String> {
        j["peers"][0][dir]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(paths(&real, "pulled"), paths(&diff, "pulled"));
    assert_eq!(paths(&real, "pushed"), paths(&diff, "pushed"));
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn an_interrupted_transfer_resumes_without_resending_received_chunks() {
    let (a, b, _server) = pair();
    for i in 0..12 {
        b.write(&format!("memory/blob{i}.bin"), noise(200_000, i));
    }
    // The first run dies after 5 chunks have arrived and been kept.
    let out = a
        .cmd()
        .env("BOTSYNC_TEST_ABORT_AFTER_CHUNKS", "5")
        .args(["--json", "pull"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..12 {
        // Every file is either absent or complete: never torn.
        if let Some(bytes) = a.read(&format!("memory/blob{i}.bin")) {
            assert_eq!(bytes, noise(200_000, i));
        }
    }
    let kept = count_files(&a.path(".botsync/store"));
    assert!(
        kept >= 5,
        "the chunks received before the abort were kept: {kept}"
    );
    let json = a.ok(&["pull"]);
    // A third peer pulling everything from scratch tells how many chunks the data has.
    let c = Peer::new("gamma");
    b.add(&c, 7474);
    c.add(&b, _server.port);
    let total = counter(&c.ok(&["pull"]), "chunks_received");
    // The first run kept at least 5 chunks (other streams may have kept a few more before the
    // process died); none of them travels again.
    let received = counter(&json, "chunks_received");
    assert!(
        received <= total - 5,
        "kept chunks were fetched again: {received} of {total}"
    );
    assert!(
        received + kept >= total,
        "{received} received + {kept} kept < {total}"
    );
    assert_eq!(a.tree(), b.tree());
    assert_eq!(staged_chunks(&a), 0, "applied files need no staged copies");
}

#[test]
fn a_finished_sync_leaves_no_staged_copies_but_keeps_replaced_versions() {
    let (a, b, _server) = pair();
    for i in 0..3 {
        b.write(&format!("memory/blob{i}.bin"), noise(400_000, i));
    }
    a.ok(&["pull"]);
    assert_eq!(a.tree(), b.tree());
    assert_eq!(
        count_files(&a.path(".botsync/store")),
        0,
        "the received chunks live in the files now, not twice on disk"
    );
    // A remote edit replaces a's version: the old version is kept for history, and the new
    // chunks are not left staged.
    b.write("memory/blob0.bin", noise(400_000, 99));
    a.ok(&["pull"]);
    assert_eq!(a.read("memory/blob0.bin").unwrap(), noise(400_000, 99));
    assert_eq!(staged_chunks(&a), 0);
    let kept =
        count_files(&a.path(".botsync/store")) - count_files(&a.path(".botsync/store/staging"));
    assert!(kept > 0, "the replaced version is kept in the chunk store");
}

#[test]
fn a_rename_moves_no_chunk_data() {
    let (a, b, _server) = pair();
    b.write("memory/big.bin", noise(3_000_000, 9));
    a.ok(&["sync"]);
    b.rename("memory/big.bin", "memory/moved/big.bin");
    let json = a.ok(&["sync"]);
    assert_eq!(counter(&json, "chunk_bytes_received"), 0);
    assert_eq!(a.read("memory/moved/big.bin").unwrap(), noise(3_000_000, 9));
    assert!(a.read("memory/big.bin").is_none());
}

#[test]
fn concurrent_edits_keep_the_loser_in_conflicts() {
    let (a, b, _server) = pair();
    a.write("MEMORY.md", "base\n");
    a.ok(&["sync"]);
    a.write("MEMORY.md", "alpha's edit\n");
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write("MEMORY.md", "beta's later edit\n");
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "conflicts need attention: {json}");
    assert_eq!(a.read("MEMORY.md").unwrap(), b"beta's later edit\n");
    assert_eq!(b.read("MEMORY.md").unwrap(), b"beta's later edit\n");
    let kept: Vec<_> = std::fs::read_dir(a.path(".botsync/conflicts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), b"alpha's edit\n");
}

#[test]
fn the_receiver_applies_pushes_only_under_its_own_rules() {
    let (a, b, _server) = pair();
    // alpha chose to sync config/shared.json; beta did not.
    let cfg = a.path(".botsync/config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["include"] = serde_json::json!(["config/shared.json"]);
    std::fs::write(&cfg, v.to_string()).unwrap();
    a.write("config/shared.json", "{\"x\":1}\n");
    a.write("memory/ok.md", "fine\n");
    let (_code, json, _) = a.run(&["push"]);
    assert!(
        b.read("config/shared.json").is_none(),
        "beta wrote outside its selection"
    );
    assert!(b.read("memory/ok.md").is_some());
    let refused = json["peers"][0]["pushed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == "config/shared.json" && i["action"] == "not-selected");
    assert!(refused, "{json}");
}

#[test]
fn an_unknown_or_unreachable_peer_is_one_clear_error() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let server = b.serve();
    // beta does not know alpha.
    a.add(&b, server.port);
    let (code, json, stderr) = a.run(&["sync"]);
    assert_eq!(code, 1, "{json}");
    let err = json["peers"][0]["error"].as_str().unwrap().to_owned();
    assert!(err.contains("botsync add"), "{err}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("error")).count(),
        1,
        "{stderr}"
    );
    // A peer nobody answers for.
    drop(server);
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 1);
    let err = json["peers"][0]["error"].as_str().unwrap();
    assert!(err.contains("no answer"), "{err}");
}

#[test]
fn bad_input_is_a_usage_error() {
    let a = Peer::new("alpha");
    let (code, json, _) = a.run(&["add", "x", "127.0.0.1", "--id", "not-an-id"]);
    assert_eq!(code, 2, "{json}");
    let (code, _, _) = a.run(&["sync", "nobody"]);
    assert_eq!(code, 2);
    std::fs::write(a.path(".botsync/config.json"), "{\"bogus\": 1}").unwrap();
    let (code, json, _) = a.run(&["scan"]);
    assert_eq!(code, 2, "{json}");
    assert!(json["error"].as_str().unwrap().contains("bogus"));
}

#[test]
fn add_refuses_addresses_that_reach_nobody_and_its_own_id() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    let id = b.id();
    for host in [":7474", "a:b:c", "127.0.0.1:0", "[::1]:0", "bad host"] {
        let (code, json, stderr) = a.run(&["add", "x", host, "--id", &id]);
        assert_eq!(code, 2, "{host}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains("HOST[:PORT]"),
            "{json}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let (code, json, _) = a.run(&["add", "me", "127.0.0.1", "--id", &a.id()]);
    assert_eq!(code, 2, "{json}");
    assert!(json["error"].as_str().unwrap().contains("own id"), "{json}");
    // The advice works: the other machine's id is accepted.
    a.ok(&["add", "beta", "127.0.0.1:7475", "--id", &id]);
    // The same through a running daemon.
    let _d = a.serve();
    let (code, json, _) = a.run(&["add", "me", "127.0.0.1", "--id", &a.id()]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(a.ok(&["peers"])["peers"].as_array().unwrap().len(), 1);
}

#[test]
fn the_demo_syncs_two_workspaces_and_cleans_up() {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("botsync"))
        .args(["--json", "demo"])
        .env_remove("BOTSYNC_WORKSPACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["identical"], true);
    assert_eq!(json["private_files_stayed_home"], true);
    let steps = json["steps"].as_array().unwrap();
    assert!(
        steps[0]["files_out"].as_u64().unwrap() > 0,
        "the first sync moved files"
    );
    assert_eq!(
        steps[2]["round_trips"], 1,
        "the last sync had nothing to do"
    );
    let dir = json["workspaces"].as_str().unwrap();
    assert!(
        !std::path::Path::new(dir).exists(),
        "the demo left {dir} behind"
    );
}

#[test]
fn a_log_being_appended_syncs_its_stable_prefix_and_never_claims_in_sync() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (a, b, _server) = pair();
    let line = |i: u64| {
        format!(
            "{{\"ts\":{i},\"event\":\"tool-call\",\"detail\":\"{}\"}}\n",
            "x".repeat(60)
        )
    };
    let history: String = (0..40_000).map(line).collect();
    a.write("memory/agent.jsonl", &history);
    a.ok(&["sync", "beta"]);

    // The agent keeps logging while the user syncs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (Arc::clone(&stop), a.path("memory/agent.jsonl"));
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
            let mut i = 40_000;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(line(i).as_bytes()).unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let mut synced_len = history.len();
    for round in 0..2 {
        let (code, json, stderr) = a.run(&["sync", "beta"]);
        assert!(code == 0 || code == 3, "{json}\n{stderr}");
        let peer = &json["peers"][0];
        assert_eq!(
            peer["in_sync"], false,
            "round {round}: claimed in sync: {json}"
        );
        let theirs = b.read("memory/agent.jsonl").unwrap();
        let ours = a.read("memory/agent.jsonl").unwrap();
        assert!(
            theirs.len() > synced_len,
            "round {round}: the growing log did not sync ({} bytes, {synced_len} before): {json}",
            theirs.len()
        );
        assert_eq!(
            theirs[..],
            ours[..theirs.len()],
            "round {round}: not a prefix"
        );
        synced_len = theirs.len();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    a.ok(&["sync", "beta"]);
    assert_eq!(
        a.read("memory/agent.jsonl"),
        b.read("memory/agent.jsonl"),
        "once the writer stops, the whole log syncs"
    );
}

#[test]
fn a_file_the_scan_could_not_read_is_never_reported_in_sync() {
    let (a, _b, _server) = pair();
    a.write("memory/notes.md", "synced\n");
    a.ok(&["sync", "beta"]);
    // Two spellings of one name (NFC and NFD) in one directory: one of them cannot be synced.
    a.write("memory/caf\u{e9}.md", "nfc\n");
    a.write("memory/cafe\u{301}.md", "nfd\n");
    let (code, json, _) = a.run(&["sync", "beta"]);
    assert_eq!(code, 3, "{json}");
    let peer = &json["peers"][0];
    assert_eq!(peer["in_sync"], false, "{json}");
    assert_eq!(peer["skipped"].as_array().unwrap().len(), 1, "{json}");
    let out = a.cmd().args(["sync", "beta"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("already in sync"), "{text}");
    assert!(text.contains("not synced"), "{text}");
}

#[test]
fn a_file_the_serving_side_could_not_read_is_never_reported_in_sync() {
    let (a, b, _server) = pair();
    a.write("memory/notes.md", "synced\n");
    a.ok(&["sync", "beta"]);
    b.write("memory/caf\u{e9}.md", "nfc\n");
    b.write("memory/cafe\u{301}.md", "nfd\n");
    let (code, json, _) = a.run(&["sync", "beta"]);
    assert_eq!(code, 3, "{json}");
    let peer = &json["peers"][0];
    assert_eq!(peer["in_sync"], false, "{json}");
    assert_eq!(peer["peer_skipped"], 1, "{json}");
}
