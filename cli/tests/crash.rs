//! Syncs killed with SIGKILL at random moments, as a power cut or the OOM killer would: on the
//! receiving side a pulling client and a daemon receiving a push, on the sending side a pushing
//! client and a daemon serving a pull. Whatever the moment, the next clean sync
//! finishes with both sides equal, every file whole, no temporary file left anywhere, and no
//! conflict that never happened (issue 17's findings: 3,584 stale temp files and thousands of
//! false conflicts after about 90 kills). A longer run is `benches/crash-loop.sh`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Peer, noise};

/// A corpus with many small notes and a few files of several MiB, so kills land in every phase.
fn corpus(p: &Peer) {
    for i in 0..150 {
        p.write(
            &format!("memory/d{}/note{i}.md", i % 8),
            noise(200 + (i * 97) % 9000, i as u64),
        );
    }
    for i in 0..2 {
        p.write(&format!("memory/big{i}.bin"), noise(6 << 20, 1000 + i));
    }
}

/// Some notes grow, as an agent's would, so later runs carry new versions.
fn edit_some(p: &Peer, round: usize) {
    for i in (round * 7..round * 7 + 10).map(|k| k % 150) {
        let rel = format!("memory/d{}/note{i}.md", i % 8);
        let mut bytes = p.read(&rel).unwrap();
        bytes.extend_from_slice(format!("round {round}\n").as_bytes());
        p.write(&rel, bytes);
    }
}

/// Deterministic "random" kill delays between 30 ms and 1.2 s: `n` of them, or
/// `BOTSYNC_CRASH_ROUNDS` (the long run of `benches/crash-loop.sh`).
fn delays(n: usize) -> Vec<Duration> {
    let n = std::env::var("BOTSYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    eprintln!("crash loop: {n} kills");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(30 + x % 1170)
        })
        .collect()
}

/// `p` runs `verb peer` in the background, its output dropped.
fn start(p: &Peer, verb: &str, peer: &str) -> Child {
    p.cmd()
        .args([verb, peer])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `n` rounds (or `BOTSYNC_CRASH_ROUNDS`) of `round(delay)`, which kills something after
/// `delay`; every third round `source` edits some notes, so later rounds carry new versions.
fn crash_rounds(n: usize, source: &Peer, mut round: impl FnMut(Duration)) {
    for (i, delay) in delays(n).into_iter().enumerate() {
        round(delay);
        if i % 3 == 2 {
            edit_some(source, i);
        }
    }
}

/// Every `.botsync-tmp-*` file under `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            if name != ".botsync" {
                out.extend(temp_files(&e.path()));
            }
        } else if name.starts_with(".botsync-tmp-") {
            out.push(e.path().display().to_string());
        }
    }
    out
}

fn conflict_copies(p: &Peer) -> u64 {
    let dir = p.path(".botsync/conflicts");
    if dir.exists() {
        common::count_files(&dir)
    } else {
        0
    }
}

/// The clean sync after the kills. A killed client cannot close its connections: the daemon
/// counts them until they time out (5 s idle), and past 4 per peer it answers "busy, retry
/// later". The clean sync does what that message says.
fn clean_run(p: &Peer, verb: &str, peer: &str) -> (i32, serde_json::Value, String) {
    let started = std::time::Instant::now();
    loop {
        let (code, json, stderr) = p.run(&[verb, peer]);
        let busy = json.to_string().contains("is busy");
        if !busy || started.elapsed() > Duration::from_secs(20) {
            return (code, json, stderr);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// After the kills: a clean sync, then both sides equal, nothing left over, nothing conflicted.
fn assert_recovered(from: &Peer, to: &Peer, verb: &str, peer: &str) {
    let (code, json, stderr) = clean_run(to, verb, peer);
    assert_eq!(code, 0, "clean {verb} after the kills: {json}\n{stderr}");
    let temps = temp_files(to.root());
    assert!(
        temps.is_empty(),
        "{} temp files left: {:?}",
        temps.len(),
        &temps[..temps.len().min(3)]
    );
    assert_eq!(conflict_copies(to), 0, "false conflicts after the kills");
    assert_eq!(
        counter(&json, "conflicts"),
        0,
        "the clean sync reports no conflict: {json}"
    );
    assert!(from.tree() == to.tree(), "both sides hold the same files");
    assert_index_matches_disk(to);
}

/// A fresh scan finds nothing the index does not already say: the kills left no phantom change.
fn assert_index_matches_disk(p: &Peer) {
    let scan = p.ok(&["scan"]);
    for field in ["added", "modified", "deleted"] {
        assert_eq!(scan[field], 0, "a rescan after the kills: {scan}");
    }
}

fn counter(json: &serde_json::Value, name: &str) -> u64 {
    json["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .map(|p| p["counters"][name].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_pull_killed_at_random_moments_recovers_without_false_conflicts() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    corpus(&a);
    let server = a.serve();
    b.add(&a, server.port);
    a.add(&b, 7474);

    crash_rounds(10, &a, |delay| {
        let mut pull = start(&b, "pull", "alpha");
        std::thread::sleep(delay);
        let _ = pull.kill();
        let _ = pull.wait();
    });
    assert_recovered(&a, &b, "pull", "alpha");
}

#[test]
fn a_daemon_killed_while_receiving_a_push_recovers_without_false_conflicts() {
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    corpus(&a);
    let mut server = Some(b.serve());
    let port = server.as_ref().unwrap().port;
    a.add(&b, port);
    b.add(&a, 7474);

    crash_rounds(8, &a, |delay| {
        let mut push = start(&a, "push", "beta");
        std::thread::sleep(delay);
        server.take().unwrap().kill();
        let _ = push.kill();
        let _ = push.wait();
        // Restarted on the same port, as a service manager would.
        server = Some(b.serve_on(&format!("127.0.0.1:{port}")));
    });
    let (code, json, stderr) = clean_run(&a, "push", "beta");
    assert_eq!(code, 0, "clean push after the kills: {json}\n{stderr}");
    assert_eq!(counter(&json, "conflicts"), 0, "{json}");
    server.take().unwrap().terminate();
    assert!(a.tree() == b.tree(), "both sides hold the same files");
    // The daemon's side too: it never conflicted, and a fresh start finds nothing to clean.
    let temps = temp_files(b.root());
    assert!(
        temps.is_empty(),
        "{} temp files left: {:?}",
        temps.len(),
        &temps[..temps.len().min(3)]
    );
    assert_eq!(conflict_copies(&b), 0);
    assert_index_matches_disk(&b);
}

#[test]
fn a_push_killed_at_random_moments_recovers_without_false_conflicts() {
    // The sending side dies: the daemon receiving the push is left with whatever arrived.
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    corpus(&a);
    let server = b.serve();
    a.add(&b, server.port);
    b.add(&a, 7474);

    crash_rounds(8, &a, |delay| {
        let mut push = start(&a, "push", "beta");
        std::thread::sleep(delay);
        let _ = push.kill();
        let _ = push.wait();
    });
    let (code, json, stderr) = clean_run(&a, "push", "beta");
    assert_eq!(code, 0, "clean push after the kills: {json}\n{stderr}");
    assert_eq!(counter(&json, "conflicts"), 0, "{json}");
    server.terminate();
    assert!(a.tree() == b.tree(), "both sides hold the same files");
    let temps = temp_files(b.root());
    assert!(
        temps.is_empty(),
        "{} temp files left: {temps:?}",
        temps.len()
    );
    assert_eq!(conflict_copies(&b), 0, "false conflicts on the receiver");
    assert_eq!(conflict_copies(&a), 0, "false conflicts on the sender");
    assert_index_matches_disk(&b);
    assert_index_matches_disk(&a);
}

#[test]
fn a_daemon_killed_while_serving_a_pull_recovers_without_false_conflicts() {
    // The sending side dies again, this time a daemon: the pulling client sees its peer vanish.
    let (a, b) = (Peer::new("alpha"), Peer::new("beta"));
    corpus(&a);
    let mut server = Some(a.serve());
    let port = server.as_ref().unwrap().port;
    b.add(&a, port);
    a.add(&b, 7474);

    crash_rounds(6, &a, |delay| {
        let mut pull = start(&b, "pull", "alpha");
        std::thread::sleep(delay);
        server.take().unwrap().kill();
        server = Some(a.serve_on(&format!("127.0.0.1:{port}")));
        // The client notices on its own that its peer died (the idle timeout is 5 s): it is
        // not killed, and it ends.
        let ended = common::eventually(20, || pull.try_wait().unwrap().is_some());
        assert!(ended, "the pull still waits 20 s after its peer died");
    });
    assert_recovered(&a, &b, "pull", "alpha");
    server.take().unwrap().terminate();
    let temps = temp_files(a.root());
    assert!(
        temps.is_empty(),
        "{} temp files left on the sender: {temps:?}",
        temps.len()
    );
    assert_eq!(conflict_copies(&a), 0, "false conflicts on the sender");
    assert_index_matches_disk(&a);
}
