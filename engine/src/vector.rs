//! [`VersionVector`]: causality between versions of a file.
//!
//! Each peer counts its own changes to a path. A version vector maps peers to those counters;
//! comparing two vectors tells whether one version descends from the other or whether they were
//! made concurrently (a true conflict). Merge takes the element-wise maximum.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::peer::PeerId;

/// The largest counter a version vector may hold (2^48): far beyond any real number of changes
/// to one path, far below `u64::MAX`, so counting one more change never overflows. The wire
/// refuses larger counters (`docs/PROTOCOL.md`, "Version vectors").
pub const MAX_VERSION_COUNTER: u64 = 1 << 48;

/// A change that could not be counted: `peer`'s counter already holds the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the version counter of peer {peer} reached its maximum ({counter}); this path (or state key) cannot record another change"
)]
pub struct CounterExhausted {
    /// The peer whose change was not counted.
    pub peer: PeerId,
    /// Its counter, unchanged.
    pub counter: u64,
}

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Same history.
    Equal,
    /// `self` has seen everything `other` has, and more.
    Dominates,
    /// `other` has seen everything `self` has, and more.
    DominatedBy,
    /// Neither has seen all of the other: concurrent changes.
    Concurrent,
}

impl Causality {
    /// The relation seen from the other side.
    pub fn reverse(self) -> Causality {
        match self {
            Causality::Dominates => Causality::DominatedBy,
            Causality::DominatedBy => Causality::Dominates,
            c => c,
        }
    }
}

/// A map from peer to that peer's change counter. Vectors built here never hold a zero counter,
/// so equal histories are equal values with equal encodings (a decoded one may, and the wire's
/// validation refuses it).
///
/// Stored as a vector of (peer, counter) pairs sorted by peer: a file's vector names one to a
/// few peers, and every index entry carries one, so a `BTreeMap` (one 450-byte node per vector)
/// cost more than the rest of the entry. It is encoded as a map, as before: the bytes on the
/// wire and in the index did not change.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct VersionVector(Vec<(PeerId, u64)>);

impl VersionVector {
    /// The empty vector (no changes seen).
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// Build from (peer, counter) pairs; zero counters are dropped and, for a peer named twice,
    /// the last counter counts.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (PeerId, u64)>) -> VersionVector {
        let map: BTreeMap<PeerId, u64> = pairs.into_iter().collect();
        VersionVector(map.into_iter().filter(|(_, c)| *c > 0).collect())
    }

    /// Record one more change by `peer`. A counter never wraps and never sticks: at
    /// [`MAX_VERSION_COUNTER`] the change cannot be counted, the vector is left as it was and the
    /// caller reports the path (a counter that stayed put would make the next change look like
    /// one the peers already have).
    pub fn increment(&mut self, peer: PeerId) -> Result<(), CounterExhausted> {
        match self.0.binary_search_by(|(p, _)| p.cmp(&peer)) {
            Ok(i) => {
                let counter = self.0[i].1;
                if counter >= MAX_VERSION_COUNTER {
                    return Err(CounterExhausted { peer, counter });
                }
                self.0[i].1 = counter + 1;
            }
            Err(i) => self.0.insert(i, (peer, 1)),
        }
        Ok(())
    }

    /// The counter of `peer` (0 if absent).
    pub fn counter(&self, peer: &PeerId) -> u64 {
        self.0
            .binary_search_by(|(p, _)| p.cmp(peer))
            .map_or(0, |i| self.0[i].1)
    }

    /// Element-wise maximum: a vector that has seen both histories.
    pub fn merge(&self, other: &VersionVector) -> VersionVector {
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()));
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(pa, ca)), Some(&&(pb, cb))) => match pa.cmp(&pb) {
                    Ordering::Less => a.next().map(|_| (pa, ca)),
                    Ordering::Greater => b.next().map(|_| (pb, cb)),
                    Ordering::Equal => a.next().and(b.next()).map(|_| (pa, ca.max(cb))),
                },
                (Some(_), None) => a.next().copied(),
                (None, Some(_)) => b.next().copied(),
                (None, None) => None,
            };
            match next {
                Some(pair) => out.push(pair),
                None => return VersionVector(out),
            }
        }
    }

    /// Compare two histories.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut greater = false;
        let mut less = false;
        for &(peer, a) in &self.0 {
            let b = other.counter(&peer);
            greater |= a > b;
            less |= a < b;
        }
        for &(peer, b) in &other.0 {
            if b > 0 && self.counter(&peer) == 0 {
                less = true;
            }
        }
        match (greater, less) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Dominates,
            (false, true) => Causality::DominatedBy,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Number of peers with a non-zero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if no change was ever recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The (peer, counter) pairs in peer order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &u64)> {
        self.0.iter().map(|(p, c)| (p, c))
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a map, as the encoding is one: duplicate peers collapse (last wins) and the
        // pairs come out sorted. A zero counter is kept as decoded, so that the wire's
        // validation can refuse the message that carried it (a vector built here never has one).
        let map = BTreeMap::<PeerId, u64>::deserialize(deserializer)?;
        Ok(VersionVector(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use proptest::prelude::*;

    fn vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u8..4, 0u64..5), 0..5).prop_map(|pairs| {
            VersionVector::from_pairs(pairs.into_iter().map(|(p, c)| (PeerId([p; 32]), c)))
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in vv(), b in vv()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
        }

        #[test]
        fn merge_is_associative(a in vv(), b in vv(), c in vv()) {
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
        }

        #[test]
        fn merge_is_idempotent(a in vv(), b in vv()) {
            prop_assert_eq!(a.merge(&a), a.clone());
            let m = a.merge(&b);
            prop_assert_eq!(m.merge(&b), m);
        }

        #[test]
        fn compare_is_antisymmetric(a in vv(), b in vv()) {
            prop_assert_eq!(a.compare(&b), b.compare(&a).reverse());
            if a.compare(&b) == Causality::Equal {
                prop_assert_eq!(&a, &b);
            }
        }

        #[test]
        fn merge_dominates_or_equals_both(a in vv(), b in vv()) {
            let m = a.merge(&b);
            prop_assert!(matches!(m.compare(&a), Causality::Equal | Causality::Dominates));
            prop_assert!(matches!(m.compare(&b), Causality::Equal | Causality::Dominates));
        }

        /// The pairs vector encodes exactly as the map it replaced, and decodes back.
        #[test]
        fn encoding_is_the_maps(a in vv(), p in 0u8..4) {
            let mut a = a;
            a.increment(PeerId([p; 32])).unwrap();
            let map: BTreeMap<PeerId, u64> = a.iter().map(|(p, c)| (*p, *c)).collect();
            let bytes = postcard::to_allocvec(&a).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&map).unwrap());
            prop_assert_eq!(postcard::from_bytes::<VersionVector>(&bytes).unwrap(), a);
        }

        #[test]
        fn increment_dominates(a in vv(), p in 0u8..4) {
            let mut b = a.clone();
            b.increment(PeerId([p; 32])).unwrap();
            prop_assert_eq!(b.compare(&a), Causality::Dominates);
        }

        /// A counter never wraps or sticks: incrementing either dominates or fails and leaves
        /// the vector unchanged.
        #[test]
        fn increment_never_wraps_or_sticks(
            start in prop_oneof![0u64..4, (MAX_VERSION_COUNTER - 3)..=MAX_VERSION_COUNTER, Just(u64::MAX)],
            p in 0u8..4,
        ) {
            let peer = PeerId([p; 32]);
            let a = VersionVector::from_pairs([(peer, start)]);
            let mut b = a.clone();
            match b.increment(peer) {
                Ok(()) => {
                    prop_assert_eq!(b.counter(&peer), start + 1);
                    prop_assert_eq!(b.compare(&a), Causality::Dominates);
                }
                Err(e) => {
                    prop_assert!(start >= MAX_VERSION_COUNTER);
                    prop_assert_eq!(e, CounterExhausted { peer, counter: start });
                    prop_assert_eq!(&b, &a);
                }
            }
        }
    }

    #[test]
    fn decoding_keeps_the_last_of_a_repeated_peer_and_shows_a_zero_counter() {
        let (x, y) = (PeerId([1; 32]), PeerId([2; 32]));
        let pairs: Vec<(PeerId, u64)> = vec![(y, 0), (x, 3), (x, 5)];
        // A map encoding with a repeated key, as a hostile or buggy peer could send it.
        let mut bytes = vec![3u8];
        for (p, c) in &pairs {
            bytes.extend(postcard::to_allocvec(&(p, c)).unwrap());
        }
        let v: VersionVector = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(v.counter(&x), 5);
        assert_eq!(v.len(), 2);
        assert!(
            v.iter().any(|(p, c)| *p == y && *c == 0),
            "left for the wire's validation to refuse"
        );
    }

    #[test]
    fn concurrent_edits_are_detected() {
        let (x, y) = (PeerId([1; 32]), PeerId([2; 32]));
        let mut base = VersionVector::new();
        base.increment(x).unwrap();
        let mut a = base.clone();
        a.increment(x).unwrap();
        let mut b = base.clone();
        b.increment(y).unwrap();
        assert_eq!(a.compare(&b), Causality::Concurrent);
        assert_eq!(a.compare(&base), Causality::Dominates);
    }
}
