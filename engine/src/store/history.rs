//! The `history` and `history_by_path` trees: an append-only log of changes made to the workspace
//! by sync (and later by restore and merges), for `botsync history`.
//!
//! `history` maps a sequence number (big-endian, from the backend's monotonic id generator, so
//! newer records sort later) to a [`HistoryRecord`]; `history_by_path` maps `path NUL seq` to
//! nothing, so a path's history is one prefix scan. Both rows are written in one batch.

use serde::{Deserialize, Serialize};

use super::backend::{Order, Span, Tree, Write};
use super::codec::{self, encode, history_path_key, history_path_prefix};
use super::{Store, StoreError};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::peer::{AgentLabel, MachineName, PeerId};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryAction {
    /// A path that did not exist locally was written.
    Created,
    /// An existing file was replaced by another version.
    Modified,
    /// A file was deleted (its last version is kept in the chunk store).
    Deleted,
    /// A past version was restored from the chunk store.
    Restored,
    /// Two versions were merged into the file now in place.
    Merged,
}

/// One change to one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// When the change was applied (ns since the epoch).
    pub at_ns: i64,
    /// The path changed.
    pub path: RelPath,
    /// What happened.
    pub action: HistoryAction,
    /// The peer that made the version now in place (our own id for local actions).
    pub from_peer: PeerId,
    /// The agent label recorded with that version.
    pub agent: AgentLabel,
    /// The name of the machine that made that version, as it names itself (empty for records
    /// of an older index).
    pub machine: MachineName,
    /// Content hash of the version replaced or deleted (`None` if there was none); its chunks
    /// are in the chunk store for the retention period.
    pub old_content: Option<Hash>,
    /// Content hash of the version now in place (`None` after a deletion).
    pub new_content: Option<Hash>,
    /// Size in bytes of the version now in place (0 after a deletion).
    pub bytes: u64,
}

/// Records appended per batch. A sled transaction holds a copy of every tree node it touches
/// until it commits: the first scan of a 20,000-file workspace, appended in one, peaked at
/// 140 MB (heaptrack); groups keep that to a few hundred kilobytes.
const HISTORY_GROUP: usize = 256;

impl Store {
    /// Append one record.
    pub fn history_append(&self, record: &HistoryRecord) -> Result<(), StoreError> {
        self.history_append_many(std::slice::from_ref(record))
    }

    /// Append several records, 256 per batch (`HISTORY_GROUP`): a record and its path index
    /// entry are written together, and a failure leaves the groups before it appended.
    pub fn history_append_many(&self, records: &[HistoryRecord]) -> Result<(), StoreError> {
        records
            .chunks(HISTORY_GROUP)
            .try_for_each(|group| self.history_append_group(group))
    }

    fn history_append_group(&self, records: &[HistoryRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(records.len() * 2);
        for r in records {
            let seq = self
                .backend
                .next_id()
                .map_err(|e| self.db_err("numbering a history record", e))?;
            batch.push(Write::Put(
                Tree::History,
                seq.to_be_bytes().to_vec(),
                encode("history record", r)?,
            ));
            batch.push(Write::Put(
                Tree::HistoryByPath,
                history_path_key(&r.path, seq),
                Vec::new(),
            ));
        }
        self.write_now(batch, || "appending history".into())
    }

    /// The newest `limit` records of `path`, newest first.
    pub fn history_for(
        &self,
        path: &RelPath,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let prefix = history_path_prefix(path);
        let mut keys = Vec::new();
        if limit > 0 {
            self.scan(
                Tree::HistoryByPath,
                &Span::prefix(&prefix),
                Order::Descending,
                || format!("listing history of {path}"),
                |k, _| {
                    keys.push(k.to_vec());
                    keys.len() < limit
                },
            )?;
        }
        let mut out = Vec::new();
        for k in keys {
            let Some(seq) = k.get(prefix.len()..) else {
                continue;
            };
            let raw = self.get(Tree::History, seq, || format!("reading history of {path}"))?;
            match raw {
                Some(v) => out.extend(self.decode_or_report::<HistoryRecord>("history", seq, &v)),
                None => self.report("history_by_path", &k, "indexed record is missing"),
            }
        }
        Ok(out)
    }

    /// The newest `limit` records overall, newest first.
    pub fn history_recent(&self, limit: usize) -> Result<Vec<HistoryRecord>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan(
            Tree::History,
            &Span::all(),
            Order::Descending,
            || "listing recent history".into(),
            |k, v| {
                out.extend(self.decode_or_report::<HistoryRecord>("history", k, v));
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    /// Remove records applied before `before_ns` (the chunk store's retention horizon); returns
    /// how many were removed. Records are scanned oldest first and the scan stops at the first
    /// newer one.
    pub fn history_prune(&self, before_ns: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let _turn = self.turn();
            let mut batch = Vec::new();
            let mut newer_seen = false;
            self.scan(
                Tree::History,
                &Span::all(),
                Order::Ascending,
                || "pruning history".into(),
                |k, v| {
                    let record: Option<HistoryRecord> = codec::decode(v).ok();
                    if let Some(r) = &record
                        && r.at_ns >= before_ns
                    {
                        newer_seen = true;
                        return false;
                    }
                    if let (Some(r), Ok(seq)) = (&record, <[u8; 8]>::try_from(k)) {
                        let key = history_path_key(&r.path, u64::from_be_bytes(seq));
                        batch.push(Write::Remove(Tree::HistoryByPath, key));
                    }
                    batch.push(Write::Remove(Tree::History, k.to_vec()));
                    batch.len() < PRUNE_BATCH
                },
            )?;
            let n = batch
                .iter()
                .filter(|w| matches!(w, Write::Remove(Tree::History, _)))
                .count();
            self.write(batch, || "pruning history".into())?;
            removed += n;
            if n == 0 || newer_seen {
                return Ok(removed);
            }
        }
    }
}

/// Rows removed per batch when pruning.
const PRUNE_BATCH: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, at_ns: i64, action: HistoryAction) -> HistoryRecord {
        HistoryRecord {
            at_ns,
            path: RelPath::new(path).unwrap(),
            action,
            from_peer: PeerId([3; 32]),
            agent: AgentLabel::new("claude"),
            machine: MachineName::new("laptop"),
            old_content: None,
            new_content: Some(Hash::of(path.as_bytes())),
            bytes: 10,
        }
    }

    #[test]
    fn a_batch_larger_than_one_group_is_appended_whole_and_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        let n = HISTORY_GROUP * 2 + 7;
        let records: Vec<HistoryRecord> = (0..n)
            .map(|i| {
                record(
                    &format!("notes/{}.md", i % 50),
                    i as i64,
                    HistoryAction::Created,
                )
            })
            .collect();
        store.history_append_many(&records).unwrap();

        let recent = store.history_recent(n + 1).unwrap();
        assert_eq!(recent.len(), n);
        assert!(recent.windows(2).all(|w| w[0].at_ns > w[1].at_ns));
        let one = RelPath::new("notes/7.md").unwrap();
        let times: Vec<i64> = store
            .history_for(&one, 100)
            .unwrap()
            .iter()
            .map(|r| r.at_ns)
            .collect();
        let expected: Vec<i64> = (0..n as i64).rev().filter(|i| i % 50 == 7).collect();
        assert_eq!(times, expected);
    }

    #[test]
    fn per_path_and_recent_history_are_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&tmp.path().join("db")).unwrap();
        store
            .history_append(&record("a.md", 1, HistoryAction::Created))
            .unwrap();
        store
            .history_append(&record("ab.md", 2, HistoryAction::Created))
            .unwrap();
        store
            .history_append(&record("a.md", 3, HistoryAction::Modified))
            .unwrap();
        store
            .history_append(&record("a.md", 4, HistoryAction::Deleted))
            .unwrap();

        let a = RelPath::new("a.md").unwrap();
        let times: Vec<i64> = store
            .history_for(&a, 10)
            .unwrap()
            .iter()
            .map(|r| r.at_ns)
            .collect();
        assert_eq!(
            times,
            vec![4, 3, 1],
            "a.md's history must not include ab.md"
        );
        assert_eq!(
            store.history_for(&a, 1).unwrap()[0].action,
            HistoryAction::Deleted
        );
        let recent: Vec<i64> = store
            .history_recent(2)
            .unwrap()
            .iter()
            .map(|r| r.at_ns)
            .collect();
        assert_eq!(recent, vec![4, 3]);

        assert_eq!(store.history_prune(3).unwrap(), 2);
        let times: Vec<i64> = store
            .history_for(&a, 10)
            .unwrap()
            .iter()
            .map(|r| r.at_ns)
            .collect();
        assert_eq!(times, vec![4, 3]);
        assert_eq!(store.history_recent(10).unwrap().len(), 2);
        assert!(store.take_corruption().is_empty());
    }
}
