//! Scanner benchmark: an agent workspace of 20,000 small notes.
//!
//! 20,000 files of about 1 KiB in 100 directories under `memory/`. The cases, in one run:
//! - `floor`: the system calls any rescan that checks each file's stat must make, and nothing
//!   else: each directory listed with `getdents64` into one buffer, each file `statx`ed
//!   relative to its directory, the directories spread over all cores with rayon;
//! - `std_walk`: the same walk through `std` (`read_dir` + `DirEntry::metadata`): what a
//!   straightforward walker costs;
//! - `warm`: a rescan with the cold scan's entries as the index and nothing changed (the stat
//!   cache answers, no file is opened: the no-op re-sync case);
//! - `cold`: a scan with an empty index (every file opened and hashed: the first scan after
//!   `init`) with a warm page cache;
//! - `cold_cache`: the same with a cold page, dentry and inode cache too, the first scan after
//!   a reboot or a mount: `sync` and `echo 3 > /proc/sys/vm/drop_caches` before each iteration,
//!   outside the timed part. That needs root; without it the case is skipped, with a line
//!   saying so;
//! - `refresh_warm` and `refresh_cold`: the same two scans as the product runs them,
//!   `Workspace::refresh` (what `botsync scan` and every sync do): the scan, then the index
//!   written to the store and the Merkle tree updated. Cold is the first refresh of a new
//!   workspace (`init` and `open` are not timed), warm page cache.
//!
//! After criterion's figures, one summary line per case (median wall time and CPU time of all
//! threads over a few interleaved runs, each after an untimed run of the same case) and the
//! ratios warm/floor, warm/cold, warm/cold_cache and refresh_warm/refresh_cold, so every ratio
//! compares runs made under the same load.
//!
//! Run: `cargo bench -p botsync-benches --bench scan`. The files go to a temporary directory
//! under `BOTSYNC_BENCH_DIR` if set (for example the loop-mounted ext4 of
//! `benches/e2e/setup.sh`), else the system default.

use std::collections::BTreeMap;
use std::fs;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use botsync_engine::config::SyncConfig;
use botsync_engine::rules::Selection;
use botsync_engine::scan::{ScanContext, ScanReport, scan};
use botsync_engine::workspace::Workspace;
use botsync_engine::{
    AgentLabel, Attribution, ChunkerParams, LocalEntry, MachineName, PeerId, RelPath,
};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, StatxFlags};

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
            machine: MachineName::default(),
        },
        now_ns: wall_clock_ns() + 60_000_000_000,
        chunker: ChunkerParams::DEFAULT,
        secrets: None,
    };
    let empty = BTreeMap::new();
    let first = scan(&ctx, &empty).expect("cold scan");
    assert_eq!(first.changes.len(), FILES, "every file is found");
    let index = index_of(&first);
    let again = scan(&ctx, &index).expect("warm scan");
    assert_eq!(again.hashed_files, 0, "a warm rescan reads no file");
    assert_eq!(again.unchanged, FILES as u64);
    assert_eq!(floor_walk(root), FILES as u64, "the floor stats every file");
    assert_eq!(
        std_walk(root),
        FILES as u64,
        "the std walk stats every file"
    );
    let dropper = CacheDropper::new();
    let workspace = BenchWorkspace::new(root, ctx.local.clone(), ctx.now_ns);

    let mut group = c.benchmark_group("scan_20k_x_1KiB");
    group.sample_size(10);
    group.bench_function("floor", |b| b.iter(|| black_box(floor_walk(root))));
    group.bench_function("std_walk", |b| b.iter(|| black_box(std_walk(root))));
    group.bench_function("warm", |b| b.iter(|| black_box(scan(&ctx, &index))));
    group.bench_function("cold", |b| b.iter(|| black_box(scan(&ctx, &empty))));
    group.bench_function("refresh_warm", |b| {
        let warm = workspace.opened();
        b.iter(|| black_box(warm.refresh()))
    });
    // One refresh per sample, each of a new workspace (made outside the timed part).
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.bench_function("refresh_cold", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| workspace.fresh().timed_refresh()).sum())
    });
    match &dropper {
        Ok(dropper) => {
            // Each iteration costs a cache drop and a scan from disk.
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

    summary(&ctx, &index, &empty, &workspace, dropper.as_ref().ok());
}

/// Measure every case again, interleaved, and print medians and the ratios.
fn summary(
    ctx: &ScanContext<'_>,
    index: &BTreeMap<RelPath, LocalEntry>,
    empty: &BTreeMap<RelPath, LocalEntry>,
    workspace: &BenchWorkspace<'_>,
    dropper: Option<&CacheDropper>,
) {
    let mut floor = Samples::default();
    let mut std = Samples::default();
    let mut warm = Samples::default();
    let mut cold = Samples::default();
    let mut refresh_warm = Samples::default();
    let mut refresh_cold = Samples::default();
    for _ in 0..SUMMARY_RUNS {
        // Each timed run follows an untimed one of the same case: interleaved, so a change of
        // load touches every case alike, but not timed right after another case evicted its
        // working set (a cold scan reads 20 MiB) from the CPU caches.
        floor.run_warmed(|| floor_walk(ctx.root));
        std.run_warmed(|| std_walk(ctx.root));
        warm.run_warmed(|| scan(ctx, index).expect("warm scan"));
        cold.run_warmed(|| scan(ctx, empty).expect("cold scan"));
        let opened = workspace.opened();
        refresh_warm.run_warmed(|| opened.refresh());
        drop(opened);
        workspace.fresh().refresh();
        let fresh = workspace.fresh();
        refresh_cold.run(|| fresh.refresh());
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
        ("std_walk", &std),
        ("warm", &warm),
        ("cold", &cold),
        ("cold_cache", &cold_cache),
        ("refresh_warm", &refresh_warm),
        ("refresh_cold", &refresh_cold),
    ];
    for (name, s) in cases {
        if let Some((wall, cpu)) = s.medians() {
            println!("  {name:<12} {:>9.1} ms | {:>9.1} ms", ms(wall), ms(cpu));
        }
    }
    let ratios = [
        ("warm/floor", &warm, &floor),
        ("warm/std_walk", &warm, &std),
        ("warm/cold", &warm, &cold),
        ("warm/cold_cache", &warm, &cold_cache),
        ("refresh_warm/refresh_cold", &refresh_warm, &refresh_cold),
    ];
    for (name, a, b) in ratios {
        if let (Some((a_wall, a_cpu)), Some((b_wall, b_cpu))) = (a.medians(), b.medians()) {
            println!(
                "  {name:<25} {:>6.1} % wall | {:>6.1} % CPU",
                100.0 * a_wall as f64 / b_wall as f64,
                100.0 * a_cpu as f64 / b_cpu as f64
            );
        }
    }
}

/// A workspace made of the benchmark's tree, for the `refresh_*` cases: `.botsync/` is made
/// anew for each cold refresh (the scan cases do not look inside it).
struct BenchWorkspace<'a> {
    root: &'a Path,
    local: Attribution,
    now_ns: i64,
}

impl<'a> BenchWorkspace<'a> {
    fn new(root: &'a Path, local: Attribution, now_ns: i64) -> BenchWorkspace<'a> {
        let ws = BenchWorkspace {
            root,
            local,
            now_ns,
        };
        let first = ws.fresh().refresh();
        assert_eq!(
            first.scan.added, FILES as u64,
            "a first refresh adds every file"
        );
        let again = ws.opened().refresh();
        assert_eq!(again.scan.hashed_files, 0, "a warm refresh reads no file");
        ws
    }

    /// A new workspace: `.botsync/` removed, made again and opened, with an empty index.
    fn fresh(&self) -> Opened {
        let state = self.root.join(".botsync");
        fs::remove_dir_all(&state).expect("remove .botsync");
        Workspace::init(self.root, None).expect("init the workspace");
        self.opened()
    }

    /// The workspace as it is.
    fn opened(&self) -> Opened {
        let (ws, _) = Workspace::open(self.root, self.local.clone()).expect("open the workspace");
        Opened {
            ws,
            now_ns: self.now_ns,
        }
    }
}

struct Opened {
    ws: Workspace,
    now_ns: i64,
}

impl Opened {
    fn refresh(&self) -> botsync_engine::workspace::Refresh {
        self.ws.refresh(self.now_ns).expect("refresh")
    }

    fn timed_refresh(self) -> Duration {
        let start = Instant::now();
        black_box(self.refresh());
        start.elapsed()
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

/// The floor: every regular file below `dir` statted once, relative to its directory, and
/// nothing else (no name copied, nothing allocated per file); directories in parallel;
/// `.botsync/` left out. Returns the number of files.
fn floor_walk(dir: &Path) -> u64 {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open the root");
    floor_dir(&fd, true)
}

fn floor_dir(fd: &OwnedFd, root: bool) -> u64 {
    let mut buf = vec![MaybeUninit::uninit(); 32 * 1024];
    let mut listing = RawDir::new(fd.as_fd(), &mut buf);
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    while let Some(entry) = listing.next() {
        let entry = entry.expect("read a directory entry");
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") || (root && name.to_bytes() == b".botsync") {
            continue;
        }
        match entry.file_type() {
            FileType::Directory => dirs.push(name.to_owned()),
            _ => files.push(name.to_owned()),
        }
    }
    let below: u64 = dirs
        .par_iter()
        .map(|name| {
            let sub = rustix::fs::openat(
                fd,
                name.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .expect("open a directory");
            floor_dir(&sub, false)
        })
        .sum();
    let here: u64 = files
        .par_chunks(256)
        .map(|run| {
            run.iter()
                .map(|name| {
                    let st = rustix::fs::statx(
                        fd,
                        name.as_c_str(),
                        AtFlags::SYMLINK_NOFOLLOW,
                        StatxFlags::BASIC_STATS,
                    )
                    .expect("stat a file");
                    u64::from(FileType::from_raw_mode(st.stx_mode.into()) == FileType::RegularFile)
                })
                .sum::<u64>()
        })
        .sum();
    below + here
}

/// [`floor_walk`] through `std`: `read_dir` + `DirEntry::metadata` (statx relative to the
/// directory too), directories in parallel; `.botsync/` left out.
fn std_walk(dir: &Path) -> u64 {
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
                std_walk(&e.path())
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
