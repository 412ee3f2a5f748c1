//! The test vectors of `docs/PROTOCOL.md` ("Appendix: test vectors"), recomputed from the real
//! code: hashes of given inputs (chunks, chunk trees, workspace Merkle leaves, directories and
//! roots) and encoded messages. The document's values are read from its vector block, so the
//! document cannot drift from the code. After an intended change, regenerate the block with
//! `BOTSYNC_BLESS=1 cargo test -p botsync-proto --test vectors` and review the diff.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;

use botsync_engine::chunktree::content_hash;
use botsync_engine::merkle::{MerkleTree, leaf_hash};
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, Chunker, ChunkerParams, EntryKind, FileEntry, Hash,
    MachineName, Mode, PeerId, RelPath, VersionVector,
};
use botsync_proto::codec::encode;
use botsync_proto::frame::encode_frame;
use botsync_proto::messages::{
    BucketAsk, ChunkWant, Hello, Message, NodeChild, NodeReply, SessionMode, buckets,
};

const BEGIN: &str = "<!-- test-vectors:begin -->";
const END: &str = "<!-- test-vectors:end -->";
/// Hex digits per line in the document: long values continue on indented lines.
const WRAP: usize = 64;

const PEER_A: PeerId = PeerId([0x11; 32]);
const PEER_B: PeerId = PeerId([0x22; 32]);

fn chunk(bytes: &[u8]) -> ChunkRef {
    ChunkRef {
        id: Hash::of(bytes),
        len: bytes.len() as u32,
    }
}

/// The 1 MiB input of the chunker vector: the first 1,048,576 bytes of BLAKE3's extendable
/// output for the input `botsync test vector`.
fn xof_input() -> Vec<u8> {
    let mut out = vec![0u8; 1 << 20];
    let mut h = blake3::Hasher::new();
    h.update(b"botsync test vector");
    h.finalize_xof().fill(&mut out);
    out
}

/// An entry as the vectors describe it; what the leaf hash leaves out (mtime, chunk list,
/// parent, attribution) takes fixed values.
fn entry(
    path: &str,
    kind: EntryKind,
    content: Hash,
    size: u64,
    perms: u16,
    v: &[(PeerId, u64)],
) -> FileEntry {
    FileEntry {
        path: RelPath::new(path).unwrap(),
        kind,
        size,
        mtime_ns: 0,
        mode: Mode { permissions: perms },
        content,
        chunks: Vec::new(),
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs(v.iter().copied()),
        parent: None,
        changed_by: Attribution {
            peer: PEER_A,
            agent: AgentLabel::default(),
            machine: MachineName::default(),
        },
    }
}

/// The workspace of the Merkle vectors: two files, a tombstone, and a name that is both a
/// tombstone and a directory.
fn workspace() -> Vec<FileEntry> {
    let hello = content_hash(&[chunk(b"hello\n")]);
    let two = content_hash(&[chunk(b"hello "), chunk(b"world\n")]);
    vec![
        entry(
            "MEMORY.md",
            EntryKind::File,
            hello,
            6,
            0o644,
            &[(PEER_A, 1)],
        ),
        entry(
            "memory/a.md",
            EntryKind::File,
            two,
            12,
            0o600,
            &[(PEER_A, 2), (PEER_B, 1)],
        ),
        entry(
            "memory/old.md",
            EntryKind::Tombstone,
            Hash::ZERO,
            0,
            0o644,
            &[(PEER_A, 3)],
        ),
        entry(
            "notes",
            EntryKind::Tombstone,
            Hash::ZERO,
            0,
            0o644,
            &[(PEER_B, 1)],
        ),
        entry(
            "notes/b.md",
            EntryKind::File,
            hello,
            6,
            0o644,
            &[(PEER_B, 2)],
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every vector, computed by the code, in the document's order.
fn computed() -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = Vec::new();
    let hello_chunk = chunk(b"hello\n");
    v.push(("chunk-id hello", hello_chunk.id.to_hex()));
    v.push(("content empty-file", content_hash(&[]).to_hex()));
    v.push(("content hello", content_hash(&[hello_chunk]).to_hex()));
    let two = [chunk(b"hello "), chunk(b"world\n")];
    v.push(("content two-chunks", content_hash(&two).to_hex()));
    let many: Vec<ChunkRef> = (0u32..65)
        .map(|i| ChunkRef {
            id: Hash::of(&i.to_le_bytes()),
            len: 1000,
        })
        .collect();
    v.push(("content 65-chunks", content_hash(&many).to_hex()));
    let input = xof_input();
    let cut = Chunker::new(ChunkerParams::DEFAULT)
        .chunk_reader(&input[..])
        .unwrap();
    let lengths: Vec<String> = cut.iter().map(|c| c.len.to_string()).collect();
    v.push(("fastcdc xof-1mib lengths", lengths.join(",")));
    v.push(("content xof-1mib", content_hash(&cut).to_hex()));

    let ws = workspace();
    v.push(("leaf MEMORY.md", leaf_hash(&ws[0]).to_hex()));
    v.push(("leaf memory/old.md", leaf_hash(&ws[2]).to_hex()));
    let tree = MerkleTree::build(&ws);
    let memory = RelPath::new("memory").unwrap();
    v.push(("dir memory", tree.subtree(&memory).unwrap().to_hex()));
    v.push(("root empty-workspace", MerkleTree::new().root().to_hex()));
    v.push(("root workspace", tree.root().to_hex()));

    v.push((
        "state-digest none",
        botsync_proto::messages::state::digest(&[])
            .unwrap()
            .to_hex(),
    ));
    let record = botsync_proto::messages::WireState {
        key: "memory:editor".into(),
        value: b"helix".to_vec(),
        deleted: false,
        version: botsync_engine::VersionVector::from_pairs([(
            botsync_engine::PeerId([0x11; 32]),
            1,
        )]),
        author: botsync_engine::PeerId([0x11; 32]),
        agent: String::new(),
        at_ns: 1_700_000_000_000_000_000,
    };
    v.push((
        "state-digest one-record",
        botsync_proto::messages::state::digest(&[record])
            .unwrap()
            .to_hex(),
    ));
    let hello = Hello::current("vector", AgentLabel::default());
    v.push((
        "frame Hello",
        hex(&encode_frame(&Message::Hello(hello)).unwrap()),
    ));
    let summary = Message::Summary {
        root: tree.root(),
        files: tree.file_count(),
        mode: SessionMode::Sync,
        skipped: 0,
    };
    v.push(("frame Summary", hex(&encode_frame(&summary).unwrap())));
    let get = Message::GetChunks {
        ids: two.iter().map(|c| c.id).collect(),
    };
    v.push(("frame GetChunks", hex(&encode_frame(&get).unwrap())));
    let against = Message::GetChunksAgainst {
        wants: vec![
            ChunkWant {
                id: two[1].id,
                base: Some(two[0].id),
            },
            ChunkWant {
                id: two[0].id,
                base: None,
            },
        ],
    };
    v.push((
        "frame GetChunksAgainst",
        hex(&encode_frame(&against).unwrap()),
    ));
    let root = RelPath::new("").unwrap();
    let nodes = Message::Nodes {
        nodes: vec![NodeReply {
            children: tree
                .children(&root)
                .unwrap()
                .into_iter()
                .map(Into::into)
                .collect(),
            path: root,
        }],
    };
    v.push(("frame Nodes root", hex(&encode_frame(&nodes).unwrap())));
    // The root asked by 16 buckets, with the digests of an asker that has none of its children,
    // and the answer: every bucket holding one of them differs.
    let children: Vec<NodeChild> = tree
        .children(&RelPath::root())
        .unwrap()
        .into_iter()
        .map(Into::into)
        .collect();
    for (label, name) in [
        ("bucket-of MEMORY.md in 16", "MEMORY.md"),
        ("bucket-of memory in 16", "memory"),
        ("bucket-of notes in 16", "notes"),
    ] {
        v.push((label, format!("{:04x}", buckets::bucket_of(name, 16))));
    }
    let ask = BucketAsk {
        path: RelPath::root(),
        digests: buckets::digests(&[], 16),
    };
    let get = Message::GetBuckets {
        dirs: vec![ask.clone()],
    };
    v.push(("frame GetBuckets root", hex(&encode_frame(&get).unwrap())));
    let reply = Message::Buckets {
        nodes: vec![buckets::answer(&ask, children)],
    };
    v.push(("frame Buckets root", hex(&encode_frame(&reply).unwrap())));
    // The payload alone decodes back: a second implementation can start from either.
    assert!(encode(&nodes).is_ok());
    v
}

fn protocol_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md")
}

/// The vector block as the document should hold it.
fn block(vectors: &[(&'static str, String)]) -> String {
    let mut out = String::from("```text\n");
    for (name, value) in vectors {
        out.push_str(name);
        out.push('\n');
        for line in wrap(value) {
            out.push_str("    ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("```\n");
    out
}

/// `value` in lines of at most [`WRAP`] characters; a comma-separated list breaks after a comma.
fn wrap(value: &str) -> Vec<String> {
    if !value.contains(',') {
        let chars: Vec<char> = value.chars().collect();
        return chars.chunks(WRAP).map(|l| l.iter().collect()).collect();
    }
    let mut lines = vec![String::new()];
    for (i, item) in value.split(',').enumerate() {
        let piece = if i == 0 {
            item.to_owned()
        } else {
            format!(",{item}")
        };
        let last = lines.last_mut().unwrap();
        if !last.is_empty() && last.len() + piece.len() > WRAP {
            // The comma ends the line before: the next starts with an item.
            last.push(',');
            lines.push(piece.trim_start_matches(',').to_owned());
        } else {
            last.push_str(&piece);
        }
    }
    lines
}

/// The vectors the document holds: a name on its own line, its value on the indented lines that
/// follow, concatenated.
fn documented(doc: &str) -> BTreeMap<String, String> {
    let start = doc
        .find(BEGIN)
        .expect("PROTOCOL.md has no test-vector block");
    let end = doc
        .find(END)
        .expect("PROTOCOL.md's test-vector block is not closed");
    let mut out = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in doc[start + BEGIN.len()..end].lines() {
        if line.starts_with("```") || line.trim().is_empty() {
            continue;
        }
        if let Some(value) = line.strip_prefix("    ") {
            let n = name.clone().expect("a value line before any name");
            out.entry(n)
                .or_insert_with(String::new)
                .push_str(value.trim());
        } else {
            name = Some(line.trim().to_owned());
        }
    }
    out
}

#[test]
fn every_test_vector_in_the_protocol_document_is_what_the_code_computes() {
    let vectors = computed();
    let path = protocol_md();
    let doc = std::fs::read_to_string(&path).unwrap();
    if std::env::var_os("BOTSYNC_BLESS").is_some() {
        let start = doc.find(BEGIN).unwrap() + BEGIN.len();
        let end = doc.find(END).unwrap();
        let blessed = format!("{}\n{}{}", &doc[..start], block(&vectors), &doc[end..]);
        std::fs::write(&path, blessed).unwrap();
        return;
    }
    let written = documented(&doc);
    let ours: BTreeMap<String, String> = vectors
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    for (name, value) in &ours {
        assert_eq!(
            written.get(name),
            Some(value),
            "vector {name:?} in docs/PROTOCOL.md differs from the code (regenerate with BOTSYNC_BLESS=1 and review)"
        );
    }
    let extra: Vec<_> = written.keys().filter(|n| !ours.contains_key(*n)).collect();
    assert!(extra.is_empty(), "vectors no test computes: {extra:?}");
}

#[test]
fn the_documented_domain_tags_carry_their_trailing_nul() {
    // The chunk-tree domain tag is `botsync/chunk-tree/v1` followed by one NUL byte, hashed
    // before the node's bytes; the empty file's content hash is the tag then `empty`.
    let mut h = blake3::Hasher::new();
    h.update(b"botsync/chunk-tree/v1\0");
    h.update(b"empty");
    assert_eq!(Hash(*h.finalize().as_bytes()), content_hash(&[]));
    let mut h = blake3::Hasher::new();
    h.update(b"botsync/dir-node/v1\0");
    assert_eq!(Hash(*h.finalize().as_bytes()), MerkleTree::new().root());
}
