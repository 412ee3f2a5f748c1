//! Scanner benchmark: an agent workspace of 20,000 small notes.
//!
//! 20,000 files of about 1 KiB in 100 directories under `memory/`. `cold` scans with an empty
//! index (every file opened and hashed: the first scan after `init`); `warm` rescans with the
//! cold scan's entries as the index and nothing changed (the stat cache answers: the no-op
//! re-sync case). Both run with a warm page cache; the target is warm < 5 % of cold.
//!
//! Run: `cargo bench -p botsync-benches --bench scan`. The files go to a temporary directory
//! under `BOTSYNC_BENCH_DIR` if set (for example a loop-mounted ext4), else the system default.

use std::collections::BTreeMap;
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use botsync_engine::config::SyncConfig;
use botsync_engine::rules::Selection;
use botsync_engine::scan::{ScanContext, ScanReport, scan};
use botsync_engine::{AgentLabel, Attribution, ChunkerParams, LocalEntry, PeerId, RelPath};
use criterion::{Criterion, criterion_group, criterion_main};

const FILES: usize = 20_000;
const DIRS: usize = 100;
const FILE_BYTES: usize = 1024;

fn bench_scan(c: &mut Criterion) {
    let dir = match std::env::var_os("BOTSYNC_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("create the benchmark directory");
    populate(dir.path());
    let selection = Selection::new(&SyncConfig::default()).expect("default selection compiles");
    // Scan "a minute after the files were written", so the warm scan trusts every stat (files
    // written within the racy window of a scan are re-hashed by design).
    let ctx = ScanContext {
        root: dir.path(),
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

    let mut group = c.benchmark_group("scan_20k_x_1KiB");
    group.sample_size(10);
    group.bench_function("cold", |b| b.iter(|| black_box(scan(&ctx, &empty))));
    group.bench_function("warm", |b| b.iter(|| black_box(scan(&ctx, &index))));
    group.finish();

    // Wall time on a shared, loaded machine swings; CPU time (all threads) is steadier.
    let cold_cpu = cpu_ns_per_scan(&ctx, &empty);
    let warm_cpu = cpu_ns_per_scan(&ctx, &index);
    if let (Some(cold), Some(warm)) = (cold_cpu, warm_cpu) {
        println!(
            "scan_20k_x_1KiB cpu time per scan: cold {:.1} ms, warm {:.1} ms, warm/cold {:.1} %",
            cold as f64 / 1e6,
            warm as f64 / 1e6,
            100.0 * warm as f64 / cold as f64
        );
    }
}

/// Average CPU time of one scan over a few runs, from the kernel's per-thread accounting
/// (`/proc/self/task/*/schedstat`, Linux only); `None` where that is not available.
fn cpu_ns_per_scan(ctx: &ScanContext<'_>, prev: &BTreeMap<RelPath, LocalEntry>) -> Option<u64> {
    const RUNS: u64 = 5;
    let before = process_cpu_ns()?;
    for _ in 0..RUNS {
        black_box(scan(ctx, prev).expect("scan"));
    }
    Some((process_cpu_ns()? - before) / RUNS)
}

/// CPU nanoseconds used so far by all live threads of this process (rayon's pool threads live
/// as long as the process, so differences are exact).
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
