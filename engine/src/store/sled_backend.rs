//! [`SledBackend`]: the index on disk, in sled 0.34. Every line of sled code in botsync is in
//! this file: opening (a held lock told apart from corruption, panics of sled on corrupt files
//! caught), reads, scans, atomic batches over several trees, and reading an old index moved
//! aside.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use super::backend::{Backend, BackendError, Order, Rows, Span, Tree, Write};

/// The sled page cache bound; botsync's whole process targets at most 64 MiB.
const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;

/// A sled database with one sled tree per [`Tree`].
#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
    /// In the order of [`Tree::ALL`].
    trees: Vec<sled::Tree>,
}

/// Why an existing index cannot be opened as is.
#[derive(Debug)]
pub(super) enum OpenFailure {
    /// Another process holds it.
    Locked,
    /// It is broken; the reason.
    Unusable(String),
}

impl SledBackend {
    /// Open (or create) the database in `dir`. Also says whether `dir` held sled's files
    /// before: sled treats an unreadable data file as an empty log, and an index that lost
    /// everything must be reported, not silently recreated.
    pub(super) fn open(dir: &Path) -> Result<(SledBackend, bool), OpenFailure> {
        let had_files =
            dir.join("conf").exists() || fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES);
        // sled may panic instead of returning an error on some corrupt files; the index is a
        // cache, so any failure to open it means "rebuild", never a crash.
        let db = match catch_unwind(AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) if is_lock_error(&e) => return Err(OpenFailure::Locked),
            Ok(Err(e)) => {
                return Err(OpenFailure::Unusable(format!(
                    "sled could not open it: {e}"
                )));
            }
            Err(_) => {
                return Err(OpenFailure::Unusable(
                    "sled panicked while opening it".into(),
                ));
            }
        };
        let open_trees = || -> sled::Result<Vec<sled::Tree>> {
            Tree::ALL.iter().map(|t| db.open_tree(t.name())).collect()
        };
        match catch_unwind(AssertUnwindSafe(open_trees)) {
            Ok(Ok(trees)) => Ok((SledBackend { db, trees }, had_files)),
            Ok(Err(e)) => Err(OpenFailure::Unusable(format!(
                "sled could not open a tree: {e}"
            ))),
            Err(_) => Err(OpenFailure::Unusable(
                "sled panicked while opening a tree".into(),
            )),
        }
    }

    /// Every record of `tree` whose key starts with `prefix`, read from the old index in
    /// `dir` (one moved aside). Never panics: a sled panic is an error like any other.
    pub(super) fn read_aside(dir: &Path, tree: Tree, prefix: &[u8]) -> Result<Rows, String> {
        let read = || -> sled::Result<Rows> {
            let old = sled::Config::new().path(dir).open()?;
            let t = old.open_tree(tree.name())?;
            t.scan_prefix(prefix)
                .map(|row| row.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect()
        };
        match catch_unwind(AssertUnwindSafe(read)) {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("sled panicked reading it".into()),
        }
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree.index()]
    }
}

fn err(e: sled::Error) -> BackendError {
    match e {
        sled::Error::Io(io) => BackendError::new(StorageIo(io)),
        other => BackendError::new(other),
    }
}

/// An I/O failure under sled, with the `io::Error` kept as its source: sled's own error has
/// none, so a full disk under the index read as an internal error to the peer that pushed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StorageIo(#[source] std::io::Error);

/// sled 0.34 reports a held file lock as an `Other` I/O error with this message; it must not be
/// mistaken for corruption (the daemon holds the index while it runs).
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl Backend for SledBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.tree(tree).get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn visit(
        &self,
        tree: Tree,
        span: &Span,
        order: Order,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        if span.is_empty() {
            return Ok(());
        }
        let range = self
            .tree(tree)
            .range::<Vec<u8>, _>((span.lo.clone(), span.hi.clone()));
        let mut step = |row: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, BackendError> {
            let (k, v) = row.map_err(err)?;
            Ok(f(&k, &v))
        };
        match order {
            Order::Ascending => {
                for row in range {
                    if !step(row)? {
                        break;
                    }
                }
            }
            Order::Descending => {
                for row in range.rev() {
                    if !step(row)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn write(&self, batch: Vec<Write>) -> Result<(), BackendError> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};

        // One sled batch per tree, applied together in one transaction over the trees touched.
        let mut per_tree: Vec<(Tree, sled::Batch)> = Vec::new();
        for w in batch {
            let t = match &w {
                Write::Put(t, ..) | Write::Remove(t, _) => *t,
            };
            let slot = match per_tree.iter().position(|(pt, _)| *pt == t) {
                Some(i) => i,
                None => {
                    per_tree.push((t, sled::Batch::default()));
                    per_tree.len() - 1
                }
            };
            let b = &mut per_tree[slot].1;
            match w {
                Write::Put(_, k, v) => b.insert(k, v),
                Write::Remove(_, k) => b.remove(k),
            }
        }
        match per_tree.as_slice() {
            [] => Ok(()),
            [(t, _)] => {
                let (t, b) = (*t, per_tree.pop().map(|(_, b)| b).unwrap_or_default());
                self.tree(t).apply_batch(b).map_err(err)
            }
            _ => {
                let trees: Vec<sled::Tree> = per_tree
                    .iter()
                    .map(|(t, _)| self.tree(*t).clone())
                    .collect();
                let result = trees.as_slice().transaction(|txs| {
                    for (tx, (_, b)) in txs.iter().zip(&per_tree) {
                        tx.apply_batch(b)?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                });
                match result {
                    Ok(()) => Ok(()),
                    Err(TransactionError::Storage(e)) => Err(err(e)),
                    Err(TransactionError::Abort(())) => Err(BackendError::new(
                        std::io::Error::other("sled aborted a batch"),
                    )),
                }
            }
        }
    }

    fn next_id(&self) -> Result<u64, BackendError> {
        self.db.generate_id().map_err(err)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self.trees.iter().all(sled::Tree::is_empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_under_sled_stays_a_full_disk_in_the_error_chain() {
        // Seen in a benchmark run: "peer reported internal: ... index ...: flushing failed: IO
        // error: Os { code: 28, kind: StorageFull, .. }" where the peer should have said "disk
        // full": the io::Error was not in the chain the session classifies.
        let e = err(sled::Error::Io(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
        let mut kinds = Vec::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                kinds.push(io.kind());
            }
            cur = err.source();
        }
        assert_eq!(kinds, [std::io::ErrorKind::StorageFull]);
        assert_eq!(
            e.to_string(),
            std::io::Error::from_raw_os_error(libc::ENOSPC).to_string()
        );
    }
}
