//! The wire format, pinned: every message's exact bytes ([`golden`]), the round-trip law and
//! hostile bytes ([`laws`]), and the fuzz corpus replayed so the fuzz targets never rot
//! ([`corpus`]). This file holds the samples they share: one message of every kind.
//!
//! The golden dumps are the reference for `docs/PROTOCOL.md`'s examples. Dump syntax: two
//! hex digits per byte, `xx*N` for N repeated bytes, `//` starts a comment. When a message
//! changes on purpose, update its dump and the spec in the same commit; `BOTSYNC_BLESS=1 cargo
//! test -p botsync-proto --test codec` rewrites the fuzz seed corpus from these samples.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use botsync_engine::chunk::ChunkerKind;
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, ChunkerParams, EntryKind, FileEntry, Hash, MachineName,
    Mode, PeerId, RelPath, VersionVector,
};
use botsync_proto::codec::{CodecError, decode, encode};
use botsync_proto::frame::{FrameDecoder, encode_frame};
use botsync_proto::limits::MAX_FRAME;
use botsync_proto::messages::{
    BucketAsk, BucketDigest, BucketReply, ChildKind, ChunkData, ChunkListing, ChunkWant,
    Compression, ErrorCode, Features, Hello, Message, NodeChild, NodeReply, SessionMode,
    SubtreeRef, TreeAddr, TreeNodeBody, TreeNodeReply, WireEntry, WireState,
};

fn path(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn sample_entry() -> FileEntry {
    FileEntry {
        path: path("MEMORY.md"),
        kind: EntryKind::File,
        size: 5,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: Mode { permissions: 0o644 },
        content: Hash([0x44; 32]),
        chunks: vec![ChunkRef {
            id: Hash([0x55; 32]),
            len: 5,
        }],
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs([(PeerId([0x66; 32]), 3)]),
        parent: None,
        changed_by: Attribution {
            peer: PeerId([0x66; 32]),
            agent: AgentLabel::new("claude"),
            machine: MachineName::new("laptop"),
        },
    }
}

fn big_entry() -> FileEntry {
    FileEntry {
        path: path("memory/log.jsonl"),
        size: 536_870_912,
        mtime_ns: -1,
        mode: Mode { permissions: 0o755 },
        content: Hash([0x77; 32]),
        chunks: Vec::new(),
        parent: Some(Hash([0x88; 32])),
        ..sample_entry()
    }
}

/// One sample of every implemented message, named as in the golden dumps and the seed corpus.
fn samples() -> Vec<(&'static str, Message)> {
    vec![
        (
            "hello",
            Message::Hello(Hello {
                protocol_min: 3,
                protocol_max: 3,
                features: Features::ZSTD.union(Features::CHUNK_TREE),
                peer_name: "mini".into(),
                agent: AgentLabel::new("claude"),
            }),
        ),
        (
            "summary",
            Message::Summary {
                root: Hash([0x11; 32]),
                files: 300,
                mode: SessionMode::Push,
                skipped: 2,
            },
        ),
        (
            "get-nodes",
            Message::GetNodes {
                paths: vec![RelPath::root(), path("memory")],
            },
        ),
        (
            "nodes",
            Message::Nodes {
                nodes: vec![NodeReply {
                    path: path("memory"),
                    children: vec![
                        NodeChild {
                            name: "a.md".into(),
                            kind: ChildKind::File,
                            hash: Hash([0x22; 32]),
                        },
                        NodeChild {
                            name: "logs".into(),
                            kind: ChildKind::Dir,
                            hash: Hash([0x33; 32]),
                        },
                    ],
                }],
            },
        ),
        (
            "get-entries",
            Message::GetEntries {
                paths: vec![path("MEMORY.md")],
            },
        ),
        (
            "entries",
            Message::Entries {
                entries: vec![
                    WireEntry::inline(sample_entry()),
                    WireEntry {
                        file: big_entry().into(),
                        listing: ChunkListing::Elided { chunk_count: 8192 },
                    },
                ],
                last: true,
            },
        ),
        (
            "get-tree-nodes",
            Message::GetTreeNodes {
                content: Hash([0x77; 32]),
                nodes: vec![
                    TreeAddr { level: 1, index: 0 },
                    TreeAddr {
                        level: 0,
                        index: 300,
                    },
                ],
            },
        ),
        (
            "tree-nodes",
            Message::TreeNodes {
                content: Hash([0x77; 32]),
                nodes: vec![
                    TreeNodeReply {
                        addr: TreeAddr { level: 1, index: 0 },
                        body: TreeNodeBody::Inner(vec![SubtreeRef {
                            hash: Hash([0x88; 32]),
                            span: 4_194_304,
                        }]),
                    },
                    TreeNodeReply {
                        addr: TreeAddr {
                            level: 0,
                            index: 300,
                        },
                        body: TreeNodeBody::Leaf(vec![ChunkRef {
                            id: Hash([0x99; 32]),
                            len: 65_536,
                        }]),
                    },
                ],
            },
        ),
        (
            "get-chunks",
            Message::GetChunks {
                ids: vec![Hash::of(b"hello")],
            },
        ),
        (
            "chunk-data",
            Message::ChunkData(ChunkData {
                id: Hash::of(b"hello"),
                compression: Compression::None,
                data: b"hello".to_vec(),
            }),
        ),
        (
            "changed",
            Message::Changed {
                root: Hash([0x11; 32]),
            },
        ),
        (
            "error",
            Message::Error {
                code: ErrorCode::NotFound,
                message: "no such chunk".into(),
            },
        ),
        ("goodbye", Message::Goodbye),
        (
            "offer",
            Message::Offer {
                entries: vec![],
                dry_run: true,
                last: true,
                force: false,
            },
        ),
        (
            "offer-result",
            Message::OfferResult {
                items: vec![botsync_proto::messages::WireReport {
                    path: path("memory/a.md"),
                    action: botsync_proto::messages::WireAction::Take,
                    outcome: botsync_proto::messages::WireOutcome::Done,
                    size: 5,
                    bytes_fetched: 5,
                    conflict_copy: None,
                }],
                last: true,
            },
        ),
        (
            "coordinate",
            Message::Coordinate {
                body: br#"{"vote":1}"#.to_vec(),
            },
        ),
        (
            "coordinated",
            Message::Coordinated {
                body: br#"{"ok":true}"#.to_vec(),
            },
        ),
        ("get-mesh-config", Message::GetMeshConfig),
        (
            "mesh-config",
            Message::MeshConfig {
                files: vec![botsync_proto::messages::MeshFile {
                    path: path(".secrets/m.json"),
                    content: b"{\"a\":1}".to_vec(),
                }],
            },
        ),
        ("get-parity", Message::GetParity),
        (
            "parity",
            Message::Parity(botsync_proto::messages::ParityInfo {
                root: Hash([0x22; 32]),
                files: 3,
                policy: botsync_proto::messages::Policy {
                    digest: Hash([0x33; 32]),
                    rules: vec!["include /m/".into()],
                },
                mesh: vec![],
            }),
        ),
        (
            "get-state",
            Message::GetState {
                patterns: vec!["memory:*".into()],
                digest: Hash([0x77; 32]),
            },
        ),
        (
            "state",
            Message::State {
                records: vec![WireState {
                    key: "memory:x".into(),
                    value: b"hi".to_vec(),
                    deleted: false,
                    version: VersionVector::from_pairs([(PeerId([0x66; 32]), 3)]),
                    author: PeerId([0x66; 32]),
                    agent: "bot".into(),
                    at_ns: 1000,
                }],
                last: true,
            },
        ),
        (
            "get-chunks-against",
            Message::GetChunksAgainst {
                wants: vec![
                    ChunkWant {
                        id: Hash([0x55; 32]),
                        base: Some(Hash([0x44; 32])),
                    },
                    ChunkWant {
                        id: Hash([0x66; 32]),
                        base: None,
                    },
                ],
            },
        ),
        (
            "chunk-data-delta",
            Message::ChunkData(ChunkData {
                id: Hash([0x55; 32]),
                compression: Compression::ZstdDelta,
                data: vec![0x28, 0xb5, 0x2f, 0xfd],
            }),
        ),
        (
            "get-buckets",
            Message::GetBuckets {
                dirs: vec![BucketAsk {
                    path: RelPath::new("memory").unwrap(),
                    digests: vec![BucketDigest([0x11; 16]); 16],
                }],
            },
        ),
        (
            "buckets",
            Message::Buckets {
                nodes: vec![BucketReply {
                    path: RelPath::new("memory").unwrap(),
                    differ: vec![3, 300],
                    children: vec![NodeChild {
                        name: "a.md".into(),
                        kind: ChildKind::File,
                        hash: Hash([0x22; 32]),
                    }],
                }],
            },
        ),
        (
            "nodes-part",
            Message::NodesPart {
                path: RelPath::new("memory").unwrap(),
                children: vec![NodeChild {
                    name: "a.md".into(),
                    kind: ChildKind::File,
                    hash: Hash([0x22; 32]),
                }],
            },
        ),
        ("working", Message::Working),
    ]
}

// Cargo treats every file directly in `tests/` as its own test crate: the parts of this one live
// in `tests/codec/`.
#[path = "codec/corpus.rs"]
mod corpus;
#[path = "codec/golden.rs"]
mod golden;
#[path = "codec/laws.rs"]
mod laws;
