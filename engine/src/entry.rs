//! [`FileEntry`]: what the index and the wire know about one path.

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkRef, ChunkerParams};
use crate::hash::Hash;
use crate::path::RelPath;
use crate::peer::Attribution;
use crate::vector::VersionVector;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A deleted file: kept with its version vector so the deletion propagates.
    Tombstone,
}

/// The Unix permission bits that are synced: the nine read, write and execute bits of owner,
/// group and others (`st_mode & 0o777`; never setuid, setgid or sticky). A receiver writes
/// exactly these bits, so a file never arrives with more permissions than its source has: a
/// private (0600) file stays private, an executable one executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mode {
    /// The permission bits, at most [`Mode::PERMISSION_BITS`].
    pub permissions: u16,
}

impl Mode {
    /// The bits a mode may hold.
    pub const PERMISSION_BITS: u16 = 0o777;

    /// The bits of a file created under the common umask (0644): the mode of tombstones and of
    /// entries made up in tests.
    pub const REGULAR: Mode = Mode { permissions: 0o644 };

    /// The synced bits of a `st_mode` (file type and special bits dropped).
    pub fn from_st_mode(st_mode: u32) -> Mode {
        Mode {
            // Masked to nine bits: the cast cannot truncate.
            permissions: (st_mode & u32::from(Mode::PERMISSION_BITS)) as u16,
        }
    }

    /// True if the owner may execute the file.
    pub fn executable(self) -> bool {
        self.permissions & 0o100 != 0
    }

    /// True if the mode holds no bit outside [`Mode::PERMISSION_BITS`] (the wire refuses others).
    pub fn is_valid(self) -> bool {
        self.permissions & !Mode::PERMISSION_BITS == 0
    }

    /// The bits to give the file on disk (anything outside the nine permission bits dropped,
    /// whatever the entry held).
    pub fn file_permissions(self) -> u32 {
        u32::from(self.permissions & Mode::PERMISSION_BITS)
    }
}

impl Default for Mode {
    fn default() -> Mode {
        Mode::REGULAR
    }
}

/// One version of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Normalized workspace-relative path.
    pub path: RelPath,
    /// File or tombstone.
    pub kind: EntryKind,
    /// Size in bytes (0 for tombstones).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch, bounded by when the version was
    /// observed (the file's change time and the clock of the scan that found it): the time the
    /// version competes with in a conflict (docs/CONFLICTS.md).
    pub mtime_ns: i64,
    /// Synced permission bits.
    pub mode: Mode,
    /// Content hash: the root of the chunk-list tree ([`crate::chunktree`]); [`Hash::ZERO`] for
    /// tombstones.
    pub content: Hash,
    /// The chunks, in file order.
    pub chunks: Vec<ChunkRef>,
    /// The chunker that produced `chunks`.
    pub chunker: ChunkerParams,
    /// Causal history of this path.
    pub version: VersionVector,
    /// The content hash this version replaced (`None` for a creation): a version whose parent
    /// equals our current content is a fast-forward.
    pub parent: Option<Hash>,
    /// Who made this version.
    pub changed_by: Attribution,
}

impl FileEntry {
    /// True for a deletion record.
    pub fn is_tombstone(&self) -> bool {
        self.kind == EntryKind::Tombstone
    }

    /// True if the synced content and metadata of two versions are the same (vectors and
    /// attribution aside): such versions are never a conflict.
    pub fn same_content(&self, other: &FileEntry) -> bool {
        self.kind == other.kind && self.content == other.content && self.mode == other.mode
    }
}

/// The file-system facts of the stat cache: if they are unchanged since the last scan, the file
/// is not re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatSig {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch (as on disk, not clamped).
    pub mtime_ns: i64,
    /// Inode change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}

impl StatSig {
    /// The stat-cache facts of `meta` (taken without following a symlink where that matters).
    pub fn of(meta: &std::fs::Metadata) -> StatSig {
        use std::os::unix::fs::MetadataExt;
        let ns = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
        StatSig {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// What the local index holds for a path: the current version plus the stat cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEntry {
    /// The current version of the path (a tombstone if deleted).
    pub entry: FileEntry,
    /// The file's stat facts when `entry` was recorded (`None` for tombstones).
    pub stat: Option<StatSig>,
    /// When the stat facts were taken (ns since the epoch, the start time of that scan): a file
    /// whose mtime is not safely older than this is "racy" and re-hashed next time, as git does.
    pub recorded_at_ns: i64,
}
