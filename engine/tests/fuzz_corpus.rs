//! The fuzz corpora of the engine's decoders (`fuzz/corpus/config_parse`, `path_parse`, `merge_input`, `sync_json`,
//! `feed_parse`, `lock_commands`),
//! replayed with the same checks as the fuzz targets, so every input a fuzzer ever kept (seeds,
//! boundaries, former crashes) is checked on every test run and the targets never rot.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use botsync_engine::RelPath;
use botsync_engine::config::SyncConfig;
use botsync_engine::rules::Selection;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "{target}: the seed corpus is missing");
    out
}

#[test]
fn the_config_corpus_parses_or_is_refused_and_round_trips() {
    let mut accepted = 0;
    for (file, data) in corpus("config_parse") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let path = Path::new("config.json");
        if let Ok(config) = SyncConfig::parse(path, text) {
            accepted += 1;
            let _ = Selection::new(&config);
            let written = config.to_json();
            let again = SyncConfig::parse(path, &written)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(again.to_json(), written, "{}", file.display());
        }
    }
    assert!(accepted >= 2, "the valid seeds are accepted");
}

#[test]
fn the_path_corpus_is_refused_or_canonical_and_confined() {
    let mut accepted = 0;
    for (file, data) in corpus("path_parse") {
        let Ok(s) = std::str::from_utf8(&data) else {
            continue;
        };
        let Ok(p) = RelPath::new(s) else {
            continue;
        };
        accepted += 1;
        let shown = file.display();
        assert_eq!(RelPath::new(p.as_str()).unwrap(), p, "{shown}");
        for c in p.components() {
            assert!(!c.is_empty() && c != "." && c != "..", "{shown}");
            assert!(
                !c.chars().any(|ch| ch.is_control() || ch == '\\'),
                "{shown}"
            );
        }
        assert!(!p.as_str().starts_with(".botsync/"), "{shown}");
        let root = Path::new("/workspace");
        assert!(p.to_fs(root).starts_with(root), "{shown}");
    }
    assert!(accepted >= 2, "the valid seeds are accepted");
}

#[test]
fn the_merge_corpus_merges_the_same_either_way_and_loses_no_line() {
    use botsync_engine::reconcile::{MergePolicy, merge, union};
    let mut merged = 0;
    for (file, data) in corpus("merge_input") {
        let shown = file.display();
        let mut parts = data.splitn(3, |b| *b == 0xFF);
        let (Some(a), Some(x), Some(y)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        for ancestor in [None, Some(a)] {
            if let Ok(m) = union::merge(ancestor, x, y) {
                merged += 1;
                assert_eq!(
                    union::merge(ancestor, y, x).ok(),
                    Some(m.clone()),
                    "{shown}"
                );
                for side in [x, y] {
                    for line in side.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        assert!(m.split(|b| *b == b'\n').any(|l| l == line), "{shown}");
                    }
                }
            }
            for policy in [MergePolicy::Json, MergePolicy::Text] {
                let _ = merge(policy, ancestor, x, y);
            }
        }
    }
    assert!(merged >= 5, "the seeds merge");
}

#[test]
fn the_sync_json_corpus_is_refused_naming_the_file_or_holds_what_the_runner_needs() {
    let file = Path::new("skills/fuzz/SYNC.json");
    let mut accepted = 0;
    for (seed, data) in corpus("sync_json") {
        match botsync_engine::skill::Manifest::parse(file, &data) {
            Ok(m) => {
                accepted += 1;
                assert_eq!(m.version, "1", "{}", seed.display());
                assert!(!m.patterns.is_empty(), "{}", seed.display());
                let g = Path::new(&m.generator);
                assert!(
                    g.is_relative() && g.components().all(|c| c != std::path::Component::ParentDir),
                    "{}",
                    seed.display()
                );
            }
            Err(e) => assert!(
                e.to_string().contains("skills/fuzz/SYNC.json"),
                "{}: {e}",
                seed.display()
            ),
        }
    }
    assert!(accepted >= 1, "the valid seed is accepted");
}

#[test]
fn the_feed_corpus_reads_in_one_order_and_round_trips() {
    let mut messages = 0;
    for (seed, data) in corpus("feed_parse") {
        let feed = botsync_engine::feed::Feed::parse(&data);
        for w in feed.messages.windows(2) {
            let key = |m: &botsync_engine::feed::Message| (m.at_ms().unwrap_or(0), m.id.clone());
            assert!(key(&w[0]) < key(&w[1]), "{}", seed.display());
        }
        for m in &feed.messages {
            let again = botsync_engine::feed::Feed::parse(m.to_line().as_bytes());
            assert_eq!(&again.messages[0], m, "{}", seed.display());
        }
        let _ = botsync_engine::feed::handoffs(&feed);
        messages += feed.messages.len();
    }
    assert!(messages >= 4, "the seeds hold messages");
}

#[test]
fn the_lock_command_corpus_keeps_the_tables_laws() {
    use botsync_engine::locks::{Answer, Command, LockTable};
    let mut applied = 0;
    for (seed, data) in corpus("lock_commands") {
        let Ok(commands) = serde_json::from_slice::<Vec<Command>>(&data) else {
            continue;
        };
        let mut table = LockTable::default();
        let mut last = 0;
        for c in &commands {
            let acquire = matches!(c, Command::Acquire { .. });
            if let Answer::Held(l) = table.apply(c)
                && acquire
            {
                assert!(l.token > last, "{}", seed.display());
                last = l.token;
            }
            assert_eq!(table.last_token(), last, "{}", seed.display());
            applied += 1;
        }
    }
    assert!(applied >= 8, "the seeds hold commands");
}
