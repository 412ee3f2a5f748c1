//! Comparing a large directory by buckets of its children (feature `BUCKETS`, tags 30 and 31).
//!
//! A `Nodes` reply lists every child of a directory: for the 3,000 notes of an agent's
//! `memory/notes/` that is about 190 kB each time one note changes. With `BUCKETS` the asker
//! splits its own children of a large directory into `2^k` buckets by a hash of the name and
//! sends one 16-byte digest per bucket ([`BucketAsk`]); the replier computes the same buckets
//! over its children and answers only the buckets whose digests differ, with its children in
//! them ([`BucketReply`]). Equal buckets hold equal children (up to a 2^-128 collision), so the
//! asker compares only the children of the differing buckets, its own and the peer's.
//!
//! This module owns the bucket function, the digest and the replier's answer; which
//! directories are asked this way is the descent's choice (`session/descent.rs`).

use botsync_engine::hash::Domain;
use botsync_engine::{Hash, RelPath};
use serde::{Deserialize, Serialize};

use super::tree::{ChildKind, NodeChild};

/// Fewest buckets an ask may use.
pub const MIN_BUCKETS: usize = 16;
/// Most buckets an ask may use (bucket indexes fit a `u16`).
pub const MAX_BUCKETS: usize = 4096;
/// A directory with at least this many children on the asking side is asked by buckets; a
/// smaller one costs less listed whole.
pub const BUCKET_FROM_CHILDREN: usize = 256;

/// The first 16 bytes of a bucket's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketDigest(pub [u8; 16]);

/// One directory asked by buckets: the asker's digest of each of its buckets, in bucket order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketAsk {
    /// The directory (the empty path is the workspace root).
    pub path: RelPath,
    /// One digest per bucket; their number is the bucket count, a power of two from
    /// [`MIN_BUCKETS`] to [`MAX_BUCKETS`].
    pub digests: Vec<BucketDigest>,
}

/// The answer for one [`BucketAsk`]: the buckets whose digests differ, and the replier's
/// children in them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketReply {
    /// The directory, as asked.
    pub path: RelPath,
    /// Indexes of the buckets that differ, strictly increasing.
    pub differ: Vec<u16>,
    /// The replier's children in those buckets, sorted as in `Nodes` (name, then kind).
    pub children: Vec<NodeChild>,
}

/// The number of buckets to ask a directory of `children` children with: about eight children
/// a bucket, a power of two within the limits.
pub fn bucket_count_for(children: usize) -> usize {
    (children / 8)
        .next_power_of_two()
        .clamp(MIN_BUCKETS, MAX_BUCKETS)
}

/// True if `count` is a bucket count an ask may use.
pub fn valid_bucket_count(count: usize) -> bool {
    count.is_power_of_two() && (MIN_BUCKETS..=MAX_BUCKETS).contains(&count)
}

/// The bucket of a child named `name` among `count` buckets: the first two bytes of the name's
/// BLAKE3, little-endian, modulo `count` (a power of two). A name's directory and tombstone
/// share a bucket.
pub fn bucket_of(name: &str, count: usize) -> u16 {
    let h = Hash::of(name.as_bytes());
    let b = h.as_bytes();
    let mask = u16::try_from(count.saturating_sub(1)).unwrap_or(u16::MAX);
    u16::from_le_bytes([b[0], b[1]]) & mask
}

/// The digests of `children` (sorted as in `Nodes`) in `count` buckets: for each bucket, the
/// first 16 bytes of BLAKE3 under the `botsync/dir-bucket/v1\0` domain over its children in
/// order, each as the directory hash covers it (name length as u64 LE, name, kind byte, hash).
pub fn digests(children: &[NodeChild], count: usize) -> Vec<BucketDigest> {
    if count == 0 {
        return Vec::new();
    }
    let mut bufs = vec![Vec::new(); count];
    for c in children {
        let buf = &mut bufs[usize::from(bucket_of(&c.name, count))];
        buf.extend_from_slice(&(c.name.len() as u64).to_le_bytes());
        buf.extend_from_slice(c.name.as_bytes());
        buf.push(match c.kind {
            ChildKind::Dir => 0,
            ChildKind::File => 1,
        });
        buf.extend_from_slice(c.hash.as_bytes());
    }
    bufs.iter()
        .map(|buf| {
            let h = Hash::tagged(Domain::DirBucket, &[buf]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&h.as_bytes()[..16]);
            BucketDigest(d)
        })
        .collect()
}

/// The replier's answer to `ask`, given its own children of the directory (sorted; empty when
/// it has no such directory). `ask.digests.len()` must be a valid bucket count (the decoder
/// checks it).
pub fn answer(ask: &BucketAsk, ours: Vec<NodeChild>) -> BucketReply {
    let count = ask.digests.len();
    if count == 0 {
        // No bucket to compare (the decoder refuses this; a direct caller gets an empty answer).
        return BucketReply {
            path: ask.path.clone(),
            differ: Vec::new(),
            children: Vec::new(),
        };
    }
    let mine = digests(&ours, count);
    let differ: Vec<u16> = mine
        .iter()
        .zip(&ask.digests)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .filter_map(|(i, _)| u16::try_from(i).ok())
        .collect();
    let mut wanted = vec![false; count];
    for &i in &differ {
        wanted[usize::from(i)] = true;
    }
    let children = ours
        .into_iter()
        .filter(|c| wanted[usize::from(bucket_of(&c.name, count))])
        .collect();
    BucketReply {
        path: ask.path.clone(),
        differ,
        children,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn child(name: &str, v: u8) -> NodeChild {
        NodeChild {
            name: name.to_owned(),
            kind: ChildKind::File,
            hash: Hash::of(&[v]),
        }
    }

    fn notes(n: usize) -> Vec<NodeChild> {
        let mut v: Vec<NodeChild> = (0..n).map(|i| child(&format!("n{i:05}.md"), 0)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    #[test]
    fn bucket_counts_grow_with_the_directory_within_the_limits() {
        assert_eq!(bucket_count_for(0), MIN_BUCKETS);
        assert_eq!(bucket_count_for(3_000), 512);
        assert_eq!(bucket_count_for(1_000_000), MAX_BUCKETS);
        assert!(valid_bucket_count(512));
        assert!(!valid_bucket_count(8) && !valid_bucket_count(100) && !valid_bucket_count(8192));
    }

    #[test]
    fn only_the_buckets_of_changed_children_are_answered() {
        let ours = notes(3_000);
        let mut theirs = ours.clone();
        theirs[10].hash = Hash::of(b"edited");
        theirs.remove(2_000);
        let count = bucket_count_for(ours.len());
        let ask = BucketAsk {
            path: RelPath::new("memory/notes").unwrap(),
            digests: digests(&ours, count),
        };
        let reply = answer(&ask, theirs.clone());
        let want: Vec<u16> = {
            let mut v = vec![
                bucket_of(&ours[10].name, count),
                bucket_of(&ours[2_000].name, count),
            ];
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(reply.differ, want);
        assert!(reply.children.contains(&theirs[10]));
        assert!(
            reply.children.len() < 40,
            "{} children",
            reply.children.len()
        );
        // Nothing changed: nothing differs.
        let same = answer(&ask, ours.clone());
        assert!(same.differ.is_empty() && same.children.is_empty());
        // The replier has no such directory: every non-empty bucket differs.
        let none = answer(&ask, Vec::new());
        let empty = digests(&[], count)[0];
        let nonempty = ask.digests.iter().filter(|d| **d != empty).count();
        assert_eq!(none.differ.len(), nonempty);
    }

    #[test]
    fn no_buckets_never_panics() {
        let children = notes(3);
        assert!(digests(&children, 0).is_empty());
        let ask = BucketAsk {
            path: RelPath::root(),
            digests: Vec::new(),
        };
        let reply = answer(&ask, children);
        assert!(reply.differ.is_empty() && reply.children.is_empty());
        // A count that is not a power of two still indexes within it.
        assert_eq!(digests(&notes(40), 17).len(), 17);
    }

    #[test]
    fn a_directory_and_a_tombstone_of_one_name_share_a_bucket() {
        for count in [16, 512, 4096] {
            let b = bucket_of("notes", count);
            assert!(usize::from(b) < count);
        }
        let dir = NodeChild {
            kind: ChildKind::Dir,
            ..child("notes", 1)
        };
        let both = vec![dir.clone(), child("notes", 2)];
        let only_dir = vec![dir];
        assert_ne!(digests(&both, 16), digests(&only_dir, 16));
    }
}
