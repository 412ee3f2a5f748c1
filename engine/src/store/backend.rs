//! [`Backend`]: the ordered key-value storage under the typed index.
//!
//! [`Store`](super::Store) knows what its records mean; a backend only keeps bytes in named
//! trees, in key order, and writes a batch of changes over several trees atomically. Two
//! implement it: `SledBackend` (`store/sled_backend.rs`), the workspace's index on disk, and
//! [`MemoryBackend`], the same index held in memory (tests and replicas that need no
//! persistence). Every record layout, check and migration lives above this seam, once.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

/// The trees of the index (module docs of [`super`] say what each holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Path → local entry.
    Local,
    /// Chunk id, path, offset → where the chunk lies.
    Chunks,
    /// Peer id, path → what that peer had.
    Peers,
    /// Peer id → facts about the peer.
    PeerMeta,
    /// Sequence number → history record.
    History,
    /// Path, sequence number → nothing (the path index of `History`).
    HistoryByPath,
    /// Namespace, key → value.
    Kv,
    /// Schema version, local peer, last scan, migration markers.
    Meta,
    /// Path → apply intent.
    Intents,
    /// Index → Raft log entry.
    RaftLog,
    /// Name → Raft value.
    RaftMeta,
}

impl Tree {
    /// Every tree, in a fixed order (their positions in a backend's table).
    pub const ALL: [Tree; 11] = [
        Tree::Local,
        Tree::Chunks,
        Tree::Peers,
        Tree::PeerMeta,
        Tree::History,
        Tree::HistoryByPath,
        Tree::Kv,
        Tree::Meta,
        Tree::Intents,
        Tree::RaftLog,
        Tree::RaftMeta,
    ];

    /// The tree's name on disk and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Local => "local",
            Tree::Chunks => "chunks",
            Tree::Peers => "peers",
            Tree::PeerMeta => "peer_meta",
            Tree::History => "history",
            Tree::HistoryByPath => "history_by_path",
            Tree::Kv => "kv",
            Tree::Meta => "meta",
            Tree::Intents => "intents",
            Tree::RaftLog => "raft_log",
            Tree::RaftMeta => "raft_meta",
        }
    }

    /// The tree's position in [`Tree::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Set `key` of `tree` to the value.
    Put(Tree, Vec<u8>, Vec<u8>),
    /// Remove `key` of `tree` (nothing if absent).
    Remove(Tree, Vec<u8>),
}

/// A range of keys: `lo` to `hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The lower end.
    pub lo: Bound<Vec<u8>>,
    /// The upper end.
    pub hi: Bound<Vec<u8>>,
}

impl Span {
    /// Every key.
    pub fn all() -> Span {
        Span {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
        }
    }

    /// The keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Span {
        Span {
            lo: Bound::Included(prefix.to_vec()),
            hi: prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
        }
    }

    /// The keys from `key` on (`key` itself included).
    pub fn from(key: &[u8]) -> Span {
        Span {
            lo: Bound::Included(key.to_vec()),
            hi: Bound::Unbounded,
        }
    }

    /// The keys after `key` (`key` itself excluded).
    pub fn after(key: &[u8]) -> Span {
        Span {
            lo: Bound::Excluded(key.to_vec()),
            hi: Bound::Unbounded,
        }
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_ref(&self.lo), as_ref(&self.hi))
    }

    /// True if no key lies in the span (its start is after its end): a `BTreeMap` range and a
    /// sled range panic on such bounds.
    pub fn is_empty(&self) -> bool {
        let (lo, hi) = self.bounds();
        match (lo, hi) {
            (Bound::Included(l), Bound::Included(h)) => l > h,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h))
            | (Bound::Excluded(l), Bound::Included(h)) => l >= h,
            _ => false,
        }
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first key after every key starting with `prefix` (`None`: there is none, the prefix is
/// empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Records as (key, value) pairs.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Which way a scan walks its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Lowest key first.
    Ascending,
    /// Highest key first.
    Descending,
}

/// A storage failure, as the backend reports it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync>);

impl BackendError {
    /// Wrap the backend's own error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
        BackendError(Box::new(e))
    }
}

/// Ordered trees of bytes with atomic batches: what [`Store`](super::Store) needs of storage.
///
/// Reads see every batch written before them. A scan is not a snapshot: a batch written while
/// it runs may or may not be seen (callers that read and then write hold the store's write
/// turn). `visit` calls `f` without holding anything a write needs, so `f` may write.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The value of `key` in `tree`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Call `f(key, value)` for each record of `tree` in `span`, in `order`, until it returns
    /// false.
    fn visit(
        &self,
        tree: Tree,
        span: &Span,
        order: Order,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError>;

    /// Apply `batch` atomically: after a crash, all of it or none of it.
    fn write(&self, batch: Vec<Write>) -> Result<(), BackendError>;

    /// A number greater than every number this backend returned before, across restarts.
    fn next_id(&self) -> Result<u64, BackendError>;

    /// Make every write so far durable.
    fn flush(&self) -> Result<(), BackendError>;

    /// True if no tree holds a record.
    fn is_empty(&self) -> Result<bool, BackendError>;
}

/// Records a memory scan copies out per look at its tree: `f` runs without the lock.
const VISIT_PAGE: usize = 256;

/// The index held in memory: nothing survives the process, every write is atomic and at once
/// "durable".
#[derive(Debug, Default)]
pub struct MemoryBackend {
    trees: RwLock<[BTreeMap<Vec<u8>, Vec<u8>>; Tree::ALL.len()]>,
    next_id: AtomicU64,
}

impl MemoryBackend {
    /// An empty index.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// Up to [`VISIT_PAGE`] records of `tree` within `lo..hi`, in `order`.
    fn page(&self, tree: Tree, lo: Bound<&[u8]>, hi: Bound<&[u8]>, order: Order) -> Rows {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        let t = &trees[tree.index()];
        let range = t.range::<[u8], _>((lo, hi));
        let copy = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        match order {
            Order::Ascending => range.take(VISIT_PAGE).map(copy).collect(),
            Order::Descending => range.rev().take(VISIT_PAGE).map(copy).collect(),
        }
    }
}

impl Backend for MemoryBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        Ok(trees[tree.index()].get(key).cloned())
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
        let mut span = span.clone();
        loop {
            let (lo, hi) = span.bounds();
            let page = self.page(tree, lo, hi, order);
            let full = page.len() == VISIT_PAGE;
            for (k, v) in &page {
                if !f(k, v) {
                    return Ok(());
                }
            }
            match page.into_iter().last() {
                Some((last, _)) if full => match order {
                    Order::Ascending => span.lo = Bound::Excluded(last),
                    Order::Descending => span.hi = Bound::Excluded(last),
                },
                _ => return Ok(()),
            }
        }
    }

    fn write(&self, batch: Vec<Write>) -> Result<(), BackendError> {
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        for w in batch {
            match w {
                Write::Put(t, k, v) => {
                    trees[t.index()].insert(k, v);
                }
                Write::Remove(t, k) => {
                    trees[t.index()].remove(&k);
                }
            }
        }
        Ok(())
    }

    fn next_id(&self) -> Result<u64, BackendError> {
        Ok(self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        Ok(trees.iter().all(BTreeMap::is_empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: &dyn Backend, tree: Tree, span: &Span, order: Order) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        b.visit(tree, span, order, &mut |k, _| {
            out.push(k.to_vec());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn prefix_ends_carry_past_0xff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn a_scan_longer_than_a_page_sees_every_key_once_in_both_orders() {
        let b = MemoryBackend::new();
        let n = VISIT_PAGE * 2 + 5;
        let batch = (0..n as u32)
            .map(|i| Write::Put(Tree::Kv, i.to_be_bytes().to_vec(), vec![1]))
            .collect();
        b.write(batch).unwrap();
        let up = keys(&b, Tree::Kv, &Span::all(), Order::Ascending);
        assert_eq!(up.len(), n);
        assert!(up.windows(2).all(|w| w[0] < w[1]));
        let mut down = keys(&b, Tree::Kv, &Span::all(), Order::Descending);
        down.reverse();
        assert_eq!(up, down);
        assert!(keys(&b, Tree::Local, &Span::all(), Order::Ascending).is_empty());
    }

    #[test]
    fn spans_select_what_they_say() {
        let b = MemoryBackend::new();
        let batch = [&b"a"[..], b"ab", b"abc", b"b"]
            .iter()
            .map(|k| Write::Put(Tree::Meta, k.to_vec(), Vec::new()))
            .collect();
        b.write(batch).unwrap();
        let got = |s: Span| keys(&b, Tree::Meta, &s, Order::Ascending);
        assert_eq!(
            got(Span::prefix(b"ab")),
            vec![b"ab".to_vec(), b"abc".to_vec()]
        );
        assert_eq!(
            got(Span::after(b"ab")),
            vec![b"abc".to_vec(), b"b".to_vec()]
        );
        assert_eq!(got(Span::from(b"b")).len(), 1);
        let empty = Span {
            lo: Bound::Excluded(b"b".to_vec()),
            hi: Bound::Excluded(b"a".to_vec()),
        };
        assert!(
            got(empty).is_empty(),
            "an inverted span is empty, not a panic"
        );
    }

    #[test]
    fn a_visitor_may_write_while_it_scans() {
        let b = MemoryBackend::new();
        b.write(vec![Write::Put(Tree::Kv, b"k".to_vec(), b"v".to_vec())])
            .unwrap();
        b.visit(Tree::Kv, &Span::all(), Order::Ascending, &mut |k, _| {
            b.write(vec![Write::Remove(Tree::Kv, k.to_vec())]).unwrap();
            true
        })
        .unwrap();
        assert!(b.is_empty().unwrap());
    }
}
