//! Skill state on the wire (issue 14): [`WireState`], one key's version in a `State` message,
//! and its checks.
//!
//! A record is the key, its value or a tombstone, its version vector, its author (peer and agent
//! label) and its write time. Records travel only for keys that match the `state_sync` patterns
//! of both peers (`docs/PROTOCOL.md`, "State"). What this module does not own: which records are
//! sent (the session and the replica) and how they merge ([`botsync_engine::state_merge`]).

use botsync_engine::state::{self, StateRecord};
use botsync_engine::{Hash, PeerId, VersionVector};
use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::limits::{MAX_AGENT_LABEL, MAX_STATE_VALUE};

/// One key's version, as sent in `State`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireState {
    /// The key (`memory:rust`): 1 to 256 bytes, no whitespace, control or glob characters.
    pub key: String,
    /// The value; empty for a tombstone.
    pub value: Vec<u8>,
    /// True for a delete (a tombstone).
    pub deleted: bool,
    /// The key's version vector.
    pub version: VersionVector,
    /// The peer whose write this is.
    pub author: PeerId,
    /// The agent label of the write (may be empty).
    pub agent: String,
    /// When it was written, in nanoseconds since the Unix epoch (the author's clock).
    pub at_ns: i64,
}

impl WireState {
    /// The wire form of `key`'s stored `record`.
    pub fn new(key: String, record: StateRecord) -> WireState {
        WireState {
            key,
            value: record.value,
            deleted: record.deleted,
            version: VersionVector::from_pairs(record.version),
            author: record.peer,
            agent: record.agent,
            at_ns: record.at_ns,
        }
    }

    /// The key and its record, as the store keeps them.
    pub fn into_record(self) -> (String, StateRecord) {
        let record = StateRecord {
            value: self.value,
            peer: self.author,
            agent: self.agent,
            at_ns: self.at_ns,
            version: self.version.iter().map(|(p, c)| (*p, *c)).collect(),
            deleted: self.deleted,
        };
        (self.key, record)
    }

    /// The field rules serde cannot express (the vector is checked by the caller, as every
    /// vector on the wire is).
    pub(crate) fn validate(&self) -> Result<(), CodecError> {
        state::validate_key(&self.key).map_err(|e| CodecError::Malformed(e.to_string()))?;
        CodecError::check_limit("bytes of a state value", self.value.len(), MAX_STATE_VALUE)?;
        if self.deleted && !self.value.is_empty() {
            return Err(CodecError::Malformed(format!(
                "state {}: a tombstone carries a value",
                self.key
            )));
        }
        CodecError::check_limit(
            "bytes of a state agent label",
            self.agent.len(),
            MAX_AGENT_LABEL,
        )?;
        if self.version.is_empty() {
            return Err(CodecError::Malformed(format!(
                "state {}: an empty version vector",
                self.key
            )));
        }
        Ok(())
    }
}

/// The digest of a list of records, for `GetState`: BLAKE3 over the domain tag
/// `botsync/state-digest/v1` and a NUL, then each record's wire encoding, in the order given
/// (replicas list records in key order). Equal digests mean equal records: the state phase then
/// moves none.
pub fn digest(records: &[WireState]) -> Result<Hash, CodecError> {
    let mut h = blake3::Hasher::new();
    h.update(b"botsync/state-digest/v1\0");
    for r in records {
        crate::codec::hash_encoding(r, &mut h)?;
    }
    Ok(Hash(*h.finalize().as_bytes()))
}

/// Check a `GetState` pattern.
pub(crate) fn validate_pattern(pattern: &str) -> Result<(), CodecError> {
    state::validate_pattern(pattern).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn sample() -> WireState {
        WireState {
            key: "memory:x".into(),
            value: b"v".to_vec(),
            deleted: false,
            version: VersionVector::from_pairs([(PeerId([1; 32]), 2)]),
            author: PeerId([1; 32]),
            agent: "bot".into(),
            at_ns: 5,
        }
    }

    #[test]
    fn a_record_round_trips_through_the_store_form() {
        let (key, record) = sample().into_record();
        assert_eq!(WireState::new(key, record), sample());
    }

    #[test]
    fn the_digest_tells_record_lists_apart() {
        let one = digest(&[sample()]).unwrap();
        assert_eq!(one, digest(&[sample()]).unwrap());
        assert_ne!(one, digest(&[]).unwrap());
        let newer = WireState {
            at_ns: 6,
            ..sample()
        };
        assert_ne!(one, digest(&[newer]).unwrap());
    }

    #[test]
    fn bad_records_are_refused() {
        assert_eq!(sample().validate(), Ok(()));
        let bad_key = WireState {
            key: "a b".into(),
            ..sample()
        };
        assert!(bad_key.validate().is_err());
        let tomb_with_value = WireState {
            deleted: true,
            ..sample()
        };
        assert!(tomb_with_value.validate().is_err());
        let big = WireState {
            value: vec![0; MAX_STATE_VALUE + 1],
            ..sample()
        };
        assert!(matches!(
            big.validate(),
            Err(CodecError::LimitExceeded { .. })
        ));
        let unversioned = WireState {
            version: VersionVector::new(),
            ..sample()
        };
        assert!(unversioned.validate().is_err());
        assert!(validate_pattern("memory:[").is_err());
        assert!(validate_pattern("memory:*").is_ok());
    }
}
