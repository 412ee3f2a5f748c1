//! [`OwnWrites`]: the files this process wrote by applying peers' versions, so the watcher can
//! tell their events from a user's edits.
//!
//! A path is noted before its apply starts (its events may arrive before the apply returns) and,
//! once written, with the file's identity (inode, size, mtime). An event for a noted path is ours
//! only while the file is still exactly what we wrote: an edit right after an apply changes the
//! mtime or size and counts as a local change, and a file created again right after an apply
//! deleted it is the user's. Notes expire after [`QUIET`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a note stands.
pub const QUIET: Duration = Duration::from_secs(5);

/// What identifies one written version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

#[derive(Debug, Clone, Copy)]
struct Note {
    at: Instant,
    /// `None` while the apply runs; then what it left: a file, or `Some(None)`: nothing (a
    /// delete).
    written: Option<Option<Written>>,
}

/// The notes of one workspace.
#[derive(Debug)]
pub struct OwnWrites {
    root: PathBuf,
    notes: Mutex<HashMap<String, Note>>,
}

impl OwnWrites {
    /// No notes yet, for the workspace at `root`.
    pub fn new(root: &Path) -> OwnWrites {
        OwnWrites {
            root: root.to_path_buf(),
            notes: Mutex::new(HashMap::new()),
        }
    }

    /// These paths are about to be written by an apply.
    pub fn applying<'a>(&self, paths: impl Iterator<Item = &'a str>) {
        let mut notes = self.lock();
        let at = Instant::now();
        for p in paths {
            notes.insert(p.to_owned(), Note { at, written: None });
        }
    }

    /// The apply is over: `done` paths hold what it wrote (or were deleted by it); the notes of
    /// the others (skipped, failed) are dropped, so their events count as changes.
    pub fn applied<'a>(&self, done: impl Iterator<Item = (&'a str, bool)>) {
        let mut notes = self.lock();
        let at = Instant::now();
        for (p, ok) in done {
            if ok {
                let written = Some(self.stat(p));
                notes.insert(p.to_owned(), Note { at, written });
            } else {
                notes.remove(p);
            }
        }
    }

    /// True if the event on `rel` is our own write: `rel` is being applied, still holds exactly
    /// what we wrote, or is a directory an apply wrote into.
    pub fn is_ours(&self, rel: &str) -> bool {
        let mut notes = self.lock();
        notes.retain(|_, n| n.at.elapsed() < QUIET);
        if let Some(note) = notes.get(rel) {
            return match note.written {
                None => true,
                Some(left) => self.stat(rel) == left,
            };
        }
        // The directories an apply created or wrote into.
        notes
            .keys()
            .any(|p| p.len() > rel.len() && p.starts_with(rel) && p.as_bytes()[rel.len()] == b'/')
    }

    fn stat(&self, rel: &str) -> Option<Written> {
        let m = std::fs::symlink_metadata(self.root.join(rel)).ok()?;
        Some(Written {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Note>> {
        // Plain values replaced whole: a poisoned lock holds no broken state.
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_edit_right_after_an_apply_is_not_taken_for_ours() {
        let dir = tempfile::tempdir().unwrap();
        let own = OwnWrites::new(dir.path());
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        own.applying(["memory/a.md"].into_iter());
        assert!(own.is_ours("memory/a.md"), "in progress");
        std::fs::write(dir.path().join("memory/a.md"), "applied\n").unwrap();
        own.applied([("memory/a.md", true)].into_iter());
        assert!(own.is_ours("memory/a.md"), "as written");
        assert!(own.is_ours("memory"), "the directory written into");
        assert!(!own.is_ours("memory/b.md"), "another file");
        std::fs::write(dir.path().join("memory/a.md"), "the user's edit, longer\n").unwrap();
        assert!(!own.is_ours("memory/a.md"), "edited after the apply");
    }

    #[test]
    fn a_file_created_again_right_after_an_apply_deleted_it_is_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let own = OwnWrites::new(dir.path());
        let path = dir.path().join("note.md");
        std::fs::write(&path, "old\n").unwrap();
        own.applying(["note.md"].into_iter());
        std::fs::remove_file(&path).unwrap();
        own.applied([("note.md", true)].into_iter());
        assert!(own.is_ours("note.md"), "the delete's own event");
        std::fs::write(&path, "written again by the user\n").unwrap();
        assert!(!own.is_ours("note.md"), "created again after the delete");
    }

    #[test]
    fn a_skipped_apply_leaves_no_note() {
        let dir = tempfile::tempdir().unwrap();
        let own = OwnWrites::new(dir.path());
        own.applying(["a.md"].into_iter());
        own.applied([("a.md", false)].into_iter());
        assert!(!own.is_ours("a.md"));
    }
}
