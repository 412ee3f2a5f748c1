//! [`struct@Hash`]: the BLAKE3 digest that names chunks, files and Merkle nodes.
//!
//! Every hash in botsync is a 32-byte BLAKE3 digest. Different things that are hashed (a chunk's
//! bytes, a chunk-tree node, a directory node) are kept apart by domain-separation prefixes, so a
//! chunk can never be confused with a directory whose encoding happens to match its bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Length of a hash in bytes.
    pub const LEN: usize = 32;

    /// The all-zero hash, never produced by BLAKE3 in practice; used as "no content".
    pub const ZERO: Hash = Hash([0; 32]);

    /// Hash raw bytes (a chunk's content).
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Hash `parts` under a domain tag so that differently-typed inputs never collide.
    pub fn tagged(tag: Domain, parts: &[&[u8]]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(tag.as_bytes());
        for p in parts {
            h.update(p);
        }
        Hash(*h.finalize().as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex form.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The first 12 hex digits, for logs and human output.
    pub fn short(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0[..6])
    }
}

/// Domain separation tags for [`Hash::tagged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A node of a file's chunk-list tree (and so a file's content hash).
    ChunkTree,
    /// A file leaf in the workspace Merkle tree.
    FileNode,
    /// A directory node in the workspace Merkle tree.
    DirNode,
    /// One bucket of a large directory's children, compared without listing them
    /// (`botsync-proto`, feature `BUCKETS`).
    DirBucket,
}

impl Domain {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Domain::ChunkTree => b"botsync/chunk-tree/v1\0",
            Domain::FileNode => b"botsync/file-node/v1\0",
            Domain::DirNode => b"botsync/dir-node/v1\0",
            Domain::DirBucket => b"botsync/dir-bucket/v1\0",
        }
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// Error parsing a hex hash.
#[derive(Debug, thiserror::Error)]
#[error("invalid hash {input:?}: expected 64 hex digits")]
pub struct ParseHashError {
    input: String,
}

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHashError {
            input: s.to_owned(),
        };
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| err())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| err())?;
        Ok(Hash(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"hello");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert_eq!(h.short().len(), 12);
        assert!("xyz".parse::<Hash>().is_err());
    }

    #[test]
    fn domains_separate() {
        let a = Hash::tagged(Domain::FileNode, &[b"x"]);
        let b = Hash::tagged(Domain::DirNode, &[b"x"]);
        assert_ne!(a, b);
        assert_ne!(a, Hash::of(b"x"));
    }
}
