//! Content-defined chunking: FastCDC (v2020) boundaries, BLAKE3 chunk ids.
//!
//! A file is cut into chunks whose boundaries depend on the content, so an insertion moves only
//! the chunks around it. Chunking streams through a fixed-size buffer: memory stays bounded
//! whatever the file size. The parameters are recorded in every manifest ([`ChunkerParams`]) so
//! that a change of parameters is detected instead of silently mixing incompatible chunk lists.
//! `docs/STORAGE.md` explains the chosen sizes.
//!
//! [`Chunker::digest_reader`] is what the scanner calls per file: chunk ids, size and content hash
//! in one pass. Inputs larger than one segment (2 MiB) are cut and hashed on two threads
//! (`pipeline`), smaller ones inline, so small files never pay for a thread. Both paths produce
//! exactly the chunks of the plain sequential loop in [`Chunker::for_each_chunk`].

mod cut;
mod pipeline;

use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

use crate::chunktree;
use crate::hash::Hash;
use pipeline::{ReaderSource, SegmentBytes, SegmentSource, SliceSource};

/// The chunking algorithm of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChunkerKind {
    /// FastCDC 2020 with the default gear table (seed 0) and normalization level 1.
    FastCdc2020,
}

/// The chunker and its sizes, recorded in every manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// The algorithm.
    pub kind: ChunkerKind,
    /// Smallest chunk (except a file's last).
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl ChunkerParams {
    /// botsync's parameters: 16 KiB / 64 KiB / 256 KiB (see `docs/STORAGE.md`).
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        kind: ChunkerKind::FastCdc2020,
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
    };

    /// True if the sizes are within FastCDC's bounds and ordered min ≤ avg ≤ max.
    pub fn is_valid(&self) -> bool {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams::DEFAULT
    }
}

/// One chunk of a file: its BLAKE3 id and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub id: Hash,
    /// Length in bytes (at most [`ChunkerParams::max`]).
    pub len: u32,
}

/// Everything the scanner needs to know about one file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Total length in bytes.
    pub size: u64,
    /// The chunks, in file order.
    pub chunks: Vec<ChunkRef>,
    /// The content hash: [`chunktree::content_hash`] of `chunks`.
    pub content: Hash,
}

impl FileDigest {
    fn from_chunks(chunks: Vec<ChunkRef>) -> FileDigest {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        let content = chunktree::content_hash(&chunks);
        FileDigest {
            size,
            chunks,
            content,
        }
    }
}

/// Streaming FastCDC chunker over any reader.
#[derive(Debug)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

/// Bytes read from the source per refill; the buffer holds this plus one maximum chunk.
const READ_BLOCK: usize = 1024 * 1024;

impl Chunker {
    /// A chunker with the given parameters. Invalid parameters fall back to the default.
    pub fn new(params: ChunkerParams) -> Chunker {
        let params = if params.is_valid() {
            params
        } else {
            ChunkerParams::DEFAULT
        };
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, Normalization::Level1);
        Chunker {
            params,
            mask_s,
            mask_l,
        }
    }

    /// The parameters in use.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Chunk `reader` to its end, calling `on_chunk` with each chunk's bytes in order.
    /// Memory use is bounded by the buffer (about 1.25 MiB), whatever the input size.
    pub fn for_each_chunk<R: Read>(
        &self,
        mut reader: R,
        mut on_chunk: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        let cap = READ_BLOCK + self.params.max as usize;
        let mut buf = vec![0u8; cap];
        let mut start = 0usize;
        let mut end = 0usize;
        let mut eof = false;
        let mut total = 0u64;
        loop {
            // Refill when less than one maximum chunk is buffered.
            if !eof && end - start < self.params.max as usize {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < cap {
                    match reader.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let n = self.cut(&buf[start..end]);
            on_chunk(&buf[start..start + n])?;
            total += n as u64;
            start += n;
        }
    }

    /// Chunk `reader` and return the chunk list (the `chunks` of [`Chunker::digest_reader`]).
    pub fn chunk_reader<R: Read>(&self, reader: R) -> io::Result<Vec<ChunkRef>> {
        Ok(self.digest_reader(reader)?.chunks)
    }

    /// Chunk and hash `reader` to its end: size, chunk list and content hash.
    ///
    /// Inputs up to one segment plus one maximum chunk (2.25 MiB) are done inline on the calling
    /// thread; larger ones on the calling thread plus one helper, with 9 MiB of buffers.
    /// The reader is only ever used on the calling thread.
    pub fn digest_reader<R: Read>(&self, reader: R) -> io::Result<FileDigest> {
        let mut source = ReaderSource::new(reader);
        let Some(first) = source.next_segment(None, self.params.max as usize)? else {
            return Ok(FileDigest::from_chunks(Vec::new()));
        };
        if source.at_eof() {
            return Ok(FileDigest::from_chunks(self.chunk_inline(first.as_slice())));
        }
        let chunks = pipeline::digest_parallel(self, &mut source, first)?;
        Ok(FileDigest::from_chunks(chunks))
    }

    /// Chunk and hash an in-memory input, like [`Chunker::digest_reader`] but without copying.
    pub fn digest_bytes(&self, data: &[u8]) -> FileDigest {
        let inline_limit = pipeline::SEGMENT + self.params.max as usize;
        if data.len() <= inline_limit {
            return FileDigest::from_chunks(self.chunk_inline(data));
        }
        let mut source = SliceSource::new(data);
        let first = SegmentBytes::Borrowed(&data[..inline_limit]);
        // Reading from a slice cannot fail, so the only error is a panicked helper thread, which
        // is a bug: fall back to the sequential loop rather than fail.
        match pipeline::digest_parallel(self, &mut source, first) {
            Ok(chunks) => FileDigest::from_chunks(chunks),
            Err(_) => FileDigest::from_chunks(self.chunk_inline(data)),
        }
    }

    /// The chunks of `data`, cut and hashed sequentially on this thread.
    fn chunk_inline(&self, data: &[u8]) -> Vec<ChunkRef> {
        let mut chunks = Vec::with_capacity(data.len() / self.params.avg as usize + 1);
        let mut at = 0;
        while at < data.len() {
            let n = self.cut(&data[at..]);
            chunks.push(ChunkRef {
                id: Hash::of(&data[at..at + n]),
                len: n as u32,
            });
            at += n;
        }
        chunks
    }
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new(ChunkerParams::DEFAULT)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic incompressible bytes (xorshift), for chunking tests.
    pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// A reader that returns at most the next of `sizes` bytes per call (cycling), like a pipe
    /// or a network file system returning short reads.
    struct ShortReads<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        call: usize,
    }

    impl Read for ShortReads<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.call % self.sizes.len()].max(1);
            self.call += 1;
            let n = want.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The chunks fastcdc's own iterator finds: the reference our cut loops must match.
    fn reference(data: &[u8]) -> Vec<ChunkRef> {
        let p = ChunkerParams::DEFAULT;
        v2020::FastCDC::new(data, p.min as usize, p.avg as usize, p.max as usize)
            .map(|c| ChunkRef {
                id: Hash::of(&data[c.offset..c.offset + c.length]),
                len: c.length as u32,
            })
            .collect()
    }

    /// Ids in `new` that are not in `old`.
    fn new_ids(old: &[ChunkRef], new: &[ChunkRef]) -> usize {
        let old: std::collections::HashSet<Hash> = old.iter().map(|c| c.id).collect();
        new.iter().filter(|c| !old.contains(&c.id)).count()
    }

    #[test]
    fn chunks_concatenate_to_input() {
        let data = pseudo_random(3 * 1024 * 1024 + 17, 7);
        let mut out = Vec::new();
        let c = Chunker::default();
        c.for_each_chunk(&data[..], |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, data);
        let chunks = c.chunk_reader(&data[..]).unwrap();
        assert!(chunks.iter().all(|ch| ch.len <= ChunkerParams::DEFAULT.max));
        assert!(chunks.len() > 10);
    }

    #[test]
    fn empty_and_small_inputs() {
        let c = Chunker::default();
        assert!(c.chunk_reader(&b""[..]).unwrap().is_empty());
        let small = c.chunk_reader(&b"hello"[..]).unwrap();
        assert_eq!(
            small,
            vec![ChunkRef {
                id: Hash::of(b"hello"),
                len: 5
            }]
        );
        let empty = c.digest_reader(&b""[..]).unwrap();
        assert_eq!(empty.size, 0);
        assert_eq!(empty.content, chunktree::content_hash(&[]));
    }

    #[test]
    fn every_path_matches_fastcdc_reference() {
        let c = Chunker::default();
        for len in [
            1,
            16 * 1024,
            300_000,
            1 << 20,
            (1 << 20) + 256 * 1024 + 1,
            6 << 20,
        ] {
            let data = pseudo_random(len, len as u64 ^ 0xabc);
            let want = reference(&data);
            assert_eq!(
                c.digest_bytes(&data).chunks,
                want,
                "digest_bytes, {len} bytes"
            );
            assert_eq!(
                c.digest_reader(&data[..]).unwrap().chunks,
                want,
                "digest_reader, {len}"
            );
            let mut streamed = Vec::new();
            c.for_each_chunk(&data[..], |b| {
                streamed.push(ChunkRef {
                    id: Hash::of(b),
                    len: b.len() as u32,
                });
                Ok(())
            })
            .unwrap();
            assert_eq!(streamed, want, "for_each_chunk, {len} bytes");
        }
    }

    #[test]
    fn invalid_params_fall_back_to_default() {
        let odd = ChunkerParams {
            min: 3,
            ..ChunkerParams::DEFAULT
        };
        assert!(!odd.is_valid());
        assert_eq!(Chunker::new(odd).params(), ChunkerParams::DEFAULT);
    }

    #[test]
    fn appending_to_a_log_changes_only_the_tail() {
        let c = Chunker::default();
        let log = pseudo_random(4 << 20, 11);
        let mut grown = log.clone();
        grown.extend_from_slice(&pseudo_random(1000, 12));
        let (a, b) = (c.digest_bytes(&log), c.digest_bytes(&grown));
        assert_eq!(b.size, a.size + 1000);
        assert!(new_ids(&a.chunks, &b.chunks) <= 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn chunks_concatenate_for_any_read_sizes(
            len in 0usize..(3 << 20),
            seed in any::<u64>(),
            sizes in proptest::collection::vec(1usize..200_000, 1..8),
        ) {
            let data = pseudo_random(len, seed);
            let c = Chunker::default();
            let mut out = Vec::with_capacity(len);
            let reader = ShortReads { data: &data, sizes: sizes.clone(), call: 0 };
            c.for_each_chunk(reader, |b| {
                out.extend_from_slice(b);
                Ok(())
            }).unwrap();
            prop_assert!(out == data);
            let reader = ShortReads { data: &data, sizes, call: 0 };
            let digest = c.digest_reader(reader).unwrap();
            prop_assert_eq!(digest.size, len as u64);
            let mut at = 0usize;
            for chunk in &digest.chunks {
                let end = at + chunk.len as usize;
                prop_assert_eq!(chunk.id, Hash::of(&data[at..end]));
                at = end;
            }
            prop_assert_eq!(at, len);
        }

        #[test]
        fn digest_content_hash_equals_content_hash_of_chunk_list(
            len in 0usize..(4 << 20),
            seed in any::<u64>(),
            read_size in 1usize..100_000,
        ) {
            let data = pseudo_random(len, seed);
            let c = Chunker::default();
            let reader = ShortReads { data: &data, sizes: vec![read_size], call: 0 };
            let digest = c.digest_reader(reader).unwrap();
            let listed = reference(&data);
            prop_assert_eq!(digest.content, chunktree::content_hash(&listed));
            prop_assert_eq!(digest.content, chunktree::content_hash(&c.chunk_reader(&data[..]).unwrap()));
            prop_assert_eq!(&c.digest_bytes(&data), &digest);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn small_insertion_changes_at_most_three_chunks(
            seed in any::<u64>(),
            at in 0.3f64..0.7,
            inserted in proptest::collection::vec(any::<u8>(), 1..=16),
        ) {
            let c = Chunker::default();
            let old = pseudo_random(4 << 20, seed);
            let pos = (old.len() as f64 * at) as usize;
            let mut new = old[..pos].to_vec();
            new.extend_from_slice(&inserted);
            new.extend_from_slice(&old[pos..]);
            let (a, b) = (c.digest_bytes(&old), c.digest_bytes(&new));
            prop_assert!(new_ids(&a.chunks, &b.chunks) <= 3, "{} new chunk ids", new_ids(&a.chunks, &b.chunks));
            prop_assert_ne!(a.content, b.content);
        }
    }
}
