//! [`ChunkData`]: one chunk's payload on the wire, optionally zstd-compressed, and its
//! verification on receipt.
//!
//! The sender compresses a chunk only when it pays (≥ 5 % smaller at zstd level 3): agent
//! workspaces are mostly text, which compresses 3-5×, but already-compressed files would only
//! cost CPU. The receiver never trusts the payload: decompression is capped at
//! [`MAX_CHUNK_LEN`] (a zstd bomb fails instead of allocating) and the result must hash to the
//! chunk id, else [`CodecError::BadChunk`].
//!
//! With the `delta` feature a chunk can also travel as a zstd frame compressed against a *base*:
//! a chunk the receiver holds (in its current version of the same path) and named in its
//! request ([`ChunkWant`]), used as a raw-content prefix dictionary on both sides
//! ([`Compression::ZstdDelta`]). An edited note of 1-30 KB is one chunk; against the version the
//! receiver has, it travels as a few hundred bytes instead of whole.

use std::sync::Mutex;

use botsync_engine::Hash;
use serde::{Deserialize, Serialize};
use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe::{CCtx, CParameter, DCtx};

use crate::codec::CodecError;
use crate::limits::MAX_CHUNK_LEN;

/// zstd level used for chunk payloads: fast, most of the gain on text.
pub const ZSTD_LEVEL: i32 = 3;

/// How a chunk payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    /// The raw chunk bytes.
    None,
    /// A single zstd frame that decompresses to the chunk bytes.
    Zstd,
    /// A single zstd frame that decompresses to the chunk bytes given the base chunk the request
    /// named for this id ([`ChunkWant::base`]) as a raw-content prefix (`ZSTD_refPrefix`). Only
    /// in answer to a `GetChunksAgainst` that named a base for this id (feature `delta`).
    ZstdDelta,
}

/// One chunk asked for in a `GetChunksAgainst`: its id and, optionally, a chunk the asker holds
/// that the answer may be compressed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkWant {
    /// The chunk wanted.
    pub id: Hash,
    /// A chunk the asker holds (of its current version of the same path), or `None`.
    pub base: Option<Hash>,
}

/// One chunk's payload, answering one id of a `GetChunks`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkData {
    /// The chunk id: BLAKE3 of the raw (decompressed) bytes.
    pub id: Hash,
    /// How `data` is encoded.
    pub compression: Compression,
    /// The payload (≤ [`MAX_CHUNK_LEN`] bytes).
    #[serde(with = "crate::codec::raw_bytes")]
    pub data: Vec<u8>,
}

impl ChunkData {
    /// Prepare `raw` (the bytes of chunk `id`) for sending: zstd level 3 if `allow_zstd` (the
    /// negotiated `ZSTD` feature) and it saves at least 5 %, else raw.
    pub fn compress(id: Hash, raw: Vec<u8>, allow_zstd: bool) -> ChunkData {
        if allow_zstd
            && let Some(packed) = zstd_compress(&raw)
            && packed.len() * 100 <= raw.len() * 95
        {
            return ChunkData {
                id,
                compression: Compression::Zstd,
                data: packed,
            };
        }
        ChunkData {
            id,
            compression: Compression::None,
            data: raw,
        }
    }

    /// Prepare `raw` (the bytes of chunk `id`) for sending to a peer that holds `base`: zstd
    /// against `base` if that is smaller than what [`ChunkData::compress`] gives (with zstd),
    /// else that.
    pub fn compress_against(id: Hash, raw: Vec<u8>, base: &[u8]) -> ChunkData {
        let delta = delta_compress(&raw, base);
        let plain = ChunkData::compress(id, raw, true);
        match delta {
            Some(data) if data.len() < plain.data.len() => ChunkData {
                id,
                compression: Compression::ZstdDelta,
                data,
            },
            _ => plain,
        }
    }

    /// The chunk's raw bytes, decompressed (capped at [`MAX_CHUNK_LEN`]) and verified against
    /// `id`. A [`Compression::ZstdDelta`] payload is refused: it needs its base
    /// ([`ChunkData::into_verified_bytes_against`]).
    pub fn into_verified_bytes(self) -> Result<Vec<u8>, CodecError> {
        self.into_verified_bytes_against(None)
    }

    /// [`ChunkData::into_verified_bytes`], with the bytes of the base the request named for this
    /// id (if any) to decode a [`Compression::ZstdDelta`] payload.
    pub fn into_verified_bytes_against(self, base: Option<&[u8]>) -> Result<Vec<u8>, CodecError> {
        let id = self.id;
        let raw = match self.compression {
            Compression::None => self.data,
            Compression::Zstd => zstd_decompress(&self.data).ok_or(CodecError::BadChunk {
                id,
                reason: "zstd payload is corrupt or exceeds the chunk size limit",
            })?,
            Compression::ZstdDelta => {
                let base = base.ok_or(CodecError::BadChunk {
                    id,
                    reason: "delta payload for a chunk asked for without a base",
                })?;
                delta_decompress(&self.data, base).ok_or(CodecError::BadChunk {
                    id,
                    reason: "delta payload is corrupt or exceeds the chunk size limit",
                })?
            }
        };
        if raw.len() > MAX_CHUNK_LEN {
            return Err(CodecError::BadChunk {
                id,
                reason: "payload exceeds the chunk size limit",
            });
        }
        if Hash::of(&raw) != id {
            return Err(CodecError::BadChunk {
                id,
                reason: "content does not match its BLAKE3 id",
            });
        }
        Ok(raw)
    }
}

/// zstd contexts kept for reuse: making them per chunk (as `zstd::bulk::compress` and
/// `decompress` do) cost the receiver of an agent workspace's initial sync an allocation of a
/// few hundred KiB per chunk, mapped and unmapped each time, about a tenth of its CPU. At most
/// [`KEPT_CONTEXTS`] of each kind are kept (a context per blocking thread would hold a few MiB
/// for each of the many threads a sync uses); a busier moment makes more and drops them after.
static COMPRESSORS: Mutex<Vec<Compressor<'static>>> = Mutex::new(Vec::new());
static DECOMPRESSORS: Mutex<Vec<Decompressor<'static>>> = Mutex::new(Vec::new());

/// How many contexts of each kind [`COMPRESSORS`] and [`DECOMPRESSORS`] keep.
const KEPT_CONTEXTS: usize = 4;

/// Run `f` with a context from `pool` (or a new one from `make`), then keep the context for
/// the next call unless the pool is full.
fn with_context<C, T>(
    pool: &Mutex<Vec<C>>,
    make: impl FnOnce() -> Option<C>,
    f: impl FnOnce(&mut C) -> Option<T>,
) -> Option<T> {
    let kept = pool.lock().ok().and_then(|mut p| p.pop());
    let mut context = match kept {
        Some(c) => c,
        None => make()?,
    };
    let result = f(&mut context);
    if let Ok(mut p) = pool.lock()
        && p.len() < KEPT_CONTEXTS
    {
        p.push(context);
    }
    result
}

/// `raw` as one zstd frame of level [`ZSTD_LEVEL`] (with its content size in the header).
fn zstd_compress(raw: &[u8]) -> Option<Vec<u8>> {
    with_context(
        &COMPRESSORS,
        || Compressor::new(ZSTD_LEVEL).ok(),
        |c| c.compress(raw).ok(),
    )
}

/// Decode one zstd frame; never writes more than [`MAX_CHUNK_LEN`] bytes (a larger frame is an
/// error, not an allocation). The output is sized by the content size the frame declares when
/// that is within the cap: a frame that lies about it fails to decode.
fn zstd_decompress(data: &[u8]) -> Option<Vec<u8>> {
    let capacity = output_capacity(data)?;
    with_context(
        &DECOMPRESSORS,
        || Decompressor::new().ok(),
        |d| {
            let mut out = Vec::with_capacity(capacity);
            d.decompress_to_buffer(data, &mut out).ok()?;
            Some(out)
        },
    )
}

/// The output buffer for decoding the frame `data`: its declared content size when that is
/// within [`MAX_CHUNK_LEN`], else the cap. `None` if the header does not parse.
fn output_capacity(data: &[u8]) -> Option<usize> {
    let declared = zstd::zstd_safe::get_frame_content_size(data).ok()?;
    Some(
        declared
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= MAX_CHUNK_LEN)
            .unwrap_or(MAX_CHUNK_LEN),
    )
}

/// `raw` as one zstd frame (level [`ZSTD_LEVEL`]) with `base` as its raw-content prefix.
fn delta_compress(raw: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    let mut cctx = CCtx::try_create()?;
    cctx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
        .ok()?;
    cctx.ref_prefix(base).ok()?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    cctx.compress2(&mut out, raw).ok()?;
    Some(out)
}

/// Decode a [`delta_compress`] frame; never writes more than [`MAX_CHUNK_LEN`] bytes (a larger
/// frame is an error, not an allocation).
fn delta_decompress(data: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    let mut dctx = DCtx::try_create()?;
    dctx.ref_prefix(base).ok()?;
    let mut out = Vec::with_capacity(output_capacity(data)?);
    dctx.decompress(&mut out, data).ok()?;
    Some(out)
}

impl std::fmt::Debug for ChunkData {
    /// Prints the size, not the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkData")
            .field("id", &self.id)
            .field("compression", &self.compression)
            .field("len", &self.data.len())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        b"- 2026-11-21 agent noted: the user prefers short answers\n"
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()
    }

    fn noise(n: usize) -> Vec<u8> {
        // A BLAKE3 XOF stream: incompressible and deterministic.
        let mut out = vec![0u8; n];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn text_is_compressed_and_round_trips() {
        let raw = text(64 * 1024);
        let id = Hash::of(&raw);
        let c = ChunkData::compress(id, raw.clone(), true);
        assert_eq!(c.compression, Compression::Zstd);
        assert!(c.data.len() < raw.len() / 10);
        assert_eq!(c.into_verified_bytes().unwrap(), raw);
    }

    #[test]
    fn incompressible_data_goes_raw() {
        let raw = noise(64 * 1024);
        let c = ChunkData::compress(Hash::of(&raw), raw.clone(), true);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.data, raw);
    }

    #[test]
    fn zstd_is_not_used_unless_negotiated() {
        let raw = text(4096);
        let c = ChunkData::compress(Hash::of(&raw), raw, false);
        assert_eq!(c.compression, Compression::None);
    }

    #[test]
    fn wrong_content_is_a_bad_chunk() {
        let raw = text(1000);
        let c = ChunkData {
            id: Hash::of(b"something else"),
            compression: Compression::None,
            data: raw,
        };
        assert!(matches!(
            c.into_verified_bytes(),
            Err(CodecError::BadChunk { .. })
        ));
    }

    #[test]
    fn a_frame_that_understates_its_size_is_a_bad_chunk_and_one_without_a_size_decodes() {
        let raw = text(100);
        let id = Hash::of(&raw);
        let mut lying = zstd_compress(&raw).unwrap();
        // Frame header: magic (4 bytes), descriptor, then (single segment, under 256 bytes)
        // the content size in one byte.
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&lying).ok(),
            Some(Some(100))
        );
        lying[5] = 50;
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&lying).ok(),
            Some(Some(50))
        );
        let c = ChunkData {
            id,
            compression: Compression::Zstd,
            data: lying,
        };
        let err = c.into_verified_bytes().unwrap_err();
        assert!(matches!(err, CodecError::BadChunk { .. }), "{err}");
        // A streamed frame declares no size: decoded into the cap, as before.
        let mut unsized_frame = Vec::new();
        let mut encoder = zstd::stream::Encoder::new(&mut unsized_frame, ZSTD_LEVEL).unwrap();
        std::io::Write::write_all(&mut encoder, &raw).unwrap();
        encoder.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame).ok(),
            Some(None)
        );
        let c = ChunkData {
            id,
            compression: Compression::Zstd,
            data: unsized_frame,
        };
        assert_eq!(c.into_verified_bytes().unwrap(), raw);
    }

    #[test]
    fn at_most_a_few_contexts_are_kept_however_many_threads_compress() {
        std::thread::scope(|s| {
            for i in 0..16 {
                s.spawn(move || {
                    for _ in 0..20 {
                        let packed = zstd_compress(&text(4096 + i)).unwrap();
                        assert_eq!(zstd_decompress(&packed).unwrap(), text(4096 + i));
                    }
                });
            }
        });
        assert!(COMPRESSORS.lock().unwrap().len() <= KEPT_CONTEXTS);
        assert!(DECOMPRESSORS.lock().unwrap().len() <= KEPT_CONTEXTS);
    }

    #[test]
    fn zstd_bomb_is_refused_without_inflating() {
        let huge = vec![0u8; MAX_CHUNK_LEN + 1];
        let packed = zstd::bulk::compress(&huge, ZSTD_LEVEL).unwrap();
        assert!(packed.len() < 1024);
        let c = ChunkData {
            id: Hash::of(&huge),
            compression: Compression::Zstd,
            data: packed,
        };
        let err = c.into_verified_bytes().unwrap_err();
        assert!(matches!(err, CodecError::BadChunk { .. }), "{err}");
    }

    /// A note, and the same note with one line replaced and a line appended.
    fn edited_note() -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..400)
            .flat_map(|i| format!("- line {i}: the agent noted {}\n", i * 7919 % 1013).into_bytes())
            .collect();
        let mut new = old.clone();
        new.splice(
            9000..9040,
            b"- a sentence written in this edit".iter().copied(),
        );
        new.extend_from_slice(b"- [ ] follow up tomorrow\n");
        (old, new)
    }

    #[test]
    fn an_edited_chunk_travels_as_a_small_delta_against_its_base() {
        let (old, new) = edited_note();
        let id = Hash::of(&new);
        let plain = ChunkData::compress(id, new.clone(), true);
        let c = ChunkData::compress_against(id, new.clone(), &old);
        assert_eq!(c.compression, Compression::ZstdDelta);
        assert!(
            c.data.len() * 10 < plain.data.len(),
            "{} vs {}",
            c.data.len(),
            plain.data.len()
        );
        assert_eq!(c.into_verified_bytes_against(Some(&old)).unwrap(), new);
    }

    #[test]
    fn an_unrelated_base_falls_back_to_plain_zstd() {
        let raw = text(20_000);
        let c = ChunkData::compress_against(Hash::of(&raw), raw.clone(), &noise(20_000));
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.into_verified_bytes_against(None).unwrap(), raw);
    }

    #[test]
    fn a_delta_without_its_base_or_with_another_is_a_bad_chunk() {
        let (old, new) = edited_note();
        let c = ChunkData::compress_against(Hash::of(&new), new, &old);
        assert_eq!(c.compression, Compression::ZstdDelta);
        for base in [None, Some(&noise(old.len())[..])] {
            let err = c.clone().into_verified_bytes_against(base).unwrap_err();
            assert!(matches!(err, CodecError::BadChunk { .. }), "{err}");
        }
    }

    #[test]
    fn a_delta_bomb_is_refused_without_inflating() {
        let base = vec![7u8; 1024];
        let huge = vec![7u8; MAX_CHUNK_LEN + 1];
        let packed = delta_compress(&huge, &base).unwrap();
        assert!(packed.len() < 1024);
        let c = ChunkData {
            id: Hash::of(&huge),
            compression: Compression::ZstdDelta,
            data: packed,
        };
        let err = c.into_verified_bytes_against(Some(&base)).unwrap_err();
        assert!(matches!(err, CodecError::BadChunk { .. }), "{err}");
    }

    #[test]
    fn corrupt_zstd_is_a_bad_chunk() {
        let c = ChunkData {
            id: Hash::ZERO,
            compression: Compression::Zstd,
            data: vec![1, 2, 3],
        };
        assert!(matches!(
            c.into_verified_bytes(),
            Err(CodecError::BadChunk { .. })
        ));
    }
}
