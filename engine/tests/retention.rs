//! The retention setting: what the chunk store keeps (replaced versions, staged chunks) goes once
//! it is older than `retention_days`, in a collection that runs at most once a day.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use botsync_engine::workspace::{GC_INTERVAL_NS, Workspace};
use botsync_engine::{AgentLabel, Attribution, Hash, MachineName, PeerId};

const DAY_NS: i64 = 24 * 60 * 60 * 1_000_000_000;

fn open(dir: &std::path::Path, retention_days: Option<u32>) -> Workspace {
    Workspace::init(dir, Some("test")).unwrap();
    if let Some(days) = retention_days {
        let cfg = dir.join(".botsync/config.json");
        fs::write(&cfg, format!(r#"{{"retention_days": {days}}}"#)).unwrap();
    }
    let local = Attribution {
        peer: PeerId([1; 32]),
        agent: AgentLabel::new("t"),
        machine: MachineName::default(),
    };
    Workspace::open(dir, local).unwrap().0
}

fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Files below `.botsync/store/`.
fn stored_files(root: &std::path::Path) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.file_type().unwrap().is_dir() {
                        count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    count(&root.join(".botsync/store"))
}

#[test]
fn a_staged_chunk_from_an_abandoned_sync_goes_after_the_default_30_days() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open(dir.path(), None);
    ws.put_chunk(&Hash::of(b"never applied"), b"never applied")
        .unwrap();
    let now = wall_clock_ns();

    let first = ws
        .collect_garbage(now)
        .unwrap()
        .expect("the first run is due");
    assert_eq!(first.removed, 0, "a young chunk stays");
    assert!(
        ws.collect_garbage(now + GC_INTERVAL_NS / 2)
            .unwrap()
            .is_none(),
        "at most one collection a day"
    );
    let later = ws
        .collect_garbage(now + 29 * DAY_NS)
        .unwrap()
        .expect("a day later it runs again");
    assert_eq!(later.removed, 0, "29 days is within the retention");
    let expired = ws
        .collect_garbage(now + 31 * DAY_NS)
        .unwrap()
        .expect("due again");
    assert_eq!(expired.removed, 1);
    assert_eq!(stored_files(dir.path()), 0);
}

#[test]
fn retention_days_from_the_config_sets_the_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open(dir.path(), Some(2));
    ws.put_chunk(&Hash::of(b"a"), b"a").unwrap();
    let now = wall_clock_ns();
    assert_eq!(
        ws.collect_garbage(now + DAY_NS).unwrap().unwrap().removed,
        0
    );
    assert_eq!(
        ws.collect_garbage(now + 3 * DAY_NS)
            .unwrap()
            .unwrap()
            .removed,
        1
    );
}

#[test]
fn a_collection_that_fails_says_why_and_is_tried_again_at_the_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open(dir.path(), None);
    let store = dir.path().join(".botsync/store");
    let aside = dir.path().join("store-aside");
    fs::rename(&store, &aside).unwrap();
    fs::write(&store, b"not a directory").unwrap();
    let now = wall_clock_ns();

    let err = ws.collect_garbage(now).unwrap_err().to_string();
    assert!(
        err.contains("listing the chunk store") && err.contains(".botsync/store"),
        "one line that says what failed and where: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    fs::remove_file(&store).unwrap();
    fs::rename(&aside, &store).unwrap();
    assert!(
        ws.collect_garbage(now + 1).unwrap().is_some(),
        "the failed run was not counted as the day's collection"
    );
}
