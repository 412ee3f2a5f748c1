//! What a receiver believes of the claims an incoming version makes about peers.
//!
//! A version vector is a list of claims: "peer X made n changes to this path", and `changed_by`
//! says who made the last one. Nothing signs these claims: a peer relays the counters of others
//! as it received them, so a receiver cannot check what a version says about a third peer. It
//! can check what the version says about **itself**: its own counter for a path is its own
//! record, and only it ever raises it. [`check_claims`] refuses a version that
//!
//! - counts more changes by the receiver than the receiver has counted itself, beyond a margin
//!   of [`MAX_OWN_COUNTER_LEAD`] (a peer that lost its index, or excluded and re-included a path,
//!   restarts its counters: peers legitimately hold higher ones, and refusing them would split
//!   the replicas for good); the margin keeps one session from raising the receiver's counter by
//!   more than that, so no sequence of sessions can bring it near [`MAX_VERSION_COUNTER`];
//! - names as its author (`changed_by`) a peer whose counter in the version is zero: the author
//!   of a version counted its change.
//!
//! Counters above [`MAX_VERSION_COUNTER`] are refused earlier, by the wire's validation. This
//! module does not decide what to do with an accepted version ([`crate::plan`] does).

use crate::entry::FileEntry;
use crate::path::RelPath;
use crate::peer::PeerId;
use crate::vector::MAX_VERSION_COUNTER;

/// How far an incoming version may count the receiver's own changes beyond the receiver's own
/// counter for that path (2^16). See the module documentation.
pub const MAX_OWN_COUNTER_LEAD: u64 = 1 << 16;

/// Why an incoming version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The version counts more of our changes than we have made.
    #[error(
        "{path}: the version counts {claimed} changes by this peer, which counted {ours}: refused (at most {MAX_OWN_COUNTER_LEAD} more are accepted)"
    )]
    OwnCounterAhead {
        /// The path.
        path: RelPath,
        /// Our counter according to the incoming version.
        claimed: u64,
        /// Our counter in our own entry for the path (0 without one).
        ours: u64,
    },
    /// The version names an author that it does not count.
    #[error("{path}: changed by {author}, but the version counts no change by {author}: refused")]
    UncountedAuthor {
        /// The path.
        path: RelPath,
        /// The peer named in `changed_by`.
        author: PeerId,
    },
    /// A counter above [`MAX_VERSION_COUNTER`] (the wire refuses these before they get here).
    #[error(
        "{path}: the version counter of {peer} is {counter}, above the maximum {MAX_VERSION_COUNTER}: refused"
    )]
    CounterTooLarge {
        /// The path.
        path: RelPath,
        /// Whose counter.
        peer: PeerId,
        /// Its value.
        counter: u64,
    },
}

/// Check the claims of `remote` as the receiver `receiver`, whose current entry for the path is
/// `local` (`None` if it has none).
pub fn check_claims(
    local: Option<&FileEntry>,
    remote: &FileEntry,
    receiver: PeerId,
) -> Result<(), Refusal> {
    if let Some((&peer, &counter)) = remote
        .version
        .iter()
        .find(|(_, c)| **c > MAX_VERSION_COUNTER)
    {
        return Err(Refusal::CounterTooLarge {
            path: remote.path.clone(),
            peer,
            counter,
        });
    }
    let claimed = remote.version.counter(&receiver);
    let ours = local.map_or(0, |l| l.version.counter(&receiver));
    if claimed > ours.saturating_add(MAX_OWN_COUNTER_LEAD) {
        return Err(Refusal::OwnCounterAhead {
            path: remote.path.clone(),
            claimed,
            ours,
        });
    }
    let author = remote.changed_by.peer;
    if remote.version.counter(&author) == 0 {
        return Err(Refusal::UncountedAuthor {
            path: remote.path.clone(),
            author,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::entry::{EntryKind, Mode};
    use crate::hash::Hash;
    use crate::peer::{AgentLabel, Attribution, MachineName};
    use crate::plan::{Action, decide, merged_version};
    use crate::vector::VersionVector;
    use proptest::prelude::*;

    const ME: PeerId = PeerId([1; 32]);
    const THEM: PeerId = PeerId([2; 32]);

    fn entry(content: &[u8], by: PeerId, vv: &[(PeerId, u64)]) -> FileEntry {
        FileEntry {
            path: RelPath::new("memory/a.md").unwrap(),
            kind: EntryKind::File,
            size: content.len() as u64,
            mtime_ns: 1,
            mode: Mode::default(),
            content: Hash::of(content),
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::from_pairs(vv.iter().copied()),
            parent: None,
            changed_by: Attribution {
                peer: by,
                agent: AgentLabel::new(""),
                machine: MachineName::default(),
            },
        }
    }

    #[test]
    fn a_version_counting_our_changes_to_the_maximum_is_refused() {
        let ours = entry(b"mine", ME, &[(ME, 3)]);
        let forged = entry(b"theirs", THEM, &[(ME, u64::MAX), (THEM, 1)]);
        assert!(matches!(
            check_claims(Some(&ours), &forged, ME),
            Err(Refusal::CounterTooLarge { .. })
        ));
        let forged = entry(b"theirs", THEM, &[(ME, MAX_VERSION_COUNTER), (THEM, 1)]);
        assert_eq!(
            check_claims(Some(&ours), &forged, ME),
            Err(Refusal::OwnCounterAhead {
                path: ours.path.clone(),
                claimed: MAX_VERSION_COUNTER,
                ours: 3
            })
        );
        assert!(check_claims(None, &forged, ME).is_err());
    }

    #[test]
    fn a_version_authored_in_the_name_of_an_uncounted_peer_is_refused() {
        let forged = entry(b"theirs", ME, &[(THEM, 1)]);
        assert_eq!(
            check_claims(None, &forged, ME),
            Err(Refusal::UncountedAuthor {
                path: forged.path.clone(),
                author: ME
            })
        );
        let third = PeerId([3; 32]);
        assert!(check_claims(None, &entry(b"x", third, &[(THEM, 1)]), ME).is_err());
        // A relayed version by a third peer that counts its change is believed.
        assert_eq!(
            check_claims(None, &entry(b"x", third, &[(third, 1)]), ME),
            Ok(())
        );
    }

    #[test]
    fn our_own_versions_relayed_back_are_accepted() {
        let ours = entry(b"mine", ME, &[(ME, 7), (THEM, 2)]);
        let back = entry(b"mine", ME, &[(ME, 7)]);
        assert_eq!(check_claims(Some(&ours), &back, ME), Ok(()));
        let edited = entry(b"edit", THEM, &[(ME, 7), (THEM, 3)]);
        assert_eq!(check_claims(Some(&ours), &edited, ME), Ok(()));
    }

    proptest! {
        /// Whatever versions are accepted, our counter stays within reach of our own changes:
        /// a session raises it by at most the lead, and counting our next change never fails.
        #[test]
        fn accepted_versions_never_bring_our_counter_near_the_maximum(
            ours in 0u64..1000,
            claims in proptest::collection::vec(any::<u64>(), 1..8),
        ) {
            let mut local = entry(b"mine", ME, &[(ME, ours.max(1))]);
            for (i, claimed) in claims.into_iter().enumerate() {
                let remote = entry(&[i as u8], THEM, &[(ME, claimed), (THEM, i as u64 + 1)]);
                let before = local.version.counter(&ME);
                if check_claims(Some(&local), &remote, ME).is_ok() {
                    if matches!(decide(Some(&local), &remote), Action::Take | Action::TakeConflict) {
                        let version = merged_version(Some(&local), &remote);
                        local = remote;
                        local.version = version;
                    }
                    prop_assert!(local.version.counter(&ME) <= before + MAX_OWN_COUNTER_LEAD);
                } else {
                    prop_assert!(claimed > before + MAX_OWN_COUNTER_LEAD);
                }
                let mut next = local.version.clone();
                prop_assert!(next.increment(ME).is_ok());
            }
        }
    }
}
