//! [`ChunkData`]: one chunk's payload on the wire, optionally zstd-compressed, and its
//! verification on receipt.
//!
//! The sender compresses a chunk only when it pays (≥ 5 % smaller at zstd level 3): agent
//! workspaces are mostly text, which compresses 3-5×, but already-compressed files would only
//! cost CPU. The receiver never trusts the payload: decompression is capped at
//! [`MAX_CHUNK_LEN`] (a zstd bomb fails instead of allocating) and the result must hash to the
//! chunk id, else [`CodecError::BadChunk`].

use botsync_engine::Hash;
use serde::{Deserialize, Serialize};

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
            && let Ok(packed) = zstd::bulk::compress(&raw, ZSTD_LEVEL)
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

    /// The chunk's raw bytes, decompressed (capped at [`MAX_CHUNK_LEN`]) and verified against
    /// `id`.
    pub fn into_verified_bytes(self) -> Result<Vec<u8>, CodecError> {
        let id = self.id;
        let raw = match self.compression {
            Compression::None => self.data,
            Compression::Zstd => {
                zstd::bulk::decompress(&self.data, MAX_CHUNK_LEN).map_err(|_| {
                    CodecError::BadChunk {
                        id,
                        reason: "zstd payload is corrupt or exceeds the chunk size limit",
                    }
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
