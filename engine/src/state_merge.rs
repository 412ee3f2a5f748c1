//! Merging skill state that arrived from a peer ([`crate::state`], issue 14): which of two
//! versions of one key a receiver keeps, and which claims of an incoming version it believes.
//!
//! The rule is the one files follow ([`crate::plan::decide`], [`crate::plan::winner`]):
//!
//! - the incoming version descends from ours (its vector dominates): take it; ours descends from
//!   it, or both are equal: keep ours;
//! - concurrent versions (or equal vectors with different values, which only a lost index makes):
//!   the winner is the set value over a tombstone ("modify beats delete"), then the later write
//!   time, then the greater author peer id, then the greater value bytes, then the greater agent
//!   label. Both sides compute the same winner whatever their clocks read. The winner is stored
//!   under the merge of both vectors, so both sides end with equal records, and a losing value
//!   that was set (not a tombstone) is returned to be kept for review.
//!
//! [`check_claims`] refuses, as [`crate::authority`] does for files, a version that counts more
//! writes by the receiver than the receiver made (beyond [`MAX_OWN_COUNTER_LEAD`]), one whose
//! author has no counter in it, and counters above [`MAX_VERSION_COUNTER`]: no counter can be
//! pushed to saturation or wrap. This module does not store anything (the store does).

use std::cmp::Ordering;

use crate::authority::MAX_OWN_COUNTER_LEAD;
use crate::peer::PeerId;
use crate::state::StateRecord;
use crate::vector::{Causality, MAX_VERSION_COUNTER};

/// What the receiver does with an incoming version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateMerge {
    /// Keep what we have: the incoming version is older than ours or equal to it.
    Keep,
    /// Store this record (the incoming one, or the winner of a conflict under the merged
    /// vector); `loser` is a set value that lost a conflict, to be kept for review.
    Store {
        /// The record to store for the key.
        record: StateRecord,
        /// The losing value of a conflict, if one was set (not a tombstone); boxed, as most
        /// merges have none.
        loser: Option<Box<StateRecord>>,
    },
}

/// Why an incoming version of a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    /// The version counts more of our writes than we made.
    #[error(
        "state {key}: the version counts {claimed} writes by this peer, which counted {ours}: refused (at most {MAX_OWN_COUNTER_LEAD} more are accepted)"
    )]
    OwnCounterAhead {
        /// The key.
        key: String,
        /// Our counter according to the incoming version.
        claimed: u64,
        /// Our counter in our own record (0 without one).
        ours: u64,
    },
    /// The version names an author it does not count.
    #[error(
        "state {key}: written by {author}, but the version counts no write by {author}: refused"
    )]
    UncountedAuthor {
        /// The key.
        key: String,
        /// The peer named as author.
        author: PeerId,
    },
    /// A counter above [`MAX_VERSION_COUNTER`].
    #[error(
        "state {key}: the version counter of {peer} is {counter}, above the maximum {MAX_VERSION_COUNTER}: refused"
    )]
    CounterTooLarge {
        /// The key.
        key: String,
        /// Whose counter.
        peer: PeerId,
        /// Its value.
        counter: u64,
    },
}

/// Check the claims of `remote` (a version of `key`) as the receiver `receiver`, whose current
/// record of the key is `local`.
pub fn check_claims(
    key: &str,
    local: Option<&StateRecord>,
    remote: &StateRecord,
    receiver: PeerId,
) -> Result<(), StateRefusal> {
    if let Some(&(peer, counter)) = remote
        .version
        .iter()
        .find(|(_, c)| *c > MAX_VERSION_COUNTER)
    {
        return Err(StateRefusal::CounterTooLarge {
            key: key.to_owned(),
            peer,
            counter,
        });
    }
    let remote_vv = remote.vector();
    let claimed = remote_vv.counter(&receiver);
    let ours = local.map_or(0, |l| l.vector().counter(&receiver));
    if claimed > ours.saturating_add(MAX_OWN_COUNTER_LEAD) {
        return Err(StateRefusal::OwnCounterAhead {
            key: key.to_owned(),
            claimed,
            ours,
        });
    }
    if remote_vv.counter(&remote.peer) == 0 {
        return Err(StateRefusal::UncountedAuthor {
            key: key.to_owned(),
            author: remote.peer,
        });
    }
    Ok(())
}

/// Decide what to store for a key whose record here is `local` when `remote` arrives (see the
/// module documentation for the rule).
pub fn merge(local: Option<&StateRecord>, remote: &StateRecord) -> StateMerge {
    let Some(local) = local else {
        return StateMerge::Store {
            record: remote.clone(),
            loser: None,
        };
    };
    let (lv, rv) = (local.vector(), remote.vector());
    match rv.compare(&lv) {
        Causality::Dominates => StateMerge::Store {
            record: remote.clone(),
            loser: None,
        },
        Causality::DominatedBy => StateMerge::Keep,
        Causality::Equal if local == remote => StateMerge::Keep,
        Causality::Equal | Causality::Concurrent => {
            let merged = lv.merge(&rv);
            let (winner, loser) = match order(local, remote) {
                Ordering::Less => (remote, local),
                _ => (local, remote),
            };
            let mut record = winner.clone();
            record.version = merged.iter().map(|(p, c)| (*p, *c)).collect();
            let keep_loser = !loser.deleted && (loser.value != winner.value || winner.deleted);
            if record == *local {
                // Ours won and already carries both histories.
                return StateMerge::Keep;
            }
            StateMerge::Store {
                record,
                loser: keep_loser.then(|| Box::new(loser.clone())),
            }
        }
    }
}

/// The total order of concurrent versions: the greater one wins.
fn order(a: &StateRecord, b: &StateRecord) -> Ordering {
    let key = |r: &StateRecord| {
        (
            !r.deleted,
            r.at_ns,
            r.peer,
            r.value.clone(),
            r.agent.clone(),
        )
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use proptest::prelude::*;

    use super::*;

    const A: PeerId = PeerId([1; 32]);
    const B: PeerId = PeerId([2; 32]);

    fn rec(value: &str, peer: PeerId, at: i64, vv: &[(PeerId, u64)]) -> StateRecord {
        StateRecord {
            value: value.as_bytes().to_vec(),
            peer,
            agent: String::new(),
            at_ns: at,
            version: vv.to_vec(),
            deleted: false,
        }
    }

    /// What a replica holding `local` stores after `remote` arrives.
    fn after(local: Option<StateRecord>, remote: &StateRecord) -> Option<StateRecord> {
        match merge(local.as_ref(), remote) {
            StateMerge::Keep => local,
            StateMerge::Store { record, .. } => Some(record),
        }
    }

    #[test]
    fn a_descendant_is_taken_and_an_ancestor_ignored() {
        let old = rec("1", A, 1, &[(A, 1)]);
        let new = rec("2", B, 2, &[(A, 1), (B, 1)]);
        assert_eq!(after(Some(old.clone()), &new), Some(new.clone()));
        assert_eq!(merge(Some(&new), &old), StateMerge::Keep);
        assert_eq!(merge(Some(&new), &new), StateMerge::Keep);
    }

    #[test]
    fn concurrent_writes_keep_the_later_and_the_loser() {
        let a = rec("from a", A, 10, &[(A, 1)]);
        let b = rec("from b", B, 20, &[(B, 1)]);
        let StateMerge::Store { record, loser } = merge(Some(&a), &b) else {
            panic!("b is later and must win");
        };
        assert_eq!(record.value, b"from b");
        assert_eq!(record.vector().counter(&A), 1);
        assert_eq!(record.vector().counter(&B), 1);
        assert_eq!(loser, Some(Box::new(a.clone())));
        // On the other side, ours wins: stored under the merged vector, a's value kept there too.
        let StateMerge::Store { record: r2, loser } = merge(Some(&b), &a) else {
            panic!("the merged vector must be stored");
        };
        assert_eq!(r2, record);
        assert_eq!(loser, Some(Box::new(a)));
    }

    #[test]
    fn modify_beats_delete_and_a_losing_tombstone_is_not_kept() {
        let mut gone = rec("", A, 99, &[(A, 2)]);
        gone.deleted = true;
        let set = rec("kept", B, 1, &[(B, 1)]);
        let StateMerge::Store { record, loser } = merge(Some(&gone), &set) else {
            panic!("a set value beats a tombstone");
        };
        assert_eq!(record.value, b"kept");
        assert_eq!(loser, None);
    }

    #[test]
    fn claims_about_the_receiver_are_checked() {
        let me = A;
        let forged = rec("x", B, 1, &[(A, MAX_OWN_COUNTER_LEAD + 5), (B, 1)]);
        assert!(matches!(
            check_claims("k", None, &forged, me),
            Err(StateRefusal::OwnCounterAhead { .. })
        ));
        let uncounted = rec("x", B, 1, &[(A, 1)]);
        assert!(matches!(
            check_claims("k", None, &uncounted, me),
            Err(StateRefusal::UncountedAuthor { .. })
        ));
        let huge = rec("x", B, 1, &[(B, MAX_VERSION_COUNTER + 1)]);
        assert!(matches!(
            check_claims("k", None, &huge, me),
            Err(StateRefusal::CounterTooLarge { .. })
        ));
        assert_eq!(
            check_claims("k", None, &rec("x", B, 1, &[(B, 3)]), me),
            Ok(())
        );
    }

    fn arb_record() -> impl Strategy<Value = StateRecord> {
        (
            prop::sample::select(vec!["", "x", "y"]),
            any::<bool>(),
            0u8..3,
            0i64..3,
            prop::collection::vec((0u8..3, 1u64..4), 1..3),
        )
            .prop_map(|(v, deleted, peer, at, vv)| {
                let peer = PeerId([peer; 32]);
                let mut pairs: Vec<(PeerId, u64)> =
                    vv.into_iter().map(|(p, c)| (PeerId([p; 32]), c)).collect();
                pairs.push((peer, 1));
                let version = crate::vector::VersionVector::from_pairs(pairs)
                    .iter()
                    .map(|(p, c)| (*p, *c))
                    .collect();
                StateRecord {
                    value: if deleted {
                        Vec::new()
                    } else {
                        v.as_bytes().to_vec()
                    },
                    peer,
                    agent: String::new(),
                    at_ns: at,
                    version,
                    deleted,
                }
            })
    }

    proptest! {
        /// Two replicas that exchange their versions in either order hold the same record.
        #[test]
        fn merge_converges_whatever_the_order(a in arb_record(), b in arb_record()) {
            let at_a = after(Some(a.clone()), &b);
            let at_b = after(Some(b.clone()), &a);
            prop_assert_eq!(at_a, at_b);
        }

        /// Taking the same version twice changes nothing.
        #[test]
        fn merge_is_idempotent(a in arb_record(), b in arb_record()) {
            let once = after(Some(a.clone()), &b);
            let twice = after(once.clone(), &b);
            prop_assert_eq!(once, twice);
        }
    }
}
