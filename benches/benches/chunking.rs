//! Chunk + hash throughput against plain single-thread BLAKE3, on the same 256 MiB buffer.
//!
//! Target: `chunk_and_hash` ≥ 0.7 × `blake3_single_thread` (throughput), measured in one run:
//! `cargo bench -p botsync-benches --bench chunking`. `chunk_and_hash_reader` is the scanner's
//! path (bytes copied through a reader, as from a file); `chunk_and_hash_sequential` is the
//! one-thread loop, to show what the pipeline buys.
//!
//! The second group does the same from a 256 MiB file in the page cache, against the reference
//! PRODUCT.md names: `b3sum --num-threads 1` (which maps the file), when `b3sum` is on the PATH
//! (`cargo install b3sum`); without it that case is skipped with a note. The file goes to
//! `BOTSYNC_BENCH_DIR` if set, else the system's temporary directory.

use std::fs::{self, File};
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};

use botsync_engine::chunk::{ChunkRef, Chunker};
use botsync_engine::chunktree::content_hash;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LEN: usize = 256 << 20;

/// Incompressible bytes (xorshift), so every chunk is distinct.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Cut and hash on one thread through the streaming API.
fn sequential(chunker: &Chunker, data: &[u8]) -> usize {
    let mut chunks = Vec::new();
    let streamed = chunker.for_each_chunk(data, |bytes| {
        chunks.push(ChunkRef {
            id: botsync_engine::Hash::of(bytes),
            len: bytes.len() as u32,
        });
        Ok(())
    });
    black_box(content_hash(&chunks));
    streamed.map_or(0, |n| n as usize)
}

fn chunking(c: &mut Criterion) {
    let data = pseudo_random(LEN);
    let chunker = Chunker::default();
    let mut group = c.benchmark_group("chunk_256MiB");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    group.bench_function("blake3_single_thread", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    group.bench_function("chunk_and_hash", |b| {
        b.iter(|| chunker.digest_bytes(black_box(&data)))
    });
    group.bench_function("chunk_and_hash_reader", |b| {
        b.iter(|| chunker.digest_reader(black_box(&data[..])).map(|d| d.size))
    });
    group.bench_function("chunk_and_hash_sequential", |b| {
        b.iter(|| sequential(&chunker, black_box(&data)))
    });
    group.finish();
    from_file(c, &chunker, &data);
}

/// The same input as a file in the page cache: what the scanner reads, against `b3sum`.
fn from_file(c: &mut Criterion, chunker: &Chunker, data: &[u8]) {
    let dir = match std::env::var_os("BOTSYNC_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("create the benchmark directory");
    let path = dir.path().join("input.bin");
    fs::write(&path, data).expect("write the input file");
    let b3sum = b3sum_works(&path);
    let mut group = c.benchmark_group("file_256MiB");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    if b3sum {
        group.bench_function("b3sum_one_thread", |b| {
            b.iter(|| {
                let out = Command::new("b3sum")
                    .args(["--num-threads", "1"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .status()
                    .expect("run b3sum");
                assert!(out.success(), "b3sum failed");
            })
        });
    } else {
        println!("file_256MiB/b3sum_one_thread: skipped, no working b3sum on the PATH");
    }
    group.bench_function("blake3_update_reader", |b| {
        b.iter(|| {
            let file = File::open(&path).expect("open the input");
            black_box(
                blake3::Hasher::new()
                    .update_reader(file)
                    .map(|h| h.finalize()),
            )
        })
    });
    group.bench_function("chunk_and_hash_file", |b| {
        b.iter(|| {
            let file = File::open(&path).expect("open the input");
            black_box(chunker.digest_reader(file).map(|d| d.content))
        })
    });
    group.finish();
}

/// True if `b3sum --num-threads 1` runs here and agrees with the blake3 crate on `path`.
fn b3sum_works(path: &Path) -> bool {
    let Ok(out) = Command::new("b3sum")
        .args(["--num-threads", "1", "--no-names"])
        .arg(path)
        .output()
    else {
        return false;
    };
    let want = blake3::Hasher::new()
        .update_reader(File::open(path).expect("open the input"))
        .map(|h| h.finalize().to_hex().to_string())
        .expect("hash the input");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == want
}

criterion_group!(benches, chunking);
criterion_main!(benches);
