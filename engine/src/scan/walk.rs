//! The directory walk of a scan: which selected regular files exist, with their stat facts.
//!
//! This module owns traversal: `read_dir` from the root down, never following symlinks (entry
//! types come from `readdir`/`lstat`), pruning directories the selection cannot reach
//! ([`Selection::may_descend_scope`]) and never entering `.botsync/`. Symlinks, FIFOs, sockets,
//! devices, undecodable names and unreadable directories are reported, not fatal. It does not
//! open files (that is [`super::hashing`]) nor compare with the previous index.

use std::fs::{self, FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::entry::StatSig;
use crate::path::{PathError, RelPath, STATE_DIR};
use crate::rules::{Decision, DirScope, Selection};

use super::{SkipReason, Skipped};

/// A selected regular file found by the walk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The normalized workspace path.
    pub rel: RelPath,
    /// The path as it is on disk (its bytes may differ from `rel` when the disk name is not NFC).
    pub fs_path: PathBuf,
    /// The lstat facts.
    pub sig: StatSig,
    /// The owner-executable bit.
    pub executable: bool,
}

/// What the walk saw.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Selected regular files, sorted by path.
    pub files: Vec<Found>,
    /// Entries that were not scanned, with the reason, sorted by path.
    pub skipped: Vec<Skipped>,
    /// Workspace paths whose previous entries must be kept as they are: skipped entries and
    /// directories that could not be read (what is below them was not seen, not deleted).
    pub blind: Vec<RelPath>,
}

impl Walk {
    fn merge(mut self, other: Walk) -> Walk {
        self.files.extend(other.files);
        self.skipped.extend(other.skipped);
        self.blind.extend(other.blind);
        self
    }

    fn skip(&mut self, rel: RelPath, reason: SkipReason) {
        self.skipped.push(Skipped {
            path: rel.as_str().to_owned(),
            reason,
        });
        self.blind.push(rel);
    }
}

/// Walk the workspace at `root` with `selection`, directories in parallel. Errors reading the
/// root itself are returned; errors below it are recorded in [`Walk::skipped`].
pub(crate) fn walk(root: &Path, selection: &Selection) -> std::io::Result<Walk> {
    let entries = fs::read_dir(root)?;
    let mut out = visit_entries(
        selection,
        entries,
        &RelPath::root(),
        &selection.root_scope(),
        false,
    );
    out.files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// One directory entry, named and typed, before it is decided.
struct Child {
    rel: RelPath,
    file_type: FileType,
    entry: fs::DirEntry,
}

fn visit_dir(
    selection: &Selection,
    fs_dir: &Path,
    rel_dir: &RelPath,
    scope: &DirScope,
    synced: bool,
) -> Walk {
    match fs::read_dir(fs_dir) {
        Ok(entries) => visit_entries(selection, entries, rel_dir, scope, synced),
        Err(e) => {
            let mut out = Walk::default();
            out.skip(rel_dir.clone(), SkipReason::Unreadable(e.to_string()));
            out
        }
    }
}

/// Visit the entries of one directory. `dir_synced` says whether the directory itself is
/// selected: only then are undecodable names inside it worth reporting.
fn visit_entries(
    selection: &Selection,
    entries: fs::ReadDir,
    rel_dir: &RelPath,
    scope: &DirScope,
    dir_synced: bool,
) -> Walk {
    let mut out = Walk::default();
    let mut children = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // The listing broke off: what was not listed must not look deleted.
                out.skip(rel_dir.clone(), SkipReason::Unreadable(e.to_string()));
                break;
            }
        };
        let name = entry.file_name();
        if rel_dir.is_root() && name == STATE_DIR {
            continue;
        }
        let rel = match name.to_str() {
            Some(n) => rel_dir.join(n),
            None => Err(PathError::NotUtf8(
                entry.path().to_string_lossy().into_owned(),
            )),
        };
        let rel = match rel {
            Ok(r) => r,
            Err(e) => {
                if dir_synced {
                    let shown = entry.path().to_string_lossy().into_owned();
                    out.skipped.push(Skipped {
                        path: shown,
                        reason: SkipReason::BadName(e),
                    });
                }
                continue;
            }
        };
        match entry.file_type() {
            Ok(file_type) => children.push(Child {
                rel,
                file_type,
                entry,
            }),
            Err(e) => out.skip(rel, SkipReason::Unreadable(e.to_string())),
        }
    }
    // Sorting puts NFC-equal spellings of one name next to each other.
    children.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    let mut unique = Vec::with_capacity(children.len());
    for child in children {
        if unique
            .last()
            .is_some_and(|last: &Child| last.rel == child.rel)
        {
            out.skip(child.rel, SkipReason::NameCollision);
        } else {
            unique.push(child);
        }
    }
    // The stat calls dominate a warm scan: spread them, and the subdirectories, over all cores.
    let found = unique
        .into_par_iter()
        .fold(Walk::default, |mut acc, child| {
            visit_child(selection, child, scope, &mut acc);
            acc
        })
        .reduce(Walk::default, Walk::merge);
    out.merge(found)
}

fn visit_child(selection: &Selection, child: Child, scope: &DirScope, out: &mut Walk) {
    let Child {
        rel,
        file_type,
        entry,
    } = child;
    if file_type.is_dir() {
        let inner = selection.enter(scope, &rel);
        if selection.may_descend_scope(&inner, &rel) {
            let synced = selection.decide_in(scope, &rel, true) == Decision::Synced;
            let below = visit_dir(selection, &entry.path(), &rel, &inner, synced);
            let taken = std::mem::take(out);
            *out = taken.merge(below);
        }
        return;
    }
    let decision = selection.decide_in(scope, &rel, false);
    if file_type.is_file() {
        if decision != Decision::Synced {
            return;
        }
        // DirEntry::metadata does not follow symlinks (statx relative to the directory, with
        // AT_SYMLINK_NOFOLLOW).
        match entry.metadata() {
            Ok(meta) if meta.is_file() => out.files.push(Found {
                rel,
                fs_path: entry.path(),
                sig: stat_sig(&meta),
                executable: is_executable(&meta),
            }),
            // Replaced by something else since the listing: report what it is now.
            Ok(meta) => out.skip(rel, special_reason(meta.file_type())),
            Err(e) => out.skip(rel, SkipReason::Unreadable(e.to_string())),
        }
        return;
    }
    let selected = decision == Decision::Synced
        || (file_type.is_symlink() && selection.decide_in(scope, &rel, true) == Decision::Synced);
    if selected {
        out.skip(rel, special_reason(file_type));
    }
}

/// The stat-cache facts of a file.
pub(crate) fn stat_sig(meta: &Metadata) -> StatSig {
    StatSig {
        size: meta.size(),
        mtime_ns: to_ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: to_ns(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

/// True if the owner may execute the file.
pub(crate) fn is_executable(meta: &Metadata) -> bool {
    meta.mode() & 0o100 != 0
}

/// Why a non-regular, non-directory entry is skipped.
fn special_reason(file_type: FileType) -> SkipReason {
    if file_type.is_symlink() {
        SkipReason::Symlink
    } else if file_type.is_fifo() {
        SkipReason::Fifo
    } else if file_type.is_socket() {
        SkipReason::Socket
    } else if file_type.is_block_device() || file_type.is_char_device() {
        SkipReason::Device
    } else {
        SkipReason::Unreadable("not a regular file".to_owned())
    }
}

/// Seconds and nanoseconds to nanoseconds since the epoch, saturating far outside ±292 years.
fn to_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use crate::config::SyncConfig;

    fn selection() -> Selection {
        Selection::new(&SyncConfig::default()).unwrap()
    }

    fn write(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, rel.as_bytes()).unwrap();
    }

    #[test]
    fn finds_selected_files_in_path_order_and_prunes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "memory/b.md",
            "memory/a/x.md",
            "MEMORY.md",
            "config/c.json",
            "IDENTITY.md",
        ] {
            write(dir.path(), rel);
        }
        fs::create_dir(dir.path().join(".botsync")).unwrap();
        write(dir.path(), ".botsync/config.json");
        let w = walk(dir.path(), &selection()).unwrap();
        let got: Vec<&str> = w.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(got, ["MEMORY.md", "memory/a/x.md", "memory/b.md"]);
        assert!(w.skipped.is_empty(), "{:?}", w.skipped);
    }

    #[test]
    fn names_that_are_not_utf8_are_reported_in_synced_directories() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("memory")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"bad\xffname.md");
        fs::write(dir.path().join("memory").join(odd), b"x").unwrap();
        let w = walk(dir.path(), &selection()).unwrap();
        assert!(w.files.is_empty());
        assert_eq!(w.skipped.len(), 1);
        assert!(
            matches!(w.skipped[0].reason, SkipReason::BadName(_)),
            "{:?}",
            w.skipped
        );
    }

    #[test]
    fn nfc_and_nfd_spellings_of_one_name_collide() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "memory/caf\u{e9}.md");
        write(dir.path(), "memory/cafe\u{301}.md");
        let w = walk(dir.path(), &selection()).unwrap();
        assert_eq!(w.files.len(), 1);
        assert_eq!(w.skipped.len(), 1);
        assert_eq!(w.skipped[0].reason, SkipReason::NameCollision);
        assert_eq!(w.blind, vec![RelPath::new("memory/caf\u{e9}.md").unwrap()]);
    }
}
