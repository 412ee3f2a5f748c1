//! Merkle descent: find the paths whose entries differ, visiting only directories whose hashes
//! differ, one round trip per tree level.
//!
//! [`Descent`] is the walk as a pure state machine: it says which directories to ask about
//! ([`Descent::requests`]), takes the peer's `Nodes` replies ([`Descent::accept`]) and our own
//! children of the same directories ([`Descent::step`]), and says which of our directories the
//! peer lacks entirely, whose entry paths it then takes ([`Descent::add_ours`]). It does no I/O;
//! [`differing_paths`] drives it over the control stream and the replica.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use botsync_engine::RelPath;

use super::{Control, SessionError, blocking};
use crate::limits::MAX_PATHS_PER_REQUEST;
use crate::messages::{ChildKind, Message, NodeChild};
use crate::replica::Replica;

/// Walk both Merkle trees from the root and return every file path (ours or theirs) whose
/// leaf differs. The caller knows the roots differ.
pub(crate) async fn differing_paths<R: Replica + ?Sized>(
    ctl: &mut Control,
    replica: &Arc<R>,
) -> Result<BTreeSet<RelPath>, SessionError> {
    let mut walk = Descent::new();
    while !walk.is_done() {
        ctl.counters.round_trips += 1;
        let requests = walk.requests();
        ctl.exchange(&requests, |reply| {
            walk.accept(reply).map_err(SessionError::Protocol)
        })
        .await?;
        let dirs = walk.frontier().to_vec();
        let ours: Vec<Vec<NodeChild>> = blocking(replica, move |r| {
            dirs.iter()
                .map(|d| r.children(d).map(Option::unwrap_or_default))
                .collect()
        })
        .await?;
        let only_ours = walk.step(ours).map_err(SessionError::Protocol)?;
        if !only_ours.is_empty() {
            let found = blocking(replica, move |r| r.paths_under(&only_ours)).await?;
            walk.add_ours(found);
        }
    }
    Ok(walk.finish())
}

/// The Merkle descent as a pure state machine; see the module docs.
#[derive(Debug)]
pub struct Descent {
    /// The directories of this level, in the order they are asked.
    frontier: Vec<RelPath>,
    /// The peer's children of the frontier directories answered so far, in that order.
    theirs: Vec<Vec<NodeChild>>,
    /// Paths found to differ.
    out: BTreeSet<RelPath>,
}

impl Default for Descent {
    fn default() -> Self {
        Descent::new()
    }
}

impl Descent {
    /// Start at the root (whose hashes the caller knows differ).
    pub fn new() -> Descent {
        Descent {
            frontier: vec![RelPath::root()],
            theirs: Vec::new(),
            out: BTreeSet::new(),
        }
    }

    /// True when no directory is left to compare.
    pub fn is_done(&self) -> bool {
        self.frontier.is_empty()
    }

    /// The directories of the current level.
    pub fn frontier(&self) -> &[RelPath] {
        &self.frontier
    }

    /// The `GetNodes` requests of the current level (several when it has many directories).
    pub fn requests(&self) -> Vec<Message> {
        self.frontier
            .chunks(MAX_PATHS_PER_REQUEST)
            .map(|b| Message::GetNodes { paths: b.to_vec() })
            .collect()
    }

    /// Take one `Nodes` reply; true once every directory of the level is answered. The answer
    /// to one `GetNodes` may come in several `Nodes` messages (a responder splits replies that
    /// do not fit one frame): directories are matched in the order asked, whatever the messages
    /// they travel in.
    pub fn accept(&mut self, reply: Message) -> Result<bool, String> {
        let Message::Nodes { nodes } = reply else {
            return Err(format!("expected nodes, got {}", reply.kind()));
        };
        let remaining = self.frontier.len() - self.theirs.len();
        if nodes.is_empty() || nodes.len() > remaining {
            return Err(format!(
                "a nodes reply of {} directories when {remaining} remain to be answered",
                nodes.len()
            ));
        }
        for node in nodes {
            if self.frontier.get(self.theirs.len()) != Some(&node.path) {
                return Err("nodes reply does not match the request".into());
            }
            self.theirs.push(node.children);
        }
        Ok(self.theirs.len() == self.frontier.len())
    }

    /// Compare the level once every reply is in: `ours` are our children of the frontier
    /// directories, in order. Moves to the next level and returns our directories the peer has
    /// none of (the caller lists their entries with [`Descent::add_ours`]).
    pub fn step(&mut self, ours: Vec<Vec<NodeChild>>) -> Result<Vec<RelPath>, String> {
        if self.theirs.len() != self.frontier.len() || ours.len() != self.frontier.len() {
            return Err(format!(
                "a level of {} directories compared with {} replies and {} of ours",
                self.frontier.len(),
                self.theirs.len(),
                ours.len()
            ));
        }
        let mut next = Vec::new();
        let mut only_ours = Vec::new();
        let theirs = std::mem::take(&mut self.theirs);
        for ((dir, ours), theirs) in self.frontier.iter().zip(&ours).zip(&theirs) {
            compare_dir(dir, ours, theirs, &mut self.out, &mut next, &mut only_ours)?;
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
