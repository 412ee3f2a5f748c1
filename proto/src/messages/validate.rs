//! `Message::validate`: the caps of [`crate::limits`] and the field rules serde cannot express,
//! checked after every decode and before every encode.
//!
//! Paths are already validated by `RelPath`'s deserializer; what remains is counting (list
//! lengths, string lengths, vector sizes) and a few structural rules: a leaf tree node exactly at
//! level 0, an elided chunk list really empty, version vectors without zero counters or counters
//! above `MAX_VERSION_COUNTER`, file modes within the nine permission bits, labels and
//! names in their canonical (sanitized) form. This module does not check session order or
//! whether a hash is right: those need state ([`crate::messages::ChunkData::into_verified_bytes`]
//! checks chunk hashes; the session checks tree nodes).

use botsync_engine::entry::Mode;
use botsync_engine::path::MAX_COMPONENT_BYTES;
use botsync_engine::vector::MAX_VERSION_COUNTER;
use botsync_engine::{AgentLabel, ChunkerParams, MachineName, VersionVector};

use super::entry::{ChunkListing, WireEntry};
use super::hello::sanitize_name;
use super::tree::{NodeChild, TreeNodeBody, TreeNodeReply};
use super::{Hello, Message};
use crate::codec::CodecError;
use crate::limits::*;

/// A directory's listing in `Nodes` or `Buckets`: bounded, each child a valid name.
fn validate_children(children: &[NodeChild]) -> Result<(), CodecError> {
    CodecError::check_limit("children of a directory", children.len(), MAX_NODE_CHILDREN)?;
    children.iter().try_for_each(validate_child)
}

/// An item report carries two free-form strings: bound them like error messages.
fn validate_item(item: &super::WireReport) -> Result<(), CodecError> {
    if let super::WireOutcome::Failed { reason } = &item.outcome {
        CodecError::check_limit("bytes of a failure reason", reason.len(), MAX_ERROR_MESSAGE)?;
    }
    if let Some(copy) = &item.conflict_copy {
        CodecError::check_limit(
            "bytes of a conflict copy path",
            copy.len(),
            MAX_ERROR_MESSAGE,
        )?;
    }
    Ok(())
}

impl Message {
    /// Check every protocol limit and field rule. [`crate::codec::decode`] calls this; a sender
    /// may call it to catch an oversized batch before encoding.
    pub fn validate(&self) -> Result<(), CodecError> {
        match self {
            Message::Hello(hello) => validate_hello(hello),
            Message::GetNodes { paths } | Message::GetEntries { paths } => {
                CodecError::check_limit("paths in a request", paths.len(), MAX_PATHS_PER_REQUEST)
            }
            Message::Nodes { nodes } => {
                CodecError::check_limit(
                    "directories in a nodes reply",
                    nodes.len(),
                    MAX_NODES_PER_REPLY,
                )?;
                nodes
                    .iter()
                    .try_for_each(|n| validate_children(&n.children))
            }
            Message::GetBuckets { dirs } => {
                CodecError::check_limit(
                    "directories in a request",
                    dirs.len(),
                    MAX_PATHS_PER_REQUEST,
                )?;
                match dirs
                    .iter()
                    .find(|d| !super::buckets::valid_bucket_count(d.digests.len()))
                {
                    Some(d) => Err(CodecError::Malformed(format!(
                        "{} buckets for {}: a power of two from {} to {} is needed",
                        d.digests.len(),
                        d.path,
                        super::buckets::MIN_BUCKETS,
                        super::buckets::MAX_BUCKETS
                    ))),
                    None => Ok(()),
                }
            }
            Message::Buckets { nodes } => {
                CodecError::check_limit(
                    "directories in a buckets reply",
                    nodes.len(),
                    MAX_NODES_PER_REPLY,
                )?;
                for node in nodes {
                    CodecError::check_limit(
                        "differing buckets",
                        node.differ.len(),
                        super::buckets::MAX_BUCKETS,
                    )?;
                    if node.differ.windows(2).any(|w| w[0] >= w[1]) {
                        return Err(CodecError::Malformed(format!(
                            "buckets of {} not strictly increasing",
                            node.path
                        )));
                    }
                    validate_children(&node.children)?;
                }
                Ok(())
            }
            Message::NodesPart { children, .. } => validate_children(children),
            Message::Entries { entries, .. } => {
                CodecError::check_limit(
                    "entries in a batch",
                    entries.len(),
                    MAX_ENTRIES_PER_BATCH,
                )?;
                entries.iter().try_for_each(validate_entry)
            }
            Message::GetTreeNodes { nodes, .. } => CodecError::check_limit(
                "tree nodes in a request",
                nodes.len(),
                MAX_TREE_NODES_PER_REQUEST,
            ),
            Message::TreeNodes { nodes, .. } => {
                CodecError::check_limit(
                    "tree nodes in a reply",
                    nodes.len(),
                    MAX_TREE_NODES_PER_REQUEST,
                )?;
                nodes.iter().try_for_each(validate_tree_node)
            }
            Message::GetChunks { ids } => {
                CodecError::check_limit("chunk ids in a request", ids.len(), MAX_IDS_PER_REQUEST)
            }
            Message::GetChunksAgainst { wants } => {
                CodecError::check_limit("chunk ids in a request", wants.len(), MAX_IDS_PER_REQUEST)
            }
            Message::ChunkData(chunk) => {
                CodecError::check_limit("chunk payload bytes", chunk.data.len(), MAX_CHUNK_LEN)
            }
            Message::Error { message, .. } => {
                CodecError::check_limit("error message bytes", message.len(), MAX_ERROR_MESSAGE)
            }
            Message::Offer { entries, .. } => {
                CodecError::check_limit(
                    "entries in an offer batch",
                    entries.len(),
                    MAX_ENTRIES_PER_BATCH,
                )?;
                entries.iter().try_for_each(validate_entry)
            }
            Message::OfferResult { items, .. } => {
                CodecError::check_limit(
                    "items in an offer result",
                    items.len(),
                    MAX_ENTRIES_PER_BATCH,
                )?;
                items.iter().try_for_each(validate_item)
            }
            Message::GetState { patterns, .. } => {
                CodecError::check_limit(
                    "patterns in a state request",
                    patterns.len(),
                    MAX_STATE_PATTERNS,
                )?;
                patterns
                    .iter()
                    .try_for_each(|p| super::state::validate_pattern(p))
            }
            Message::State { records, .. } => {
                CodecError::check_limit(
                    "records in a state batch",
                    records.len(),
                    MAX_STATE_RECORDS_PER_BATCH,
                )?;
                records.iter().try_for_each(|r| {
                    r.validate()?;
                    validate_vector(&r.version)
                })
            }
            Message::Coordinate { body } | Message::Coordinated { body } => {
                CodecError::check_limit("coordination body bytes", body.len(), MAX_COORD_BODY)
            }
            Message::MeshConfig { files } => super::mesh::validate_files(files),
            Message::Parity(info) => super::mesh::validate_parity(info),
            Message::Summary { .. }
            | Message::Changed { .. }
            | Message::Goodbye
            | Message::Working
            | Message::GetMeshConfig
            | Message::GetParity => Ok(()),
            Message::ReservedLockStatus
            | Message::ReservedChatSay
            | Message::ReservedChatFeed
            | Message::ReservedHandoff
            | Message::ReservedCoordination1
            | Message::ReservedCoordination2 => Err(CodecError::Unsupported {
                tag: self.tag(),
                name: self.kind(),
            }),
        }
    }
}

fn validate_hello(hello: &Hello) -> Result<(), CodecError> {
    CodecError::check_limit("peer name bytes", hello.peer_name.len(), MAX_PEER_NAME)?;
    if sanitize_name(&hello.peer_name) != hello.peer_name {
        return Err(CodecError::Malformed(format!(
            "peer name {:?} has control characters or surrounding spaces",
            hello.peer_name
        )));
    }
    validate_agent(&hello.agent)
}

fn validate_agent(agent: &AgentLabel) -> Result<(), CodecError> {
    CodecError::check_limit("agent label bytes", agent.as_str().len(), MAX_AGENT_LABEL)?;
    canonical(
        "agent label",
        agent.as_str(),
        AgentLabel::new(agent.as_str()) == *agent,
    )
}

fn validate_machine(machine: &MachineName) -> Result<(), CodecError> {
    CodecError::check_limit("machine name bytes", machine.as_str().len(), MAX_PEER_NAME)?;
    canonical(
        "machine name",
        machine.as_str(),
        MachineName::new(machine.as_str()) == *machine,
    )
}

/// A label is refused unless it is already what its constructor makes of it.
fn canonical(what: &str, text: &str, is_canonical: bool) -> Result<(), CodecError> {
    if is_canonical {
        return Ok(());
    }
    Err(CodecError::Malformed(format!(
        "{what} {text:?} has control characters or surrounding spaces"
    )))
}

fn validate_child(child: &NodeChild) -> Result<(), CodecError> {
    let name = child.name.as_str();
    CodecError::check_limit("file name bytes", name.len(), MAX_COMPONENT_BYTES)?;
    // A valid name is exactly one valid path component, already in NFC and not the state dir.
    let single = botsync_engine::RelPath::new(name)
        .map(|p| p.as_str() == name && !name.contains('/') && !p.is_root())
        .unwrap_or(false);
    if !single {
        return Err(CodecError::Malformed(format!(
            "directory child name {name:?} is not a valid file name"
        )));
    }
    Ok(())
}

fn validate_entry(wire: &WireEntry) -> Result<(), CodecError> {
    let entry = &wire.file;
    match wire.listing {
        ChunkListing::Inline => {
            CodecError::check_limit(
                "inline chunks of an entry",
                entry.chunks.len(),
                MAX_INLINE_CHUNKS,
            )?;
        }
        ChunkListing::Elided { chunk_count } => {
            if !entry.chunks.is_empty() || chunk_count == 0 {
                return Err(CodecError::Malformed(format!(
                    "entry {} is marked elided but carries {} chunks and a count of {chunk_count}",
                    entry.path,
                    entry.chunks.len()
                )));
            }
        }
    }
    for chunk in &entry.chunks {
        validate_chunk_len(chunk.len)?;
    }
    validate_chunk_count(wire)?;
    if !(Mode {
        permissions: entry.mode,
    })
    .is_valid()
    {
        return Err(CodecError::Malformed(format!(
            "entry {} has mode {:o}, beyond the permission bits 0o777",
            entry.path, entry.mode
        )));
    }
    if !ChunkerParams::from(entry.chunker).is_valid() {
        return Err(CodecError::Malformed(format!(
            "entry {} has invalid chunker parameters",
            entry.path
        )));
    }
    validate_vector(&entry.version)?;
    validate_agent(&entry.agent)?;
    validate_machine(&entry.machine)
}

/// Work per file is bounded by its size: the declared chunker minimum is at least
/// [`MIN_CHUNK_FLOOR`], and the chunk count (inline or elided) at most what the size allows.
fn validate_chunk_count(wire: &WireEntry) -> Result<(), CodecError> {
    let entry = &wire.file;
    if entry.is_tombstone() {
        return Ok(());
    }
    if entry.chunker.min < MIN_CHUNK_FLOOR {
        return Err(CodecError::Malformed(format!(
            "entry {} declares chunks of at least {} bytes, below the floor of {MIN_CHUNK_FLOOR}",
            entry.path, entry.chunker.min
        )));
    }
    let count = match wire.listing {
        ChunkListing::Inline => entry.chunks.len() as u64,
        ChunkListing::Elided { chunk_count } => u64::from(chunk_count),
    };
    let most = max_chunks(entry.size, entry.chunker.min);
    if count > most {
        return Err(CodecError::Malformed(format!(
            "entry {} declares {count} chunks for {} bytes; at most {most} chunks fit",
            entry.path, entry.size
        )));
    }
    Ok(())
}

fn validate_chunk_len(len: u32) -> Result<(), CodecError> {
    if len == 0 {
        return Err(CodecError::Malformed(
            "chunk reference with length 0".to_owned(),
        ));
    }
    CodecError::check_limit("chunk length", len as usize, MAX_CHUNK_LEN)
}

fn validate_vector(version: &VersionVector) -> Result<(), CodecError> {
    CodecError::check_limit("peers in a version vector", version.len(), MAX_VECTOR_PEERS)?;
    if version.iter().any(|(_, &counter)| counter == 0) {
        return Err(CodecError::Malformed(
            "version vector with a zero counter".to_owned(),
        ));
    }
    // Counting one more change must never overflow: larger counters are refused here, so none
    // ever reaches a replica (`docs/PROTOCOL.md`, "Version vectors").
    if let Some((peer, &counter)) = version.iter().find(|(_, c)| **c > MAX_VERSION_COUNTER) {
        return Err(CodecError::Malformed(format!(
            "version counter {counter} of peer {peer} is above the maximum {MAX_VERSION_COUNTER}"
        )));
    }
    Ok(())
}

fn validate_tree_node(node: &TreeNodeReply) -> Result<(), CodecError> {
    let children = match (&node.body, node.addr.level) {
        (TreeNodeBody::Leaf(chunks), 0) => {
            for chunk in chunks {
                validate_chunk_len(chunk.len)?;
            }
            chunks.len()
        }
        (TreeNodeBody::Inner(children), 1..) => {
            // The node's span is the sum of its children's: it must fit a u64 so that hashing
            // the node (`TreeNodeReply::node_hash`) cannot overflow on hostile spans.
            let total = children
                .iter()
                .try_fold(0u64, |sum, c| sum.checked_add(c.span));
            if total.is_none() {
                return Err(CodecError::Malformed(format!(
                    "chunk-tree node at level {} spans more than 2^64 bytes",
                    node.addr.level
                )));
            }
            children.len()
        }
        (_, level) => {
            return Err(CodecError::Malformed(format!(
                "chunk-tree node at level {level} has the wrong kind of children"
            )));
        }
    };
    if children == 0 {
        return Err(CodecError::Malformed("empty chunk-tree node".to_owned()));
    }
    CodecError::check_limit(
        "children of a chunk-tree node",
        children,
        MAX_TREE_NODE_CHILDREN,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::messages::{ChunkData, Compression, SubtreeRef, TreeAddr};
    use botsync_engine::{
        Attribution, ChunkRef, EntryKind, FileEntry, Hash, MachineName, PeerId, RelPath,
    };

    fn entry(chunks: usize) -> FileEntry {
        FileEntry {
            path: RelPath::new("memory/log.jsonl").unwrap(),
            kind: EntryKind::File,
            // Chunks of 20,000 bytes: above the default chunker minimum, as real ones are.
            size: chunks as u64 * 20_000,
            mtime_ns: 0,
            mode: Mode::default(),
            content: Hash::of(b"content"),
            chunks: vec![
                ChunkRef {
                    id: Hash::of(b"c"),
                    len: 20_000
                };
                chunks
            ],
            chunker: ChunkerParams::DEFAULT,
            version: VersionVector::from_pairs([(PeerId([1; 32]), 1)]),
            parent: None,
            changed_by: Attribution {
                peer: PeerId([1; 32]),
                agent: AgentLabel::new("claude"),
                machine: MachineName::default(),
            },
        }
    }

    fn entries(e: Vec<WireEntry>) -> Message {
        Message::Entries {
            entries: e,
            last: true,
        }
    }

    #[test]
    fn long_chunk_lists_are_elided_and_valid() {
        let wire = WireEntry::new(entry(MAX_INLINE_CHUNKS + 1), MAX_INLINE_CHUNKS);
        assert!(wire.file.chunks.is_empty());
        assert_eq!(
            wire.listing,
            ChunkListing::Elided {
                chunk_count: MAX_INLINE_CHUNKS as u32 + 1
            }
        );
        assert_eq!(entries(vec![wire]).validate(), Ok(()));
        let short = WireEntry::new(entry(3), MAX_INLINE_CHUNKS);
        assert_eq!(short.listing, ChunkListing::Inline);
    }

    #[test]
    fn too_many_inline_chunks_are_refused() {
        let wire = WireEntry {
            file: entry(MAX_INLINE_CHUNKS + 1).into(),
            listing: ChunkListing::Inline,
        };
        assert_eq!(
            WireEntry::new(wire.file.clone().into(), usize::MAX)
                .file
                .chunks
                .len(),
            0
        );
        assert!(matches!(
            entries(vec![wire]).validate(),
            Err(CodecError::LimitExceeded { .. })
        ));
    }

    #[test]
    fn a_machine_name_from_a_peer_must_be_short_and_clean() {
        let named = |json: &str| {
            let mut wire = WireEntry::new(entry(1), MAX_INLINE_CHUNKS);
            wire.file.machine = serde_json::from_str(json).unwrap();
            entries(vec![wire]).validate()
        };
        assert_eq!(named(r#""laptop""#), Ok(()));
        assert_eq!(
            named(r#""""#),
            Ok(()),
            "a version from before names were carried"
        );
        assert!(matches!(
            named(r#""evil\nname""#),
            Err(CodecError::Malformed(m)) if m.contains("machine name")
        ));
        assert!(named(r#"" padded""#).is_err());
        let long = format!("\"{}\"", "m".repeat(MAX_PEER_NAME + 1));
        assert!(matches!(
            named(&long),
            Err(CodecError::LimitExceeded {
                what: "machine name bytes",
                ..
            })
        ));
    }

    #[test]
    fn elided_entry_with_chunks_is_malformed() {
        let wire = WireEntry {
            file: entry(2).into(),
            listing: ChunkListing::Elided { chunk_count: 2 },
        };
        assert!(matches!(
            entries(vec![wire]).validate(),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn version_counters_above_the_maximum_are_malformed() {
        let mut e = entry(1);
        let peer = PeerId([1; 32]);
        e.version = VersionVector::from_pairs([(peer, MAX_VERSION_COUNTER)]);
        let wire = |e: FileEntry| WireEntry {
            file: e.into(),
            listing: ChunkListing::Inline,
        };
        assert_eq!(entries(vec![wire(e.clone())]).validate(), Ok(()));
        for counter in [MAX_VERSION_COUNTER + 1, u64::MAX] {
            e.version = VersionVector::from_pairs([(peer, counter)]);
            assert!(matches!(
                entries(vec![wire(e.clone())]).validate(),
                Err(CodecError::Malformed(m)) if m.contains("above the maximum")
            ));
        }
    }

    #[test]
    fn oversized_chunk_refs_are_refused() {
        let mut e = entry(1);
        e.chunks[0].len = MAX_CHUNK_LEN as u32 + 1;
        let wire = WireEntry {
            file: e.into(),
            listing: ChunkListing::Inline,
        };
        assert!(entries(vec![wire]).validate().is_err());
    }

    #[test]
    fn child_names_must_be_single_components() {
        for bad in ["", ".", "..", "a/b", ".botsync", "x\u{0}y", "cafe\u{301}"] {
            let child = NodeChild {
                name: bad.into(),
                kind: super::super::ChildKind::File,
                hash: Hash::ZERO,
            };
            assert!(validate_child(&child).is_err(), "{bad:?} accepted");
        }
        let ok = NodeChild {
            name: "MEMORY.md".into(),
            kind: super::super::ChildKind::File,
            hash: Hash::ZERO,
        };
        assert_eq!(validate_child(&ok), Ok(()));
    }

    #[test]
    fn tree_nodes_must_match_their_level() {
        let leaf_high = TreeNodeReply {
            addr: TreeAddr { level: 1, index: 0 },
            body: TreeNodeBody::Leaf(vec![ChunkRef {
                id: Hash::ZERO,
                len: 1,
            }]),
        };
        assert!(validate_tree_node(&leaf_high).is_err());
        let overflowing = TreeNodeReply {
            addr: TreeAddr { level: 1, index: 0 },
            body: TreeNodeBody::Inner(vec![
                SubtreeRef {
                    hash: Hash::ZERO,
                    span: u64::MAX
                };
                2
            ]),
        };
        assert!(matches!(
            validate_tree_node(&overflowing),
            Err(CodecError::Malformed(_))
        ));
        let empty = TreeNodeReply {
            addr: TreeAddr { level: 0, index: 0 },
            body: TreeNodeBody::Leaf(vec![]),
        };
        assert!(validate_tree_node(&empty).is_err());
    }

    #[test]
    fn hello_names_must_be_sanitized() {
        let mut hello = Hello::current("box", AgentLabel::new("claude"));
        assert_eq!(Message::Hello(hello.clone()).validate(), Ok(()));
        hello.peer_name = "evil\nname".into();
        assert!(Message::Hello(hello).validate().is_err());
    }

    #[test]
    fn oversized_requests_are_refused() {
        let ids = vec![Hash::ZERO; MAX_IDS_PER_REQUEST + 1];
        let err = Message::GetChunks { ids }.validate().unwrap_err();
        assert_eq!(
            err,
            CodecError::LimitExceeded {
                what: "chunk ids in a request",
                value: MAX_IDS_PER_REQUEST as u64 + 1,
                max: MAX_IDS_PER_REQUEST as u64
            }
        );
        let chunk = ChunkData {
            id: Hash::ZERO,
            compression: Compression::None,
            data: vec![0; MAX_CHUNK_LEN + 1],
        };
        assert!(Message::ChunkData(chunk).validate().is_err());
    }
}
