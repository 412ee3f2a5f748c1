//! [`VersionVector`]: causality between versions of a file.
//!
//! Each peer counts its own changes to a path. A version vector maps peers to those counters;
//! comparing two vectors tells whether one version descends from the other or whether they were
//! made concurrently (a true conflict). Merge takes the element-wise maximum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::peer::PeerId;

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

/// A map from peer to that peer's change counter. Zero counters are never stored, so equal
/// histories have equal encodings.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<PeerId, u64>);

impl VersionVector {
    /// The empty vector (no changes seen).
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// Build from (peer, counter) pairs; zero counters are dropped.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (PeerId, u64)>) -> VersionVector {
        VersionVector(pairs.into_iter().filter(|(_, c)| *c > 0).collect())
    }

    /// Record one more change by `peer`. Saturates instead of overflowing.
    pub fn increment(&mut self, peer: PeerId) {
        let c = self.0.entry(peer).or_insert(0);
        *c = c.saturating_add(1);
    }

    /// The counter of `peer` (0 if absent).
    pub fn counter(&self, peer: &PeerId) -> u64 {
        self.0.get(peer).copied().unwrap_or(0)
    }

    /// Element-wise maximum: a vector that has seen both histories.
    pub fn merge(&self, other: &VersionVector) -> VersionVector {
        let mut out = self.0.clone();
        for (peer, &c) in &other.0 {
            let e = out.entry(*peer).or_insert(0);
            *e = (*e).max(c);
        }
        VersionVector(out)
    }

    /// Compare two histories.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut greater = false;
        let mut less = false;
        for (peer, &a) in &self.0 {
            let b = other.counter(peer);
            greater |= a > b;
            less |= a < b;
        }
        for (peer, &b) in &other.0 {
            if !self.0.contains_key(peer) && b > 0 {
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
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
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

        #[test]
        fn increment_dominates(a in vv(), p in 0u8..4) {
            let mut b = a.clone();
            b.increment(PeerId([p; 32]));
            prop_assert_eq!(b.compare(&a), Causality::Dominates);
        }
    }

    #[test]
    fn concurrent_edits_are_detected() {
        let (x, y) = (PeerId([1; 32]), PeerId([2; 32]));
        let mut base = VersionVector::new();
        base.increment(x);
        let mut a = base.clone();
        a.increment(x);
        let mut b = base.clone();
        b.increment(y);
        assert_eq!(a.compare(&b), Causality::Concurrent);
        assert_eq!(a.compare(&base), Causality::Dominates);
    }
}
