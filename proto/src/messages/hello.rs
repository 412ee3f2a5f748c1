//! [`Hello`]: the first message each side sends, and version/feature negotiation.
//!
//! Both peers send a `Hello` on the control stream without waiting for the other. Each then
//! computes the same [`Negotiated`] result from the pair: the highest protocol version in both
//! ranges and the intersection of the feature bits. No common version ends the session with the
//! `version-mismatch` close code. What this module does not own: the ALPN string and the TLS
//! handshake that precede `Hello` (transport section of `docs/PROTOCOL.md`).

use std::fmt;

use botsync_engine::AgentLabel;
use serde::{Deserialize, Serialize};

/// The protocol version this implementation speaks. 2: `FileEntry.mode` carries the nine
/// permission bits (version 1 carried only the executable bit; it is no longer spoken).
pub const PROTOCOL_VERSION: u16 = 3;

/// A set of optional protocol features, as bits. Unknown bits are accepted and ignored: a newer
/// peer may advertise features this version does not know; negotiation drops them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Features(u64);

impl Features {
    /// No optional feature.
    pub const NONE: Features = Features(0);
    /// Chunk payloads may be zstd-compressed (`Compression::Zstd`).
    pub const ZSTD: Features = Features(1);
    /// Large files' chunk lists may be elided and fetched as chunk-tree nodes.
    pub const CHUNK_TREE: Features = Features(2);
    /// Skill state travels in `GetState` / `State` (bit 4; bits 2 and 3 are unused, 5 and 6
    /// are taken by mesh configuration).
    pub const STATE: Features = Features(1 << 4);

    /// Bit 5: designated mesh config files travel stripped (`GetMeshConfig` / `MeshConfig`).
    pub const MESH_CONFIG: Features = Features(1 << 5);
    /// Bit 6: the peer answers parity checks (`GetParity` / `Parity`).
    pub const PARITY: Features = Features(1 << 6);
    /// Bit 7: chunks may be asked for against a base the asker holds (`GetChunksAgainst`) and
    /// answered as zstd deltas against it (`Compression::ZstdDelta`). Needs `ZSTD` too.
    pub const DELTA: Features = Features(1 << 7);
    /// Bit 8: large directories may be compared by buckets of their children (`GetBuckets` /
    /// `Buckets`).
    pub const BUCKETS: Features = Features(1 << 8);
    /// Bit 9: a directory whose listing does not fit one `Nodes` or `Buckets` reply (more than
    /// 65,536 children, or more bytes than a frame) is sent in parts (`NodesPart`).
    pub const LONG_LISTS: Features = Features(1 << 9);
    /// Bit 10: a side busy with local work while the peer waits says so every
    /// [`crate::budget::Deadlines::keep_alive`] (`Working`), so a long apply is not taken for a
    /// dead peer.
    pub const STILL_WORKING: Features = Features(1 << 10);
    /// Bit 11: the initiator may `Offer` paths it did not ask entries for. When the responder's
    /// root is one its own tree had lately, the paths changed here since are the differing
    /// paths, found without the descent (and offered without the responder's entries in a
    /// push).
    pub const DIRECT_OFFER: Features = Features(1 << 11);

    /// Every feature this implementation supports.
    pub const SUPPORTED: Features = Features(
        Self::ZSTD.0
            | Self::CHUNK_TREE.0
            | Self::STATE.0
            | Self::MESH_CONFIG.0
            | Self::PARITY.0
            | Self::DELTA.0
            | Self::BUCKETS.0
            | Self::LONG_LISTS.0
            | Self::STILL_WORKING.0
            | Self::DIRECT_OFFER.0,
    );

    /// From raw bits (any bits allowed).
    pub const fn from_bits(bits: u64) -> Features {
        Features(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Features both sets have.
    pub const fn intersection(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// Features in either set.
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.contains(Features::ZSTD) {
            names.push("zstd".to_owned());
        }
        if self.contains(Features::CHUNK_TREE) {
            names.push("chunk-tree".to_owned());
        }
        if self.contains(Features::STATE) {
            names.push("state".to_owned());
        }
        if self.contains(Features::MESH_CONFIG) {
            names.push("mesh-config".to_owned());
        }
        if self.contains(Features::PARITY) {
            names.push("parity".to_owned());
        }
        if self.contains(Features::DELTA) {
            names.push("delta".to_owned());
        }
        if self.contains(Features::BUCKETS) {
            names.push("buckets".to_owned());
        }
        if self.contains(Features::LONG_LISTS) {
            names.push("long-lists".to_owned());
        }
        if self.contains(Features::STILL_WORKING) {
            names.push("still-working".to_owned());
        }
        if self.contains(Features::DIRECT_OFFER) {
            names.push("direct-offer".to_owned());
        }
        let unknown = self.0 & !Features::SUPPORTED.0;
        if unknown != 0 {
            names.push(format!("unknown {unknown:#x}"));
        }
        write!(f, "Features[{}]", names.join(", "))
    }
}

/// What the initiator of a session wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionMode {
    /// Changes flow both ways.
    Sync,
    /// Only the initiator's changes flow to the responder.
    Push,
    /// Only the responder's changes flow to the initiator.
    Pull,
    /// Compare and plan both ways, transfer no content (`--dry-run`, `diff`).
    DryRun,
}

/// The handshake message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Oldest protocol version the sender speaks.
    pub protocol_min: u16,
    /// Newest protocol version the sender speaks (≥ `protocol_min`).
    pub protocol_max: u16,
    /// Optional features the sender supports.
    pub features: Features,
    /// The sender's display name (≤ [`crate::limits::MAX_PEER_NAME`] bytes, no control
    /// characters); informational, identity comes from the TLS certificate.
    pub peer_name: String,
    /// The agent driving the sender, if any (empty label otherwise).
    pub agent: AgentLabel,
}

/// The outcome of a successful negotiation; both sides compute the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version of the session: the highest both support.
    pub version: u16,
    /// The features both support.
    pub features: Features,
}

/// The two version ranges do not overlap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no common protocol version: we speak {ours_min}..={ours_max}, the peer speaks \
     {theirs_min}..={theirs_max}; upgrade botsync on the older machine"
)]
pub struct VersionMismatch {
    /// Our oldest version.
    pub ours_min: u16,
    /// Our newest version.
    pub ours_max: u16,
    /// The peer's oldest version.
    pub theirs_min: u16,
    /// The peer's newest version.
    pub theirs_max: u16,
}

impl Hello {
    /// This implementation's `Hello`: version [`PROTOCOL_VERSION`] only, all supported features.
    pub fn current(peer_name: &str, agent: AgentLabel) -> Hello {
        Hello {
            protocol_min: PROTOCOL_VERSION,
            protocol_max: PROTOCOL_VERSION,
            features: Features::SUPPORTED,
            peer_name: sanitize_name(peer_name),
            agent,
        }
    }

    /// Negotiate with the peer's `Hello`: the highest version in both ranges and the common
    /// features. Symmetric: `a.negotiate(&b) == b.negotiate(&a)`.
    pub fn negotiate(&self, theirs: &Hello) -> Result<Negotiated, VersionMismatch> {
        let low = self.protocol_min.max(theirs.protocol_min);
        let high = self.protocol_max.min(theirs.protocol_max);
        // An inverted range (min > max) on either side makes low > high as well.
        if low > high {
            return Err(VersionMismatch {
                ours_min: self.protocol_min,
                ours_max: self.protocol_max,
                theirs_min: theirs.protocol_min,
                theirs_max: theirs.protocol_max,
            });
        }
        Ok(Negotiated {
            version: high,
            features: self.features.intersection(theirs.features),
        })
    }
}

/// A peer name as `Hello` requires: control characters dropped, cut to the limit on a char
/// boundary.
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name.trim().chars().filter(|c| !c.is_control()).collect();
    while s.len() > crate::limits::MAX_PEER_NAME {
        s.pop();
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello(min: u16, max: u16, features: u64) -> Hello {
        Hello {
            protocol_min: min,
            protocol_max: max,
            features: Features::from_bits(features),
            peer_name: "peer".into(),
            agent: AgentLabel::default(),
        }
    }

    #[test]
    fn picks_highest_common_version_and_common_features() {
        let a = hello(1, 3, 0b111);
        let b = hello(2, 5, 0b101);
        let n = a.negotiate(&b).unwrap();
        assert_eq!(n.version, 3);
        assert_eq!(n.features.bits(), 0b101);
    }

    #[test]
    fn disjoint_ranges_are_a_mismatch() {
        let err = hello(1, 1, 0).negotiate(&hello(2, 3, 0)).unwrap_err();
        assert_eq!(err.theirs_min, 2);
        assert!(err.to_string().contains("upgrade botsync"));
    }

    #[test]
    fn unknown_feature_bits_never_survive_negotiation() {
        let ours = Hello::current("a", AgentLabel::default());
        let theirs = hello(PROTOCOL_VERSION, PROTOCOL_VERSION, u64::MAX);
        let n = ours.negotiate(&theirs).unwrap();
        assert_eq!(n.features, Features::SUPPORTED);
        assert!(format!("{:?}", theirs.features).contains("unknown"));
    }

    /// Version 1 carried only the executable bit of a file's mode: a version-1 peer would
    /// misread our entries, so it gets a clean mismatch instead.
    #[test]
    fn a_version_1_peer_is_told_to_upgrade() {
        let err = Hello::current("a", AgentLabel::default())
            .negotiate(&hello(1, 1, 0))
            .unwrap_err();
        assert!(err.to_string().contains("upgrade botsync"), "{err}");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name(" mac\u{7}mini \n"), "macmini");
        assert_eq!(sanitize_name(&"é".repeat(40)).len(), 64);
    }

    proptest! {
        #[test]
        fn negotiation_is_symmetric(a in (0u16..6, 0u16..6, any::<u64>()), b in (0u16..6, 0u16..6, any::<u64>())) {
            let (x, y) = (hello(a.0, a.1, a.2), hello(b.0, b.1, b.2));
            prop_assert_eq!(x.negotiate(&y).ok(), y.negotiate(&x).ok());
        }
    }
}
