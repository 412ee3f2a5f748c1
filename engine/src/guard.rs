//! The mass-delete guard (docs/CONFLICTS.md, *Deletes*): a plan that would delete more files
//! than `delete_threshold` allows is refused before anything is fetched or written.
//!
//! It owns the counting and the rule; where it is enforced (the receiving side of each
//! direction, skipped by `--force` and by dry runs) is the session's business.

use std::collections::HashSet;

use crate::config::DeleteThreshold;
use crate::hash::Hash;
use crate::plan::{Action, PlanItem};

/// A plan that deletes more than the threshold allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "would delete {deletes} of {synced} synced files (the limit is {} files or {} %); \
     nothing was deleted; run again with --force to delete them",
    .threshold.files,
    .threshold.percent
)]
pub struct MassDelete {
    /// Files the plan deletes.
    pub deletes: u64,
    /// Files the deleting side syncs before the plan.
    pub synced: u64,
    /// The threshold that was exceeded.
    pub threshold: DeleteThreshold,
}

/// Files `items` would delete on the side that carries them out, not counting moves: a
/// deleted file whose content the same plan writes under another path (a renamed directory)
/// loses nothing.
pub fn deletions(items: &[PlanItem]) -> u64 {
    let arriving: HashSet<Hash> = items
        .iter()
        .filter(|i| matches!(i.action, Action::Take | Action::TakeConflict))
        .filter(|i| !i.remote.is_tombstone())
        .map(|i| i.remote.content)
        .collect();
    items
        .iter()
        .filter(|i| i.action == Action::Delete)
        .filter(|i| {
            !i.base
                .as_ref()
                .is_some_and(|b| !b.tombstone && arriving.contains(&b.content))
        })
        .count() as u64
}

/// Refuse a plan that deletes more than `threshold.files` files, or more than
/// `threshold.percent` % of the `synced` files. A single deletion never trips the percentage
/// (deleting one note of three is an edit, not a mass delete).
pub fn check(
    threshold: &DeleteThreshold,
    synced: u64,
    items: &[PlanItem],
) -> Result<(), MassDelete> {
    let deletes = deletions(items);
    if exceeds(threshold, synced, deletes) {
        Err(MassDelete {
            deletes,
            synced,
            threshold: *threshold,
        })
    } else {
        Ok(())
    }
}

/// The rule itself.
pub fn exceeds(threshold: &DeleteThreshold, synced: u64, deletes: u64) -> bool {
    let too_many = deletes > threshold.files;
    let too_large_a_share = deletes > 1
        && u128::from(deletes) * 100 > u128::from(threshold.percent) * u128::from(synced);
    too_many || too_large_a_share
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEFAULT: DeleteThreshold = DeleteThreshold {
        files: 50,
        percent: 25,
    };

    #[test]
    fn the_default_stops_at_fifty_files_or_a_quarter() {
        assert!(!exceeds(&DEFAULT, 1000, 50));
        assert!(exceeds(&DEFAULT, 1000, 51));
        assert!(!exceeds(&DEFAULT, 100, 25));
        assert!(exceeds(&DEFAULT, 100, 26));
        // `rm -rf memory/*` of a small workspace.
        assert!(exceeds(&DEFAULT, 6, 6));
        // One deleted note is never a mass delete.
        assert!(!exceeds(&DEFAULT, 1, 1));
        assert!(!exceeds(&DEFAULT, 3, 1));
    }

    #[test]
    fn the_message_names_the_count_and_force() {
        let m = MassDelete {
            deletes: 6,
            synced: 6,
            threshold: DEFAULT,
        };
        let text = m.to_string();
        assert!(text.contains("would delete 6 of 6 synced files"), "{text}");
        assert!(text.contains("--force"), "{text}");
        assert!(!text.contains('\n'));
    }

    fn item(path: &str, action: Action, content: u8, base: Option<u8>) -> PlanItem {
        use crate::chunk::ChunkerParams;
        use crate::entry::{EntryKind, FileEntry, Mode};
        use crate::path::RelPath;
        use crate::peer::{AgentLabel, Attribution, MachineName, PeerId};
        use crate::plan::Base;
        use crate::vector::VersionVector;
        let tomb = action == Action::Delete;
        let remote = FileEntry {
            path: RelPath::new(path).unwrap_or_else(|e| panic!("{e}")),
            kind: if tomb {
                EntryKind::Tombstone
            } else {
                EntryKind::File
            },
            size: if tomb { 0 } else { 10 },
            mtime_ns: 1,
            mode: Mode::default(),
            content: if tomb {
                Hash::ZERO
            } else {
                Hash::of(&[content])
            },
            chunks: Vec::new(),
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::default(),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([1; 32]),
                agent: AgentLabel::new(""),
                machine: MachineName::default(),
            },
        };
        PlanItem {
            remote,
            action,
            bytes_needed: 0,
            base: base.map(|c| Base {
                content: Hash::of(&[c]),
                tombstone: false,
                version: VersionVector::default(),
            }),
            policy: crate::reconcile::MergePolicy::Newest,
        }
    }

    #[test]
    fn a_renamed_directory_is_not_a_mass_delete() {
        // 60 notes moved from old/ to new/: 60 deletions whose content arrives elsewhere.
        let mut items = Vec::new();
        for i in 0..60u8 {
            items.push(item(
                &format!("memory/old/{i}.md"),
                Action::Delete,
                0,
                Some(i),
            ));
            items.push(item(&format!("memory/new/{i}.md"), Action::Take, i, None));
        }
        assert_eq!(deletions(&items), 0);
        assert!(check(&DEFAULT, 60, &items).is_ok());
        // The same deletions without the arrivals are a mass delete.
        items.retain(|i| i.action == Action::Delete);
        assert_eq!(deletions(&items), 60);
        assert!(check(&DEFAULT, 60, &items).is_err());
    }

    proptest! {
        /// Deleting more never passes where deleting less was refused.
        #[test]
        fn the_guard_is_monotonic(synced in 0u64..500, d in 0u64..500, files in 0u64..100, percent in 0u8..=100) {
            let t = DeleteThreshold { files, percent };
            if exceeds(&t, synced, d) {
                prop_assert!(exceeds(&t, synced, d + 1));
            }
        }
    }
}
