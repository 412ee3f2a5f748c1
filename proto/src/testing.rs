//! Fixtures for the crate's unit tests.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use botsync_engine::chunk::ChunkerParams;
use botsync_engine::entry::Mode;
use botsync_engine::{
    AgentLabel, Attribution, EntryKind, FileEntry, Hash, MachineName, PeerId, RelPath,
    VersionVector,
};

/// A one-change file entry of `path` with `content`'s hash, by peer `[1; 32]`; a tombstone if
/// `tombstone`.
pub(crate) fn file_entry(path: &str, content: &[u8], tombstone: bool) -> FileEntry {
    FileEntry {
        path: RelPath::new(path).unwrap(),
        kind: if tombstone {
            EntryKind::Tombstone
        } else {
            EntryKind::File
        },
        size: if tombstone { 0 } else { content.len() as u64 },
        mtime_ns: 1_700_000_000_000_000_000,
        mode: Mode::default(),
        content: if tombstone {
            Hash::ZERO
        } else {
            Hash::of(content)
        },
        chunks: Vec::new(),
        chunker: ChunkerParams::DEFAULT,
        version: VersionVector::from_pairs([(PeerId([1; 32]), 1)]),
        parent: None,
        changed_by: Attribution {
            peer: PeerId([1; 32]),
            agent: AgentLabel::new("test"),
            machine: MachineName::default(),
        },
    }
}
