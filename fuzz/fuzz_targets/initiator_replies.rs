//! What a responder sends the initiator's walks: the first byte picks the walk (bits 0-1: the
//! Merkle descent listed whole, the descent by buckets, the entries exchange, the chunk-tree
//! rebuild; bits 2-7: the rebuild's declared chunk count), the rest is a stream of frames.
//! Whatever arrives, no walk panics, and what a walk takes follows its rules: the entries
//! exchange ends with entries of asked paths only, each once, and a rebuilt chunk list has the
//! declared count and hashes to the announced content.
#![no_main]

use std::collections::HashSet;

use botsync_engine::chunktree::{ChunkTree, Rebuild, content_hash};
use botsync_engine::{Hash, RelPath};
use botsync_proto::frame::FrameDecoder;
use botsync_proto::messages::{ChildKind, Message, NodeChild};
use botsync_proto::session::descent::Descent;
use botsync_proto::session::entries::EntriesAsked;
use libfuzzer_sys::fuzz_target;

/// Our side of the descent: the same two children in every directory.
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

fn descend(buckets: bool, replies: Vec<Message>) {
    let mut walk = if buckets {
        Descent::with_buckets(1)
    } else {
        Descent::new()
    };
    let mut replies = replies.into_iter();
    while !walk.is_done() {
        let mine = vec![ours(); walk.frontier().len()];
        if walk.requests(mine).is_err() {
            return;
        }
        loop {
            let Some(reply) = replies.next() else { return };
            match walk.accept(reply) {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => return,
            }
        }
        match walk.step() {
            Ok(only_ours) => walk.add_ours(only_ours),
            Err(_) => return,
        }
    }
    let _ = walk.finish();
}

fn entries(replies: Vec<Message>) {
    let asked: Vec<RelPath> = ["a.md", "memory/b.md", "notes/c.md"]
        .iter()
        .filter_map(|p| RelPath::new(p).ok())
        .collect();
    let (mut phase, _) = EntriesAsked::new(&asked);
    for reply in replies {
        match phase.accept(reply) {
            Ok(true) => {
                let got = phase.finish();
                let mut seen = HashSet::new();
                for e in &got {
                    assert!(asked.contains(&e.file.path), "took an entry never asked for");
                    assert!(seen.insert(e.file.path.clone()), "took one path twice");
                }
                return;
            }
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

fn rebuild(count: u64, replies: Vec<Message>) {
    let content = replies
        .iter()
        .find_map(|m| match m {
            Message::TreeNodes { content, .. } => Some(*content),
            _ => None,
        })
        .unwrap_or(Hash::ZERO);
    let Ok(mut walk) = Rebuild::new(content, count, ChunkTree::new(Vec::new())) else {
        return;
    };
    for reply in replies {
        let Message::TreeNodes { nodes, .. } = reply else {
            return;
        };
        for node in nodes {
            let Ok((addr, children)) = node.into_children() else {
                return;
            };
            if walk.accept(addr, children).is_err() {
                return;
            }
        }
    }
    if let Some(list) = walk.finish() {
        assert_eq!(list.len() as u64, count);
        assert_eq!(content_hash(&list), content);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    decoder.push(stream);
    let mut replies = Vec::new();
    while let Ok(Some(m)) = decoder.pop() {
        replies.push(m);
    }
    match pick & 3 {
        0 => descend(false, replies),
        1 => descend(true, replies),
        2 => entries(replies),
        _ => rebuild(u64::from(pick >> 2) * 61 + 1, replies),
    }
});
