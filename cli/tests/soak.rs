//! A soak: five daemons on 127.0.0.1 in a full mesh with auto-sync on, random edits on all of
//! them (appends to their own logs and to one shared log, notes written, rewritten and
//! deleted) for `BOTSYNC_SOAK_SECS` seconds (20 in the suite; `benches/soak.sh` runs it for
//! minutes). Afterwards every workspace holds the same files, no appended line is missing
//! anywhere, and no daemon's memory grew without bound.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Peer, Server, eventually};

const PEERS: usize = 5;

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// xorshift: the soak's edits replay from `BOTSYNC_SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn append(p: &Peer, rel: &str, line: &str) {
    use std::io::Write;
    let path = p.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn lines_of(p: &Peer, rel: &str) -> BTreeSet<String> {
    String::from_utf8_lossy(&p.read(rel).unwrap_or_default())
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Each path whose bytes differ between the workspaces, with a short digest per peer.
fn differences(peers: &[Peer]) -> String {
    use std::collections::BTreeMap;
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, p) in peers.iter().enumerate() {
        for (path, bytes) in p.tree() {
            let v = by_path
                .entry(path)
                .or_insert_with(|| vec!["-".into(); peers.len()]);
            v[k] = format!("{}B:{:08x}", bytes.len(), crc(&bytes));
        }
    }
    by_path
        .into_iter()
        .filter(|(_, v)| v.iter().any(|x| x != &v[0]))
        .map(|(path, v)| format!("  {path}: {}\n", v.join(" ")))
        .collect()
}

fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[test]
fn five_daemons_in_a_full_mesh_converge_after_minutes_of_random_edits() {
    let secs: u64 = std::env::var("BOTSYNC_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("BOTSYNC_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x50A4);
    let peers: Vec<Peer> = (0..PEERS).map(|i| Peer::new(&format!("p{i}"))).collect();
    let daemons: Vec<Server> = peers.iter().map(Peer::serve).collect();
    for (i, p) in peers.iter().enumerate() {
        for (j, q) in peers.iter().enumerate() {
            if i != j {
                p.add(q, daemons[j].port);
            }
        }
    }
    for p in &peers {
        p.ok(&["auto", "on"]);
    }
    let baseline: Vec<u64> = daemons.iter().map(|d| rss_kib(d.child.id())).collect();
    let mut peak = baseline.clone();

    let mut rng = Rng(seed | 1);
    // Every line appended anywhere, by file: none may be missing at the end.
    let mut own_lines: Vec<Vec<String>> = vec![Vec::new(); PEERS];
    let mut shared_lines: Vec<String> = Vec::new();
    let mut edits = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let who = rng.below(PEERS as u64) as usize;
        let p = &peers[who];
        match rng.below(10) {
            0..=3 => {
                let line = format!("{{\"peer\":{who},\"n\":{edits},\"own\":true}}");
                append(p, &format!("memory/log-p{who}.jsonl"), &line);
                own_lines[who].push(line);
            }
            4..=5 => {
                let line = format!("{{\"peer\":{who},\"n\":{edits},\"shared\":true}}");
                append(p, "memory/shared.jsonl", &line);
                shared_lines.push(line);
            }
            6..=8 => {
                let note = rng.below(40);
                p.write(
                    &format!("memory/notes/n{note}.md"),
                    format!("# note {note}\nwritten by p{who} at edit {edits}\n"),
                );
            }
            _ => {
                let note = rng.below(40);
                let _ = std::fs::remove_file(p.path(&format!("memory/notes/n{note}.md")));
            }
        }
        edits += 1;
        if edits.is_multiple_of(20) {
            for (k, d) in daemons.iter().enumerate() {
                peak[k] = peak[k].max(rss_kib(d.child.id()));
            }
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(80)));
    }

    let wait: u64 = std::env::var("BOTSYNC_SOAK_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    let converged = eventually(wait, || {
        let first = peers[0].tree();
        peers[1..].iter().all(|p| p.tree() == first)
    });
    let at_rest: Vec<u64> = daemons.iter().map(|d| rss_kib(d.child.id())).collect();
    println!(
        "soak: {secs} s, {edits} edits on {PEERS} daemons; RSS KiB at start {baseline:?}, peak {peak:?}, at rest {at_rest:?}"
    );
    if !converged {
        // What the peers think of the paths that differ, for the failure message.
        for p in &peers {
            let (_, diff, _) = p.run(&["diff"]);
            println!("{} diff: {diff}", p.name);
        }
        for line in differences(&peers).lines() {
            let path = line.trim().split(':').next().unwrap();
            for p in &peers {
                let (_, h, _) = p.run(&["history", path]);
                println!("{} history {path}: {h}", p.name);
            }
        }
    }
    assert!(
        converged,
        "the five workspaces never converged after the edits stopped:\n{}",
        differences(&peers)
    );
    for p in &peers {
        for (who, lines) in own_lines.iter().enumerate() {
            let have = lines_of(p, &format!("memory/log-p{who}.jsonl"));
            let lost: Vec<_> = lines.iter().filter(|l| !have.contains(*l)).collect();
            assert!(
                lost.is_empty(),
                "{} lost lines of p{who}'s log: {lost:?}",
                p.name
            );
        }
        let have = lines_of(p, "memory/shared.jsonl");
        let lost: Vec<_> = shared_lines.iter().filter(|l| !have.contains(*l)).collect();
        assert!(
            lost.is_empty(),
            "{} lost lines of the shared log: {lost:?}",
            p.name
        );
    }
    for (k, (&peak, &base)) in peak.iter().zip(&baseline).enumerate() {
        // Flat: a daemon's peak stays within a bounded margin of where it started, whatever
        // the run's length (the long run in benches/soak.sh reports the same figures).
        assert!(
            peak < base + 96 * 1024,
            "daemon p{k} grew from {base} KiB to {peak} KiB"
        );
    }
}
