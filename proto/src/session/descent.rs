//! Merkle descent: find the paths whose entries differ, visiting only directories whose hashes
//! differ, one round trip per tree level.

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
    let mut out = BTreeSet::new();
    let mut frontier = vec![RelPath::root()];
    while !frontier.is_empty() {
        let remote = remote_children(ctl, &frontier).await?;
        let dirs = frontier.clone();
        let local: Vec<Vec<NodeChild>> = blocking(replica, move |r| {
            dirs.iter()
                .map(|d| r.children(d).map(Option::unwrap_or_default))
                .collect()
        })
        .await?;
        let mut next = Vec::new();
        let mut local_only_dirs = Vec::new();
        for ((dir, ours), theirs) in frontier.iter().zip(local).zip(remote) {
            compare_dir(
                dir,
                &ours,
                &theirs,
                &mut out,
                &mut next,
                &mut local_only_dirs,
            )?;
        }
        if !local_only_dirs.is_empty() {
            let found = blocking(replica, move |r| local_files_under(r, local_only_dirs)).await?;
            out.extend(found);
        }
        frontier = next;
    }
    Ok(out)
}

/// Ask for the children of `dirs` (pipelined batches, replies read while sending) and read the
/// replies: one round trip. The answer to one `GetNodes` may come in several `Nodes` messages
/// (a responder splits replies that do not fit one frame): the directory replies are read in the
/// order asked, whatever the messages they travel in.
async fn remote_children(
    ctl: &mut Control,
    dirs: &[RelPath],
) -> Result<Vec<Vec<NodeChild>>, SessionError> {
    ctl.counters.round_trips += 1;
    let requests: Vec<Message> = dirs
        .chunks(MAX_PATHS_PER_REQUEST)
        .map(|b| Message::GetNodes { paths: b.to_vec() })
        .collect();
    let mut out = Vec::with_capacity(dirs.len());
    let mut expected = dirs.iter();
    ctl.exchange(&requests, |reply| {
        let Message::Nodes { nodes } = reply else {
            return Err(SessionError::Protocol("expected nodes".into()));
        };
        if nodes.is_empty() || nodes.len() > expected.len() {
            return Err(SessionError::Protocol(format!(
                "a nodes reply of {} directories when {} remain to be answered",
                nodes.len(),
                expected.len()
            )));
        }
        for node in nodes {
            if expected.next() != Some(&node.path) {
                return Err(SessionError::Protocol(
                    "nodes reply does not match the request".into(),
                ));
            }
            out.push(node.children);
        }
        Ok(expected.len() == 0)
    })
    .await?;
    Ok(out)
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
    local_only_dirs: &mut Vec<RelPath>,
) -> Result<(), SessionError> {
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
            .map_err(|e| SessionError::Protocol(format!("peer sent a bad name: {e}")))?;
        match (is_file, t.is_some()) {
            (true, _) => {
                out.insert(path);
            }
            (false, true) => next.push(path),
            (false, false) => local_only_dirs.push(path),
        }
    }
    Ok(())
}

/// Every file path at or below `dirs` in our own tree.
fn local_files_under<R: Replica + ?Sized>(
    r: &R,
    mut dirs: Vec<RelPath>,
) -> Result<Vec<RelPath>, crate::replica::ReplicaError> {
    let mut out = Vec::new();
    while let Some(dir) = dirs.pop() {
        for child in r.children(&dir)?.unwrap_or_default() {
            let Ok(path) = dir.join(&child.name) else {
                continue;
            };
            match child.kind {
                ChildKind::Dir => dirs.push(path),
                ChildKind::File => out.push(path),
            }
        }
    }
    Ok(out)
}
