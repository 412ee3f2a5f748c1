//! A log being appended while it is scanned (docs/CONFLICTS.md, *Files that keep changing*):
//! the scan records the prefix it saw at stat time instead of skipping the file every time.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use botsync_engine::RelPath;
use botsync_engine::chunk::Chunker;
use botsync_engine::chunktree::content_hash;

use common::{open_workspace, wall_clock_ns};

fn line(i: u64) -> String {
    format!(
        "{{\"ts\":{i},\"event\":\"tool-call\",\"detail\":\"{}\"}}\n",
        "x".repeat(60)
    )
}

#[test]
fn a_log_appended_while_it_is_scanned_records_its_stable_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path(), 1);
    let log = dir.path().join("memory/agent.jsonl");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    // A few MB of history, so reading it takes a while.
    let history: String = (0..40_000).map(line).collect();
    fs::write(&log, &history).unwrap();

    // The agent keeps appending, much faster than 5 lines a second.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (Arc::clone(&stop), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut i = 40_000;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(line(i).as_bytes()).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let path = RelPath::new("memory/agent.jsonl").unwrap();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(30));
        let refresh = ws.refresh(wall_clock_ns()).unwrap();
        let skipped: Vec<_> = refresh.scan.skipped.iter().map(|s| s.to_string()).collect();
        assert!(
            skipped.is_empty(),
            "the growing log was skipped: {skipped:?}"
        );
        let entry = ws.entries(std::slice::from_ref(&path)).unwrap().remove(0);
        // The recorded version is exactly a prefix of the file as it is now.
        let now = fs::read(&log).unwrap();
        let prefix = &now[..entry.size as usize];
        let chunks = Chunker::default().chunk_reader(prefix).unwrap();
        assert_eq!(entry.content, content_hash(&chunks));
        sizes.push(entry.size);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
}
