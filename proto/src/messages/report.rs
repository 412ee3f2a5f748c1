//! What a receiver reports per offered entry (`OfferResult`), as wire types of the protocol's
//! own. The engine's [`ItemReport`], [`Action`] and [`Outcome`] are converted at this edge, so a
//! change to the engine's types can never change protocol bytes silently: every engine variant
//! must be mapped here by hand (the matches are exhaustive), and a new one gets a new tag at the
//! end. docs/PROTOCOL.md, `OfferResult`, is the spec.

use botsync_engine::RelPath;
use botsync_engine::plan::{Action, ItemReport, Outcome};
use botsync_engine::reconcile::MergePolicy;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_ERROR_MESSAGE, fit_text};

/// One offered path and what the receiver did (or would do) with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReport {
    /// The path.
    pub path: RelPath,
    /// What the receiver decided.
    pub action: WireAction,
    /// What happened.
    pub outcome: WireOutcome,
    /// Size of the new version (0 for deletions).
    pub size: u64,
    /// Chunk bytes the receiver had to fetch for it.
    pub bytes_fetched: u64,
    /// Where the receiver kept a losing version (a path in its workspace), for conflicts.
    pub conflict_copy: Option<String>,
}

/// The receiver's decision for one path. Tags 0-11, append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireAction {
    /// Tag 0.
    Nothing,
    /// Tag 1.
    MergeVersion,
    /// Tag 2.
    RecordTombstone,
    /// Tag 3.
    Take,
    /// Tag 4.
    Delete,
    /// Tag 5.
    TakeConflict,
    /// Tag 6.
    KeepConflict,
    /// Tag 7.
    CaseCollision {
        /// The receiver's path that collides.
        local: RelPath,
    },
    /// Tag 8.
    NotSelected,
    /// Tag 9.
    Merge {
        /// The policy that merged.
        policy: WirePolicy,
    },
    /// Tag 10.
    SkipConflict,
    /// Tag 11.
    ReviewConflict,
}

/// A merge policy on the wire. Tags 0-5, append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WirePolicy {
    /// Tag 0.
    Newest,
    /// Tag 1.
    Union,
    /// Tag 2.
    Json,
    /// Tag 3.
    Text,
    /// Tag 4.
    Skip,
    /// Tag 5.
    Manual,
}

/// What happened to one path. Tags 0-4, append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOutcome {
    /// Tag 0.
    Done,
    /// Tag 1.
    Unchanged,
    /// Tag 2.
    LocalChanged,
    /// Tag 3.
    MissingChunks,
    /// Tag 4.
    Failed {
        /// One line saying what failed.
        reason: String,
    },
}

impl From<MergePolicy> for WirePolicy {
    fn from(p: MergePolicy) -> WirePolicy {
        match p {
            MergePolicy::Newest => WirePolicy::Newest,
            MergePolicy::Union => WirePolicy::Union,
            MergePolicy::Json => WirePolicy::Json,
            MergePolicy::Text => WirePolicy::Text,
            MergePolicy::Skip => WirePolicy::Skip,
            MergePolicy::Manual => WirePolicy::Manual,
        }
    }
}

impl From<WirePolicy> for MergePolicy {
    fn from(p: WirePolicy) -> MergePolicy {
        match p {
            WirePolicy::Newest => MergePolicy::Newest,
            WirePolicy::Union => MergePolicy::Union,
            WirePolicy::Json => MergePolicy::Json,
            WirePolicy::Text => MergePolicy::Text,
            WirePolicy::Skip => MergePolicy::Skip,
            WirePolicy::Manual => MergePolicy::Manual,
        }
    }
}

impl From<Action> for WireAction {
    fn from(a: Action) -> WireAction {
        match a {
            Action::Nothing => WireAction::Nothing,
            Action::MergeVersion => WireAction::MergeVersion,
            Action::RecordTombstone => WireAction::RecordTombstone,
            Action::Take => WireAction::Take,
            Action::Delete => WireAction::Delete,
            Action::TakeConflict => WireAction::TakeConflict,
            Action::KeepConflict => WireAction::KeepConflict,
            Action::CaseCollision { local } => WireAction::CaseCollision { local },
            Action::NotSelected => WireAction::NotSelected,
            Action::Merge { policy } => WireAction::Merge {
                policy: policy.into(),
            },
            Action::SkipConflict => WireAction::SkipConflict,
            Action::ReviewConflict => WireAction::ReviewConflict,
        }
    }
}

impl From<WireAction> for Action {
    fn from(a: WireAction) -> Action {
        match a {
            WireAction::Nothing => Action::Nothing,
            WireAction::MergeVersion => Action::MergeVersion,
            WireAction::RecordTombstone => Action::RecordTombstone,
            WireAction::Take => Action::Take,
            WireAction::Delete => Action::Delete,
            WireAction::TakeConflict => Action::TakeConflict,
            WireAction::KeepConflict => Action::KeepConflict,
            WireAction::CaseCollision { local } => Action::CaseCollision { local },
            WireAction::NotSelected => Action::NotSelected,
            WireAction::Merge { policy } => Action::Merge {
                policy: policy.into(),
            },
            WireAction::SkipConflict => Action::SkipConflict,
            WireAction::ReviewConflict => Action::ReviewConflict,
        }
    }
}

impl From<Outcome> for WireOutcome {
    fn from(o: Outcome) -> WireOutcome {
        match o {
            Outcome::Done => WireOutcome::Done,
            Outcome::Unchanged => WireOutcome::Unchanged,
            Outcome::LocalChanged => WireOutcome::LocalChanged,
            Outcome::MissingChunks => WireOutcome::MissingChunks,
            // A reason may name a long path (up to 4 KiB): cut to what the peer accepts.
            Outcome::Failed { reason } => WireOutcome::Failed {
                reason: fit_text(reason, MAX_ERROR_MESSAGE),
            },
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(o: WireOutcome) -> Outcome {
        match o {
            WireOutcome::Done => Outcome::Done,
            WireOutcome::Unchanged => Outcome::Unchanged,
            WireOutcome::LocalChanged => Outcome::LocalChanged,
            WireOutcome::MissingChunks => Outcome::MissingChunks,
            WireOutcome::Failed { reason } => Outcome::Failed { reason },
        }
    }
}

impl From<ItemReport> for WireReport {
    fn from(r: ItemReport) -> WireReport {
        WireReport {
            path: r.path,
            action: r.action.into(),
            outcome: r.outcome.into(),
            size: r.size,
            bytes_fetched: r.bytes_fetched,
            conflict_copy: r.conflict_copy.map(|c| fit_text(c, MAX_ERROR_MESSAGE)),
        }
    }
}

impl From<WireReport> for ItemReport {
    fn from(r: WireReport) -> ItemReport {
        ItemReport {
            path: r.path,
            action: r.action.into(),
            outcome: r.outcome.into(),
            size: r.size,
            bytes_fetched: r.bytes_fetched,
            conflict_copy: r.conflict_copy,
            // The wire report does not carry them: the pusher knows its own versions.
            changed_by: None,
            mtime_ns: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// The tags are the spec: each variant encodes to its documented index.
    #[test]
    fn tags_are_the_documented_ones() {
        let local = RelPath::new("b").unwrap_or_else(|_| RelPath::root());
        let actions = [
            WireAction::Nothing,
            WireAction::MergeVersion,
            WireAction::RecordTombstone,
            WireAction::Take,
            WireAction::Delete,
            WireAction::TakeConflict,
            WireAction::KeepConflict,
            WireAction::CaseCollision { local },
            WireAction::NotSelected,
            WireAction::Merge {
                policy: WirePolicy::Text,
            },
            WireAction::SkipConflict,
            WireAction::ReviewConflict,
        ];
        for (tag, a) in actions.into_iter().enumerate() {
            let item = WireReport {
                path: RelPath::new("a").unwrap_or_else(|_| RelPath::root()),
                action: a.clone(),
                outcome: WireOutcome::Done,
                size: 0,
                bytes_fetched: 0,
                conflict_copy: None,
            };
            let message = crate::messages::Message::OfferResult {
                items: vec![item],
                last: true,
            };
            let bytes = codec::encode(&message).unwrap_or_default();
            // tag 22, one item, the path "a" (length 1, 'a'), then the action's tag.
            assert_eq!(bytes.get(..4), Some(&[22u8, 1, 1, b'a'][..]));
            assert_eq!(bytes.get(4).copied(), Some(tag as u8), "{a:?}");
            let back: Action = a.clone().into();
            assert_eq!(WireAction::from(back), a);
        }
    }

    #[test]
    fn a_failure_naming_a_long_path_is_cut_to_what_the_peer_accepts() {
        // Paths go up to 4 KiB; an I/O error naming one is longer than a report string may be.
        let path = format!("memory/{}{}/note.md", "d".repeat(240), "/e".repeat(600));
        let item = ItemReport {
            path: RelPath::new("memory/note.md").unwrap_or_else(|_| RelPath::root()),
            action: Action::Take,
            outcome: Outcome::Failed {
                reason: format!("writing {path}: Permission denied (os error 13)"),
            },
            size: 5,
            bytes_fetched: 0,
            conflict_copy: Some(format!(".botsync/conflicts/{path}")),
            changed_by: None,
            mtime_ns: 0,
        };
        let batches = crate::messages::result_batches([item]).unwrap_or_default();
        let bytes = codec::encode(&batches[0]).unwrap_or_default();
        let Ok(crate::messages::Message::OfferResult { items, .. }) = codec::decode(&bytes) else {
            panic!("the report does not decode");
        };
        let WireOutcome::Failed { reason } = &items[0].outcome else {
            panic!("{:?}", items[0]);
        };
        assert!(
            reason.starts_with("writing memory/ddd") && reason.ends_with('…'),
            "{reason}"
        );
        assert!(reason.len() <= MAX_ERROR_MESSAGE);
        assert!(
            items[0]
                .conflict_copy
                .as_ref()
                .is_some_and(|c| c.len() <= MAX_ERROR_MESSAGE)
        );
    }
}
