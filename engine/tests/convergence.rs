//! A seeded convergence simulation (docs/CONFLICTS.md): four replicas, thousands of random
//! edits, appends, creates, deletes and renames, random pairwise syncs (each side pulls the
//! other, as `botsync sync` does, without the network). After a final round:
//! - every replica has the same Merkle root and the same files;
//! - no line appended to the shared JSONL log is missing anywhere;
//! - every version a scan ever saw of a `newest` file is current, kept in `conflicts/`, or
//!   restorable from some replica's history.
//!
//! Each replica's index is in memory (`IndexKind::InMemory`): the files, chunk store and every
//! rule are as on disk. `BOTSYNC_SIM_STEPS` and `BOTSYNC_SIM_SEED` make longer or other runs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use botsync_engine::hash::Hash;
use botsync_engine::workspace::{IndexKind, Workspace};
use botsync_engine::{FileEntry, RelPath};

use common::{content_of, open_workspace_indexed, wall_clock_ns};

const PEERS: usize = 4;
const LOG: &str = "memory/log.jsonl";
const MEMORY: &str = "MEMORY.md";
const CONFIG: &str = "memory/agents.json";

/// xorshift64*: the simulation's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Replica {
    dir: tempfile::TempDir,
    ws: Workspace,
}

impl Replica {
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        fs::read(self.path(rel)).ok()
    }

    fn all_entries(&self) -> Vec<FileEntry> {
        let paths: Vec<RelPath> = self.ws.store().local_all().unwrap().into_keys().collect();
        self.ws.entries(&paths).unwrap()
    }

    /// The synced files on disk (path -> bytes), outside `.botsync/`.
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".botsync" {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.insert(rel, fs::read(&p).unwrap());
        }
    }
}

/// `to` pulls everything `from` has: plan, fetch, apply.
fn pull(to: &Replica, from: &Replica) {
    let plan = to.ws.plan(from.all_entries()).unwrap();
    for c in to.ws.chunks_needed(&plan).unwrap() {
        if let Some(bytes) = from.ws.read_chunk(&c.id).unwrap() {
            to.ws.put_chunk(&c.id, &bytes).unwrap();
        }
    }
    to.ws.apply(plan, wall_clock_ns()).unwrap();
}

/// What the simulation remembers: the versions scans saw and the lines appended.
#[derive(Default)]
struct Seen {
    /// `newest` paths -> every content a scan saw there.
    versions: BTreeMap<String, BTreeSet<Hash>>,
    lines: BTreeSet<String>,
}

fn scan(r: &Replica, seen: &mut Seen) {
    r.ws.refresh(wall_clock_ns()).unwrap();
    for (path, bytes) in r.files() {
        if path.ends_with(".txt") {
            seen.versions
                .entry(path)
                .or_default()
                .insert(content_of(&bytes));
        }
    }
}

fn sync(a: &Replica, b: &Replica, seen: &mut Seen) {
    scan(a, seen);
    scan(b, seen);
    pull(a, b);
    pull(b, a);
}

/// One random change on replica `at`.
fn change(r: &Replica, at: usize, step: usize, rng: &mut Rng, seen: &mut Seen) {
    let note = |k: usize| format!("memory/n{k}.txt");
    match rng.below(10) {
        0..=2 => {
            let line = format!("{{\"ts\":{step},\"by\":{at},\"n\":{}}}", rng.next() % 1000);
            let mut log = r.read(LOG).unwrap_or_default();
            log.extend_from_slice(line.as_bytes());
            log.push(b'\n');
            r.write(LOG, &log);
            seen.lines.insert(line);
        }
        3..=5 => r.write(
            &note(rng.below(8)),
            format!("note by {at} at {step}\n").as_bytes(),
        ),
        6 => {
            // Each replica edits its own line of MEMORY.md: these merge as text.
            let mut lines: Vec<String> = String::from_utf8(r.read(MEMORY).unwrap_or_default())
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect();
            lines.resize(PEERS * 3, "-".to_owned());
            lines[at * 3 + 1] = format!("- {at} remembers step {step}");
            r.write(MEMORY, format!("{}\n", lines.join("\n")).as_bytes());
        }
        7 => {
            let mut doc: serde_json::Value = r
                .read(CONFIG)
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            doc[format!("agent{at}")] = serde_json::json!({ "seen": step });
            r.write(CONFIG, serde_json::to_vec_pretty(&doc).unwrap().as_slice());
        }
        8 => {
            let _ = fs::remove_file(r.path(&note(rng.below(8))));
        }
        _ => {
            let (from, to) = (note(rng.below(8)), note(rng.below(8)));
            if from != to && r.read(&to).is_none() {
                let _ = fs::rename(r.path(&from), r.path(&to));
            }
        }
    }
}

#[test]
fn four_replicas_converge_without_losing_a_line_or_a_version() {
    let steps: usize = std::env::var("BOTSYNC_SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_500);
    let seed: u64 = std::env::var("BOTSYNC_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_B075);
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let replicas: Vec<Replica> = (0..PEERS)
        .map(|i| {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let ws = open_workspace_indexed(dir.path(), i as u8 + 1, IndexKind::InMemory);
            Replica { dir, ws }
        })
        .collect();
    let mut rng = Rng(seed | 1);
    let mut seen = Seen::default();
    for step in 0..steps {
        let at = rng.below(PEERS);
        change(&replicas[at], at, step, &mut rng, &mut seen);
        if rng.below(4) == 0 {
            let (a, b) = (rng.below(PEERS), rng.below(PEERS));
            if a != b {
                sync(&replicas[a], &replicas[b], &mut seen);
            }
        }
    }
    // Final rounds: every pair, until nothing changes (a merge made in one round travels in
    // the next).
    for _ in 0..4 {
        for a in 0..PEERS {
            for b in a + 1..PEERS {
                sync(&replicas[a], &replicas[b], &mut seen);
            }
        }
    }
    for r in &replicas {
        r.ws.refresh(wall_clock_ns()).unwrap();
    }

    let first = &replicas[0];
    for (i, r) in replicas.iter().enumerate().skip(1) {
        assert_eq!(
            r.files(),
            first.files(),
            "replica {i} holds other files (seed {seed})"
        );
        assert_eq!(
            r.ws.snapshot().0,
            first.ws.snapshot().0,
            "replica {i}: roots differ"
        );
    }

    let log = String::from_utf8(first.read(LOG).unwrap()).unwrap();
    let lines: BTreeSet<&str> = log.lines().collect();
    let missing: Vec<&String> = seen
        .lines
        .iter()
        .filter(|l| !lines.contains(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "appended lines lost (seed {seed}): {missing:?}"
    );

    let mut kept: BTreeSet<Hash> = BTreeSet::new();
    for r in &replicas {
        for (path, bytes) in r.files() {
            if path.ends_with(".txt") {
                kept.insert(content_of(&bytes));
            }
        }
        for entry in fs::read_dir(r.path(".botsync/conflicts")).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                kept.insert(content_of(&fs::read(p).unwrap()));
            }
        }
        for rec in r.ws.store().history_recent(usize::MAX).unwrap() {
            kept.extend(rec.old_content);
            kept.extend(rec.new_content);
        }
    }
    let mut lost = Vec::new();
    for (path, versions) in &seen.versions {
        for v in versions {
            if !kept.contains(v) {
                lost.push((path.clone(), *v));
            }
        }
    }
    assert!(lost.is_empty(), "versions lost (seed {seed}): {lost:?}");
}
