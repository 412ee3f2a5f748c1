//! Chunk + hash throughput against plain single-thread BLAKE3, on the same 256 MiB buffer.
//!
//! Target: `chunk_and_hash` ≥ 0.7 × `blake3_single_thread` (throughput), measured in one run:
//! `cargo bench -p botsync-benches --bench chunking`. `chunk_and_hash_reader` is the scanner's
//! path (bytes copied through a reader, as from a file); `chunk_and_hash_sequential` is the
//! one-thread loop, to show what the pipeline buys.

use std::hint::black_box;

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
}

criterion_group!(benches, chunking);
criterion_main!(benches);
