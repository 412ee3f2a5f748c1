//! [`WireEntry`]: a file entry as the wire carries it in `Entries` and `Offer`, the protocol's
//! own type. The engine's `FileEntry` (the index's record) is converted at the edge, field by
//! field, so a field added to the index or a type changed in the engine never changes protocol
//! bytes: a change here is a change of docs/PROTOCOL.md ("`Entries`"), and the golden tests of
//! `tests/codec.rs` hold the bytes.
//!
//! The shared value types (`Hash`, `RelPath`, `PeerId`, `VersionVector`, `AgentLabel`) are
//! specified once in PROTOCOL.md ("Shared field types") and travel as they are.

use botsync_engine::chunk::ChunkerKind;
use botsync_engine::entry::{EntryKind, Mode};
use botsync_engine::{
    AgentLabel, Attribution, ChunkRef, ChunkerParams, FileEntry, Hash, MachineName, PeerId,
    RelPath, VersionVector,
};
use serde::{Deserialize, Serialize};

/// How an entry's chunk list travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkListing {
    /// `file.chunks` is the complete list (≤ [`crate::limits::MAX_INLINE_CHUNKS`]).
    Inline,
    /// `file.chunks` is empty; the file has `chunk_count` chunks whose tree has root
    /// `file.content`. Fetch the nodes that differ from the local version with `GetTreeNodes`.
    Elided {
        /// How many chunks the file has (≥ 1).
        chunk_count: u32,
    },
}

/// A file entry as sent in an `Entries` batch or an `Offer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The entry (with `chunks` empty when elided).
    pub file: WireFile,
    /// Whether `file.chunks` is complete.
    pub listing: ChunkListing,
}

/// The fields of one version of a path, in their wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFile {
    /// Normalized workspace-relative path.
    pub path: RelPath,
    /// File or tombstone.
    pub kind: WireKind,
    /// Size in bytes (0 for tombstones).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o777`).
    pub mode: u16,
    /// Content hash: the root of the chunk-list tree; all zeros for tombstones.
    pub content: Hash,
    /// The chunks in file order (empty when elided).
    pub chunks: Vec<WireChunk>,
    /// The chunker that cut them.
    pub chunker: WireChunker,
    /// Causal history of the path.
    pub version: VersionVector,
    /// The content this version replaced (`None` for a creation).
    pub parent: Option<Hash>,
    /// The peer that made this version.
    pub changed_by: PeerId,
    /// The agent on that peer (may be empty).
    pub agent: AgentLabel,
    /// The name that peer gives itself (may be empty: a version recorded before names were
    /// carried). Self-declared, like the agent label.
    pub machine: MachineName,
}

/// File or tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireKind {
    /// A regular file.
    File,
    /// A deletion record.
    Tombstone,
}

/// One chunk: its BLAKE3 id and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireChunk {
    /// BLAKE3 of the chunk's bytes.
    pub id: Hash,
    /// Its length in bytes.
    pub len: u32,
}

/// The chunker of an entry's chunk list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireChunker {
    /// The algorithm.
    pub kind: WireChunkerKind,
    /// Smallest chunk (except a file's last).
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

/// Chunking algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireChunkerKind {
    /// FastCDC 2020, default gear table, normalization level 1.
    FastCdc2020,
}

impl WireEntry {
    /// Wrap an entry for the wire, eliding its chunk list when it has more than `max_inline`
    /// chunks (never more than [`crate::limits::MAX_INLINE_CHUNKS`], so the result always
    /// encodes). Only elide when the peer negotiated `Features::CHUNK_TREE`.
    pub fn new(mut entry: FileEntry, max_inline: usize) -> WireEntry {
        let count = entry.chunks.len();
        match u32::try_from(count) {
            Ok(chunk_count) if count > max_inline.min(crate::limits::MAX_INLINE_CHUNKS) => {
                entry.chunks = Vec::new();
                WireEntry {
                    file: entry.into(),
                    listing: ChunkListing::Elided { chunk_count },
                }
            }
            _ => WireEntry::inline(entry),
        }
    }

    /// `entry` with its whole chunk list.
    pub fn inline(entry: FileEntry) -> WireEntry {
        WireEntry {
            file: entry.into(),
            listing: ChunkListing::Inline,
        }
    }
}

impl WireFile {
    /// True for a deletion record.
    pub fn is_tombstone(&self) -> bool {
        self.kind == WireKind::Tombstone
    }
}

impl From<ChunkRef> for WireChunk {
    fn from(c: ChunkRef) -> WireChunk {
        WireChunk {
            id: c.id,
            len: c.len,
        }
    }
}

impl From<WireChunker> for ChunkerParams {
    fn from(c: WireChunker) -> ChunkerParams {
        ChunkerParams {
            kind: match c.kind {
                WireChunkerKind::FastCdc2020 => ChunkerKind::FastCdc2020,
            },
            min: c.min,
            avg: c.avg,
            max: c.max,
        }
    }
}

impl From<FileEntry> for WireFile {
    fn from(e: FileEntry) -> WireFile {
        WireFile {
            path: e.path,
            kind: match e.kind {
                EntryKind::File => WireKind::File,
                EntryKind::Tombstone => WireKind::Tombstone,
            },
            size: e.size,
            mtime_ns: e.mtime_ns,
            mode: e.mode.permissions,
            content: e.content,
            chunks: e.chunks.into_iter().map(WireChunk::from).collect(),
            chunker: WireChunker {
                kind: match e.chunker.kind {
                    ChunkerKind::FastCdc2020 => WireChunkerKind::FastCdc2020,
                },
                min: e.chunker.min,
                avg: e.chunker.avg,
                max: e.chunker.max,
            },
            version: e.version,
            parent: e.parent,
            changed_by: e.changed_by.peer,
            agent: e.changed_by.agent,
            machine: e.changed_by.machine,
        }
    }
}

impl From<WireFile> for FileEntry {
    fn from(w: WireFile) -> FileEntry {
        FileEntry {
            path: w.path,
            kind: match w.kind {
                WireKind::File => EntryKind::File,
                WireKind::Tombstone => EntryKind::Tombstone,
            },
            size: w.size,
            mtime_ns: w.mtime_ns,
            mode: Mode {
                permissions: w.mode,
            },
            content: w.content,
            chunks: w
                .chunks
                .into_iter()
                .map(|c| ChunkRef {
                    id: c.id,
                    len: c.len,
                })
                .collect(),
            chunker: w.chunker.into(),
            version: w.version,
            parent: w.parent,
            changed_by: Attribution {
                peer: w.changed_by,
                agent: w.agent,
                machine: w.machine,
            },
        }
    }
}
