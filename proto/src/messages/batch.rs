//! Packing long lists into messages that respect both the count caps and [`MAX_FRAME`].
//!
//! A reply with 20 000 entries, a `Nodes` reply for 1 024 large directories or a request for
//! 5 000 paths does not fit one message. These helpers split them by exact encoded size so that
//! every message encodes, leaving room for the header fields; the session sends every list
//! through them. They own only the splitting; what to ask for and in which order is the
//! session's business.

use botsync_engine::RelPath;
use botsync_engine::plan::ItemReport;

use super::WireReport;

use super::{BucketAsk, BucketReply, Message, NodeChild, NodeReply, WireEntry};
use crate::codec::{CodecError, claimed_len, encoded_len};
use crate::limits::{
    MAX_ENTRIES_PER_BATCH, MAX_FRAME, MAX_LISTED_CHILDREN, MAX_NODE_CHILDREN, MAX_NODES_PER_REPLY,
    MAX_PATHS_PER_REQUEST,
};

/// Bytes kept free in every batch for the tag, list length and flags.
const HEADROOM: usize = 64;

/// Split entries into `Entries` batches; the last batch has `last` set. No entries give one
/// empty batch with `last` set, so a reply always terminates.
pub fn entry_batches(
    entries: impl IntoIterator<Item = WireEntry>,
) -> Result<Vec<Message>, CodecError> {
    flagged_batches(entries, MAX_ENTRIES_PER_BATCH, |entries, last| {
        Message::Entries { entries, last }
    })
}

/// Split `items` into messages made by `make(group, last)`: at most `max_items` each, each
/// within the frame, the last with `last` set; no items give one empty message with `last` set.
/// `Entries`, `Offer` and `OfferResult` batches are made here.
pub fn flagged_batches<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
    max_items: usize,
    make: impl Fn(Vec<T>, bool) -> Message,
) -> Result<Vec<Message>, CodecError> {
    let groups = pack(items, max_items)?;
    let count = groups.len();
    Ok(groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| make(group, i + 1 == count))
        .collect())
}

/// Split state records into `State` batches; the last has `last` set, and no records give one
/// empty batch with `last` set.
pub fn state_batches(
    records: impl IntoIterator<Item = super::WireState>,
) -> Result<Vec<Message>, CodecError> {
    flagged_batches(
        records,
        crate::limits::MAX_STATE_RECORDS_PER_BATCH,
        |records, last| Message::State { records, last },
    )
}

/// Split `OfferResult` items into batches; the last has `last` set.
pub fn result_batches(
    items: impl IntoIterator<Item = ItemReport>,
) -> Result<Vec<Message>, CodecError> {
    flagged_batches(
        items.into_iter().map(WireReport::from),
        MAX_ENTRIES_PER_BATCH,
        |items, last| Message::OfferResult { items, last },
    )
}

/// Split the answer to one `GetNodes` into `Nodes` messages, each holding whole directory
/// replies in the order asked (the requester reads messages until it has one reply per path).
/// A single directory whose children do not fit one frame, or are more than
/// [`MAX_NODE_CHILDREN`] (which the asker refuses), is an error: its listing cannot be sent.
pub fn node_batches(
    nodes: impl IntoIterator<Item = NodeReply>,
) -> Result<Vec<Message>, CodecError> {
    let nodes: Vec<NodeReply> = nodes.into_iter().collect();
    for n in &nodes {
        CodecError::check_limit(
            "children of a directory",
            n.children.len(),
            MAX_NODE_CHILDREN,
        )?;
    }
    let groups = pack(nodes, MAX_NODES_PER_REPLY)?;
    Ok(groups
        .into_iter()
        .map(|nodes| Message::Nodes { nodes })
        .collect())
}

/// [`node_batches`] for a peer that negotiated `LONG_LISTS`: a directory whose listing does not
/// fit one reply (more than [`MAX_NODE_CHILDREN`] children, or more bytes than a frame) goes
/// first as `NodesPart` messages of its first children, and its reply carries the rest. Only a
/// directory of more than [`MAX_LISTED_CHILDREN`] children is an error.
pub fn long_node_batches(
    nodes: impl IntoIterator<Item = NodeReply>,
) -> Result<Vec<Message>, CodecError> {
    long_batches(
        nodes,
        |n| (&n.path, &mut n.children, 0),
        |nodes| Message::Nodes { nodes },
    )
}

/// [`bucket_batches`] for a peer that negotiated `LONG_LISTS`, as [`long_node_batches`].
pub fn long_bucket_batches(
    nodes: impl IntoIterator<Item = BucketReply>,
) -> Result<Vec<Message>, CodecError> {
    long_batches(
        nodes,
        |n| {
            let differ = claimed_len(&n.differ).unwrap_or(usize::MAX / 4);
            (&n.path, &mut n.children, differ)
        },
        |nodes| Message::Buckets { nodes },
    )
}

/// Replies packed as [`pack`] does, with every listing too long for one reply split: its first
/// children in `NodesPart` messages right before the message that holds the reply (the asker
/// prepends them to the next directory it waits for). `parts` gives a reply's path, its
/// children and the bytes of its other fields.
fn long_batches<T: serde::Serialize>(
    nodes: impl IntoIterator<Item = T>,
    parts: impl Fn(&mut T) -> (&RelPath, &mut Vec<NodeChild>, usize),
    make: impl Fn(Vec<T>) -> Message,
) -> Result<Vec<Message>, CodecError> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    for mut node in nodes {
        let whole = encoded_len(&node)?.max(claimed_len(&node)?);
        let (path, children, other) = parts(&mut node);
        if children.len() <= MAX_NODE_CHILDREN && whole <= MAX_FRAME - HEADROOM {
            run.push(node);
            continue;
        }
        CodecError::check_limit(
            "children of a directory",
            children.len(),
            MAX_LISTED_CHILDREN,
        )?;
        // What each part holds besides its children: the path, and in the reply the other
        // fields (the differing buckets).
        let reserve = claimed_len(path)?.max(encoded_len(path)?) + other + HEADROOM;
        let budget = (MAX_FRAME - HEADROOM).saturating_sub(reserve);
        let mut groups = pack_within(std::mem::take(children), MAX_NODE_CHILDREN, budget)?;
        let rest = groups.pop().unwrap_or_default();
        if !run.is_empty() {
            out.extend(
                pack(std::mem::take(&mut run), MAX_NODES_PER_REPLY)?
                    .into_iter()
                    .map(&make),
            );
        }
        out.extend(groups.into_iter().map(|children| Message::NodesPart {
            path: path.clone(),
            children,
        }));
        *children = rest;
        run.push(node);
    }
    if !run.is_empty() {
        out.extend(pack(run, MAX_NODES_PER_REPLY)?.into_iter().map(&make));
    }
    Ok(out)
}

/// Split the answer to one `GetBuckets` into `Buckets` messages, as [`node_batches`] does.
pub fn bucket_batches(
    nodes: impl IntoIterator<Item = BucketReply>,
) -> Result<Vec<Message>, CodecError> {
    let nodes: Vec<BucketReply> = nodes.into_iter().collect();
    for n in &nodes {
        CodecError::check_limit(
            "children of a directory",
            n.children.len(),
            MAX_NODE_CHILDREN,
        )?;
    }
    let groups = pack(nodes, MAX_NODES_PER_REPLY)?;
    Ok(groups
        .into_iter()
        .map(|nodes| Message::Buckets { nodes })
        .collect())
}

/// Split bucket asks into `GetBuckets` requests, each within the frame. No asks give no request.
pub fn bucket_requests(
    dirs: impl IntoIterator<Item = BucketAsk>,
) -> Result<Vec<Message>, CodecError> {
    let mut groups = pack(dirs, MAX_PATHS_PER_REQUEST)?;
    if groups.first().is_some_and(Vec::is_empty) {
        groups.clear();
    }
    Ok(groups
        .into_iter()
        .map(|dirs| Message::GetBuckets { dirs })
        .collect())
}

/// Split paths into `GetNodes` (if `nodes`) or `GetEntries` requests. No paths give no request.
pub fn path_requests(
    paths: impl IntoIterator<Item = RelPath>,
    nodes: bool,
) -> Result<Vec<Message>, CodecError> {
    let mut groups = pack(paths, MAX_PATHS_PER_REQUEST)?;
    if groups.first().is_some_and(Vec::is_empty) {
        groups.clear();
    }
    Ok(groups
        .into_iter()
        .map(|paths| {
            if nodes {
                Message::GetNodes { paths }
            } else {
                Message::GetEntries { paths }
            }
        })
        .collect())
}

/// Group items so each group has at most `max_items` and encodes within the frame; always at
/// least one (possibly empty) group.
fn pack<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
    max_items: usize,
) -> Result<Vec<Vec<T>>, CodecError> {
    pack_within(items, max_items, MAX_FRAME - HEADROOM)
}

/// [`pack`] with groups of at most `budget` bytes.
fn pack_within<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
    max_items: usize,
    budget: usize,
) -> Result<Vec<Vec<T>>, CodecError> {
    let mut groups = vec![Vec::new()];
    let mut bytes = 0;
    for item in items {
        // The wire bytes, or what the receiver's decoder counts if that is more.
        let len = encoded_len(&item)?.max(claimed_len(&item)?);
        CodecError::check_limit("one batch item in bytes", len, budget)?;
        let full = groups
            .last()
            .is_some_and(|g: &Vec<T>| g.len() == max_items || bytes + len > budget);
        if full {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(group) = groups.last_mut() {
            group.push(item);
        }
    }
    Ok(groups)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::codec::encode;

    fn long_path(i: usize) -> RelPath {
        // 16 components of 255 bytes: 4095 bytes, just under the path limit.
        let comp = format!("{i:0>255}");
        RelPath::new(&vec![comp; 16].join("/")).unwrap()
    }

    #[test]
    fn requests_split_by_count() {
        let paths: Vec<RelPath> = (0..2500)
            .map(|i| RelPath::new(&format!("f{i}")).unwrap())
            .collect();
        let requests = path_requests(paths.clone(), true).unwrap();
        assert_eq!(requests.len(), 3);
        let mut back = Vec::new();
        for r in requests {
            encode(&r).unwrap();
            let Message::GetNodes { paths } = r else {
                panic!("not a get-nodes: {r}")
            };
            back.extend(paths);
        }
        assert_eq!(back, paths);
    }

    #[test]
    fn requests_split_by_bytes() {
        let paths: Vec<RelPath> = (0..1024).map(long_path).collect();
        let requests = path_requests(paths, false).unwrap();
        assert!(requests.len() >= 2, "{} requests", requests.len());
        assert!(requests.iter().all(|r| encode(r).is_ok()));
    }

    fn big_dir(i: usize, children: usize) -> NodeReply {
        NodeReply {
            path: RelPath::new(&format!("d{i}")).unwrap(),
            children: (0..children)
                .map(|c| crate::messages::NodeChild {
                    name: format!("{c:0>200}"),
                    kind: crate::messages::ChildKind::File,
                    hash: botsync_engine::Hash::ZERO,
                })
                .collect(),
        }
    }

    #[test]
    fn nodes_replies_split_by_bytes_keep_every_directory_whole_and_in_order() {
        // 24 directories of 1000 children with 200-byte names: about 5.6 MB in one reply.
        let nodes: Vec<NodeReply> = (0..24).map(|i| big_dir(i, 1000)).collect();
        let batches = node_batches(nodes.clone()).unwrap();
        assert!(batches.len() >= 2, "{} batches", batches.len());
        let mut back = Vec::new();
        for b in batches {
            assert!(encode(&b).is_ok());
            let Message::Nodes { nodes } = b else {
                panic!("not nodes: {b}")
            };
            back.extend(nodes);
        }
        assert_eq!(back, nodes);
    }

    #[test]
    fn nodes_replies_of_many_small_children_decode_on_the_other_side() {
        // The shape of a workspace of 10^6 notes, 1,000 per directory: names of 10 bytes take
        // 44 bytes on the wire and more once decoded (a 1-byte length is a `usize`, a 1-byte
        // variant a `u32`). Found by the scaling run: batches packed to the frame by wire size
        // were refused by the receiver's decoder ("a length inside the message exceeds the
        // 4194304-byte frame limit").
        let nodes: Vec<NodeReply> = (0..200)
            .map(|i| NodeReply {
                path: RelPath::new(&format!("memory/d{i:04}")).unwrap(),
                children: (0..1000)
                    .map(|c| crate::messages::NodeChild {
                        name: format!("n{c:05}.md"),
                        kind: crate::messages::ChildKind::File,
                        hash: botsync_engine::Hash::of(&[c as u8]),
                    })
                    .collect(),
            })
            .collect();
        let batches = node_batches(nodes.clone()).unwrap();
        assert!(batches.len() >= 3, "{} batches", batches.len());
        let mut back = Vec::new();
        for b in batches {
            let bytes = encode(&b).unwrap();
            let Message::Nodes { nodes } = crate::codec::decode(&bytes).unwrap() else {
                panic!("not nodes: {b}")
            };
            back.extend(nodes);
        }
        assert_eq!(back, nodes);
    }

    #[test]
    fn a_directory_too_large_for_one_frame_is_refused_not_sent() {
        let err = node_batches(vec![big_dir(0, 20_000)]).unwrap_err();
        assert!(err.to_string().contains("batch item"), "{err}");
    }

    #[test]
    fn no_paths_no_requests_but_entries_always_terminate() {
        assert!(path_requests(Vec::new(), true).unwrap().is_empty());
        let batches = entry_batches(Vec::new()).unwrap();
        assert_eq!(
            batches,
            vec![Message::Entries {
                entries: Vec::new(),
                last: true
            }]
        );
    }
}
