//! What a scan reports: the versioned [`Change`]s it found, the entries whose stat facts it
//! refreshed, and the paths it had to skip, with the reason in words ([`SkipReason`]).

use std::fmt;

use crate::entry::LocalEntry;
use crate::path::PathError;
use crate::secrets::SecretKind;
use crate::vector::CounterExhausted;

/// The result of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Versioned changes, in path order.
    pub changes: Vec<Change>,
    /// Files whose content and mode are unchanged but whose stat facts moved (a `touch`, a racy
    /// file re-checked): not changes, but the caller stores these entries so the next scan
    /// trusts the new stat facts. In path order.
    pub refreshed: Vec<LocalEntry>,
    /// Files trusted from the stat cache without being opened.
    pub unchanged: u64,
    /// Files read and hashed.
    pub hashed_files: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Entries that were not scanned, with the reason; their previous entries stand.
    pub skipped: Vec<Skipped>,
}

/// A scan's counts and skipped entries, without the entries themselves: what a caller that
/// stored the entries elsewhere (the index) still reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Changes of each kind.
    pub added: u64,
    /// Files whose content changed.
    pub modified: u64,
    /// Files whose executable bit alone changed.
    pub metadata_only: u64,
    /// Files deleted (tombstones recorded).
    pub deleted: u64,
    /// Paths no longer selected.
    pub unselected: u64,
    /// Entries whose stat facts alone were refreshed.
    pub refreshed: u64,
    /// Files trusted from the stat cache without being opened.
    pub unchanged: u64,
    /// Files read and hashed.
    pub hashed_files: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Entries that were not scanned, with the reason.
    pub skipped: Vec<Skipped>,
}

impl ScanReport {
    /// Split into the summary and the entries (changes, then refreshed entries), so a caller
    /// can move the entries on instead of copying them.
    pub fn into_parts(self) -> (ScanSummary, Vec<Change>, Vec<LocalEntry>) {
        let count = |k: ChangeKind| self.changes.iter().filter(|c| c.kind == k).count() as u64;
        let summary = ScanSummary {
            added: count(ChangeKind::Added),
            modified: count(ChangeKind::Modified),
            metadata_only: count(ChangeKind::MetadataOnly),
            deleted: count(ChangeKind::Deleted),
            unselected: count(ChangeKind::Unselected),
            refreshed: self.refreshed.len() as u64,
            unchanged: self.unchanged,
            hashed_files: self.hashed_files,
            hashed_bytes: self.hashed_bytes,
            skipped: self.skipped,
        };
        (summary, self.changes, self.refreshed)
    }
}

/// One change found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The new index entry (for [`ChangeKind::Unselected`], the old one, to be dropped).
    pub entry: LocalEntry,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A new file (or a file re-created after a deletion).
    Added,
    /// A file whose content changed.
    Modified,
    /// A file deleted: the entry is a tombstone.
    Deleted,
    /// Same content, but the executable bit changed.
    MetadataOnly,
    /// The path is no longer selected (the config changed): drop it from the index, and do not
    /// delete it on peers.
    Unselected,
}

/// An entry the scan did not scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The workspace path (for an undecodable name, the lossy on-disk path).
    pub path: String,
    /// Why.
    pub reason: SkipReason,
}

/// Why an entry was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A symbolic link: never followed.
    Symlink,
    /// A named pipe: never opened.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block or character device.
    Device,
    /// The file or directory could not be read (the I/O error's message).
    Unreadable(String),
    /// The name is not a valid workspace path.
    BadName(PathError),
    /// Two names in one directory normalize to the same path (NFC and NFD spellings).
    NameCollision,
    /// The file was modified or replaced while it was being read; the next scan retries.
    ChangedWhileReading,
    /// This peer's version counter for the path is at its maximum: the change cannot be
    /// counted, so it is not recorded (the previous entry stands).
    CounterExhausted(CounterExhausted),
    /// The new content holds a secret (a private key, a token) and the path is not in
    /// `secret_allow`: it is not sent (the previous entry, if any, stands).
    Secret {
        /// 1-based line of the first secret.
        line: u64,
        /// What was found there.
        kind: SecretKind,
    },
}

impl ScanReport {
    /// Changes, refreshed entries and skipped paths each in path order, as callers expect.
    pub(super) fn sort(&mut self) {
        self.changes
            .sort_by(|a, b| a.entry.entry.path.cmp(&b.entry.entry.path));
        self.refreshed
            .sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        self.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

impl SkipReason {
    /// True if the entry is a file (or directory) the selection syncs that the scan could not
    /// read: its changes did not sync, and a session must not report "in sync". Symbolic links,
    /// pipes, sockets and devices are never synced by design and do not count.
    pub fn leaves_changes_unsynced(&self) -> bool {
        match self {
            SkipReason::Symlink | SkipReason::Fifo | SkipReason::Socket | SkipReason::Device => {
                false
            }
            SkipReason::Unreadable(_)
            | SkipReason::BadName(_)
            | SkipReason::NameCollision
            | SkipReason::ChangedWhileReading
            | SkipReason::CounterExhausted(_)
            | SkipReason::Secret { .. } => true,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symbolic link (never followed)"),
            SkipReason::Fifo => f.write_str("named pipe"),
            SkipReason::Socket => f.write_str("socket"),
            SkipReason::Device => f.write_str("device file"),
            SkipReason::Unreadable(msg) => write!(f, "unreadable: {msg}"),
            SkipReason::BadName(e) => write!(f, "bad name: {e}"),
            SkipReason::NameCollision => {
                f.write_str("another name in this directory normalizes to the same path")
            }
            SkipReason::ChangedWhileReading => {
                f.write_str("changed while reading; retried next scan")
            }
            SkipReason::CounterExhausted(e) => write!(f, "{e}"),
            SkipReason::Secret { line, kind } => {
                write!(f, "holds a secret: line {line} has {kind}")
            }
        }
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}
