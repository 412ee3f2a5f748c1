//! The initiator's walks (the Merkle descent, the entries exchange, the chunk-tree rebuild) fed
//! what an honest responder sends, as frames: each walk completes with what was sent. These
//! streams are the seed corpus of the `initiator_replies` fuzz target (written here with
//! `BOTSYNC_BLESS=1`), and they replay on every run.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use botsync_engine::chunktree::{ChunkTree, Rebuild};
use botsync_engine::{ChunkRef, Hash, MachineName, RelPath};
use botsync_proto::frame::{FrameDecoder, encode_frame};
use botsync_proto::messages::buckets::{answer, digests};
use botsync_proto::messages::{
    BucketAsk, ChildKind, Message, NodeChild, NodeReply, TreeAddr, TreeNodeReply, WireEntry,
};
use botsync_proto::session::descent::Descent;
use botsync_proto::session::entries::EntriesAsked;

/// The fuzz target's fixed local side: the same two children in every directory.
fn ours() -> Vec<NodeChild> {
    vec![
        NodeChild {
            name: "a.md".into(),
            kind: ChildKind::File,
            hash: Hash::of(b"a"),
        },
        NodeChild {
            name: "memory".into(),
            kind: ChildKind::Dir,
            hash: Hash::of(b"memory"),
        },
    ]
}

/// The responder's root: `a.md` changed, `memory/` unchanged, `notes.md` new.
fn theirs() -> Vec<NodeChild> {
    let mut t = ours();
    t[0].hash = Hash::of(b"a, edited");
    t.push(NodeChild {
        name: "notes.md".into(),
        kind: ChildKind::File,
        hash: Hash::of(b"notes"),
    });
    t
}

fn chunks(n: usize) -> Vec<ChunkRef> {
    (0..n)
        .map(|i| ChunkRef {
            id: Hash::of(&(i as u64).to_le_bytes()),
            len: 4096,
        })
        .collect()
}

/// (seed name, first byte, replies).
fn seeds() -> Vec<(&'static str, u8, Vec<Message>)> {
    let root = RelPath::root();
    let whole = vec![Message::Nodes {
        nodes: vec![NodeReply {
            path: root.clone(),
            children: theirs(),
        }],
    }];
    let ask = BucketAsk {
        path: root.clone(),
        digests: digests(&ours(), 16),
    };
    let by_buckets = vec![Message::Buckets {
        nodes: vec![answer(&ask, theirs())],
    }];
    let entry = |p: &str| {
        let file = botsync_engine::FileEntry {
            path: RelPath::new(p).unwrap(),
            kind: botsync_engine::EntryKind::Tombstone,
            size: 0,
            mtime_ns: 1,
            mode: botsync_engine::entry::Mode::default(),
            content: Hash::ZERO,
            chunks: Vec::new(),
            chunker: botsync_engine::ChunkerParams::DEFAULT,
            version: botsync_engine::VersionVector::from_pairs([(
                botsync_engine::PeerId([1; 32]),
                2,
            )]),
            parent: None,
            changed_by: botsync_engine::Attribution {
                peer: botsync_engine::PeerId([1; 32]),
                agent: botsync_engine::AgentLabel::new("seed"),
                machine: MachineName::default(),
            },
        };
        WireEntry::new(file, 1024)
    };
    let entries = vec![
        Message::Entries {
            entries: vec![entry("a.md")],
            last: false,
        },
        Message::Entries {
            entries: vec![entry("notes/c.md")],
            last: true,
        },
    ];
    // A 123-chunk file (pick 11: (11 >> 2) * 61 + 1): its root and both leaves in one reply.
    let tree = ChunkTree::new(chunks(123));
    let nodes = [
        TreeAddr { level: 1, index: 0 },
        TreeAddr { level: 0, index: 0 },
        TreeAddr { level: 0, index: 1 },
    ]
    .iter()
    .map(|a| TreeNodeReply::from_tree(&tree, *a).unwrap())
    .collect();
    let rebuild = vec![Message::TreeNodes {
        content: tree.root(),
        nodes,
    }];
    vec![
        ("descent-whole", 0, whole),
        ("descent-buckets", 1, by_buckets),
        ("entries", 2, entries),
        ("rebuild-123", 11, rebuild),
    ]
}

/// Run one seed's walk over its frames; true if the walk completed.
fn completes(pick: u8, stream: &[u8]) -> bool {
    let mut d = FrameDecoder::new();
    d.push(stream);
    let mut replies = Vec::new();
    while let Ok(Some(m)) = d.pop() {
        replies.push(m);
    }
    match pick & 3 {
        0 | 1 => {
            let mut walk = if pick & 3 == 1 {
                Descent::with_buckets(1)
            } else {
                Descent::new()
            };
            walk.requests(vec![ours()]).unwrap();
            let mut done = false;
            for r in replies {
                done = walk.accept(r).unwrap();
            }
            assert!(done);
            // a.md and notes.md differ; memory/ is equal on both sides.
            walk.step().unwrap().is_empty() && walk.is_done() && walk.finish().len() == 2
        }
        2 => {
            let asked: Vec<RelPath> = ["a.md", "memory/b.md", "notes/c.md"]
                .iter()
                .map(|p| RelPath::new(p).unwrap())
                .collect();
            let (mut phase, _) = EntriesAsked::new(&asked);
            let mut done = false;
            for r in replies {
                done = phase.accept(r).unwrap();
            }
            done && phase.finish().len() == 2
        }
        _ => {
            let count = u64::from(pick >> 2) * 61 + 1;
            let Some(Message::TreeNodes { content, .. }) = replies.first() else {
                return false;
            };
            let mut walk = Rebuild::new(*content, count, ChunkTree::new(Vec::new())).unwrap();
            for r in replies {
                let Message::TreeNodes { nodes, .. } = r else {
                    return false;
                };
                for n in nodes {
                    let (addr, children) = n.into_children().unwrap();
                    walk.accept(addr, children).unwrap();
                }
            }
            walk.finish() == Some(chunks(123))
        }
    }
}

#[test]
fn honest_replies_complete_every_walk_and_the_fuzz_seeds_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/initiator_replies");
    if std::env::var_os("BOTSYNC_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, pick, replies) in seeds() {
            let mut bytes = vec![pick];
            for m in &replies {
                bytes.extend(encode_frame(m).unwrap());
            }
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, _, _) in seeds() {
        let data = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run with BOTSYNC_BLESS=1 to write it"));
        let (&pick, stream) = data.split_first().unwrap();
        assert!(completes(pick, stream), "{name}: the walk did not complete");
    }
}
