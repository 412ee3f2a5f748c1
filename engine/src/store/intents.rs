//! The `intents` tree: what an apply in progress is about to put on disk.
//!
//! Apply renames verified files into place and only then records them in the index. A process
//! killed between the two leaves files that are the new version on disk while the index still
//! holds the old one; the next scan would take them for local edits (a new local version,
//! concurrent with the peer's, so a spurious conflict). To close that window, apply records an
//! [`ApplyIntent`] per file, durably, before its first rename, and removes it once the index has
//! the entry. Whoever opens the workspace next replays what is left (`apply::recover`): a file
//! whose bytes are the intended version gets the intended entry, anything else is left to the
//! scan.
//!
//! A row's key is the path; the value is the intent (postcard, like every index value).

use serde::{Deserialize, Serialize};

use super::backend::{Order, Span, Tree, Write};
use super::codec::{decode, encode};
use super::{HistoryRecord, Store, StoreError};
use crate::entry::FileEntry;
use crate::path::RelPath;

/// One file an apply is about to rename into place (or delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyIntent {
    /// The version apply writes (a tombstone for a delete).
    pub target: FileEntry,
    /// The history record apply appends once the version is in place.
    pub history: Option<HistoryRecord>,
    /// When the apply ran (ns since the epoch): the entry's `recorded_at_ns`.
    pub at_ns: i64,
}

impl Store {
    /// Record `intents` and make them durable before returning.
    pub fn intents_put(&self, intents: &[ApplyIntent]) -> Result<(), StoreError> {
        if intents.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(intents.len());
        for intent in intents {
            batch.push(Write::Put(
                Tree::Intents,
                intent.target.path.as_str().as_bytes().to_vec(),
                encode("apply intent", intent)?,
            ));
        }
        self.write_now(batch, || "recording apply intents".into())?;
        self.flush()
    }

    /// Forget the intents of `paths` (their entries are in the index now). Not flushed: a
    /// forgotten removal is replayed harmlessly.
    pub fn intents_clear<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a RelPath>,
    ) -> Result<(), StoreError> {
        let batch = paths
            .into_iter()
            .map(|p| Write::Remove(Tree::Intents, p.as_str().as_bytes().to_vec()))
            .collect();
        self.write_now(batch, || "removing apply intents".into())
    }

    /// Every intent left behind, in path order. Undecodable rows are reported as corruption,
    /// removed and skipped (the scan then treats their files as it finds them).
    pub fn intents(&self) -> Result<Vec<ApplyIntent>, StoreError> {
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        self.scan(
            Tree::Intents,
            &Span::all(),
            Order::Ascending,
            || "reading apply intents".into(),
            |k, v| {
                match decode::<ApplyIntent>(v) {
                    Ok(intent) => out.push(intent),
                    Err(reason) => {
                        self.report("intents", k, &reason);
                        corrupt.push(Write::Remove(Tree::Intents, k.to_vec()));
                    }
                }
                true
            },
        )?;
        self.write_now(corrupt, || "removing a corrupt apply intent".into())?;
        Ok(out)
    }
}
