//! Content-defined chunking: FastCDC (v2020) boundaries, BLAKE3 chunk ids.
//!
//! A file is cut into chunks whose boundaries depend on the content, so an insertion moves only
//! the chunks around it. Chunking streams through a fixed-size buffer: memory stays bounded
//! whatever the file size. The parameters are recorded in every manifest ([`ChunkerParams`]) so
//! that a change of parameters is detected instead of silently mixing incompatible chunk lists.
//! `docs/STORAGE.md` explains the chosen sizes.

use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

use crate::hash::Hash;

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

    /// Chunk `reader` and return the chunk list.
    pub fn chunk_reader<R: Read>(&self, reader: R) -> io::Result<Vec<ChunkRef>> {
        let mut chunks = Vec::new();
        self.for_each_chunk(reader, |bytes| {
            chunks.push(ChunkRef {
                id: Hash::of(bytes),
                len: bytes.len() as u32,
            });
            Ok(())
        })?;
        Ok(chunks)
    }

    /// Length of the first chunk of `data` (all of it if it is shorter than `min`).
    fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (_, n) = v2020::cut(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        if n == 0 { data.len() } else { n }
    }
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new(ChunkerParams::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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
    }
}
