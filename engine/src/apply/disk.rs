//! The file-system side of apply: safe parent directories, the temporary file, and the check
//! that a target is still as the plan expected.
//!
//! Owns the "never through a symlink" rule and the stat/content comparison; it writes no file
//! content and knows nothing of chunks beyond re-hashing a file to compare it.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ApplyError, io_err};
use crate::chunk::Chunker;
use crate::chunktree::content_hash;
use crate::entry::{LocalEntry, StatSig};
use crate::path::RelPath;

/// Whether the path on disk is what the plan expected.
#[derive(Debug)]
pub(super) enum LocalState {
    /// As expected; the metadata of the file there, if any.
    Same(Option<Metadata>),
    /// Edited, created or deleted since the plan.
    Changed,
}

/// A temporary file that is removed when dropped unless `keep` is set (after the rename).
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover `.botsync-tmp-*` is ignored by the scanner.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Check (and with `create`, make) the target's parent directories, component by component:
/// each must be a real directory, never a symlink. Returns the parent directory, or `None` if a
/// component is missing and `create` is false.
pub(super) fn prepare_parent(
    root: &Path,
    path: &RelPath,
    create: bool,
) -> Result<Option<PathBuf>, ApplyError> {
    let mut dir = root.to_path_buf();
    let parent = path.parent().unwrap_or_else(RelPath::root);
    for comp in parent.components() {
        // A directory may be spelled in another Unicode normalization on disk.
        let name = crate::path::name_in(&dir, comp);
        dir.push(name);
        let unsafe_path = || ApplyError::UnsafePath {
            path: path.clone(),
            component: dir.clone(),
        };
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => continue,
            Ok(_) => return Err(unsafe_path()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(path, "creating directory", &dir, e)),
                }
                // Re-check: something may have raced us into place.
                let m =
                    fs::symlink_metadata(&dir).map_err(|e| io_err(path, "checking", &dir, e))?;
                if !m.file_type().is_dir() {
                    return Err(unsafe_path());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path, "checking", &dir, e)),
        }
    }
    Ok(Some(dir))
}

/// Compare what is at `fs_path` with the plan's `expected` entry: same stat facts, or else the
/// same content hash.
pub(super) fn local_state(
    path: &RelPath,
    fs_path: &Path,
    expected: Option<&LocalEntry>,
) -> Result<LocalState, ApplyError> {
    let expected_file = expected.filter(|e| !e.entry.is_tombstone());
    let meta = match fs::symlink_metadata(fs_path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(if expected_file.is_none() {
                LocalState::Same(None)
            } else {
                LocalState::Changed
            });
        }
        Err(e) => return Err(io_err(path, "checking", fs_path, e)),
    };
    let Some(exp) = expected_file else {
        return Ok(LocalState::Changed);
    };
    if !meta.file_type().is_file() {
        return Ok(LocalState::Changed);
    }
    if exp.stat == Some(StatSig::of(&meta)) {
        return Ok(LocalState::Same(Some(meta)));
    }
    if meta.len() != exp.entry.size {
        return Ok(LocalState::Changed);
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(fs_path)
        .map_err(|e| io_err(path, "opening", fs_path, e))?;
    let chunks = Chunker::new(exp.entry.chunker)
        .chunk_reader(file)
        .map_err(|e| io_err(path, "reading", fs_path, e))?;
    if content_hash(&chunks) == exp.entry.content {
        Ok(LocalState::Same(Some(meta)))
    } else {
        Ok(LocalState::Changed)
    }
}

pub(super) fn time_from_ns(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkstore::system_time_ns;

    #[test]
    fn times_convert_both_ways() {
        for ns in [0, 1, -1_500_000_000, 1_700_000_000_123_456_789] {
            assert_eq!(system_time_ns(time_from_ns(ns)), ns);
        }
    }
}
