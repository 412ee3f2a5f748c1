//! The directory walk of a scan: which selected regular files exist, with their stat facts.
//!
//! This module owns traversal: from the root down, each directory opened from its parent's
//! handle and never through a symlink (entry types come from the listing or `lstat`; the system
//! calls are [`super::dirfd`]'s), pruning directories the selection cannot reach
//! ([`Selection::may_descend_scope`]) and never entering `.botsync/`. Symlinks, FIFOs, sockets,
//! devices, undecodable names and unreadable directories are reported, not fatal. It does not
//! open files (that is [`super::hashing`]) nor compare with the previous index.
//!
//! # Cost
//! A warm rescan is one `statx` per file plus the directory listings, and the walk is built to
//! add as little as possible to that floor. Per file it allocates the workspace path and
//! nothing else (no name copy, no path on disk unless a name on the way is not NFC). A
//! directory's files are statted in runs on one thread (rayon tasks are per directory and per
//! [`FILES_PER_TASK`] files, not per file). The result comes out in path order without a final
//! sort: a directory's children are sorted in [`walk_order`] (an integer prefix of the name
//! first) and the runs are concatenated in that order.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::FileType;

use crate::apply::{GENERATOR_TEMP_PREFIX, TEMP_PREFIX};
use crate::entry::{Mode, StatSig};
use crate::path::{PathError, RelPath, STATE_DIR};
use crate::rules::{Decision, DirScope, Selection};

use super::dirfd::{DirHandle, os_name};
use super::{SkipReason, Skipped};

/// Most files of one directory statted by one rayon task. A directory with more is split, so
/// one huge directory still spreads over all cores; below that, a task per file costs more in
/// scheduling and merging than it gains.
const FILES_PER_TASK: usize = 256;

/// A selected regular file found by the walk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The normalized workspace path.
    pub rel: RelPath,
    /// The path on disk when it is not `rel` under the root (a name on the way that is not NFC
    /// on disk); `None` in the common case, so the walk builds no path per file.
    disk_path: Option<Box<Path>>,
    /// The lstat facts.
    pub sig: StatSig,
    /// The permission bits.
    pub mode: Mode,
}

impl Found {
    /// A file at `rel`, stored on disk at `disk_path` if that is not `rel` under the root.
    pub(crate) fn new(rel: RelPath, disk_path: Option<PathBuf>, sig: StatSig, mode: Mode) -> Found {
        Found {
            rel,
            disk_path: disk_path.map(PathBuf::into_boxed_path),
            sig,
            mode,
        }
    }

    /// The path on disk of this file in the workspace at `root`.
    pub(crate) fn fs_path(&self, root: &Path) -> Cow<'_, Path> {
        match &self.disk_path {
            Some(p) => Cow::Borrowed(p),
            None => Cow::Owned(self.rel.to_fs(root)),
        }
    }
}

/// What the walk saw.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Selected regular files as runs which, concatenated, are in path order (one run per task:
    /// moving runs is cheaper than merging files).
    runs: Vec<Vec<Found>>,
    /// Entries that were not scanned, with the reason, sorted by path.
    pub skipped: Vec<Skipped>,
    /// Workspace paths whose previous entries must be kept as they are: skipped entries and
    /// directories that could not be read (what is below them was not seen, not deleted).
    pub blind: Vec<RelPath>,
    /// Temporary files of an apply that never finished (a killed process), removed on sight.
    pub stale_temps_removed: usize,
}

impl Walk {
    /// The selected regular files, in path order.
    #[cfg(test)]
    pub(crate) fn files(&self) -> impl Iterator<Item = &Found> {
        self.runs.iter().flatten()
    }

    /// The files as runs, each in path order and each before the next.
    pub(crate) fn runs(&self) -> &[Vec<Found>] {
        &self.runs
    }

    /// The runs, to be consumed.
    pub(crate) fn into_runs(self) -> Vec<Vec<Found>> {
        self.runs
    }

    fn append(&mut self, other: Walk) {
        self.runs.extend(other.runs);
        self.skipped.extend(other.skipped);
        self.blind.extend(other.blind);
        self.stale_temps_removed += other.stale_temps_removed;
    }

    fn skip(&mut self, rel: RelPath, reason: SkipReason) {
        self.skipped.push(Skipped {
            path: rel.as_str().to_owned(),
            reason,
        });
        self.blind.push(rel);
    }
}

/// Walk the workspace at `root` with `selection`, directories in parallel. Errors opening the
/// root itself are returned; errors below it are recorded in [`Walk::skipped`].
pub(crate) fn walk(root: &Path, selection: &Selection) -> std::io::Result<Walk> {
    let handle = DirHandle::open(root)?;
    let dir = Dir {
        rel: RelPath::root(),
        scope: selection.root_scope(),
        synced: false,
        disk_path: None,
    };
    let walker = Walker { root, selection };
    let mut out = walker.visit_entries(&handle, &dir);
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Walk only what is at `sub`: the subtree of a directory, or one file. `Ok(None)` when a
/// partial walk cannot stand for the full one there (a component or `sub` itself is missing,
/// a symlink, unreadable, or named differently on disk): the caller walks everything instead,
/// so nothing is ever taken for deleted on a partial view.
pub(crate) fn walk_under(
    root: &Path,
    selection: &Selection,
    sub: &RelPath,
) -> std::io::Result<Option<Walk>> {
    if sub.is_root() || sub.components().next() == Some(STATE_DIR) {
        return Ok(None);
    }
    let walker = Walker { root, selection };
    let mut handle = DirHandle::open(root)?;
    let mut dir = Dir {
        rel: RelPath::root(),
        scope: selection.root_scope(),
        synced: false,
        disk_path: None,
    };
    let parts: Vec<&str> = sub.components().collect();
    let Some((last, parents)) = parts.split_last() else {
        return Ok(None);
    };
    for name in parents {
        let Ok(rel) = dir.rel.join(name) else {
            return Ok(None);
        };
        if !spelled_once(&handle, &dir.rel, &rel) {
            return Ok(None);
        }
        let scope = selection.enter(&dir.scope, &rel);
        if !selection.may_descend_scope(&scope, &rel) {
            // Nothing below is selected: nothing to find.
            return Ok(Some(Walk::default()));
        }
        let Ok(next) = handle.open_child(name.as_bytes()) else {
            return Ok(None);
        };
        dir = Dir {
            synced: selection.decide_in(&dir.scope, &rel, true) == Decision::Synced,
            rel,
            scope,
            disk_path: None,
        };
        handle = next;
    }
    let Ok(rel) = dir.rel.join(last) else {
        return Ok(None);
    };
    if !spelled_once(&handle, &dir.rel, &rel) {
        return Ok(None);
    }
    let Ok(facts) = handle.stat(last.as_bytes()) else {
        return Ok(None);
    };
    let child = Child {
        prefix: 0,
        name_at: rel.as_str().len() - rel.file_name().len(),
        rel,
        file_type: facts.file_type,
        disk_name: None,
    };
    let mut out = Walk::default();
    match facts.file_type {
        FileType::Directory => {
            let scope = selection.enter(&dir.scope, &child.rel);
            if !selection.may_descend_scope(&scope, &child.rel) {
                return Ok(Some(out));
            }
            let sub = Dir {
                synced: selection.decide_in(&dir.scope, &child.rel, true) == Decision::Synced,
                rel: child.rel.clone(),
                scope,
                disk_path: None,
            };
            out = walker.visit_dir(&handle, &child, &sub);
        }
        FileType::RegularFile => {
            let mut files = Vec::new();
            walker.stat_file(&handle, &dir, child, &mut files, &mut out);
            if !files.is_empty() {
                out.runs.push(files);
            }
        }
        _ => return Ok(None),
    }
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Some(out))
}

/// True if exactly one name in the directory `dir_rel` (open as `handle`) normalizes to `rel`,
/// and it is spelled as `rel` on disk: only then does a partial walk see what the full walk
/// would (which reports two spellings of one name as a collision, and opens a name by its
/// spelling on disk).
fn spelled_once(handle: &DirHandle, dir_rel: &RelPath, rel: &RelPath) -> bool {
    let wanted = rel.file_name().as_bytes();
    let (mut same, mut exact) = (0usize, false);
    let listed = handle.list(|name, _| {
        let normalized = std::str::from_utf8(name)
            .ok()
            .and_then(|n| dir_rel.join(n).ok());
        if normalized.as_ref() == Some(rel) {
            same += 1;
            exact |= name == wanted;
        }
    });
    listed.is_ok() && same == 1 && exact
}

/// What every step of one walk needs.
#[derive(Clone, Copy)]
struct Walker<'a> {
    root: &'a Path,
    selection: &'a Selection,
}

/// A directory being walked.
#[derive(Debug)]
struct Dir {
    /// Its workspace path.
    rel: RelPath,
    /// What the rules above it decided.
    scope: DirScope,
    /// Whether the directory itself is selected: only then are undecodable names inside it
    /// worth reporting.
    synced: bool,
    /// Its path on disk when that is not `rel` under the root (see [`Found::new`]).
    disk_path: Option<PathBuf>,
}

impl Dir {
    /// Its path on disk in the workspace at `root`.
    fn fs_path(&self, root: &Path) -> PathBuf {
        match &self.disk_path {
            Some(p) => p.clone(),
            None => self.rel.to_fs(root),
        }
    }

    /// The path on disk of the entry named `disk_name` here, if it cannot be derived from its
    /// workspace path (`exact`: the name on disk is its normalized name).
    fn disk_path_of(&self, root: &Path, disk_name: &[u8], exact: bool) -> Option<PathBuf> {
        (self.disk_path.is_some() || !exact).then(|| self.fs_path(root).join(os_name(disk_name)))
    }
}

/// One directory entry, named and typed, before it is decided.
#[derive(Debug)]
struct Child {
    rel: RelPath,
    file_type: FileType,
    /// Where the last component starts in `rel`.
    name_at: usize,
    /// The first 16 bytes of the name as it sorts (see [`sort_prefix`]).
    prefix: u128,
    /// The name on disk when it is not the last component of `rel` byte for byte (it was not
    /// NFC); `None` in the common case.
    disk_name: Option<Box<[u8]>>,
}

impl Child {
    /// The normalized name (the last component of `rel`), found without searching for the
    /// last `/`: sorting asks for it many times per child.
    fn name(&self) -> &[u8] {
        &self.rel.as_str().as_bytes()[self.name_at..]
    }

    /// The name in the directory on disk.
    fn disk_name(&self) -> &[u8] {
        self.disk_name.as_deref().unwrap_or_else(|| self.name())
    }

    fn disk_path(&self, root: &Path, dir: &Dir) -> Option<PathBuf> {
        dir.disk_path_of(root, self.disk_name(), self.disk_name.is_none())
    }
}

/// A unit of parallel work within one directory.
#[derive(Debug)]
enum Task {
    /// Stat a run of consecutive files (in walk order).
    Files(Vec<Child>),
    /// Walk a subdirectory.
    Dir(Child, Dir),
}

impl Walker<'_> {
    /// Open the subdirectory `child` of the directory at `parent` and walk it as `sub`.
    fn visit_dir(self, parent: &DirHandle, child: &Child, sub: &Dir) -> Walk {
        match parent.open_child(child.disk_name()) {
            Ok(handle) => self.visit_entries(&handle, sub),
            Err(e) => {
                // Unreadable, or replaced since the listing (a symlink is refused, not
                // followed). What was below it is kept as it was.
                let reason = match parent.stat(child.disk_name()) {
                    Ok(facts) if facts.file_type == FileType::Symlink => SkipReason::Symlink,
                    _ => SkipReason::Unreadable(e.to_string()),
                };
                let mut out = Walk::default();
                out.skip(sub.rel.clone(), reason);
                out
            }
        }
    }

    /// Visit the entries of one directory.
    fn visit_entries(self, handle: &DirHandle, dir: &Dir) -> Walk {
        let mut out = Walk::default();
        let mut children = Vec::new();
        // True once a name on disk differs from its normalized form: only then can two names
        // collide (two names that are both NFC and normalize alike are the same bytes).
        let mut renamed = false;
        let mut stale = Vec::new();
        let listed = handle.list(|name, file_type| {
            if dir.rel.is_root() && name == STATE_DIR.as_bytes() {
                return;
            }
            if name.starts_with(TEMP_PREFIX.as_bytes()) {
                // Apply's temp files live only while an apply runs, and applies never run
                // during a scan of the same workspace: one seen now was left by a killed
                // process. Never synced; removed once listing is over. A generator's output
                // is written while it runs, scan or not: skipped, and left to the runner.
                if !name.starts_with(GENERATOR_TEMP_PREFIX.as_bytes())
                    && handle.entry_type(name, file_type).ok() == Some(FileType::RegularFile)
                {
                    stale.push(name.to_vec());
                }
                return;
            }
            let rel = match std::str::from_utf8(name) {
                Ok(n) => dir.rel.join(n),
                Err(_) => Err(PathError::NotUtf8(self.shown(dir, name))),
            };
            let rel = match rel {
                Ok(r) => r,
                Err(e) => {
                    if dir.synced {
                        out.skipped.push(Skipped {
                            path: self.shown(dir, name),
                            reason: SkipReason::BadName(e),
                        });
                    }
                    return;
                }
            };
            let name_at = rel.as_str().len() - rel.file_name().len();
            let exact = rel.as_str().as_bytes()[name_at..] == *name;
            renamed |= !exact;
            let file_type = match handle.entry_type(name, file_type) {
                Ok(t) => t,
                Err(e) => return out.skip(rel, SkipReason::Unreadable(e.to_string())),
            };
            children.push(Child {
                prefix: sort_prefix(
                    &rel.as_str().as_bytes()[name_at..],
                    file_type == FileType::Directory,
                ),
                rel,
                file_type,
                name_at,
                disk_name: (!exact).then(|| name.into()),
            });
        });
        if let Err(e) = listed {
            // The listing broke off: what was not listed must not look deleted.
            out.skip(dir.rel.clone(), SkipReason::Unreadable(e.to_string()));
        }
        for name in stale {
            match handle.unlink(&name) {
                Ok(()) => out.stale_temps_removed += 1,
                Err(e) => tracing::warn!(
                    path = %self.shown(dir, &name),
                    error = %e,
                    "could not remove a stale temporary file of an interrupted sync"
                ),
            }
        }
        if renamed {
            children = drop_collisions(children, &mut out);
        }
        children.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| walk_order(a, b)));
        let tasks = self.plan_tasks(dir, children, &mut out);
        // The stat calls dominate a warm scan: spread the runs and the subdirectories over all
        // cores. `collect` keeps the tasks' order, so the runs stay in path order.
        let parts: Vec<Walk> = if tasks.len() <= 1 {
            tasks
                .into_iter()
                .map(|t| self.run_task(handle, dir, t))
                .collect()
        } else {
            tasks
                .into_par_iter()
                .map(|t| self.run_task(handle, dir, t))
                .collect()
        };
        for part in parts {
            out.append(part);
        }
        out
    }

    /// The path of the entry `name` of `dir` as the user sees it in a report: relative to the
    /// workspace root, undecodable bytes shown as U+FFFD.
    fn shown(self, dir: &Dir, name: &[u8]) -> String {
        let full = dir.fs_path(self.root).join(os_name(name));
        full.strip_prefix(self.root)
            .unwrap_or(&full)
            .to_string_lossy()
            .into_owned()
    }

    /// Settle what needs no system call (special files, directories the selection prunes) and
    /// cut the rest, in walk order, into tasks: runs of files and subdirectories to enter.
    fn plan_tasks(self, dir: &Dir, children: Vec<Child>, out: &mut Walk) -> Vec<Task> {
        let selection = self.selection;
        let mut tasks = Vec::new();
        let mut run = Vec::new();
        for child in children {
            let file_type = child.file_type;
            if file_type == FileType::RegularFile {
                run.push(child);
                if run.len() == FILES_PER_TASK {
                    tasks.push(Task::Files(std::mem::take(&mut run)));
                }
            } else if file_type == FileType::Directory {
                let scope = selection.enter(&dir.scope, &child.rel);
                if !selection.may_descend_scope(&scope, &child.rel) {
                    continue;
                }
                if !run.is_empty() {
                    tasks.push(Task::Files(std::mem::take(&mut run)));
                }
                let sub = Dir {
                    synced: selection.decide_in(&dir.scope, &child.rel, true) == Decision::Synced,
                    disk_path: child.disk_path(self.root, dir),
                    rel: child.rel.clone(),
                    scope,
                };
                tasks.push(Task::Dir(child, sub));
            } else {
                let selected = selection.decide_in(&dir.scope, &child.rel, false)
                    == Decision::Synced
                    || (file_type == FileType::Symlink
                        && selection.decide_in(&dir.scope, &child.rel, true) == Decision::Synced);
                if selected {
                    out.skip(child.rel, special_reason(file_type));
                }
            }
        }
        if !run.is_empty() {
            tasks.push(Task::Files(run));
        }
        tasks
    }

    fn run_task(self, handle: &DirHandle, dir: &Dir, task: Task) -> Walk {
        match task {
            Task::Dir(child, sub) => self.visit_dir(handle, &child, &sub),
            Task::Files(children) => {
                let mut out = Walk::default();
                let mut files = Vec::with_capacity(children.len());
                for child in children {
                    self.stat_file(handle, dir, child, &mut files, &mut out);
                }
                if !files.is_empty() {
                    out.runs.push(files);
                }
                out
            }
        }
    }

    /// Decide a regular file of `dir` and, if it is selected, stat it.
    fn stat_file(
        self,
        handle: &DirHandle,
        dir: &Dir,
        child: Child,
        files: &mut Vec<Found>,
        out: &mut Walk,
    ) {
        if self.selection.decide_in(&dir.scope, &child.rel, false) != Decision::Synced {
            return;
        }
        match handle.stat(child.disk_name()) {
            Ok(facts) if facts.file_type == FileType::RegularFile => {
                let disk_path = child.disk_path(self.root, dir);
                files.push(Found::new(child.rel, disk_path, facts.sig, facts.mode));
            }
            // Replaced by something else since the listing: report what it is now.
            Ok(facts) => out.skip(child.rel, special_reason(facts.file_type)),
            Err(e) => out.skip(child.rel, SkipReason::Unreadable(e.to_string())),
        }
    }
}

/// Report all but one of each group of names that normalize to the same path (NFC and NFD
/// spellings); the survivor's path is blind too, so its previous entry stands.
fn drop_collisions(mut children: Vec<Child>, out: &mut Walk) -> Vec<Child> {
    children.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    let mut unique: Vec<Child> = Vec::with_capacity(children.len());
    for child in children {
        if unique.last().is_some_and(|last| last.rel == child.rel) {
            out.skip(child.rel, SkipReason::NameCollision);
        } else {
            unique.push(child);
        }
    }
    unique
}

/// The order of a directory's children that puts the paths below them in path order: by name,
/// a directory's name followed by its `/`. So `a.md` < `a/x.md` < `a0.md`, as the full paths
/// compare bytewise (`.` < `/` < `0`), and a subdirectory's files go between its siblings.
fn walk_order(a: &Child, b: &Child) -> Ordering {
    let (x, y) = (a.name(), b.name());
    let n = x.len().min(y.len());
    x[..n].cmp(&y[..n]).then_with(|| {
        // One name is a prefix of the other (or they are equal): the byte after the common
        // part decides, a directory's being its `/`. A name never holds a `/`, so this byte
        // ties only for equal names.
        let next = |name: &[u8], child: &Child| {
            name.get(n)
                .copied()
                .or((child.file_type == FileType::Directory).then_some(b'/'))
        };
        next(x, a).cmp(&next(y, b))
    })
}

/// The first 16 bytes of a name as [`walk_order`] sees it (the name, then `/` for a
/// directory), big-endian and zero-padded: comparing two prefixes is [`walk_order`] on the
/// bytes they hold (a name holds no NUL, so the padding sorts a shorter name first), and only
/// equal prefixes need the full comparison. Sorting a directory of `note-0001.md`-like names
/// then costs integer comparisons instead of a `memcmp` call each.
fn sort_prefix(name: &[u8], is_dir: bool) -> u128 {
    let mut key = [0u8; 16];
    let n = name.len().min(16);
    key[..n].copy_from_slice(&name[..n]);
    if is_dir && n < 16 {
        key[n] = b'/';
    }
    u128::from_be_bytes(key)
}

/// Why a non-regular, non-directory entry is skipped.
fn special_reason(file_type: FileType) -> SkipReason {
    match file_type {
        FileType::Symlink => SkipReason::Symlink,
        FileType::Fifo => SkipReason::Fifo,
        FileType::Socket => SkipReason::Socket,
        FileType::BlockDevice | FileType::CharacterDevice => SkipReason::Device,
        _ => SkipReason::Unreadable("not a regular file".to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use std::fs;

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
        let got: Vec<&str> = w.files().map(|f| f.rel.as_str()).collect();
        assert_eq!(got, ["MEMORY.md", "memory/a/x.md", "memory/b.md"]);
        assert!(w.skipped.is_empty(), "{:?}", w.skipped);
    }

    #[test]
    fn files_come_out_in_path_order_without_a_final_sort() {
        let dir = tempfile::tempdir().unwrap();
        // `.` < `/` < `0` bytewise: a subdirectory's files go between its siblings, not
        // where its bare name would sort.
        let mut made = vec![
            "memory/a.md".to_owned(),
            "memory/a/x.md".to_owned(),
            "memory/a/b/c.md".to_owned(),
            "memory/a0.md".to_owned(),
            "memory/a-b.md".to_owned(),
            "memory/a.b/y.md".to_owned(),
            "memory/ab/x.md".to_owned(),
            "memory/a".to_owned() + "b.md",
            "MEMORY.md".to_owned(),
            // Names alike in their first 16 bytes.
            "memory/2026-11-21-standup.md".to_owned(),
            "memory/2026-11-21-standup/x.md".to_owned(),
            "memory/2026-11-21-standup-notes.md".to_owned(),
            "memory/2026-11-21-standup0.md".to_owned(),
            "memory/0123456789abcdef/x.md".to_owned(),
            "memory/0123456789abcdef.md".to_owned(),
            "memory/0123456789abcdef0.md".to_owned(),
        ];
        // More files than one task takes, so a directory is split across tasks.
        for i in 0..FILES_PER_TASK * 2 + 3 {
            made.push(format!("memory/big/n{}.md", i * 7919 % 1000));
        }
        made.sort();
        made.dedup();
        for rel in &made {
            write(dir.path(), rel);
        }
        let w = walk(dir.path(), &selection()).unwrap();
        let got: Vec<&str> = w.files().map(|f| f.rel.as_str()).collect();
        assert_eq!(got, made);
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_listing_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret.md");
        fs::create_dir(dir.path().join("memory")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("memory/sub")).unwrap();
        // The listing said "directory"; by the time the walk opens it, it is a symlink.
        let selection = selection();
        let walker = Walker {
            root: dir.path(),
            selection: &selection,
        };
        let memory = DirHandle::open(&dir.path().join("memory")).unwrap();
        let rel = RelPath::new("memory/sub").unwrap();
        let child = Child {
            name_at: "memory/".len(),
            prefix: sort_prefix(b"sub", true),
            file_type: FileType::Directory,
            disk_name: None,
            rel: rel.clone(),
        };
        let sub = Dir {
            rel: rel.clone(),
            scope: selection.root_scope(),
            synced: true,
            disk_path: None,
        };
        let w = walker.visit_dir(&memory, &child, &sub);
        assert!(
            w.files().next().is_none(),
            "nothing below the symlink is walked"
        );
        assert_eq!(w.skipped.len(), 1);
        assert_eq!(w.skipped[0].reason, SkipReason::Symlink);
        assert_eq!(w.blind, vec![rel]);
    }

    #[test]
    fn names_that_are_not_utf8_are_reported_in_synced_directories() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("memory")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"bad\xffname.md");
        fs::write(dir.path().join("memory").join(odd), b"x").unwrap();
        let w = walk(dir.path(), &selection()).unwrap();
        assert!(w.files().next().is_none());
        assert_eq!(w.skipped.len(), 1);
        assert!(
            matches!(w.skipped[0].reason, SkipReason::BadName(_)),
            "{:?}",
            w.skipped
        );
        assert_eq!(
            w.skipped[0].path, "memory/bad\u{FFFD}name.md",
            "relative to the workspace, as every other report"
        );
    }

    #[test]
    fn nfc_and_nfd_spellings_of_one_name_collide() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "memory/caf\u{e9}.md");
        write(dir.path(), "memory/cafe\u{301}.md");
        let w = walk(dir.path(), &selection()).unwrap();
        assert_eq!(w.files().count(), 1);
        assert_eq!(w.skipped.len(), 1);
        assert_eq!(w.skipped[0].reason, SkipReason::NameCollision);
        assert_eq!(w.blind, vec![RelPath::new("memory/caf\u{e9}.md").unwrap()]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Whatever the names, the walk lists exactly the files there are, in path order (the
        /// order the merge-join with the index relies on).
        #[test]
        fn the_walk_lists_every_file_in_path_order(
            paths in proptest::collection::btree_set("(0123456789abcdef)?[a0-][a.0-]{0,2}(/(0123456789abcdef)?[a0-][a.0-]{0,2}){0,2}", 1..24)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut made = Vec::new();
            for p in &paths {
                let rel = format!("memory/{p}.md");
                let path = dir.path().join(&rel);
                // Skip paths that clash with a file or directory made earlier.
                if fs::create_dir_all(path.parent().unwrap()).is_ok()
                    && !path.exists()
                    && fs::write(&path, b"x").is_ok()
                {
                    made.push(RelPath::new(&rel).unwrap());
                }
            }
            made.sort();
            let w = walk(dir.path(), &selection()).unwrap();
            let got: Vec<RelPath> = w.files().map(|f| f.rel.clone()).collect();
            proptest::prop_assert_eq!(got, made);
        }
    }
}
