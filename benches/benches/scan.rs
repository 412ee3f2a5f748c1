//! Scanner benchmark: an agent workspace of 20,000 small notes.
//!
//! 20,000 files of about 1 KiB in 100 directories under `memory/`. The cases, in one run:
//! - `floor`: a plain `std` walk of the same tree (`read_dir` + `DirEntry::metadata`, the
//!   directories spread over all cores with rayon), nothing else: what any rescan that checks
//!   each file's stat costs on this machine, the floor the warm rescan is measured against;
//! - `warm`: a rescan with the cold scan's entries as the index and nothing changed (the stat
//!   cache answers, no file is opened: the no-op re-sync case);
//! - `cold`: a scan with an empty index (every file opened and hashed: the first scan after
//!   `init`) with a warm page cache;
//! - `cold_cache`: the same with a cold page, dentry and inode cache too, the first scan after
//!   a reboot or a mount: `sync` and `echo 3 > /proc/sys/vm/drop_caches` before each iteration,
//!   outside the timed part. That needs root; without it the case is skipped, with a line
//!   saying so.
//!
//! After criterion's figures, one summary line per case (median wall time and CPU time of all
//! threads over a few interleaved runs, each after an untimed run of the same case) and the
//! ratios warm/floor, warm/cold and warm/cold_cache, so every ratio compares runs made under
//! the same load.
//!
//! Run: `cargo bench -p botsync-benches --bench scan`. The files go to a temporary directory
//! under `BOTSYNC_BENCH_DIR` if set (for example the loop-mounted ext4 of
//! `benches/e2e/setup.sh`), else the system default.

use std::collections::BTreeMap;
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use botsync_engine::config::SyncConfig;
use botsync_engine::rules::Selection;
use botsync_engine::scan::{ScanContext, ScanReport, scan};
use botsync_engine::{AgentLabel, Attribution, ChunkerParams, LocalEntry, PeerId, RelPath};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rayon::prelude::*;

const FILES: usize = 20_000;
const DIRS: usize = 100;
const FILE_BYTES: usize = 1024;

/// Runs per case for the summary (interleaved, the median is kept).
const SUMMARY_RUNS: usize = 9;
/// Runs of the cold-cache case for the summary (each drops every cache on the machine).
const SUMMARY_RUNS_COLD_CACHE: usize = 3;

const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

fn bench_scan(c: &mut Criterion) {
    let dir = match std::env::var_os("BOTSYNC_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("create the benchmark directory");
    let root = dir.path();
    populate(root);
    let selection = Selection::new(&SyncConfig::default()).expect("default selection compiles");
    // Scan "a minute after the files were written", so the warm scan trusts every stat (files
    // written within the racy window of a scan are re-hashed by design).
    let ctx = ScanContext {
        root,
        selection: &selection,
        local: Attribution {
            peer: PeerId([1; 32]),
            agent: AgentLabel::new("bench"),
        },
        now_ns: wall_clock_ns() + 60_000_000_000,
        chunker: ChunkerParams::DEFAULT,
    };
    let empty = BTreeMap::new();
    let first = scan(&ctx, &empty).expect("cold scan");
    assert_eq!(first.changes.len(), FILES, "every file is found");
    let index = index_of(&first);
    let again = scan(&ctx, &index).expect("warm scan");
    assert_eq!(again.hashed_files, 0, "a warm rescan reads no file");
    assert_eq!(again.unchanged, FILES as u64);
    assert_eq!(floor_walk(root), FILES as u64, "the floor stats every file");
    let dropper = CacheDropper::new();

    let mut group = c.benchmark_group("scan_20k_x_1KiB");
    group.sample_size(10);
    group.bench_function("floor", |b| b.iter(|| black_box(floor_walk(root))));
    group.bench_function("warm", |b| b.iter(|| black_box(scan(&ctx, &index))));
    group.bench_function("cold", |b| b.iter(|| black_box(scan(&ctx, &empty))));
    match &dropper {
        Ok(dropper) => {
            // One scan per sample: each iteration costs a cache drop and a scan from disk.
            group.sampling_mode(SamplingMode::Flat);
            group.warm_up_time(Duration::from_millis(1));
            group.bench_function("cold_cache", |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        dropper.drop_caches();
                        let start = Instant::now();
                        black_box(scan(&ctx, &empty).expect("cold-cache scan"));
                        timed += start.elapsed();
                    }
                    timed
                })
            });
        }
        Err(why) => println!("scan_20k_x_1KiB/cold_cache skipped: {why}"),
    }
    group.finish();

    summary(&ctx, &index, &empty, dropper.as_ref().ok());
}

/// Measure every case again, interleaved, and print medians and the ratios.
fn summary(
    ctx: &ScanContext<'_>,
    index: &BTreeMap<RelPath, LocalEntry>,
    empty: &BTreeMap<RelPath, LocalEntry>,
    dropper: Option<&CacheDropper>,
) {
    let mut floor = Samples::default();
    let mut warm = Samples::default();
    let mut cold = Samples::default();
    for _ in 0..SUMMARY_RUNS {
        // Each timed run follows an untimed one of the same case: interleaved, so a change of
        // load touches every case alike, but not timed right after another case evicted its
        // working set (a cold scan reads 20 MiB) from the CPU caches.
        floor.run_warmed(|| floor_walk(ctx.root));
        warm.run_warmed(|| scan(ctx, index).expect("warm scan"));
        cold.run_warmed(|| scan(ctx, empty).expect("cold scan"));
    }
    let mut cold_cache = Samples::default();
    if let Some(dropper) = dropper {
        for _ in 0..SUMMARY_RUNS_COLD_CACHE {
            dropper.drop_caches();
            cold_cache.run(|| scan(ctx, empty).expect("cold-cache scan"));
        }
    }

    println!(
        "scan_20k_x_1KiB summary: median of {SUMMARY_RUNS} interleaved runs ({SUMMARY_RUNS_COLD_CACHE} for cold_cache), wall | CPU"
    );
    println!("  (CPU = all threads of the process, kernel included, rayon's idle spinning too)");
    let cases = [
        ("floor", &floor),
        ("warm", &warm),
        ("cold", &cold),
        ("cold_cache", &cold_cache),
    ];
    for (name, s) in cases {
        if let Some((wall, cpu)) = s.medians() {
            println!("  {name:<10} {:>9.1} ms | {:>9.1} ms", ms(wall), ms(cpu));
        }
    }
    let Some((warm_wall, warm_cpu)) = warm.medians() else {
        return;
    };
    for (name, s) in [
        ("warm/floor", &floor),
        ("warm/cold", &cold),
        ("warm/cold_cache", &cold_cache),
    ] {
        if let Some((wall, cpu)) = s.medians() {
            println!(
                "  {name:<15} {:>6.1} % wall | {:>6.1} % CPU",
                100.0 * warm_wall as f64 / wall as f64,
                100.0 * warm_cpu as f64 / cpu as f64
            );
        }
    }
}

/// Wall and CPU nanoseconds of repeated runs of one case.
#[derive(Debug, Default)]
struct Samples {
    wall: Vec<u64>,
    cpu: Vec<u64>,
}

impl Samples {
    /// Run `f` once untimed, then once timed.
    fn run_warmed<T>(&mut self, mut f: impl FnMut() -> T) {
        black_box(f());
        self.run(f);
    }

    fn run<T>(&mut self, f: impl FnOnce() -> T) {
        let cpu_before = process_cpu_ns();
        let start = Instant::now();
        black_box(f());
        let wall = start.elapsed();
        self.wall
            .push(u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX));
        if let (Some(before), Some(after)) = (cpu_before, process_cpu_ns()) {
            self.cpu.push(after.saturating_sub(before));
        }
    }

    /// Median wall and CPU time, if there were runs (CPU 0 where it cannot be read).
    fn medians(&self) -> Option<(u64, u64)> {
        Some((median(&self.wall)?, median(&self.cpu).unwrap_or(0)))
    }
}

fn median(xs: &[u64]) -> Option<u64> {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The floor: every regular file below `dir` statted once through `std` (statx relative to the
/// directory, as the scanner does), directories in parallel; `.botsync/` left out. Returns the
/// number of files.
fn floor_walk(dir: &Path) -> u64 {
    let entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .expect("list a directory")
        .map(|e| e.expect("read a directory entry"))
        .filter(|e| e.file_name() != ".botsync")
        .collect();
    entries
        .par_iter()
        .map(|e| {
            let file_type = e.file_type().expect("entry type");
            if file_type.is_dir() {
                floor_walk(&e.path())
            } else {
                let meta = e.metadata().expect("stat a file");
                u64::from(meta.is_file())
            }
        })
        .sum()
}

/// Empties the kernel's page, dentry and inode caches (the whole machine's) between iterations.
#[derive(Debug)]
struct CacheDropper;

impl CacheDropper {
    /// A dropper if this process may write `/proc/sys/vm/drop_caches` (root), else why not.
    fn new() -> Result<CacheDropper, String> {
        fs::OpenOptions::new()
            .write(true)
            .open(DROP_CACHES)
            .map_err(|e| {
                format!(
                    "cannot write {DROP_CACHES} ({e}); run the bench as root to measure the first scan after a reboot or mount"
                )
            })?;
        Ok(CacheDropper)
    }

    fn drop_caches(&self) {
        // Dirty pages cannot be dropped: write them out first.
        let synced = Command::new("sync").status().expect("run sync");
        assert!(synced.success(), "sync failed");
        fs::write(DROP_CACHES, b"3").expect("write drop_caches");
    }
}

/// CPU nanoseconds used so far by all live threads of this process (rayon's pool threads live
/// as long as the process, so differences are exact); `None` where `/proc` does not say.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir("/proc/self/task").ok()? {
        let stat = fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Write the workspace: `.botsync/` and the notes, each with distinct content.
fn populate(root: &Path) {
    fs::create_dir(root.join(".botsync")).expect("create .botsync");
    for d in 0..DIRS {
        let dir = root.join(format!("memory/topic-{d:03}"));
        fs::create_dir_all(&dir).expect("create a topic directory");
        for f in 0..FILES / DIRS {
            let line =
                format!("- note {f} of topic {d}: the operator said something worth keeping\n");
            let body: String = line.repeat(FILE_BYTES / line.len() + 1);
            fs::write(
                dir.join(format!("note-{f:04}.md")),
                &body.as_bytes()[..FILE_BYTES],
            )
            .expect("write a note");
        }
    }
}

fn index_of(report: &ScanReport) -> BTreeMap<RelPath, LocalEntry> {
    report
        .changes
        .iter()
        .map(|c| (c.entry.entry.path.clone(), c.entry.clone()))
        .collect()
}

fn wall_clock_ns() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_nanos()).expect("clock before 2262")
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
