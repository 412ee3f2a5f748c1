//! Merkle descent: find the paths whose entries differ, visiting only directories whose hashes
//! differ, one round trip per tree level.
//!
//! [`Descent`] is the walk as a pure state machine: given our children of the directories of
//! one level it says what to ask ([`Descent::requests`]: `GetNodes`, and `GetBuckets` for large
//! directories when the peer negotiated `BUCKETS`), takes the peer's replies
//! ([`Descent::accept`]), compares ([`Descent::step`]) and says which of our directories the
//! peer lacks entirely, whose entry paths it then takes ([`Descent::add_ours`]). It does no I/O;
//! the initiator's machine ([`super::initiator`]) drives it.

use std::collections::{BTreeMap, BTreeSet};

use botsync_engine::RelPath;

use crate::limits::MAX_LISTED_CHILDREN;
use crate::messages::buckets::{bucket_count_for, bucket_of, digests};
use crate::messages::{BucketAsk, ChildKind, Message, NodeChild, bucket_requests, path_requests};

/// The peer's answer for one directory.
#[derive(Debug)]
enum Theirs {
    /// Every child (`Nodes`).
    Whole(Vec<NodeChild>),
    /// The children of the buckets that differ (`Buckets`), and which buckets those are.
    Buckets {
        differ: Vec<bool>,
        children: Vec<NodeChild>,
    },
}

/// The Merkle descent as a pure state machine; see the module docs.
#[derive(Debug)]
pub struct Descent {
    /// Directories with at least this many children of ours are asked by buckets (`None`:
    /// never, the peer did not negotiate `BUCKETS`).
    bucket_from: Option<usize>,
    /// The directories of this level, in the order they are asked: those asked whole first.
    frontier: Vec<RelPath>,
    /// Our children of each frontier directory, once [`Descent::requests`] had them.
    ours: Vec<Vec<NodeChild>>,
    /// The bucket count each frontier directory was asked with (`None`: asked whole).
    asked: Vec<Option<usize>>,
    /// The peer's answers so far, in frontier order.
    theirs: Vec<Theirs>,
    /// True if the peer may send a long listing in parts (`LONG_LISTS`).
    long_lists: bool,
    /// The children the peer sent in `NodesPart`s for the next directory to be answered.
    pending: Vec<NodeChild>,
    /// Paths found to differ.
    out: BTreeSet<RelPath>,
}

impl Default for Descent {
    fn default() -> Self {
        Descent::new()
    }
}

impl Descent {
    /// Start at the root (whose hashes the caller knows differ); every directory is asked whole.
    pub fn new() -> Descent {
        Descent {
            bucket_from: None,
            frontier: vec![RelPath::root()],
            ours: Vec::new(),
            asked: Vec::new(),
            theirs: Vec::new(),
            long_lists: false,
            pending: Vec::new(),
            out: BTreeSet::new(),
        }
    }

    /// Take long listings in parts (`NodesPart`): the peer negotiated `LONG_LISTS`.
    pub fn with_long_lists(self) -> Descent {
        Descent {
            long_lists: true,
            ..self
        }
    }

    /// Start at the root; directories with at least `from_children` children of ours are asked
    /// by buckets (the peer negotiated `BUCKETS`).
    pub fn with_buckets(from_children: usize) -> Descent {
        Descent {
            bucket_from: Some(from_children),
            ..Descent::new()
        }
    }

    /// True when no directory is left to compare.
    pub fn is_done(&self) -> bool {
        self.frontier.is_empty()
    }

    /// The directories of the current level (give our children of them to
    /// [`Descent::requests`], in this order).
    pub fn frontier(&self) -> &[RelPath] {
        &self.frontier
    }

    /// The requests of the current level, given our children of each frontier directory:
    /// `GetNodes` for the directories asked whole, then `GetBuckets` for the large ones.
    pub fn requests(&mut self, ours: Vec<Vec<NodeChild>>) -> Result<Vec<Message>, String> {
        if ours.len() != self.frontier.len() || !self.theirs.is_empty() {
            return Err(format!(
                "our children of {} directories for a level of {}",
                ours.len(),
                self.frontier.len()
            ));
        }
        let from = self.bucket_from;
        let mut level: Vec<(RelPath, Vec<NodeChild>, Option<usize>)> = self
            .frontier
            .drain(..)
            .zip(ours)
            .map(|(dir, ours)| {
                let by_buckets = from.is_some_and(|n| ours.len() >= n);
                let count = by_buckets.then(|| bucket_count_for(ours.len()));
                (dir, ours, count)
            })
            .collect();
        // Stable: directories asked whole keep their order, then the bucketed ones.
        level.sort_by_key(|(_, _, count)| count.is_some());
        let mut whole = Vec::new();
        let mut asks = Vec::new();
        for (dir, ours, count) in level {
            match count {
                None => whole.push(dir.clone()),
                Some(count) => asks.push(BucketAsk {
                    path: dir.clone(),
                    digests: digests(&ours, count),
                }),
            }
            self.frontier.push(dir);
            self.ours.push(ours);
            self.asked.push(count);
        }
        let mut requests = path_requests(whole, true).map_err(|e| e.to_string())?;
        requests.extend(bucket_requests(asks).map_err(|e| e.to_string())?);
        Ok(requests)
    }

    /// Take one `Nodes` or `Buckets` reply; true once every directory of the level is answered.
    /// The answer to one request may come in several messages (a responder splits replies that
    /// do not fit one frame): directories are matched in the order asked, whatever the messages
    /// they travel in.
    pub fn accept(&mut self, reply: Message) -> Result<bool, String> {
        let remaining = self.frontier.len() - self.theirs.len();
        let fits = |kind: &str, count: usize| {
            if count == 0 || count > remaining {
                return Err(format!(
                    "a {kind} reply of {count} directories when {remaining} remain to be answered"
                ));
            }
            Ok(())
        };
        match reply {
            Message::NodesPart { path, children } => {
                let next = self.frontier.get(self.theirs.len());
                if !self.long_lists {
                    return Err("nodes-part without the negotiated feature long-lists".into());
                }
                if next != Some(&path) {
                    return Err(format!(
                        "a nodes part for {path} when {} is the next directory to be answered",
                        next.map_or("none", RelPath::as_str)
                    ));
                }
                if self.pending.len() + children.len() > MAX_LISTED_CHILDREN {
                    return Err(format!(
                        "{path} listed with more than {MAX_LISTED_CHILDREN} children"
                    ));
                }
                self.pending.extend(children);
                return Ok(false);
            }
            Message::Nodes { nodes } => {
                fits("nodes", nodes.len())?;
                for node in nodes {
                    let at = self.theirs.len();
                    if self.frontier.get(at) != Some(&node.path)
                        || self.asked.get(at) != Some(&None)
                    {
                        return Err("nodes reply does not match the request".into());
                    }
                    let children = self.with_parts(node.children)?;
                    self.theirs.push(Theirs::Whole(children));
                }
            }
            Message::Buckets { nodes } => {
                fits("buckets", nodes.len())?;
                for node in nodes {
                    let at = self.theirs.len();
                    let Some(count) = self
                        .asked
                        .get(at)
                        .copied()
                        .flatten()
                        .filter(|_| self.frontier.get(at) == Some(&node.path))
                    else {
                        return Err("buckets reply does not match the request".into());
                    };
                    let children = self.with_parts(node.children)?;
                    let mut differ = vec![false; count];
                    for &b in &node.differ {
                        let slot = differ
                            .get_mut(usize::from(b))
                            .ok_or_else(|| format!("bucket {b} of {count} in {}", node.path))?;
                        *slot = true;
                    }
                    if let Some(c) = children
                        .iter()
                        .find(|c| !differ[usize::from(bucket_of(&c.name, count))])
                    {
                        return Err(format!(
                            "{} lists {} in a bucket it did not say differs",
                            node.path, c.name
                        ));
                    }
                    self.theirs.push(Theirs::Buckets { differ, children });
                }
            }
            other => return Err(format!("expected nodes, got {}", other.kind())),
        }
        Ok(self.theirs.len() == self.frontier.len())
    }

    /// The children of a directory's reply after those its `NodesPart`s sent (none without).
    fn with_parts(&mut self, children: Vec<NodeChild>) -> Result<Vec<NodeChild>, String> {
        if self.pending.is_empty() {
            return Ok(children);
        }
        if self.pending.len() + children.len() > MAX_LISTED_CHILDREN {
            return Err(format!(
                "a directory listed with more than {MAX_LISTED_CHILDREN} children"
            ));
        }
        let mut all = std::mem::take(&mut self.pending);
        all.extend(children);
        Ok(all)
    }

    /// Compare the level once every reply is in. Moves to the next level and returns our
    /// directories the peer has none of (the caller lists their entries with
    /// [`Descent::add_ours`]).
    pub fn step(&mut self) -> Result<Vec<RelPath>, String> {
        if self.theirs.len() != self.frontier.len() || self.ours.len() != self.frontier.len() {
            return Err(format!(
                "a level of {} directories compared with {} replies and {} of ours",
                self.frontier.len(),
                self.theirs.len(),
                self.ours.len()
            ));
        }
        let mut next = Vec::new();
        let mut only_ours = Vec::new();
        let frontier = std::mem::take(&mut self.frontier);
        let ours = std::mem::take(&mut self.ours);
        let theirs = std::mem::take(&mut self.theirs);
        self.asked.clear();
        for ((dir, ours), theirs) in frontier.iter().zip(ours).zip(theirs) {
            let (ours, theirs) = match theirs {
                Theirs::Whole(children) => (ours, children),
                Theirs::Buckets { differ, children } => {
                    let count = differ.len();
                    let ours = ours
                        .into_iter()
                        .filter(|c| differ[usize::from(bucket_of(&c.name, count))])
                        .collect();
                    (ours, children)
                }
            };
            compare_dir(
                dir,
                &ours,
                &theirs,
                &mut self.out,
                &mut next,
                &mut only_ours,
            )?;
        }
        self.frontier = next;
        Ok(only_ours)
    }

    /// Entry paths under our directories that the peer lacks: all of them differ.
    pub fn add_ours(&mut self, paths: impl IntoIterator<Item = RelPath>) {
        self.out.extend(paths);
    }

    /// Every path found to differ.
    pub fn finish(self) -> BTreeSet<RelPath> {
        self.out
    }
}

/// Compare one directory's children on both sides. A child is keyed by name *and* kind: one
/// name can be a tombstone (a file child) and a directory at once, and each is compared with its
/// own kind on the other side.
fn compare_dir(
    dir: &RelPath,
    ours: &[NodeChild],
    theirs: &[NodeChild],
    out: &mut BTreeSet<RelPath>,
    next: &mut Vec<RelPath>,
    only_ours: &mut Vec<RelPath>,
) -> Result<(), String> {
    let key = |c: &NodeChild| (c.name.clone(), c.kind == ChildKind::File);
    let ours: BTreeMap<(String, bool), &NodeChild> = ours.iter().map(|c| (key(c), c)).collect();
    let theirs: BTreeMap<(String, bool), &NodeChild> = theirs.iter().map(|c| (key(c), c)).collect();
    let keys: BTreeSet<&(String, bool)> = ours.keys().chain(theirs.keys()).collect();
    for k in keys {
        let (name, is_file) = k;
        let (o, t) = (ours.get(k), theirs.get(k));
        if let (Some(o), Some(t)) = (o, t)
            && o.hash == t.hash
        {
            continue;
        }
        let path = dir
            .join(name)
            .map_err(|e| format!("peer sent a bad name: {e}"))?;
        match (is_file, t.is_some()) {
            (true, _) => {
                out.insert(path);
            }
            (false, true) => next.push(path),
            (false, false) => only_ours.push(path),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "descent_tests.rs"]
mod tests;
