//! Apply benchmark: the end of an initial sync's pull, `Workspace::apply`, writing durably.
//!
//! `many_small`: 20,000 new files of 4 KiB in 100 directories under `memory/`, into an empty
//! workspace (PRODUCT.md §7: "20,000 × 4 KiB, initial sync ≤ 1.0 × rsync over SSH"). `one_large`:
//! one new file of 64 MiB. In both, every chunk was received before apply starts (staged in the
//! chunk store, as a sync does), so the figure is apply alone: assemble and verify, make durable,
//! rename, index and history. Setting up each fresh workspace is not timed.
//!
//! Run: `cargo bench -p botsync-benches --bench apply`. The workspaces go to a temporary
//! directory under `BOTSYNC_BENCH_DIR` if set (use a journaled file system such as a
//! loop-mounted ext4: PRODUCT.md §7 explains why), else the system default.
//! `BOTSYNC_BENCH_APPLY_FILES` overrides the number of small files (for a quick look).

use std::hint::black_box;
use std::time::Duration;

use botsync_engine::chunktree::content_hash;
use botsync_engine::plan::{Outcome, PlanItem};
use botsync_engine::workspace::Workspace;
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, Chunker, ChunkerParams, EntryKind, FileEntry, Hash,
    MachineName, Mode, PeerId, RelPath, VersionVector,
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tempfile::TempDir;

const FILES: usize = 20_000;
const DIRS: usize = 100;
const SMALL_BYTES: usize = 4096;
const LARGE_BYTES: usize = 64 * 1024 * 1024;
/// 2026-01-01, in ns: every version was made "before" the sync.
const NOW_NS: i64 = 1_767_225_600_000_000_000;
const SENDER: PeerId = PeerId([2; 32]);
const RECEIVER: PeerId = PeerId([1; 32]);

fn bench_apply(c: &mut Criterion) {
    let files = std::env::var("BOTSYNC_BENCH_APPLY_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FILES);
    let small: Vec<(String, Vec<u8>)> = (0..files)
        .map(|i| {
            let path = format!("memory/d{:03}/note-{i:05}.md", i % DIRS);
            (path, pseudo_random(i as u64, SMALL_BYTES))
        })
        .collect();
    let large = vec![(
        "memory/archive.bin".to_owned(),
        pseudo_random(u64::MAX, LARGE_BYTES),
    )];

    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function(format!("many_small_{files}_x_4KiB"), |b| {
        b.iter_batched(
            || Fixture::new(&small),
            |fx| fx.run(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("one_large_64MiB", |b| {
        b.iter_batched(
            || Fixture::new(&large),
            |fx| fx.run(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// A fresh workspace whose chunk store holds every chunk of `files`, and the plan to create them.
struct Fixture {
    // Dropped after `ws`, and outside the timed routine (criterion drops the output later).
    _dir: TempDir,
    ws: Workspace,
    items: Vec<PlanItem>,
    expected: usize,
}

impl Fixture {
    fn new(files: &[(String, Vec<u8>)]) -> Fixture {
        let dir = match std::env::var_os("BOTSYNC_BENCH_DIR") {
            Some(base) => tempfile::tempdir_in(base),
            None => tempfile::tempdir(),
        }
        .expect("create the benchmark directory");
        Workspace::init(dir.path(), Some("bench")).expect("init the workspace");
        let local = Attribution {
            peer: RECEIVER,
            agent: AgentLabel::new("bench"),
            machine: MachineName::default(),
        };
        let (ws, _) = Workspace::open(dir.path(), local).expect("open the workspace");
        let chunker = Chunker::new(ChunkerParams::DEFAULT);
        let mut incoming = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            let mut chunks = Vec::new();
            chunker
                .for_each_chunk(bytes.as_slice(), |b| {
                    let id = Hash::of(b);
                    ws.put_chunk(&id, b).map_err(std::io::Error::other)?;
                    chunks.push(ChunkRef {
                        id,
                        len: b.len() as u32,
                    });
                    Ok(())
                })
                .expect("stage the chunks");
            incoming.push(entry(path, bytes.len() as u64, chunks));
        }
        let items = ws.plan(incoming).expect("plan");
        Fixture {
            _dir: dir,
            ws,
            expected: files.len(),
            items,
        }
    }

    /// Apply the plan; returns the fixture so that its removal is not timed.
    fn run(self) -> Fixture {
        let reports = self
            .ws
            .apply(self.items.clone(), NOW_NS)
            .expect("apply runs");
        let done = reports
            .iter()
            .filter(|r| r.outcome == Outcome::Done)
            .count();
        assert_eq!(done, self.expected, "every file is written");
        black_box(self)
    }
}

fn entry(path: &str, size: u64, chunks: Vec<ChunkRef>) -> FileEntry {
    FileEntry {
        path: RelPath::new(path).expect("a valid path"),
        kind: EntryKind::File,
        size,
        mtime_ns: NOW_NS - 60_000_000_000,
        mode: Mode::default(),
        content: content_hash(&chunks),
        chunks,
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs([(SENDER, 1)]),
        parent: None,
        changed_by: Attribution {
            peer: SENDER,
            agent: AgentLabel::new("laptop"),
            machine: MachineName::default(),
        },
    }
}

/// Incompressible, distinct bytes (xorshift), so that no two files share a chunk.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
