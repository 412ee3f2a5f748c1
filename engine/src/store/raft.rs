//! The replicated log of the lock table (issue 16): the trees a Raft node keeps on disk, its
//! log entries by index and a few named values (the vote, the committed id, the last purged id,
//! the snapshot). Entries and values are opaque bytes chosen by the caller (the cli's Raft
//! storage); this module only keeps them durable and in order.
//!
//! Every write that Raft must not lose (an appended entry, a vote) is flushed before the call
//! returns: a node that acknowledged an entry still has it after a crash.

use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::backend::{Backend, BackendError, Order, Span, Tree, Write};
use super::{Store, StoreError};

/// Handle on the Raft trees of an open index; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct RaftLog {
    store_dir: PathBuf,
    backend: Arc<dyn Backend>,
    /// The store's write turn, shared.
    writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog")
            .field("dir", &self.store_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The Raft trees of this index.
    pub fn raft_log(&self) -> Result<RaftLog, StoreError> {
        Ok(RaftLog {
            store_dir: self.dir.clone(),
            backend: Arc::clone(&self.backend),
            writer: Arc::clone(&self.writer),
        })
    }
}

impl RaftLog {
    /// The value stored under `name` (`vote`, `committed`, `purged`, `snapshot`...).
    pub fn value(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend
            .get(Tree::RaftMeta, name.as_bytes())
            .map_err(|e| self.err(format!("reading the lock log's {name}"), e))
    }

    /// Store `bytes` under `name`, durably.
    pub fn set_value(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.write(
            vec![Write::Put(
                Tree::RaftMeta,
                name.as_bytes().to_vec(),
                bytes.to_vec(),
            )],
            format!("writing the lock log's {name}"),
        )
    }

    /// Append entries `(index, bytes)`, durably; an existing index is overwritten.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let batch = entries
            .into_iter()
            .map(|(index, bytes)| Write::Put(Tree::RaftLog, index.to_be_bytes().to_vec(), bytes))
            .collect();
        self.write(batch, "appending to the lock log".into())
    }

    /// The entries whose index is in `range`, in order.
    pub fn range(&self, range: impl RangeBounds<u64>) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.backend
            .visit(
                Tree::RaftLog,
                &Span::from(&start.to_be_bytes()),
                Order::Ascending,
                &mut |k, v| {
                    let index = index_of(k);
                    if !range.contains(&index) {
                        return false;
                    }
                    out.push((index, v.to_vec()));
                    true
                },
            )
            .map_err(|e| self.err("reading the lock log".into(), e))?;
        Ok(out)
    }

    /// The last entry, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let mut last = None;
        self.backend
            .visit(
                Tree::RaftLog,
                &Span::all(),
                Order::Descending,
                &mut |k, v| {
                    last = Some((index_of(k), v.to_vec()));
                    false
                },
            )
            .map_err(|e| self.err("reading the lock log".into(), e))?;
        Ok(last)
    }

    /// Remove every entry at or after `index` (a conflicting suffix), durably.
    pub fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        self.remove(self.range(index..)?)
    }

    /// Remove every entry at or before `index` (covered by a snapshot), durably.
    pub fn purge_to(&self, index: u64) -> Result<(), StoreError> {
        self.remove(self.range(..=index)?)
    }

    fn remove(&self, rows: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let batch = rows
            .into_iter()
            .map(|(index, _)| Write::Remove(Tree::RaftLog, index.to_be_bytes().to_vec()))
            .collect();
        self.write(batch, "trimming the lock log".into())
    }

    /// Apply `batch` in the store's write turn, then flush: Raft must not lose what it wrote.
    fn write(&self, batch: Vec<Write>, action: String) -> Result<(), StoreError> {
        {
            let _turn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            self.backend
                .write(batch)
                .map_err(|e| self.err(action.clone(), e))?;
        }
        self.backend
            .flush()
            .map_err(|e| self.err(format!("{action}: flushing"), e))
    }

    fn err(&self, action: String, source: BackendError) -> StoreError {
        StoreError::Db {
            path: self.store_dir.clone(),
            action,
            source,
        }
    }
}

fn index_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_in_order_through_truncate_purge_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path()).unwrap();
            let log = store.raft_log().unwrap();
            log.append((1..=5).map(|i| (i, vec![i as u8]))).unwrap();
            log.set_value("vote", b"v1").unwrap();
            assert_eq!(log.range(2..4).unwrap(), vec![(2, vec![2]), (3, vec![3])]);
            log.truncate_from(4).unwrap();
            log.purge_to(1).unwrap();
            assert_eq!(log.last().unwrap(), Some((3, vec![3])));
        }
        let (store, _) = Store::open(dir.path()).unwrap();
        let log = store.raft_log().unwrap();
        assert_eq!(log.range(..).unwrap(), vec![(2, vec![2]), (3, vec![3])]);
        assert_eq!(log.value("vote").unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(log.range(u64::MAX..).unwrap(), vec![]);
    }
}
