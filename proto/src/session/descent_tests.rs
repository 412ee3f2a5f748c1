//! The descent without sockets: both sides are Merkle trees in memory, the peer's replies are
//! built from its tree as a responder builds them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};

use botsync_engine::merkle::MerkleTree;
use botsync_engine::{EntryKind, FileEntry, Hash, RelPath};
use proptest::prelude::*;

use super::*;
use crate::messages::NodeReply;
use crate::messages::buckets::BUCKET_FROM_CHILDREN;
use crate::messages::buckets::answer;
use crate::testing::file_entry as entry;

fn children(tree: &MerkleTree, dir: &RelPath) -> Vec<NodeChild> {
    tree.children(dir)
        .unwrap_or_default()
        .into_iter()
        .map(NodeChild::from)
        .collect()
}

/// Run the walk of `ours` against `theirs` (directories of at least `bucket_from` children by
/// buckets, if given): replies one directory per message, to exercise replies that span several
/// messages. Returns the paths, the round trips and the encoded bytes of the replies.
fn descend(
    ours: &MerkleTree,
    theirs: &MerkleTree,
    bucket_from: Option<usize>,
) -> (BTreeSet<RelPath>, usize, usize) {
    let mut walk = match bucket_from {
        Some(n) => Descent::with_buckets(n),
        None => Descent::new(),
    };
    let (mut levels, mut bytes) = (0, 0);
    while !walk.is_done() {
        levels += 1;
        let mine = walk.frontier().iter().map(|d| children(ours, d)).collect();
        let mut replies = Vec::new();
        for request in walk.requests(mine).unwrap() {
            match request {
                Message::GetNodes { paths } => {
                    replies.extend(paths.iter().map(|dir| Message::Nodes {
                        nodes: vec![NodeReply {
                            path: dir.clone(),
                            children: children(theirs, dir),
                        }],
                    }))
                }
                Message::GetBuckets { dirs } => {
                    replies.extend(dirs.iter().map(|ask| Message::Buckets {
                        nodes: vec![answer(ask, children(theirs, &ask.path))],
                    }))
                }
                other => panic!("asked {other:?}"),
            }
        }
        let count = replies.len();
        for (i, reply) in replies.into_iter().enumerate() {
            bytes += crate::codec::encode(&reply).unwrap().len();
            assert_eq!(walk.accept(reply).unwrap(), i + 1 == count);
        }
        let only_ours = walk.step().unwrap();
        let found: Vec<RelPath> = only_ours
            .iter()
            .flat_map(|d| ours.entry_paths_under(d))
            .collect();
        walk.add_ours(found);
    }
    (walk.finish(), levels, bytes)
}

/// The paths whose entries differ, by brute force.
fn naive(ours: &[FileEntry], theirs: &[FileEntry]) -> BTreeSet<RelPath> {
    let by = |es: &[FileEntry]| -> BTreeMap<RelPath, (EntryKind, Hash)> {
        es.iter()
            .map(|e| (e.path.clone(), (e.kind, e.content)))
            .collect()
    };
    let (o, t) = (by(ours), by(theirs));
    o.keys()
        .chain(t.keys())
        .filter(|p| o.get(*p) != t.get(*p))
        .cloned()
        .collect()
}

#[test]
fn only_the_changed_directory_is_visited() {
    let base = vec![
        entry("MEMORY.md", b"memory", false),
        entry("memory/2026-12-01.md", b"one", false),
        entry("memory/2026-12-02.md", b"two", false),
        entry("skills/web/SKILL.md", b"web", false),
    ];
    let mut edited = base.clone();
    edited[2] = entry("memory/2026-12-02.md", b"two, edited", false);
    edited.push(entry("notes/new/idea.md", b"idea", false));
    let (ours, theirs) = (MerkleTree::build(&base), MerkleTree::build(&edited));
    let (paths, levels, _) = descend(&ours, &theirs, None);
    let want: BTreeSet<RelPath> = ["memory/2026-12-02.md", "notes/new/idea.md"]
        .iter()
        .map(|p| RelPath::new(p).unwrap())
        .collect();
    assert_eq!(paths, want);
    assert_eq!(levels, 3, "root, memory and notes, notes/new");
    // Seen from the other side, notes/ is ours alone: its entries are listed without asking.
    let (paths, levels, _) = descend(&theirs, &ours, None);
    assert_eq!(paths, want);
    assert_eq!(levels, 2);
}

#[test]
fn replies_that_do_not_match_the_request_are_refused() {
    let mut walk = Descent::new();
    assert!(walk.step().is_err(), "compared before the replies");
    walk.requests(vec![Vec::new()]).unwrap();
    let other = RelPath::new("memory").unwrap();
    let wrong_dir = Message::Nodes {
        nodes: vec![NodeReply {
            path: other.clone(),
            children: Vec::new(),
        }],
    };
    assert!(walk.accept(wrong_dir).is_err());
    let two = Message::Nodes {
        nodes: vec![
            NodeReply {
                path: RelPath::root(),
                children: Vec::new(),
            },
            NodeReply {
                path: other,
                children: Vec::new(),
            },
        ],
    };
    assert!(walk.accept(two).is_err(), "more directories than asked");
    assert!(walk.accept(Message::Goodbye).is_err());
    let bucketed = Message::Buckets {
        nodes: vec![answer(
            &BucketAsk {
                path: RelPath::root(),
                digests: digests(&[], 16),
            },
            Vec::new(),
        )],
    };
    assert!(
        walk.accept(bucketed).is_err(),
        "buckets for a directory asked whole"
    );
}

/// The agent workspace's case: 3,000 notes in one directory, two of them edited. Asked by
/// buckets, the reply lists a few dozen children instead of all of them.
#[test]
fn a_large_directory_with_two_edits_costs_a_few_buckets() {
    let base: Vec<FileEntry> = (0..3_000)
        .map(|i| {
            entry(
                &format!("memory/notes/n{i:05}-a-note.md"),
                &[1, (i % 251) as u8],
                false,
            )
        })
        .collect();
    let mut edited = base.clone();
    edited[17] = entry("memory/notes/n00017-a-note.md", b"edited", false);
    edited[2_900] = entry("memory/notes/n02900-a-note.md", b"edited too", false);
    let (ours, theirs) = (MerkleTree::build(&base), MerkleTree::build(&edited));
    let (whole, _, whole_bytes) = descend(&ours, &theirs, None);
    let (bucketed, levels, bucket_bytes) = descend(&ours, &theirs, Some(BUCKET_FROM_CHILDREN));
    assert_eq!(whole, bucketed);
    assert_eq!(whole.len(), 2);
    assert_eq!(levels, 3);
    assert!(whole_bytes > 150_000, "{whole_bytes} bytes listed whole");
    assert!(bucket_bytes < 2_000, "{bucket_bytes} bytes by buckets");
}

fn workspace() -> impl Strategy<Value = Vec<FileEntry>> {
    let name = prop::sample::select(vec!["a", "b", "c.md", "d"]);
    let path = prop::collection::vec(name, 1..4).prop_map(|parts| parts.join("/"));
    prop::collection::btree_map(path, (0u8..3, any::<bool>()), 0..24).prop_map(|m| {
        // A path that is also a directory of another path cannot be a file: keep the deeper.
        let dirs: BTreeSet<String> = m
            .keys()
            .flat_map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                (1..parts.len())
                    .map(|i| parts[..i].join("/"))
                    .collect::<Vec<_>>()
            })
            .collect();
        m.into_iter()
            .filter(|(p, _)| !dirs.contains(p))
            .map(|(p, (v, tomb))| entry(&p, &[v], tomb))
            .collect()
    })
}

proptest! {
    /// Law: the descent finds exactly the paths whose entries differ, in either direction,
    /// whether directories are listed whole or compared by buckets (from two children on, so
    /// that the small trees here exercise them).
    #[test]
    fn the_descent_finds_exactly_the_differing_paths(ours in workspace(), theirs in workspace()) {
        let (a, b) = (MerkleTree::build(&ours), MerkleTree::build(&theirs));
        prop_assume!(a.root() != b.root());
        let want = naive(&ours, &theirs);
        let (found, _, _) = descend(&a, &b, None);
        prop_assert_eq!(&found, &want);
        let (found, _, _) = descend(&a, &b, Some(2));
        prop_assert_eq!(&found, &want);
    }
}

/// The walk against a peer that negotiated `LONG_LISTS`: its replies are packed as the
/// responder packs them (`long_node_batches`, `long_bucket_batches`), listings too long for one
/// reply split into `NodesPart`s. Returns the paths and the messages received.
fn descend_long(ours: &MerkleTree, theirs: &MerkleTree) -> (BTreeSet<RelPath>, Vec<String>) {
    use crate::messages::{long_bucket_batches, long_node_batches};
    let mut walk = Descent::with_buckets(BUCKET_FROM_CHILDREN).with_long_lists();
    let mut seen = Vec::new();
    while !walk.is_done() {
        let mine = walk.frontier().iter().map(|d| children(ours, d)).collect();
        let mut replies = Vec::new();
        for request in walk.requests(mine).unwrap() {
            replies.extend(match request {
                Message::GetNodes { paths } => {
                    long_node_batches(paths.iter().map(|dir| NodeReply {
                        path: dir.clone(),
                        children: children(theirs, dir),
                    }))
                    .unwrap()
                }
                Message::GetBuckets { dirs } => long_bucket_batches(
                    dirs.iter()
                        .map(|ask| answer(ask, children(theirs, &ask.path))),
                )
                .unwrap(),
                other => panic!("asked {other:?}"),
            });
        }
        let count = replies.len();
        for (i, reply) in replies.into_iter().enumerate() {
            let bytes = crate::codec::encode(&reply).unwrap();
            let reply = crate::codec::decode(&bytes).unwrap();
            seen.push(reply.kind().to_owned());
            assert_eq!(walk.accept(reply).unwrap(), i + 1 == count);
        }
        let only_ours = walk.step().unwrap();
        let found: Vec<RelPath> = only_ours
            .iter()
            .flat_map(|d| ours.entry_paths_under(d))
            .collect();
        walk.add_ours(found);
    }
    (walk.finish(), seen)
}

/// A directory of 70,000 notes, more children than one reply may list: listed whole to a peer
/// that has none of them, then by buckets to one that has 300; both find exactly what differs.
#[test]
fn a_directory_of_more_children_than_one_reply_is_listed_in_parts() {
    let note = |i: usize| entry(&format!("logs/n{i:05}.md"), b"x", false);
    let mut theirs: Vec<FileEntry> = (0..70_000).map(note).collect();
    theirs.push(entry("MEMORY.md", b"m", false));
    theirs.push(entry("zz/last.md", b"z", false));
    let tree = MerkleTree::build(&theirs);

    let ours = vec![entry("MEMORY.md", b"m", false)];
    let (paths, seen) = descend_long(&MerkleTree::build(&ours), &tree);
    assert_eq!(paths, naive(&ours, &theirs));
    assert!(seen.iter().any(|k| k == "nodes-part"), "{seen:?}");

    let ours: Vec<FileEntry> = (0..300).map(|i| note(i * 7)).collect();
    let (paths, seen) = descend_long(&MerkleTree::build(&ours), &tree);
    assert_eq!(paths, naive(&ours, &theirs));
    assert!(seen.iter().any(|k| k == "nodes-part"), "{seen:?}");
    assert!(seen.iter().any(|k| k == "buckets"), "{seen:?}");
}

#[test]
fn a_nodes_part_without_the_feature_or_for_another_directory_is_refused() {
    let part = |dir: &str| Message::NodesPart {
        path: RelPath::new(dir).unwrap_or_else(|_| RelPath::root()),
        children: Vec::new(),
    };
    let mut walk = Descent::new();
    walk.requests(vec![Vec::new()]).unwrap();
    let err = walk.accept(part("")).unwrap_err();
    assert!(err.contains("without the negotiated feature"), "{err}");

    let mut walk = Descent::new().with_long_lists();
    walk.requests(vec![Vec::new()]).unwrap();
    let err = walk.accept(part("memory")).unwrap_err();
    assert!(err.contains("nodes part for memory"), "{err}");
    assert_eq!(walk.accept(part("")), Ok(false), "a part is not the answer");
}
