//! `decode(encode(m)) == m` over generated messages; hostile bytes never panic.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use botsync_engine::vector::MAX_VERSION_COUNTER;

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_. é-]{1,16}".prop_filter("a single valid component", |n| {
        RelPath::new(n).is_ok_and(|p| p.as_str() == n.as_str())
    })
}

fn rel_path() -> impl Strategy<Value = RelPath> {
    vec(name(), 0..4).prop_filter_map("a valid path", |parts| RelPath::new(&parts.join("/")).ok())
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
            0u16..=0o777,
            hash(),
        ),
        (
            vec(chunk_ref(), 0..5),
            vec((any::<[u8; 32]>(), 1u64..=MAX_VERSION_COUNTER), 0..4),
            proptest::option::of(hash()),
        ),
        (any::<[u8; 32]>(), label(), proptest::option::of(1u32..)),
    )
        .prop_map(
            |(
                (path, tomb, size, mtime_ns, permissions, content),
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
                    mode: Mode { permissions },
                    content,
                    chunks: if elided.is_some() { Vec::new() } else { chunks },
                    chunker: ChunkerParams {
                        kind: ChunkerKind::FastCdc2020,
                        ..ChunkerParams::DEFAULT
                    },
                    version: VersionVector::from_pairs(vv.into_iter().map(|(p, c)| (PeerId(p), c))),
                    parent,
                    changed_by: Attribution {
                        peer: PeerId(peer),
                        agent,
                        machine: MachineName::default(),
                    },
                };
                let listing = match elided {
                    Some(chunk_count) => ChunkListing::Elided { chunk_count },
                    None => ChunkListing::Inline,
                };
                WireEntry {
                    file: entry.into(),
                    listing,
                }
            },
        )
}

fn tree_node() -> impl Strategy<Value = TreeNodeReply> {
    prop_oneof![
        (any::<u32>(), vec(chunk_ref(), 1..5)).prop_map(|(index, chunks)| TreeNodeReply {
            addr: TreeAddr { level: 0, index },
            body: TreeNodeBody::Leaf(chunks),
        }),
        (1u8.., any::<u32>(), vec((hash(), 0..u64::MAX >> 6), 1..5)).prop_map(
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
        (hash(), any::<u64>(), mode(), any::<u64>()).prop_map(|(root, files, mode, skipped)| {
            Message::Summary {
                root,
                files,
                mode,
                skipped,
            }
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
        (vec(any::<u8>(), 0..600), any::<bool>(), any::<bool>()).prop_map(|(raw, zstd, repeat)| {
            let raw = if repeat { raw.repeat(8) } else { raw };
            Message::ChunkData(ChunkData::compress(Hash::of(&raw), raw, zstd))
        }),
        hash().prop_map(|root| Message::Changed { root }),
        (error_code(), "\\PC{0,40}").prop_map(|(code, message)| Message::Error { code, message }),
        Just(Message::Goodbye),
        any::<(bool, bool, bool)>().prop_map(|(dry_run, last, force)| Message::Offer {
            entries: vec![],
            dry_run,
            last,
            force,
        }),
    ]
}

proptest! {
    /// The wire's file record and the engine's convert both ways without loss: the edge is
    /// the only place they meet.
    #[test]
    fn wire_files_convert_to_engine_entries_and_back(w in entry()) {
        let engine = botsync_engine::FileEntry::from(w.file.clone());
        prop_assert_eq!(botsync_proto::messages::WireFile::from(engine), w.file);
    }

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
