//! The index's value encoding and key layouts.
//!
//! Values are postcard: compact (a hash is its 32 raw bytes, integers are varints) and fast to
//! decode, which matters because a process decodes the whole local index once when it opens a
//! workspace (CBOR spent ~24 µs per entry writing each hash byte as a number). postcard is not
//! self-describing: any change to a stored type bumps `SCHEMA_VERSION`, and an old index is
//! rebuilt from a rescan. bincode is reserved for the wire. Keys are
//! built from fixed-width ids and `/`-separated paths joined by a NUL byte, which a [`RelPath`]
//! can never contain, so prefixes never run into each other.
//!
//! This module does not touch sled; it only turns values and keys into bytes and back.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::hash::Hash;
use crate::path::RelPath;

/// Separator between variable-length key parts.
pub(super) const SEP: u8 = 0;

/// Encode a value for storage.
pub(super) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Decode a stored value; the error is a message for a corruption report.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable value: {e}"))
}

/// Decode a value that must use every byte (telling records of an older schema, which postcard
/// may otherwise read as a prefix of the current one, from the current ones).
pub(super) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} bytes left over", rest.len())),
        Err(e) => Err(format!("undecodable value: {e}")),
    }
}

/// Key of a chunk location: chunk id, path, NUL, offset (big-endian, so a file's locations sort
/// by offset).
pub(super) fn chunk_key(id: &Hash, path: &RelPath, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(Hash::LEN + path.as_str().len() + 9);
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(SEP);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// Split a chunk-location key into path and offset (the id is the scanned prefix).
pub(super) fn parse_chunk_key(key: &[u8]) -> Result<(RelPath, u64), String> {
    let rest = key.get(Hash::LEN..).ok_or("chunk key too short")?;
    if rest.len() < 9 || rest[rest.len() - 9] != SEP {
        return Err("chunk key has no offset".into());
    }
    let (path, tail) = rest.split_at(rest.len() - 9);
    let offset = u64::from_be_bytes(tail[1..].try_into().map_err(|_| "chunk key offset")?);
    Ok((parse_path(path)?, offset))
}

/// Key of a peer's entry: peer id, then path.
pub(super) fn peer_key(peer: &[u8; 32], path: &RelPath) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + path.as_str().len());
    k.extend_from_slice(peer);
    k.extend_from_slice(path.as_str().as_bytes());
    k
}

/// Key of a per-path history index row: path, NUL, sequence number.
pub(super) fn history_path_key(path: &RelPath, seq: u64) -> Vec<u8> {
    let mut k = history_path_prefix(path);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of every history index row of `path`.
pub(super) fn history_path_prefix(path: &RelPath) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.as_str().len() + 9);
    k.extend_from_slice(path.as_str().as_bytes());
    k.push(SEP);
    k
}

/// Parse stored path bytes back into a validated [`RelPath`].
pub(super) fn parse_path(bytes: &[u8]) -> Result<RelPath, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| "path is not UTF-8".to_owned())?;
    RelPath::new(s).map_err(|e| e.to_string())
}

/// A key in printable form for corruption reports: UTF-8 if it is, hex otherwise.
pub(super) fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => data_encoding::HEXLOWER.encode(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryKind, FileEntry, LocalEntry, Mode, StatSig};
    use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
    use crate::vector::VersionVector;
    use crate::{ChunkRef, ChunkerParams};
    use proptest::prelude::*;

    fn sample(path: &str, counters: Vec<(u8, u64)>, permissions: u16) -> LocalEntry {
        let chunks = vec![ChunkRef {
            id: Hash::of(path.as_bytes()),
            len: 9,
        }];
        LocalEntry {
            entry: FileEntry {
                path: RelPath::new(path).unwrap(),
                kind: EntryKind::File,
                size: 9,
                mtime_ns: -5,
                mode: Mode { permissions },
                content: crate::chunktree::content_hash(&chunks),
                chunks,
                chunker: ChunkerParams::DEFAULT,
                version: VersionVector::from_pairs(
                    counters.into_iter().map(|(p, c)| (PeerId([p; 32]), c)),
                ),
                parent: Some(Hash::of(b"parent")),
                changed_by: Attribution {
                    peer: PeerId([1; 32]),
                    agent: AgentLabel::new("a"),
                    machine: MachineName::default(),
                },
            },
            stat: Some(StatSig {
                size: 9,
                mtime_ns: 1,
                ctime_ns: 2,
                ino: 3,
                dev: 4,
            }),
            recorded_at_ns: 10,
        }
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(
            path in "[a-z]{1,8}(/[a-z0-9]{1,6}\\.md){0,3}",
            counters in proptest::collection::vec((any::<u8>(), 1u64..), 0..4),
            permissions in 0u16..=0o777,
        ) {
            let e = sample(&path, counters, permissions);
            let bytes = encode("local entry", &e).unwrap();
            prop_assert_eq!(decode::<LocalEntry>(&bytes).unwrap(), e);
        }

        #[test]
        fn chunk_keys_round_trip(path in "[a-z]{1,8}(/[a-z0-9]{1,6}\\.md){0,3}", offset in any::<u64>()) {
            let p = RelPath::new(&path).unwrap();
            let k = chunk_key(&Hash::of(b"x"), &p, offset);
            prop_assert_eq!(parse_chunk_key(&k).unwrap(), (p, offset));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode::<LocalEntry>(&bytes);
        }
    }

    #[test]
    fn truncated_value_is_an_error() {
        let bytes = encode("local entry", &sample("a.md", vec![(1, 2)], 0o644)).unwrap();
        assert!(decode::<LocalEntry>(&bytes[..bytes.len() / 2]).is_err());
        assert!(parse_chunk_key(&[0; 10]).is_err());
    }

    #[test]
    fn printable_keys() {
        assert_eq!(printable_key(b"memory/a.md"), "memory/a.md");
        assert_eq!(printable_key(&[0, 255]), "00ff");
    }
}
