//! The message catalog: every value a botsync peer can send.
//!
//! [`Message`] is the one type on the wire. Its variant order **is** the protocol: bincode
//! encodes the variant index as the message tag, so variants are append-only: a message is
//! never removed or moved, only replaced by a `Reserved*` slot. Tags 13 and 14 carry the
//! coordination protocol of seed 004 (docs/LOCKS.md) on coordination connections only; tags 15
//! to 20 stay reserved for later coordination messages: decoding one is the error "unsupported
//! message" until a later protocol version defines it. Tags 23-24 carry skill state, tags 25-28
//! the mesh config and parity checks ([`mesh`]), each pair behind its feature bit, so a peer
//! without the feature never receives them; tag 29 asks for chunks as deltas (feature `delta`).
//!
//! The payload types live in submodules by concern: [`hello`] (handshake and negotiation),
//! [`tree`] (workspace Merkle nodes, entries and chunk-tree nodes), [`chunk`] (chunk payloads
//! and their compression) and [`mesh`] (mesh config files and parity reports). Post-decode checks are in [`validate`]; [`batch`] splits long lists
//! into messages that fit. What this module does not own:
//! bytes (that is [`crate::codec`]) and the order in which messages may be sent (the session).
//! `docs/PROTOCOL.md` describes every message; change both in the same commit.

pub mod batch;
pub mod buckets;
pub mod chunk;
pub mod entry;
pub mod hello;
pub mod mesh;
pub mod report;
pub mod state;
pub mod tree;
pub mod validate;

use std::fmt;

use botsync_engine::{Hash, RelPath};
use serde::{Deserialize, Serialize};

pub use batch::{
    bucket_batches, bucket_requests, entry_batches, flagged_batches, long_bucket_batches,
    long_node_batches, node_batches, path_requests, result_batches, state_batches,
};
pub use buckets::{BucketAsk, BucketDigest, BucketReply};
pub use chunk::{ChunkData, ChunkWant, Compression};
pub use entry::{
    ChunkListing, WireChunk, WireChunker, WireChunkerKind, WireEntry, WireFile, WireKind,
};
pub use hello::{Features, Hello, Negotiated, PROTOCOL_VERSION, SessionMode, VersionMismatch};
pub use mesh::{MeshFile, ParityInfo, Policy};
pub use report::{WireAction, WireOutcome, WirePolicy, WireReport};
pub use state::WireState;
pub use tree::{
    ChildKind, NodeChild, NodeReply, SubtreeRef, TreeAddr, TreeNodeBody, TreeNodeReply,
};

/// One protocol message. The variant index is the tag on the wire: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Tag 0. First message on the control stream, both directions: versions and features.
    Hello(Hello),
    /// Tag 1. The sender's workspace Merkle root; equal roots mean the peers are in sync.
    Summary {
        /// Root hash of the sender's workspace Merkle tree (over its synced selection).
        root: Hash,
        /// Number of files (not tombstones) under that root, for progress display.
        files: u64,
        /// What the initiator wants this session to do.
        mode: SessionMode,
        /// Selected files the sender's rescan could not read (changed while being read,
        /// unreadable, colliding names): their changes are not in `root`, so equal roots do not
        /// mean "in sync" while either side reports any.
        skipped: u64,
    },
    /// Tag 2. Ask for the children of these directories (the root is the empty path).
    GetNodes {
        /// Directories whose hashes differ between the peers.
        paths: Vec<RelPath>,
    },
    /// Tag 3. Children of the asked directories, in the order asked.
    Nodes {
        /// One reply per asked path.
        nodes: Vec<NodeReply>,
    },
    /// Tag 4. Ask for the current entries of these files (and tombstones).
    GetEntries {
        /// File paths whose leaf hashes differ.
        paths: Vec<RelPath>,
    },
    /// Tag 5. One batch of entries; the last batch of a reply has `last` set.
    Entries {
        /// The entries of this batch.
        entries: Vec<WireEntry>,
        /// True on the final batch answering a `GetEntries`.
        last: bool,
    },
    /// Tag 6. Ask for nodes of a file's chunk tree (for entries whose chunk list was elided).
    GetTreeNodes {
        /// The file's content hash: the root of its chunk tree.
        content: Hash,
        /// The nodes wanted.
        nodes: Vec<TreeAddr>,
    },
    /// Tag 7. Chunk-tree nodes, in the order asked.
    TreeNodes {
        /// The content hash they belong to.
        content: Hash,
        /// One reply per asked node.
        nodes: Vec<TreeNodeReply>,
    },
    /// Tag 8. Ask for chunk payloads; answered by one `ChunkData` per id, in order.
    GetChunks {
        /// The chunk ids wanted.
        ids: Vec<Hash>,
    },
    /// Tag 9. One chunk's payload.
    ChunkData(ChunkData),
    /// Tag 10. The sender's workspace changed; its new root.
    Changed {
        /// The new Merkle root.
        root: Hash,
    },
    /// Tag 11. A request failed (or the session is being refused).
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable detail (≤ [`crate::limits::MAX_ERROR_MESSAGE`] bytes).
        message: String,
    },
    /// Tag 12. The sender is done; the receiver finishes and closes.
    Goodbye,
    /// Tag 13. A request of the coordination protocol (docs/LOCKS.md): alone on a stream of a
    /// coordination connection (ALPN [`crate::tls::COORD_ALPN`]), never on a sync connection.
    Coordinate {
        /// The request, a JSON document (≤ [`crate::limits::MAX_COORD_BODY`] bytes).
        body: Vec<u8>,
    },
    /// Tag 14. The answer to a [`Message::Coordinate`], on the same stream.
    Coordinated {
        /// The answer, a JSON document (≤ [`crate::limits::MAX_COORD_BODY`] bytes).
        body: Vec<u8>,
    },
    /// Tag 15, reserved: lock status.
    ReservedLockStatus,
    /// Tag 16, reserved: chat room message.
    ReservedChatSay,
    /// Tag 17, reserved: chat feed request.
    ReservedChatFeed,
    /// Tag 18, reserved: task handoff.
    ReservedHandoff,
    /// Tag 19, reserved: spare coordination slot.
    ReservedCoordination1,
    /// Tag 20, reserved: spare coordination slot.
    ReservedCoordination2,
    /// Tag 21. The initiator offers its versions of differing paths (push direction); the
    /// receiver plans them under its own rules, fetches the chunks it lacks from the initiator
    /// on request streams and applies them (or only plans them when `dry_run`).
    Offer {
        /// One batch of offered entries.
        entries: Vec<WireEntry>,
        /// Plan only: fetch nothing, write nothing.
        dry_run: bool,
        /// True on the final batch of the offer.
        last: bool,
        /// Carry out deletions beyond the receiver's delete threshold (`--force`); without
        /// it the receiver refuses such an offer with `Error { code: Refused }`.
        force: bool,
    },
    /// Tag 22. What the receiver did (or would do) with each offered entry that needed action.
    OfferResult {
        /// One batch of per-path reports.
        items: Vec<WireReport>,
        /// True on the final batch.
        last: bool,
    },
    /// Tag 23 (feature STATE). The sender's `state_sync` patterns: "send me your records of the
    /// keys that match these and yours". The initiator sends it after the file phase; the
    /// responder answers with its own `GetState`, then its `State` batches.
    GetState {
        /// The sender's `state_sync` patterns (globs over keys).
        patterns: Vec<String>,
        /// [`state::digest`] of the initiator's records matching `patterns`; of the responder's
        /// records it shares with the initiator. Equal digests: no record moves.
        digest: Hash,
    },
    /// Tag 24 (feature STATE). One batch of skill state records; the last batch of a reply (or
    /// of the initiator's push) has `last` set.
    State {
        /// The records of this batch.
        records: Vec<WireState>,
        /// True on the final batch.
        last: bool,
    },
    /// Tag 25 (feature `mesh-config`). Ask for the peer's designated mesh config files.
    GetMeshConfig,
    /// Tag 26 (feature `mesh-config`). The sender's designated mesh config files, stripped of
    /// their secrets: the answer to `GetMeshConfig`, or the initiator's push.
    MeshConfig {
        /// The files (at most [`crate::limits::MAX_MESH_FILES`]).
        files: Vec<MeshFile>,
    },
    /// Tag 27 (feature `parity`). Ask for the peer's parity report.
    GetParity,
    /// Tag 28 (feature `parity`). The sender's root, selection rules and stripped mesh config.
    Parity(ParityInfo),
    /// Tag 29 (feature `delta`). Ask for chunk payloads, naming for each a chunk we hold that
    /// the answer may be compressed against; answered like `GetChunks`, one `ChunkData` (or
    /// `Error(NotFound)`) per want, in order.
    GetChunksAgainst {
        /// The chunks wanted, each with its optional base.
        wants: Vec<ChunkWant>,
    },
    /// Tag 30 (feature `BUCKETS`). Ask for the children of large directories by buckets: only
    /// the buckets whose digests differ from the asker's are answered (`messages/buckets.rs`).
    GetBuckets {
        /// The directories, each with the asker's bucket digests.
        dirs: Vec<BucketAsk>,
    },
    /// Tag 31 (feature `BUCKETS`). The differing buckets of the asked directories and the
    /// replier's children in them, in the order asked (split over messages like `Nodes`).
    Buckets {
        /// One reply per asked directory.
        nodes: Vec<BucketReply>,
    },
    /// Tag 32 (feature `LONG_LISTS`). The first children of the next directory to be answered
    /// (in a `Nodes` or `Buckets` reply), whose listing does not fit one reply: the asker
    /// keeps them, and the directory's reply, when it comes, carries the rest.
    NodesPart {
        /// The directory (the next one the asker waits for).
        path: RelPath,
        /// Children, sorted as in `Nodes`, all before the ones of later parts and of the reply.
        children: Vec<NodeChild>,
    },
    /// Tag 33 (feature `STILL_WORKING`). Sent on the control stream by a side busy with local
    /// work (an apply, a rescan) while the peer waits for its next message: the peer restarts
    /// the deadline it waits under. No reply.
    Working,
}

impl Message {
    /// Number of tags defined (including reserved ones); tags at or above are unknown.
    pub const TAG_COUNT: u32 = 34;

    /// The wire tag (the variant index).
    pub fn tag(&self) -> u32 {
        match self {
            Message::Hello(_) => 0,
            Message::Summary { .. } => 1,
            Message::GetNodes { .. } => 2,
            Message::Nodes { .. } => 3,
            Message::GetEntries { .. } => 4,
            Message::Entries { .. } => 5,
            Message::GetTreeNodes { .. } => 6,
            Message::TreeNodes { .. } => 7,
            Message::GetChunks { .. } => 8,
            Message::ChunkData(_) => 9,
            Message::Changed { .. } => 10,
            Message::Error { .. } => 11,
            Message::Goodbye => 12,
            Message::Coordinate { .. } => 13,
            Message::Coordinated { .. } => 14,
            Message::ReservedLockStatus => 15,
            Message::ReservedChatSay => 16,
            Message::ReservedChatFeed => 17,
            Message::ReservedHandoff => 18,
            Message::ReservedCoordination1 => 19,
            Message::ReservedCoordination2 => 20,
            Message::Offer { .. } => 21,
            Message::OfferResult { .. } => 22,
            Message::GetState { .. } => 23,
            Message::State { .. } => 24,
            Message::GetMeshConfig => 25,
            Message::MeshConfig { .. } => 26,
            Message::GetParity => 27,
            Message::Parity(_) => 28,
            Message::GetChunksAgainst { .. } => 29,
            Message::GetBuckets { .. } => 30,
            Message::Buckets { .. } => 31,
            Message::NodesPart { .. } => 32,
            Message::Working => 33,
        }
    }

    /// A stable kebab-case name for logs and errors ("get-chunks", "chunk-data", …).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Summary { .. } => "summary",
            Message::GetNodes { .. } => "get-nodes",
            Message::Nodes { .. } => "nodes",
            Message::GetEntries { .. } => "get-entries",
            Message::Entries { .. } => "entries",
            Message::GetTreeNodes { .. } => "get-tree-nodes",
            Message::TreeNodes { .. } => "tree-nodes",
            Message::GetChunks { .. } => "get-chunks",
            Message::GetChunksAgainst { .. } => "get-chunks-against",
            Message::GetBuckets { .. } => "get-buckets",
            Message::Buckets { .. } => "buckets",
            Message::NodesPart { .. } => "nodes-part",
            Message::Working => "working",
            Message::ChunkData(_) => "chunk-data",
            Message::Changed { .. } => "changed",
            Message::Error { .. } => "error",
            Message::Goodbye => "goodbye",
            Message::Offer { .. } => "offer",
            Message::OfferResult { .. } => "offer-result",
            Message::Coordinate { .. } => "coordinate",
            Message::Coordinated { .. } => "coordinated",
            Message::GetMeshConfig => "get-mesh-config",
            Message::MeshConfig { .. } => "mesh-config",
            Message::GetParity => "get-parity",
            Message::Parity(_) => "parity",
            Message::GetState { .. } => "get-state",
            Message::State { .. } => "state",
            other => other.reserved_name().unwrap_or("reserved"),
        }
    }

    /// For a reserved slot, its name; `None` for a message this version implements.
    pub fn reserved_name(&self) -> Option<&'static str> {
        Some(match self {
            Message::ReservedLockStatus => "reserved-lock-status",
            Message::ReservedChatSay => "reserved-chat-say",
            Message::ReservedChatFeed => "reserved-chat-feed",
            Message::ReservedHandoff => "reserved-handoff",
            Message::ReservedCoordination1 => "reserved-coordination-1",
            Message::ReservedCoordination2 => "reserved-coordination-2",
            _ => return None,
        })
    }
}

/// Why a request or session failed, carried by [`Message::Error`].
///
/// Append-only like [`Message`]: the variant index is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No protocol version in common; the session ends.
    VersionMismatch,
    /// A message was valid but not expected in this state; the session ends.
    UnexpectedMessage,
    /// Something asked for (a path, content hash or chunk) is not available (any more); the
    /// session continues and the requester retries later or elsewhere.
    NotFound,
    /// The request is outside what this peer shares with the requester; the session continues.
    Refused,
    /// The peer is overloaded or already syncing with the requester; the session ends, retry
    /// later.
    Busy,
    /// The peer hit an internal error (disk, index); the session ends.
    Internal,
}

impl ErrorCode {
    /// True if the session cannot continue after this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::VersionMismatch
                | ErrorCode::UnexpectedMessage
                | ErrorCode::Busy
                | ErrorCode::Internal
        )
    }

    /// Stable kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::VersionMismatch => "version-mismatch",
            ErrorCode::UnexpectedMessage => "unexpected-message",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Refused => "refused",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Message {
    /// The kind and the main counts, for logs: `get-chunks (12 ids)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::GetNodes { paths } | Message::GetEntries { paths } => {
                write!(f, "{} ({} paths)", self.kind(), paths.len())
            }
            Message::Nodes { nodes } => write!(f, "nodes ({} directories)", nodes.len()),
            Message::GetBuckets { dirs } => write!(f, "get-buckets ({} directories)", dirs.len()),
            Message::Buckets { nodes } => write!(f, "buckets ({} directories)", nodes.len()),
            Message::NodesPart { path, children } => {
                write!(f, "nodes-part ({path}, {} children)", children.len())
            }
            Message::Entries { entries, last } => {
                write!(f, "entries ({} entries, last={last})", entries.len())
            }
            Message::GetTreeNodes { content, nodes } => {
                write!(f, "get-tree-nodes ({content}, {} nodes)", nodes.len())
            }
            Message::TreeNodes { content, nodes } => {
                write!(f, "tree-nodes ({content}, {} nodes)", nodes.len())
            }
            Message::GetChunks { ids } => write!(f, "get-chunks ({} ids)", ids.len()),
            Message::GetChunksAgainst { wants } => {
                let bases = wants.iter().filter(|w| w.base.is_some()).count();
                write!(f, "get-chunks-against ({} ids, {bases} bases)", wants.len())
            }
            Message::ChunkData(c) => write!(f, "chunk-data ({}, {} bytes)", c.id, c.data.len()),
            Message::Summary { root, .. } | Message::Changed { root } => {
                write!(f, "{} ({root})", self.kind())
            }
            Message::Error { code, .. } => write!(f, "error ({code})"),
            Message::Offer {
                entries,
                dry_run,
                last,
                force,
            } => {
                write!(
                    f,
                    "offer ({} entries, dry_run={dry_run}, last={last}, force={force})",
                    entries.len()
                )
            }
            Message::OfferResult { items, last } => {
                write!(f, "offer-result ({} items, last={last})", items.len())
            }
            Message::MeshConfig { files } => write!(f, "mesh-config ({} files)", files.len()),
            Message::Parity(p) => write!(f, "parity ({}, {} files)", p.root, p.files),
            Message::GetState { patterns, .. } => {
                write!(f, "get-state ({} patterns)", patterns.len())
            }
            Message::State { records, last } => {
                write!(f, "state ({} records, last={last})", records.len())
            }
            _ => f.write_str(self.kind()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn reserved() -> Vec<Message> {
        vec![
            Message::ReservedLockStatus,
            Message::ReservedChatSay,
            Message::ReservedChatFeed,
            Message::ReservedHandoff,
            Message::ReservedCoordination1,
            Message::ReservedCoordination2,
        ]
    }

    #[test]
    fn reserved_slots_are_tags_15_to_20() {
        let tags: Vec<u32> = reserved().iter().map(Message::tag).collect();
        assert_eq!(tags, (15..=20).collect::<Vec<_>>());
        assert!(
            reserved()
                .iter()
                .all(|m| m.reserved_name() == Some(m.kind()))
        );
        assert_eq!(Message::Goodbye.reserved_name(), None);
    }

    #[test]
    fn only_structural_failures_are_fatal() {
        assert!(ErrorCode::VersionMismatch.is_fatal());
        assert!(!ErrorCode::NotFound.is_fatal());
        assert!(ErrorCode::Busy.is_fatal());
        assert!(!ErrorCode::Refused.is_fatal());
        assert_eq!(ErrorCode::NotFound.to_string(), "not-found");
    }

    #[test]
    fn display_names_the_kind_and_size() {
        let m = Message::GetChunks {
            ids: vec![Hash::ZERO; 3],
        };
        assert_eq!(m.to_string(), "get-chunks (3 ids)");
        assert_eq!(Message::Goodbye.to_string(), "goodbye");
    }
}
