//! The wire format, pinned: every message's exact bytes, the round-trip law, hostile bytes, and
//! the fuzz corpus replayed so the fuzz targets never rot.
//!
//! The golden dumps below are the reference for `docs/PROTOCOL.md`'s examples. Dump syntax: two
//! hex digits per byte, `xx*N` for N repeated bytes, `//` starts a comment. When a message
//! changes on purpose, update its dump and the spec in the same commit; `BOTSYNC_BLESS=1 cargo
//! test -p botsync-proto --test codec` rewrites the fuzz seed corpus from these samples.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use botsync_engine::chunk::ChunkerKind;
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, ChunkerParams, EntryKind, FileEntry, Hash, Mode, PeerId,
    RelPath, VersionVector,
};
use botsync_proto::codec::{CodecError, decode, encode};
use botsync_proto::frame::{FrameDecoder, encode_frame};
use botsync_proto::limits::MAX_FRAME;
use botsync_proto::messages::{
    ChildKind, ChunkData, ChunkListing, Compression, ErrorCode, Features, Hello, Message,
    NodeChild, NodeReply, SessionMode, SubtreeRef, TreeAddr, TreeNodeBody, TreeNodeReply,
    WireEntry,
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
        mode: Mode { executable: false },
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
        },
    }
}

fn big_entry() -> FileEntry {
    FileEntry {
        path: path("memory/log.jsonl"),
        size: 536_870_912,
        mtime_ns: -1,
        mode: Mode { executable: true },
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
                protocol_min: 1,
                protocol_max: 1,
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
                    WireEntry {
                        entry: sample_entry(),
                        listing: ChunkListing::Inline,
                    },
                    WireEntry {
                        entry: big_entry(),
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
    ]
}

/// The golden frames: length prefix, tag and every field, annotated.
const GOLDEN: &[(&str, &str)] = &[
    (
        "hello",
        "00 00 00 10             // frame length 16
         00                      // tag 0 Hello
         01                      // protocol_min 1
         01                      // protocol_max 1
         03                      // features ZSTD | CHUNK_TREE
         04 6d 69 6e 69          // peer_name: length 4, \"mini\"
         06 63 6c 61 75 64 65    // agent: length 6, \"claude\"",
    ),
    (
        "summary",
        "00 00 00 25             // frame length 37
         01                      // tag 1 Summary
         11*32                   // root hash
         fb 2c 01                // files 300: marker fb, then u16 little-endian
         01                      // mode Push (Sync 0, Push 1, Pull 2, DryRun 3)",
    ),
    (
        "get-nodes",
        "00 00 00 0a             // frame length 10
         02                      // tag 2 GetNodes
         02                      // 2 paths
         00                      // \"\" (the workspace root)
         06 6d 65 6d 6f 72 79    // \"memory\"",
    ),
    (
        "nodes",
        "00 00 00 56             // frame length 86
         03                      // tag 3 Nodes
         01                      // 1 node reply
         06 6d 65 6d 6f 72 79    // path \"memory\"
         02                      // 2 children
         04 61 2e 6d 64          //   name \"a.md\"
         01                      //   kind File (Dir 0, File 1)
         22*32                   //   hash
         04 6c 6f 67 73          //   name \"logs\"
         00                      //   kind Dir
         33*32                   //   hash",
    ),
    (
        "get-entries",
        "00 00 00 0c             // frame length 12
         04                      // tag 4 GetEntries
         01                      // 1 path
         09 4d 45 4d 4f 52 59 2e 6d 64   // \"MEMORY.md\"",
    ),
    (
        "entries",
        "00 00 01 6a             // frame length 362
         05                      // tag 5 Entries
         02                      // 2 entries
         09 4d 45 4d 4f 52 59 2e 6d 64   // entry 1: path \"MEMORY.md\"
         00                      // kind File (Tombstone 1)
         05                      // size 5
         fd 00 00 54 6c fc 39 2f 2f      // mtime_ns 1.7e18: zigzag 3.4e18, marker fd + u64 LE
         00                      // mode.executable false
         44*32                   // content hash (chunk-tree root)
         01                      // 1 chunk
         55*32 05                //   id, len 5
         00                      // chunker kind FastCdc2020
         fb 00 40                // chunker min 16384
         fc 00 00 01 00          // chunker avg 65536: marker fc + u32 LE
         fc 00 00 04 00          // chunker max 262144
         01                      // version vector: 1 peer
         66*32 03                //   peer id, counter 3
         00                      // parent None
         66*32                   // changed_by.peer
         06 63 6c 61 75 64 65    // changed_by.agent \"claude\"
         00                      // listing Inline
         10 6d 65 6d 6f 72 79 2f 6c 6f 67 2e 6a 73 6f 6e 6c  // entry 2: \"memory/log.jsonl\"
         00                      // kind File
         fc 00 00 00 20          // size 536870912 (512 MiB)
         01                      // mtime_ns -1 (zigzag 1)
         01                      // mode.executable true
         77*32                   // content hash
         00                      // 0 chunks (elided)
         00 fb 00 40 fc 00 00 01 00 fc 00 00 04 00  // chunker
         01 66*32 03             // version vector
         01 88*32                // parent Some(hash)
         66*32                   // changed_by.peer
         06 63 6c 61 75 64 65    // changed_by.agent \"claude\"
         01 fb 00 20             // listing Elided, chunk_count 8192
         01                      // last true",
    ),
    (
        "get-tree-nodes",
        "00 00 00 28             // frame length 40
         06                      // tag 6 GetTreeNodes
         77*32                   // content hash
         02                      // 2 addresses
         01 00                   // level 1, index 0
         00 fb 2c 01             // level 0, index 300",
    ),
    (
        "tree-nodes",
        "00 00 00 76             // frame length 118
         07                      // tag 7 TreeNodes
         77*32                   // content hash
         02                      // 2 nodes
         01 00                   // addr level 1, index 0
         01                      // body Inner (Leaf 0, Inner 1)
         01                      // 1 child
         88*32 fc 00 00 40 00    //   hash, span 4194304
         00 fb 2c 01             // addr level 0, index 300
         00                      // body Leaf
         01                      // 1 chunk
         99*32 fc 00 00 01 00    //   id, len 65536",
    ),
    (
        "get-chunks",
        "00 00 00 22             // frame length 34
         08                      // tag 8 GetChunks
         01                      // 1 id
         ea 8f 16 3d b3 86 82 92 5e 44 91 c5 e5 8d 4b b3
         50 6e f8 c1 4e b7 8a 86 e9 08 c5 62 4a 67 20 0f   // BLAKE3(\"hello\")",
    ),
    (
        "chunk-data",
        "00 00 00 28             // frame length 40
         09                      // tag 9 ChunkData
         ea 8f 16 3d b3 86 82 92 5e 44 91 c5 e5 8d 4b b3
         50 6e f8 c1 4e b7 8a 86 e9 08 c5 62 4a 67 20 0f   // id BLAKE3(\"hello\")
         00                      // compression None (Zstd 1)
         05 68 65 6c 6c 6f       // data: length 5, \"hello\"",
    ),
    (
        "changed",
        "00 00 00 21             // frame length 33
         0a                      // tag 10 Changed
         11*32                   // new root hash",
    ),
    (
        "error",
        "00 00 00 10             // frame length 16
         0b                      // tag 11 Error
         02                      // code NotFound
         0d 6e 6f 20 73 75 63 68 20 63 68 75 6e 6b   // \"no such chunk\"",
    ),
    (
        "goodbye",
        "00 00 00 01             // frame length 1
         0c                      // tag 12 Goodbye",
    ),
];

/// Parse an annotated dump: hex bytes, `xx*N` repeats, `//` comments.
fn parse_dump(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let code = line.split("//").next().unwrap_or("");
        for token in code.split_whitespace() {
            let (hex, count) = match token.split_once('*') {
                Some((hex, n)) => (hex, n.parse::<usize>().unwrap()),
                None => (token, 1),
            };
            let byte = u8::from_str_radix(hex, 16).unwrap();
            out.extend(std::iter::repeat_n(byte, count));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|l| {
            l.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The golden set covers every implemented tag; adding a variant breaks this match until a
/// sample (and a golden dump) exists for it.
fn covered_tag(m: &Message) -> Option<u32> {
    match m {
        Message::Hello(_)
        | Message::Summary { .. }
        | Message::GetNodes { .. }
        | Message::Nodes { .. }
        | Message::GetEntries { .. }
        | Message::Entries { .. }
        | Message::GetTreeNodes { .. }
        | Message::TreeNodes { .. }
        | Message::GetChunks { .. }
        | Message::ChunkData(_)
        | Message::Changed { .. }
        | Message::Error { .. }
        | Message::Goodbye => Some(m.tag()),
        Message::ReservedLockAcquire
        | Message::ReservedLockRelease
        | Message::ReservedLockStatus
        | Message::ReservedChatSay
        | Message::ReservedChatFeed
        | Message::ReservedHandoff
        | Message::ReservedCoordination1
        | Message::ReservedCoordination2 => None,
    }
}

#[test]
fn every_message_matches_its_golden_frame() {
    let samples = samples();
    assert_eq!(samples.len(), GOLDEN.len());
    for ((name, message), (golden_name, dump)) in samples.iter().zip(GOLDEN) {
        assert_eq!(name, golden_name);
        let frame = encode_frame(message).unwrap();
        let expected = parse_dump(dump);
        assert_eq!(hex(&frame), hex(&expected), "{name}: encoding changed");
        assert_eq!(
            &decode(&frame[4..]).unwrap(),
            message,
            "{name}: golden bytes decode differently"
        );
    }
}

#[test]
fn goldens_cover_every_implemented_tag() {
    let mut tags: Vec<u32> = samples()
        .iter()
        .filter_map(|(_, m)| covered_tag(m))
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, (0..=12).collect::<Vec<_>>());
}

#[test]
fn reserved_tags_are_unsupported_and_later_tags_unknown() {
    for tag in 13u8..21 {
        let err = decode(&[tag]).unwrap_err();
        assert!(
            matches!(err, CodecError::Unsupported { tag: t, .. } if t == u32::from(tag)),
            "{err}"
        );
        assert!(err.to_string().contains("unsupported message"));
        // A future message carrying a body is refused the same way, not as trailing bytes.
        assert!(matches!(
            decode(&[tag, 1, 2, 3]),
            Err(CodecError::Unsupported { .. })
        ));
    }
    assert_eq!(decode(&[21]), Err(CodecError::UnknownTag { tag: 21 }));
    assert!(encode(&Message::ReservedHandoff).is_err());
}

#[test]
fn hostile_fields_are_refused() {
    // GetNodes with the path "../x".
    let err = decode(&[0x02, 0x01, 0x04, b'.', b'.', b'/', b'x']).unwrap_err();
    assert!(matches!(err, CodecError::Malformed(_)), "{err}");
    // GetChunks announcing 2^32 ids in a few bytes: fails on the missing bytes, allocates nothing.
    let err = decode(&[0x08, 0xfc, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(err, CodecError::Truncated);
    // A path claiming 5 MiB: refused on the claim, before allocating or reading.
    let mut huge = vec![0x02, 0x01, 0xfc];
    huge.extend((5u32 << 20).to_le_bytes());
    let err = decode(&huge).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    // A boolean that is neither 0 nor 1 (Entries.last).
    assert!(matches!(
        decode(&[0x05, 0x00, 0x02]),
        Err(CodecError::Malformed(_))
    ));
    // Summary with mode 7.
    let mut summary = vec![0x01];
    summary.extend([0u8; 32]);
    summary.extend([0x00, 0x07]);
    assert!(matches!(decode(&summary), Err(CodecError::Malformed(_))));
}

#[test]
fn zero_counter_in_a_version_vector_is_refused() {
    let mut frame = encode_frame(&samples()[5].1).unwrap();
    // The first entry's vector counter: find "66*32 03" and zero the counter.
    let at = frame
        .windows(33)
        .position(|w| w[..32] == [0x66; 32] && w[32] == 0x03)
        .unwrap();
    frame[at + 32] = 0x00;
    let err = decode(&frame[4..]).unwrap_err();
    assert!(err.to_string().contains("zero counter"), "{err}");
}

mod laws {
    //! `decode(encode(m)) == m` over generated messages; hostile bytes never panic.

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>().prop_map(Hash)
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_. é-]{1,16}".prop_filter("a single valid component", |n| {
            RelPath::new(n).is_ok_and(|p| p.as_str() == n.as_str())
        })
    }

    fn rel_path() -> impl Strategy<Value = RelPath> {
        vec(name(), 0..4)
            .prop_filter_map("a valid path", |parts| RelPath::new(&parts.join("/")).ok())
    }

    fn label() -> impl Strategy<Value = AgentLabel> {
        "\\PC{0,20}".prop_map(|s| AgentLabel::new(&s))
    }

    fn chunk_ref() -> impl Strategy<Value = ChunkRef> {
        (hash(), 1u32..=262_144).prop_map(|(id, len)| ChunkRef { id, len })
    }

    fn entry() -> impl Strategy<Value = WireEntry> {
        (
            (
                rel_path(),
                any::<bool>(),
                any::<u64>(),
                any::<i64>(),
                any::<bool>(),
                hash(),
            ),
            (
                vec(chunk_ref(), 0..5),
                vec((any::<[u8; 32]>(), 1u64..), 0..4),
                proptest::option::of(hash()),
            ),
            (any::<[u8; 32]>(), label(), proptest::option::of(1u32..)),
        )
            .prop_map(
                |(
                    (path, tomb, size, mtime_ns, exec, content),
                    (chunks, vv, parent),
                    (peer, agent, elided),
                )| {
                    let entry = FileEntry {
                        path,
                        kind: if tomb {
                            EntryKind::Tombstone
                        } else {
                            EntryKind::File
                        },
                        size,
                        mtime_ns,
                        mode: Mode { executable: exec },
                        content,
                        chunks: if elided.is_some() { Vec::new() } else { chunks },
                        chunker: ChunkerParams {
                            kind: ChunkerKind::FastCdc2020,
                            ..ChunkerParams::DEFAULT
                        },
                        version: VersionVector::from_pairs(
                            vv.into_iter().map(|(p, c)| (PeerId(p), c)),
                        ),
                        parent,
                        changed_by: Attribution {
                            peer: PeerId(peer),
                            agent,
                        },
                    };
                    let listing = match elided {
                        Some(chunk_count) => ChunkListing::Elided { chunk_count },
                        None => ChunkListing::Inline,
                    };
                    WireEntry { entry, listing }
                },
            )
    }

    fn tree_node() -> impl Strategy<Value = TreeNodeReply> {
        prop_oneof![
            (any::<u32>(), vec(chunk_ref(), 1..5)).prop_map(|(index, chunks)| TreeNodeReply {
                addr: TreeAddr { level: 0, index },
                body: TreeNodeBody::Leaf(chunks),
            }),
            (1u8.., any::<u32>(), vec((hash(), any::<u64>()), 1..5)).prop_map(
                |(level, index, kids)| {
                    TreeNodeReply {
                        addr: TreeAddr { level, index },
                        body: TreeNodeBody::Inner(
                            kids.into_iter()
                                .map(|(hash, span)| SubtreeRef { hash, span })
                                .collect(),
                        ),
                    }
                }
            ),
        ]
    }

    fn child() -> impl Strategy<Value = NodeChild> {
        (name(), any::<bool>(), hash()).prop_map(|(name, dir, hash)| NodeChild {
            name,
            kind: if dir { ChildKind::Dir } else { ChildKind::File },
            hash,
        })
    }

    fn mode() -> impl Strategy<Value = SessionMode> {
        prop_oneof![
            Just(SessionMode::Sync),
            Just(SessionMode::Push),
            Just(SessionMode::Pull),
            Just(SessionMode::DryRun)
        ]
    }

    fn error_code() -> impl Strategy<Value = ErrorCode> {
        prop_oneof![
            Just(ErrorCode::VersionMismatch),
            Just(ErrorCode::UnexpectedMessage),
            Just(ErrorCode::NotFound),
            Just(ErrorCode::Refused),
            Just(ErrorCode::Busy),
            Just(ErrorCode::Internal),
        ]
    }

    /// Any valid message of any implemented kind.
    pub(super) fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                any::<u16>(),
                any::<u16>(),
                any::<u64>(),
                "\\PC{0,20}",
                label()
            )
                .prop_map(|(a, b, f, n, agent)| {
                    Message::Hello(Hello {
                        protocol_min: a.min(b),
                        protocol_max: a.max(b),
                        features: Features::from_bits(f),
                        peer_name: botsync_proto::messages::hello::sanitize_name(&n),
                        agent,
                    })
                }),
            (hash(), any::<u64>(), mode()).prop_map(|(root, files, mode)| Message::Summary {
                root,
                files,
                mode
            }),
            vec(rel_path(), 0..6).prop_map(|paths| Message::GetNodes { paths }),
            vec((rel_path(), vec(child(), 0..6)), 0..4).prop_map(|nodes| Message::Nodes {
                nodes: nodes
                    .into_iter()
                    .map(|(path, children)| NodeReply { path, children })
                    .collect()
            }),
            vec(rel_path(), 0..6).prop_map(|paths| Message::GetEntries { paths }),
            (vec(entry(), 0..4), any::<bool>())
                .prop_map(|(entries, last)| Message::Entries { entries, last }),
            (hash(), vec((any::<u8>(), any::<u32>()), 0..6)).prop_map(|(content, addrs)| {
                Message::GetTreeNodes {
                    content,
                    nodes: addrs
                        .into_iter()
                        .map(|(level, index)| TreeAddr { level, index })
                        .collect(),
                }
            }),
            (hash(), vec(tree_node(), 0..4))
                .prop_map(|(content, nodes)| Message::TreeNodes { content, nodes }),
            vec(hash(), 0..8).prop_map(|ids| Message::GetChunks { ids }),
            (vec(any::<u8>(), 0..600), any::<bool>(), any::<bool>()).prop_map(
                |(raw, zstd, repeat)| {
                    let raw = if repeat { raw.repeat(8) } else { raw };
                    Message::ChunkData(ChunkData::compress(Hash::of(&raw), raw, zstd))
                }
            ),
            hash().prop_map(|root| Message::Changed { root }),
            (error_code(), "\\PC{0,40}")
                .prop_map(|(code, message)| Message::Error { code, message }),
            Just(Message::Goodbye),
        ]
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(m in message()) {
            let bytes = encode(&m).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), m);
        }

        #[test]
        fn frames_split_anywhere_reassemble(ms in vec(message(), 1..5), cut in 1usize..64) {
            let stream: Vec<u8> = ms.iter().flat_map(|m| encode_frame(m).unwrap()).collect();
            let mut dec = FrameDecoder::new();
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                dec.push(piece);
                while let Some(m) = dec.pop().unwrap() {
                    out.push(m);
                }
            }
            prop_assert_eq!(dec.finish(), Ok(()));
            prop_assert_eq!(out, ms);
        }

        #[test]
        fn chunk_payloads_verify_after_transit(m in message()) {
            if let Message::ChunkData(chunk) = decode(&encode(&m).unwrap()).unwrap() {
                let id = chunk.id;
                prop_assert_eq!(Hash::of(&chunk.into_verified_bytes().unwrap()), id);
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
            if let Ok(m) = decode(&bytes) {
                // Whatever decodes is a valid message that survives a round trip.
                prop_assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
            }
            let mut dec = FrameDecoder::new();
            dec.push(&bytes);
            while let Ok(Some(_)) = dec.pop() {}
        }

        #[test]
        fn mutated_valid_messages_never_panic(m in message(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
            let mut bytes = encode(&m).unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let cut = cut.index(bytes.len() + 1);
            for candidate in [&bytes[..], &bytes[..cut]] {
                if let Ok(decoded) = decode(candidate) {
                    prop_assert_eq!(decode(&encode(&decoded).unwrap()).unwrap(), decoded);
                }
            }
        }
    }
}

mod corpus {
    //! The fuzz seed corpus is generated from the samples above and committed under
    //! `fuzz/corpus/`; every file there (seeds and anything the fuzzer found and we kept) is
    //! replayed through the decoders here.

    use super::*;

    const TARGETS: [&str; 2] = ["message_decode", "frame_decoder"];

    fn corpus_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    /// The seeds of each target, by file name.
    fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut all_frames = Vec::new();
        for (name, message) in samples() {
            let frame = encode_frame(&message).unwrap();
            out.push((
                "message_decode",
                format!("seed-{name}"),
                frame[4..].to_vec(),
            ));
            out.push(("frame_decoder", format!("seed-{name}"), frame.clone()));
            all_frames.extend(frame);
        }
        out.push(("message_decode", "boundary-empty".into(), Vec::new()));
        out.push(("message_decode", "boundary-reserved-tag".into(), vec![13]));
        out.push(("message_decode", "boundary-unknown-tag".into(), vec![21]));
        out.push((
            "message_decode",
            "boundary-trailing-byte".into(),
            vec![12, 0],
        ));
        let mut max_len = (MAX_FRAME as u32).to_be_bytes().to_vec();
        max_len.extend([0x0c; 16]);
        out.push(("frame_decoder", "boundary-max-length".into(), max_len));
        out.push((
            "frame_decoder",
            "boundary-too-large".into(),
            (MAX_FRAME as u32 + 1).to_be_bytes().to_vec(),
        ));
        out.push((
            "frame_decoder",
            "boundary-zero-length".into(),
            vec![0, 0, 0, 0],
        ));
        let hello = encode_frame(&samples()[0].1).unwrap();
        out.push((
            "frame_decoder",
            "boundary-truncated".into(),
            hello[..hello.len() - 1].to_vec(),
        ));
        out.push(("frame_decoder", "boundary-all-messages".into(), all_frames));
        out
    }

    #[test]
    fn seed_corpus_is_generated_from_the_samples() {
        let bless = std::env::var_os("BOTSYNC_BLESS").is_some();
        for (target, name, bytes) in seeds() {
            let file = corpus_dir(target).join(&name);
            if bless {
                std::fs::create_dir_all(corpus_dir(target)).unwrap();
                std::fs::write(&file, &bytes).unwrap();
            }
            let committed = std::fs::read(&file).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run with BOTSYNC_BLESS=1 to regenerate",
                    file.display()
                )
            });
            assert_eq!(
                committed, bytes,
                "{target}/{name} is stale; run with BOTSYNC_BLESS=1"
            );
        }
    }

    #[test]
    fn every_corpus_file_replays_without_panic() {
        let mut replayed = 0;
        for target in TARGETS {
            for file in std::fs::read_dir(corpus_dir(target)).unwrap() {
                let bytes = std::fs::read(file.unwrap().path()).unwrap();
                if let Ok(m) = decode(&bytes) {
                    assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
                }
                let mut dec = FrameDecoder::new();
                dec.push(&bytes);
                while let Ok(Some(m)) = dec.pop() {
                    assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
                }
                replayed += 1;
            }
        }
        assert!(
            replayed >= seeds().len(),
            "only {replayed} corpus files found"
        );
    }

    #[test]
    fn seeds_decode_as_their_names_say() {
        for (target, name, bytes) in seeds() {
            let ok = name.starts_with("seed-") || name == "boundary-all-messages";
            match target {
                "message_decode" => assert_eq!(decode(&bytes).is_ok(), ok, "{name}"),
                _ => {
                    let mut dec = FrameDecoder::new();
                    dec.push(&bytes);
                    let mut popped = 0;
                    let mut failed = false;
                    loop {
                        match dec.pop() {
                            Ok(Some(_)) => popped += 1,
                            Ok(None) => break,
                            Err(_) => {
                                failed = true;
                                break;
                            }
                        }
                    }
                    let complete = !failed && dec.finish().is_ok();
                    assert_eq!(complete && popped > 0, ok, "{name}: popped {popped}");
                }
            }
        }
    }
}
