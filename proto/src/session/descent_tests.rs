//! The descent without sockets: both sides are Merkle trees in memory, the peer's replies are
//! built from its tree as a responder builds them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};

use botsync_engine::chunk::ChunkerParams;
use botsync_engine::entry::Mode;
use botsync_engine::merkle::MerkleTree;
use botsync_engine::{
    AgentLabel, Attribution, EntryKind, FileEntry, Hash, PeerId, RelPath, VersionVector,
};
use proptest::prelude::*;

use super::*;
use crate::messages::NodeReply;

fn entry(path: &str, content: &[u8], tombstone: bool) -> FileEntry {
    FileEntry {
        path: RelPath::new(path).unwrap(),
        kind: if tombstone {
            EntryKind::Tombstone
        } else {
            EntryKind::File
        },
        size: if tombstone { 0 } else { content.len() as u64 },
        mtime_ns: 1_700_000_000_000_000_000,
        mode: Mode::default(),
        content: if tombstone {
            Hash::ZERO
        } else {
            Hash::of(content)
        },
        chunks: Vec::new(),
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs([(PeerId([1; 32]), 1)]),
        parent: None,
        changed_by: Attribution {
            peer: PeerId([1; 32]),
            agent: AgentLabel::new("test"),
        },
    }
}

fn children(tree: &MerkleTree, dir: &RelPath) -> Vec<NodeChild> {
    tree.children(dir)
        .unwrap_or_default()
        .into_iter()
        .map(NodeChild::from)
        .collect()
}

/// Run the walk of `ours` against `theirs`: replies split one directory per message, to
/// exercise replies that span several messages. Returns the paths and the round trips.
fn descend(ours: &MerkleTree, theirs: &MerkleTree) -> (BTreeSet<RelPath>, usize) {
    let mut walk = Descent::new();
    let mut levels = 0;
    while !walk.is_done() {
        levels += 1;
        let asked: Vec<RelPath> = walk
            .requests()
            .into_iter()
            .flat_map(|m| match m {
                Message::GetNodes { paths } => paths,
                other => panic!("asked {other:?}"),
            })
            .collect();
        assert_eq!(asked, walk.frontier());
        let mut done = false;
        for dir in &asked {
            assert!(!done, "answered before the last reply");
            let reply = Message::Nodes {
                nodes: vec![NodeReply {
                    path: dir.clone(),
                    children: children(theirs, dir),
                }],
            };
            done = walk.accept(reply).unwrap();
        }
        assert!(done);
        let mine = walk.frontier().iter().map(|d| children(ours, d)).collect();
        let only_ours = walk.step(mine).unwrap();
        let found: Vec<RelPath> = only_ours
            .iter()
            .flat_map(|d| ours.entry_paths_under(d))
            .collect();
        walk.add_ours(found);
    }
    (walk.finish(), levels)
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
    let (paths, levels) = descend(&ours, &theirs);
    let want: BTreeSet<RelPath> = ["memory/2026-12-02.md", "notes/new/idea.md"]
        .iter()
        .map(|p| RelPath::new(p).unwrap())
        .collect();
    assert_eq!(paths, want);
    assert_eq!(levels, 3, "root, memory and notes, notes/new");
    // Seen from the other side, notes/ is ours alone: its entries are listed without asking.
    let (paths, levels) = descend(&theirs, &ours);
    assert_eq!(paths, want);
    assert_eq!(levels, 2);
}

#[test]
fn replies_that_do_not_match_the_request_are_refused() {
    let mut walk = Descent::new();
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
    assert!(
        walk.step(Vec::new()).is_err(),
        "compared before the replies"
    );
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
    /// Law: the descent finds exactly the paths whose entries differ, in either direction.
    #[test]
    fn the_descent_finds_exactly_the_differing_paths(ours in workspace(), theirs in workspace()) {
        let (a, b) = (MerkleTree::build(&ours), MerkleTree::build(&theirs));
        prop_assume!(a.root() != b.root());
        let (found, _) = descend(&a, &b);
        prop_assert_eq!(found, naive(&ours, &theirs));
    }
}
