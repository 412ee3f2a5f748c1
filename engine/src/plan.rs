//! Reconciliation: what a receiver does with a remote version of a path.
//!
//! [`decide`] is the one rule both sides of a session apply. It is pure and symmetric: when two
//! peers see each other's version of a path, they pick the same winner, so a session never
//! ping-pongs. Causality comes from version vectors; content equality is never a conflict; true
//! concurrency falls back to "modify beats delete", then the newer competing time (the entry's
//! `mtime_ns`, bounded by when the version was observed: docs/CONFLICTS.md), then the peer id,
//! then the content hash. No clock is read here: both sides decide from the same two entries. The loser of a conflict is never dropped: the caller copies it to
//! `.botsync/conflicts/` (the full merge policies of PRODUCT.md §4 come with the conflicts issue).

use serde::{Deserialize, Serialize};

use crate::entry::FileEntry;
use crate::hash::Hash;
use crate::path::RelPath;
use crate::reconcile::MergePolicy;
use crate::vector::{Causality, VersionVector};

/// What the receiving side does with an incoming version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Nothing to do: we already have this version or a newer one.
    Nothing,
    /// Same content on both sides: only merge the version vectors in the index (no data moves).
    MergeVersion,
    /// We never had the path and the remote deleted it: record the tombstone (index only).
    RecordTombstone,
    /// Write the remote file (a creation or a fast-forward update).
    Take,
    /// Delete our file: the remote tombstone descends from our version.
    Delete,
    /// Concurrent versions: the remote one wins; our version goes to `conflicts/` first.
    TakeConflict,
    /// Concurrent versions: ours wins; the remote will take ours (its loser is kept there).
    KeepConflict,
    /// Two different paths that differ only in letter case: kept apart, reported, not synced.
    CaseCollision {
        /// Our path that collides with the remote one.
        local: RelPath,
    },
    /// The path is outside what this side syncs (its own selection rules): refused.
    NotSelected,
    /// Concurrent versions of a path with a merging policy (union, json, text): the receiver
    /// writes the merge of both (or, if the policy cannot merge them, falls back to `newest`).
    Merge {
        /// The policy that merges.
        policy: MergePolicy,
    },
    /// Concurrent versions under the `skip` policy: both stay where they are; reported as an
    /// open conflict until resolved.
    SkipConflict,
    /// Concurrent versions under the `manual` policy: ours stays in place, the remote version
    /// is kept in `conflicts/` for review.
    ReviewConflict,
}

impl Action {
    /// True if carrying the action out changes a file on disk.
    pub fn writes_file(&self) -> bool {
        matches!(
            self,
            Action::Take | Action::Delete | Action::TakeConflict | Action::Merge { .. }
        )
    }

    /// True if carrying the action out needs the remote version's content (its chunks are
    /// fetched): the writes, and the review copy of `manual`.
    pub fn needs_content(&self) -> bool {
        self.writes_file() || *self == Action::ReviewConflict
    }

    /// True if the action reports a conflict (resolved or not).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Action::TakeConflict
                | Action::KeepConflict
                | Action::CaseCollision { .. }
                | Action::SkipConflict
                | Action::ReviewConflict
        )
    }

    /// A short stable name for output (`--json` field values).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Nothing => "nothing",
            Action::MergeVersion => "merge-version",
            Action::RecordTombstone => "record-tombstone",
            Action::Take => "take",
            Action::Delete => "delete",
            Action::TakeConflict => "take-conflict",
            Action::KeepConflict => "keep-conflict",
            Action::CaseCollision { .. } => "case-collision",
            Action::NotSelected => "not-selected",
            Action::Merge { .. } => "merge",
            Action::SkipConflict => "skip-conflict",
            Action::ReviewConflict => "review-conflict",
        }
    }
}

/// One decided path: the incoming version and what the receiver does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// The incoming version.
    pub remote: FileEntry,
    /// What the receiver does with it.
    pub action: Action,
    /// Bytes the receiver must fetch for it (chunks found nowhere locally).
    pub bytes_needed: u64,
    /// The local version the action was decided against (`None`: we had no entry). Apply
    /// re-checks it, so a write never replaces a version the plan did not see.
    pub base: Option<Base>,
    /// The path's merge policy on the receiving side.
    #[serde(default)]
    pub policy: MergePolicy,
}

impl PlanItem {
    /// The path concerned.
    pub fn path(&self) -> &RelPath {
        &self.remote.path
    }

    /// The action to carry out when the local version is now `current`: the planned one if the
    /// index still holds the version the plan was made against; otherwise the item is decided
    /// again against `current` (another session or a rescan changed the path between plan and
    /// apply). Selection and case-collision refusals stand as planned.
    pub fn action_now(&self, current: Option<&FileEntry>) -> Action {
        if matches!(
            self.action,
            Action::NotSelected | Action::CaseCollision { .. }
        ) || self.base.as_ref() == current.map(Base::of).as_ref()
        {
            return self.action.clone();
        }
        decide_with(current, &self.remote, self.policy)
    }
}

/// What identifies a local version for the apply-time re-check: its content and its vector
/// (every change bumps the vector, every merge grows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// Content hash ([`Hash::ZERO`] for a tombstone).
    pub content: Hash,
    /// True for a tombstone.
    pub tombstone: bool,
    /// The version vector.
    pub version: VersionVector,
}

impl Base {
    /// The base of a local version.
    pub fn of(entry: &FileEntry) -> Base {
        Base {
            content: entry.content,
            tombstone: entry.is_tombstone(),
            version: entry.version.clone(),
        }
    }
}

/// What happened when a planned item was carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done as planned (for a dry run: would be done).
    Done,
    /// Nothing had to change on disk (index-only action, or already current).
    Unchanged,
    /// The local file was edited after planning: left alone, retried next sync.
    LocalChanged,
    /// Some chunks could not be had (the sender's file changed while being sent): skipped this
    /// round, nothing written.
    MissingChunks,
    /// Failed for this path only (I/O error, bad name on this file system...).
    Failed {
        /// One line saying what failed.
        reason: String,
    },
}

/// The report for one carried-out item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemReport {
    /// The path.
    pub path: RelPath,
    /// The planned action.
    pub action: Action,
    /// What happened.
    pub outcome: Outcome,
    /// File size of the new version (0 for deletions).
    pub size: u64,
    /// Bytes that had to be fetched for it.
    pub bytes_fetched: u64,
    /// Where our losing version was kept, for conflicts (workspace-relative, under `.botsync/`).
    pub conflict_copy: Option<String>,
    /// Who made the incoming version (its peer and agent), when the report knows it: `check`
    /// names who changed what since the last pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<crate::peer::Attribution>,
    /// The incoming version's modification time (ns since the epoch; 0 if unknown).
    #[serde(default)]
    pub mtime_ns: i64,
}

/// Which of two concurrent versions wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The version on the deciding side.
    Local,
    /// The incoming version.
    Remote,
}

/// Decide what the receiver does with `remote`, given its own current version `local`, under
/// the `newest` policy. Case collisions are checked by the caller (it knows the other paths)
/// through [`case_collision`].
pub fn decide(local: Option<&FileEntry>, remote: &FileEntry) -> Action {
    decide_with(local, remote, MergePolicy::Newest)
}

/// [`decide`] under the path's merge `policy`: concurrent versions that are both files are
/// merged (union, json, text), left alone (skip) or kept for review (manual); a tombstone
/// against a file follows "modify beats delete" whatever the policy.
pub fn decide_with(local: Option<&FileEntry>, remote: &FileEntry, policy: MergePolicy) -> Action {
    let Some(local) = local else {
        return if remote.is_tombstone() {
            Action::RecordTombstone
        } else {
            Action::Take
        };
    };
    if local.same_content(remote) {
        return if local.version == remote.version {
            Action::Nothing
        } else {
            match local.version.compare(&remote.version) {
                Causality::Dominates | Causality::Equal => Action::Nothing,
                Causality::DominatedBy | Causality::Concurrent => Action::MergeVersion,
            }
        };
    }
    match remote.version.compare(&local.version) {
        Causality::Dominates => {
            if remote.is_tombstone() {
                Action::Delete
            } else {
                Action::Take
            }
        }
        Causality::DominatedBy => Action::Nothing,
        // Equal vectors with different content only arise from a lost index; treat as concurrent.
        Causality::Equal | Causality::Concurrent
            if !local.is_tombstone() && !remote.is_tombstone() && policy != MergePolicy::Newest =>
        {
            match policy {
                MergePolicy::Skip => Action::SkipConflict,
                MergePolicy::Manual => Action::ReviewConflict,
                _ => Action::Merge { policy },
            }
        }
        Causality::Equal | Causality::Concurrent => match winner(local, remote) {
            Winner::Remote if remote.is_tombstone() => Action::Delete,
            // Our side holds only a tombstone: there is no losing content to keep.
            Winner::Remote if local.is_tombstone() => Action::Take,
            Winner::Remote => Action::TakeConflict,
            Winner::Local => Action::KeepConflict,
        },
    }
}

/// The deterministic winner between two concurrent versions: modify beats delete, then the later
/// competing time, then the greater peer id, then the greater content hash. It is a function of
/// the two entries alone (no clock), so swapping the arguments swaps the answer and both sides
/// agree whatever their clocks read.
///
/// The competing time is the entry's `mtime_ns`, which the scanner that observed the version
/// bounded by the file's change time and its own clock ([`crate::scan`]): a file dated in the
/// future competes with the time it was changed, never with its date.
pub fn winner(local: &FileEntry, remote: &FileEntry) -> Winner {
    match (local.is_tombstone(), remote.is_tombstone()) {
        (true, false) => return Winner::Remote,
        (false, true) => return Winner::Local,
        _ => {}
    }
    let key = |e: &FileEntry| (e.mtime_ns, e.changed_by.peer, e.content);
    if key(remote) > key(local) {
        Winner::Remote
    } else {
        Winner::Local
    }
}

/// The version vector a receiver records after handling `remote` with `action`.
pub fn merged_version(local: Option<&FileEntry>, remote: &FileEntry) -> VersionVector {
    match local {
        Some(l) => l.version.merge(&remote.version),
        None => remote.version.clone(),
    }
}

/// If `remote` names a different path that differs from one of ours only in letter case,
/// return ours. `local_by_fold` maps [`RelPath::case_fold_key`] to our path.
pub fn case_collision(
    remote: &RelPath,
    local_by_fold: &std::collections::HashMap<String, RelPath>,
) -> Option<RelPath> {
    local_by_fold
        .get(&remote.case_fold_key())
        .filter(|ours| *ours != remote)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkerParams;
    use crate::entry::{EntryKind, Mode};
    use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
    use proptest::prelude::*;

    fn entry(content: u8, tomb: bool, mtime: i64, peer: u8, vv: &[(u8, u64)]) -> FileEntry {
        FileEntry {
            path: RelPath::new("memory/a.md").unwrap(),
            kind: if tomb {
                EntryKind::Tombstone
            } else {
                EntryKind::File
            },
            size: if tomb { 0 } else { 10 },
            mtime_ns: mtime,
            mode: Mode::default(),
            content: if tomb {
                Hash::ZERO
            } else {
                Hash::of(&[content])
            },
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::from_pairs(vv.iter().map(|(p, c)| (PeerId([*p; 32]), *c))),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([peer; 32]),
                agent: AgentLabel::new(""),
                machine: MachineName::default(),
            },
        }
    }

    #[test]
    fn fast_forward_takes_and_stale_is_ignored() {
        let old = entry(1, false, 10, 1, &[(1, 1)]);
        let new = entry(2, false, 5, 2, &[(1, 1), (2, 1)]);
        assert_eq!(decide(Some(&old), &new), Action::Take);
        assert_eq!(decide(Some(&new), &old), Action::Nothing);
        assert_eq!(decide(None, &new), Action::Take);
    }

    #[test]
    fn equal_content_is_never_a_conflict() {
        let a = entry(1, false, 10, 1, &[(1, 1)]);
        let b = entry(1, false, 99, 2, &[(2, 1)]);
        assert_eq!(decide(Some(&a), &b), Action::MergeVersion);
    }

    #[test]
    fn modify_beats_delete() {
        let edit = entry(1, false, 1, 1, &[(1, 2)]);
        let del = entry(0, true, 50, 2, &[(1, 1), (2, 1)]);
        assert_eq!(decide(Some(&edit), &del), Action::KeepConflict);
        assert_eq!(decide(Some(&del), &edit), Action::Take);
    }

    #[test]
    fn descending_tombstone_deletes() {
        let file = entry(1, false, 1, 1, &[(1, 1)]);
        let del = entry(0, true, 2, 2, &[(1, 1), (2, 1)]);
        assert_eq!(decide(Some(&file), &del), Action::Delete);
        assert_eq!(decide(None, &del), Action::RecordTombstone);
    }

    #[test]
    fn the_later_competing_time_wins_whoever_decides() {
        let earlier = entry(1, false, 1_000, 2, &[(1, 1)]);
        let later = entry(2, false, 2_000, 1, &[(2, 1)]);
        assert_eq!(winner(&earlier, &later), Winner::Remote);
        assert_eq!(winner(&later, &earlier), Winner::Local);
        assert_eq!(decide(Some(&earlier), &later), Action::TakeConflict);
        assert_eq!(decide(Some(&later), &earlier), Action::KeepConflict);
    }

    #[test]
    fn a_plan_whose_base_changed_is_decided_again() {
        let theirs = entry(2, false, 5, 2, &[(2, 1)]);
        let planned = PlanItem {
            action: decide(None, &theirs),
            remote: theirs.clone(),
            bytes_needed: 0,
            base: None,
            policy: MergePolicy::Newest,
        };
        assert_eq!(planned.action_now(None), Action::Take);
        // Another session wrote a version this plan never saw: a conflict, never a Take.
        let raced = entry(1, false, 4, 3, &[(3, 1)]);
        assert!(planned.action_now(Some(&raced)).is_conflict());
        // The base still in place: the plan stands.
        let ours = entry(1, false, 1, 1, &[(1, 1)]);
        let ff = entry(2, false, 2, 2, &[(1, 1), (2, 1)]);
        let item = PlanItem {
            action: decide(Some(&ours), &ff),
            remote: ff,
            bytes_needed: 0,
            base: Some(Base::of(&ours)),
            policy: MergePolicy::Newest,
        };
        assert_eq!(item.action_now(Some(&ours)), Action::Take);
    }

    /// `decide` on a side whose clock reads `now`: the clock has no say any more (the rule once
    /// clamped mtimes with it, and skewed sides disagreed).
    fn decide_at(local: &FileEntry, remote: &FileEntry, _now: i64) -> Action {
        decide(Some(local), remote)
    }

    fn arb_entry() -> impl Strategy<Value = FileEntry> {
        (
            0u8..3,
            any::<bool>(),
            0i64..4,
            0u8..3,
            proptest::collection::vec((0u8..3, 0u64..3), 0..3),
        )
            .prop_map(|(c, t, m, p, vv)| entry(c, t, m, p, &vv))
    }

    proptest! {
        /// Both sides of a session pick the same winner for concurrent versions.
        #[test]
        fn both_sides_agree_on_the_winner(a in arb_entry(), b in arb_entry()) {
            let ab = winner(&a, &b);
            let ba = winner(&b, &a);
            if a.same_content(&b) && a.mtime_ns == b.mtime_ns && a.changed_by == b.changed_by {
                return Ok(());
            }
            prop_assert_ne!(ab, ba);
        }

        /// Two peers whose clocks differ by up to an hour, deciding the same pair of concurrent
        /// versions at the same real moment, pick the same winner.
        #[test]
        fn both_sides_agree_with_skewed_clocks(
            a_offset in -7_200i64..7_200,
            b_offset in -7_200i64..7_200,
            skew in -3_600i64..3_600,
            pa in 0u8..3,
            pb in 0u8..3,
        ) {
            const S: i64 = 1_000_000_000;
            let now = 1_800_000_000 * S;
            let a = entry(1, false, now + a_offset * S, pa, &[(1, 1)]);
            let b = entry(2, false, now + b_offset * S, pb, &[(2, 1)]);
            let at_a = decide_at(&a, &b, now);
            let at_b = decide_at(&b, &a, now + skew * S);
            let survivor = |local: &FileEntry, remote: &FileEntry, action: &Action| {
                if action.writes_file() { remote.content } else { local.content }
            };
            prop_assert_eq!(survivor(&a, &b, &at_a), survivor(&b, &a, &at_b));
        }

        /// After each side applies the other's version, the surviving content is the same.
        #[test]
        fn both_sides_converge(a in arb_entry(), b in arb_entry()) {
            let survivor = |local: &FileEntry, remote: &FileEntry| match decide(Some(local), remote) {
                Action::Take | Action::TakeConflict | Action::Delete => remote.content,
                _ => local.content,
            };
            let at_a = survivor(&a, &b);
            let at_b = survivor(&b, &a);
            // A side that keeps its own version makes the other side take it on the way back.
            prop_assert_eq!(at_a, at_b);
        }
    }
}
