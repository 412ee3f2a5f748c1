//! Reconciliation by merge: the policies of PRODUCT.md §4 as pure functions over the common
//! ancestor, the winning and the losing version of one path (docs/CONFLICTS.md, *Merge
//! policies*). The decision which versions meet is [`crate::plan::decide`]; carrying a merge out
//! (reading the versions, writing the result) is the workspace's.
//!
//! Every merge is deterministic in its inputs, and the inputs are named by the `newest` rule
//! (winner, loser) rather than by side, so the two peers of a conflict compute the same bytes
//! whichever of them merges first. When a policy cannot merge it returns a [`Refusal`] and the
//! path falls back to `newest` with its loser kept in `conflicts/`: a merge never loses a line.

pub mod json;
pub mod policy;
pub mod text;
pub mod union;

pub use self::policy::{DEFAULT_RULES, MergePolicy, MergeRule, Policies};

/// Largest version (in bytes) a merge reads into memory; larger files fall back to `newest`.
pub const MERGE_LIMIT: u64 = 64 * 1024 * 1024;

/// Why a policy did not merge two versions (the path then falls back to `newest`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A log lost lines of the common ancestor: they were rewritten or removed.
    #[error("the {side} version lost lines of the common ancestor (rewritten or removed)")]
    Rewritten {
        /// Which version (`winner` or `loser`).
        side: &'static str,
    },
    /// A version of a `json` path does not parse.
    #[error("the {side} version is not valid JSON ({why})")]
    NotJson {
        /// Which version (`winner` or `loser`).
        side: &'static str,
        /// The parser's message.
        why: String,
    },
    /// Both sides changed the same lines.
    #[error("both sides changed the same lines ({hunks} overlapping place(s))")]
    Overlapping {
        /// How many overlapping places.
        hunks: usize,
    },
    /// No common ancestor is known to merge against.
    #[error("no common ancestor is known")]
    NoAncestor,
    /// A version is larger than [`MERGE_LIMIT`].
    #[error("a version is larger than the merge limit of {} MiB", MERGE_LIMIT >> 20)]
    TooLarge,
    /// A version could not be read (its chunks are gone, or the file changed while read).
    #[error("a version could not be read: {0}")]
    Unreadable(String),
}

/// A successful merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The merged content.
    pub bytes: Vec<u8>,
    /// Parts where both sides disagreed and the winner's value was kept (JSON pointers for the
    /// `json` policy); empty when the merge was clean.
    pub conflicts: Vec<String>,
}

/// Merge the `winner` and `loser` versions of a path under `policy` (one of the merging
/// policies; any other refuses with [`Refusal::NoAncestor`]).
pub fn merge(
    policy: MergePolicy,
    ancestor: Option<&[u8]>,
    winner: &[u8],
    loser: &[u8],
) -> Result<Merged, Refusal> {
    let clean = |bytes| Merged {
        bytes,
        conflicts: Vec::new(),
    };
    match policy {
        MergePolicy::Union => union::merge(ancestor, winner, loser).map(clean),
        MergePolicy::Text => text::merge(ancestor, winner, loser).map(clean),
        MergePolicy::Json => json::merge(ancestor, winner, loser).map(|m| Merged {
            bytes: m.bytes,
            conflicts: m.conflicts,
        }),
        MergePolicy::Newest | MergePolicy::Skip | MergePolicy::Manual => Err(Refusal::NoAncestor),
    }
}
