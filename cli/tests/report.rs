//! What `sync --dry-run`, `diff`, `scan` and `sync` tell the user: the planned action of every
//! item and how much would move, and every skipped file once, in words, with what to do.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Peer, noise, pair};

#[test]
fn dry_run_and_diff_say_what_would_move_and_how_many_bytes() {
    let (a, b, _server) = pair();
    a.write("memory/big.bin", noise(100_000, 1));
    b.write("memory/theirs.bin", noise(50_000, 2));
    for verb in [&["sync", "--dry-run"][..], &["diff", "beta"]] {
        let json = a.ok(verb);
        let p = &json["peers"][0];
        assert_eq!(p["peer"], "beta", "{json}");
        let pushed = &p["pushed"][0];
        assert_eq!(pushed["path"], "memory/big.bin");
        assert_eq!(pushed["action"], "take");
        assert_eq!(pushed["outcome"], "planned", "{json}");
        assert_eq!(p["pulled"][0]["outcome"], "planned", "{json}");
        assert_eq!(p["send"]["files"], 1, "{json}");
        assert!(p["send"]["bytes"].as_u64().unwrap() >= 100_000, "{json}");
        assert_eq!(p["receive"]["files"], 1, "{json}");
        assert!(p["receive"]["bytes"].as_u64().unwrap() >= 50_000, "{json}");
        let out = a.cmd().args(verb).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("would receive 1 files (48.8 KiB), would send 1 files (97.7 KiB)"),
            "{text}"
        );
        assert!(!text.contains("0 B received"), "{text}");
        assert!(text.contains("-> memory/big.bin (take"), "{text}");
    }
    assert!(b.read("memory/big.bin").is_none() && a.read("memory/theirs.bin").is_none());
    let real = a.ok(&["sync"]);
    assert_eq!(real["peers"][0]["pushed"][0]["outcome"], "done", "{real}");
}

#[test]
fn scan_names_a_skipped_file_in_words_with_what_to_do() {
    let p = Peer::new("alpha");
    p.write("memory/caf\u{e9}.md", "nfc\n");
    p.write("memory/cafe\u{301}.md", "nfd\n");
    let json = p.ok(&["scan"]);
    let sk = &json["skipped"][0];
    assert!(
        sk["reason"]
            .as_str()
            .unwrap()
            .contains("normalizes to the same path")
    );
    assert!(
        sk["what_to_do"]
            .as_str()
            .unwrap()
            .contains("rename or remove one")
    );
    let text = String::from_utf8_lossy(&p.cmd().arg("scan").output().unwrap().stdout).into_owned();
    assert!(text.contains("rename or remove one of them"), "{text}");
    assert!(!text.contains("NameCollision"), "{text}");
}

#[test]
fn sync_reports_every_skipped_path_once_with_what_to_do() {
    let (a, b, server) = pair();
    let c = Peer::new("gamma");
    let sc = c.serve();
    c.add(&a, 7474);
    a.add(&c, sc.port);
    a.write("memory/caf\u{e9}.md", "nfc\n");
    a.write("memory/cafe\u{301}.md", "nfd\n");
    let (code, json, _) = a.run(&["sync"]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(json["skipped"].as_array().unwrap().len(), 1, "{json}");
    assert!(
        json["skipped"][0]["what_to_do"]
            .as_str()
            .unwrap()
            .contains("rename or remove one")
    );
    let out = a.cmd().arg("sync").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("normalizes to the same path").count(),
        1,
        "{text}"
    );
    assert!(text.contains("rename or remove one of them"), "{text}");
    drop((b, server));
}
