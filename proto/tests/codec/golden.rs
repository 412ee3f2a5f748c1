//! Golden frames: every message's exact bytes, annotated, and the tag rules around them.

use super::*;

/// The golden frames: length prefix, tag and every field, annotated.
const GOLDEN: &[(&str, &str)] = &[
    (
        "hello",
        "00 00 00 10             // frame length 16
         00                      // tag 0 Hello
         03                      // protocol_min 3
         03                      // protocol_max 3
         03                      // features ZSTD | CHUNK_TREE
         04 6d 69 6e 69          // peer_name: length 4, \"mini\"
         06 63 6c 61 75 64 65    // agent: length 6, \"claude\"",
    ),
    (
        "summary",
        "00 00 00 26             // frame length 38
         01                      // tag 1 Summary
         11*32                   // root hash
         fb 2c 01                // files 300: marker fb, then u16 little-endian
         01                      // mode Push (Sync 0, Push 1, Pull 2, DryRun 3)
         02                      // skipped 2",
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
        "00 00 01 7c             // frame length 380
         05                      // tag 5 Entries
         02                      // 2 entries
         09 4d 45 4d 4f 52 59 2e 6d 64   // entry 1: path \"MEMORY.md\"
         00                      // kind File (Tombstone 1)
         05                      // size 5
         fd 00 00 54 6c fc 39 2f 2f      // mtime_ns 1.7e18: zigzag 3.4e18, marker fd + u64 LE
         fb a4 01                // mode.permissions 0o644 (420): marker fb + u16 LE
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
         06 6c 61 70 74 6f 70    // machine \"laptop\"
         00                      // listing Inline
         10 6d 65 6d 6f 72 79 2f 6c 6f 67 2e 6a 73 6f 6e 6c  // entry 2: \"memory/log.jsonl\"
         00                      // kind File
         fc 00 00 00 20          // size 536870912 (512 MiB)
         01                      // mtime_ns -1 (zigzag 1)
         fb ed 01                // mode.permissions 0o755 (493)
         77*32                   // content hash
         00                      // 0 chunks (elided)
         00 fb 00 40 fc 00 00 01 00 fc 00 00 04 00  // chunker
         01 66*32 03             // version vector
         01 88*32                // parent Some(hash)
         66*32                   // changed_by.peer
         06 63 6c 61 75 64 65    // changed_by.agent \"claude\"
         06 6c 61 70 74 6f 70    // machine \"laptop\"
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
         00                      // compression None (Zstd 1, ZstdDelta 2)
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
    (
        "offer",
        "00 00 00 05             // frame length 5
         15                      // tag 21 Offer
         00                      // entries: 0
         01                      // dry_run true
         01                      // last true
         00                      // force false",
    ),
    (
        "offer-result",
        "00 00 00 14             // frame length 20
         16                      // tag 22 OfferResult
         01                      // items: 1
         0b 6d 65 6d 6f 72 79 2f 61 2e 6d 64 // path \"memory/a.md\" (length 11)
         03                      // action: variant 3 Take
         00                      // outcome: variant 0 Done
         05                      // size 5
         05                      // bytes_fetched 5
         00                      // conflict_copy: None
         01                      // last true",
    ),
    (
        "coordinate",
        "00 00 00 0c             // frame length 12
         0d                      // tag 13 Coordinate
         0a                      // body: 10 bytes
         7b 22 76 6f 74 65 22 3a 31 7d // {\"vote\":1}",
    ),
    (
        "coordinated",
        "00 00 00 0d             // frame length 13
         0e                      // tag 14 Coordinated
         0b                      // body: 11 bytes
         7b 22 6f 6b 22 3a 74 72 75 65 7d // {\"ok\":true}",
    ),
    (
        "get-mesh-config",
        "00 00 00 01             // frame length 1
         19                      // tag 25 GetMeshConfig (no fields)",
    ),
    (
        "mesh-config",
        "00 00 00 1a             // frame length 26
         1a                      // tag 26 MeshConfig
         01                      // 1 file
         0f 2e 73 65 63 72 65 74 73 2f 6d 2e 6a 73 6f 6e
                                 // path: length 15, \".secrets/m.json\"
         07 7b 22 61 22 3a 31 7d // content: length 7, {\"a\":1} (stripped JSON)",
    ),
    (
        "get-parity",
        "00 00 00 01             // frame length 1
         1b                      // tag 27 GetParity (no fields)",
    ),
    (
        "parity",
        "00 00 00 50             // frame length 80
         1c                      // tag 28 Parity
         22*32                   // root hash
         03                      // files 3
         33*32                   // policy digest
         01                      // 1 rule
         0b 69 6e 63 6c 75 64 65 20 2f 6d 2f
                                 // rule: length 11, \"include /m/\"
         00                      // 0 mesh files",
    ),
    (
        "get-state",
        "00 00 00 2b             // frame length 43
         17                      // tag 23 GetState
         01                      // patterns: 1
         08 6d 65 6d 6f 72 79 3a 2a   // \"memory:*\"
         77*32                   // digest",
    ),
    (
        "state",
        "00 00 00 59             // frame length 89
         18                      // tag 24 State
         01                      // records: 1
         08 6d 65 6d 6f 72 79 3a 78   // key \"memory:x\"
         02 68 69                // value: length 2, \"hi\"
         00                      // deleted false
         01                      // version: 1 peer
         66*32 03                //   peer id, counter 3
         66*32                   // author
         03 62 6f 74             // agent \"bot\"
         fb d0 07                // at_ns 1000: zigzag 2000, marker fb then u16 little-endian
         01                      // last true",
    ),
    (
        "get-chunks-against",
        "00 00 00 64             // frame length 100
         1d                      // tag 29 GetChunksAgainst
         02                      // 2 wants
         55*32                   // want 1: chunk id
         01 44*32                //   base: Some, the chunk id we hold
         66*32                   // want 2: chunk id
         00                      //   base: None",
    ),
    (
        "chunk-data-delta",
        "00 00 00 27             // frame length 39
         09                      // tag 9 ChunkData
         55*32                   // id
         02                      // compression ZstdDelta (None 0, Zstd 1)
         04 28 b5 2f fd          // data: length 4, a zstd frame's magic number",
    ),
    (
        "get-buckets",
        "00 00 01 0a             // frame length 266
         1e                      // tag 30 GetBuckets
         01                      // 1 directory
         06 6d 65 6d 6f 72 79    // path \"memory\"
         10                      // 16 bucket digests
         11*256                  // 16 digests of 16 bytes",
    ),
    (
        "buckets",
        "00 00 00 35             // frame length 53
         1f                      // tag 31 Buckets
         01                      // 1 directory
         06 6d 65 6d 6f 72 79    // path \"memory\"
         02                      // 2 differing buckets
         03                      // bucket 3
         fb 2c 01                // bucket 300
         01                      // 1 child
         04 61 2e 6d 64          //   name \"a.md\"
         01                      //   kind File
         22*32                   //   hash",
    ),
    (
        "nodes-part",
        "00 00 00 2f             // frame length 47
         20                      // tag 32 NodesPart
         06 6d 65 6d 6f 72 79    // path \"memory\"
         01                      // 1 child
         04 61 2e 6d 64          //   name \"a.md\"
         01                      //   kind File
         22*32                   //   hash",
    ),
    (
        "working",
        "00 00 00 01             // frame length 1
         21                      // tag 33 Working (no fields)",
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
        | Message::Goodbye
        | Message::Offer { .. }
        | Message::OfferResult { .. }
        | Message::Coordinate { .. }
        | Message::Coordinated { .. }
        | Message::GetState { .. }
        | Message::State { .. }
        | Message::GetMeshConfig
        | Message::MeshConfig { .. }
        | Message::GetParity
        | Message::Parity(_)
        | Message::GetChunksAgainst { .. }
        | Message::GetBuckets { .. }
        | Message::Buckets { .. }
        | Message::NodesPart { .. }
        | Message::Working => Some(m.tag()),
        Message::ReservedLockStatus
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
    tags.dedup(); // `ChunkData` has a sample per kind of payload
    let implemented: Vec<u32> = (0..=14).chain(21..=33).collect();
    assert_eq!(tags, implemented);
}

#[test]
fn reserved_tags_are_unsupported_and_later_tags_unknown() {
    for tag in 15u8..21 {
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
    assert_eq!(
        decode(&[Message::TAG_COUNT as u8]),
        Err(CodecError::UnknownTag {
            tag: u64::from(Message::TAG_COUNT)
        })
    );
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
    // A path claiming 40 MiB, more than any frame's worth of decoded values (8 x 4 MiB):
    // refused on the claim, before allocating or reading.
    let mut huge = vec![0x02, 0x01, 0xfc];
    huge.extend((40u32 << 20).to_le_bytes());
    let err = decode(&huge).unwrap_err();
    assert!(err.to_string().contains("claims more than"), "{err}");
    // One claiming 5 MiB fails on the missing bytes (its zeroed buffer is never touched).
    let mut long = vec![0x02, 0x01, 0xfc];
    long.extend((5u32 << 20).to_le_bytes());
    assert_eq!(decode(&long).unwrap_err(), CodecError::Truncated);
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
