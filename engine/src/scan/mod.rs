//! The scanner: what changed in the workspace since the last scan.
//!
//! [`scan`] walks the selected files (`walk`), trusts the stat cache for files whose stat facts
//! are unchanged and not racy, hashes the others on all cores (`hashing`) and compares the result
//! with the previous index entries to produce versioned [`Change`]s: new and modified files,
//! exec-bit changes, tombstones for deletions, and paths that left the selection. It does not
//! write the index, store chunks or talk to peers; the caller applies the report.
//!
//! Safety rules: a workspace without its `.botsync/` marker is refused outright (an unmounted
//! disk must never turn into a tree of tombstones), and anything the scan could not see (an
//! unreadable directory, a file that changed while read, a symlink) keeps its previous entry.
//!
//! # Racy files
//! A stat signature says nothing about writes in the same timestamp tick as the scan that
//! recorded it (git's "racy clean" problem). File systems differ in timestamp granularity (ext4
//! and APFS: ns, HFS+: 1 s, FAT: 2 s), so a file whose mtime is not at least [`RACY_WINDOW_NS`]
//! older than the scan that recorded it is hashed again, once, by the next scan; that scan
//! records a later time and the file becomes trusted.

mod dirfd;
pub(crate) mod hashing;
mod partial;
mod report;
mod walk;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::chunk::{Chunker, ChunkerParams};
use crate::entry::{EntryKind, FileEntry, LocalEntry, Mode, StatSig};
use crate::error::IoError;
use crate::hash::Hash;
use crate::path::{RelPath, STATE_DIR};
use crate::peer::Attribution;
use crate::rules::{Decision, Selection};
use crate::secrets::{Finding, SecretRules};
use crate::vector::CounterExhausted;

pub use self::partial::{MAX_PARTIAL_SCOPES, scan_under};
pub use self::report::{Change, ChangeKind, ScanReport, ScanSummary, SkipReason, Skipped};

use self::hashing::{Digest, ReadFailure};
use self::walk::Found;

/// A file modified less than this long before the scan that recorded it is re-hashed by the next
/// scan: 2 s, the coarsest common timestamp granularity (FAT), so coarse clocks are covered too.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// What a scan needs: where, what is selected, who is scanning, when, and how to chunk.
#[derive(Debug, Clone)]
pub struct ScanContext<'a> {
    /// The workspace root (the directory holding `.botsync/`).
    pub root: &'a Path,
    /// The selection rules.
    pub selection: &'a Selection,
    /// This peer and agent: recorded as the author of every change found.
    pub local: Attribution,
    /// The scan's start time, ns since the epoch (the engine reads no clock).
    pub now_ns: i64,
    /// The chunker for new versions.
    pub chunker: ChunkerParams,
    /// The secret guard: a new or changed text file holding a private key or a token is not
    /// taken in ([`SkipReason::Secret`]); `None` checks nothing.
    pub secrets: Option<&'a SecretRules>,
}

/// Why a scan could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root is missing or has no `.botsync/` marker directory.
    #[error(
        "{} is not a botsync workspace (no .botsync/ directory): check the path and that its disk is mounted, or run `botsync init` there",
        root.display()
    )]
    NotAWorkspace {
        /// The root given.
        root: PathBuf,
    },
    /// The workspace root could not be listed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Scan the workspace and compare it with `prev`, the index's entries (files and tombstones).
pub fn scan(
    ctx: &ScanContext<'_>,
    prev: &BTreeMap<RelPath, LocalEntry>,
) -> Result<ScanReport, ScanError> {
    let span = tracing::info_span!("scan", root = %ctx.root.display(), peer = %ctx.local.peer);
    let _entered = span.enter();

    if !ctx.root.join(STATE_DIR).is_dir() {
        return Err(ScanError::NotAWorkspace {
            root: ctx.root.to_path_buf(),
        });
    }
    let walked = walk::walk(ctx.root, ctx.selection).map_err(|source| IoError {
        action: "listing workspace",
        path: ctx.root.to_path_buf(),
        source,
    })?;
    let report = compare(ctx, prev, walked);
    tracing::debug!(
        changes = report.changes.len(),
        refreshed = report.refreshed.len(),
        unchanged = report.unchanged,
        hashed_files = report.hashed_files,
        hashed_bytes = report.hashed_bytes,
        skipped = report.skipped.len(),
        "scan finished"
    );
    Ok(report)
}

/// The scan after the walk: stat cache, hashing, and comparison with `prev`.
fn compare(
    ctx: &ScanContext<'_>,
    prev: &BTreeMap<RelPath, LocalEntry>,
    mut walked: walk::Walk,
) -> ScanReport {
    // Paths whose previous entries stand because the scan could not see them (with what is
    // below them): skipped entries, unreadable directories.
    let blind: HashSet<RelPath> = std::mem::take(&mut walked.blind).into_iter().collect();
    if walked.stale_temps_removed > 0 {
        tracing::info!(
            files = walked.stale_temps_removed,
            "removed temporary files left by an interrupted sync"
        );
    }
    let mut report = ScanReport {
        skipped: std::mem::take(&mut walked.skipped),
        ..ScanReport::default()
    };

    let Joined {
        unchanged,
        to_hash,
        missing,
    } = join(walked.runs(), prev, &blind);
    report.unchanged = unchanged;

    // Hash on all cores; each file is independent.
    let chunker = Chunker::new(ctx.chunker);
    let digests: Vec<Result<Digest, SkipReason>> =
        to_hash
            .par_iter()
            .map(|(found, old)| {
                // A small file's bytes are kept for the secret guard (and dropped right after it).
                let keep = ctx.secrets.is_some();
                let (d, small) = hashing::read_file_keeping(&chunker, ctx.root, found, keep)
                    .map_err(|failure| match failure {
                        ReadFailure::Io(e) => SkipReason::Unreadable(e.to_string()),
                        ReadFailure::Replaced | ReadFailure::Changed => {
                            SkipReason::ChangedWhileReading
                        }
                    })?;
                match ctx.secrets {
                    Some(rules) if is_new_content(*old, &d) => {
                        secret_check(rules, &chunker, ctx.root, found, &d, small.as_deref())?;
                        Ok(d)
                    }
                    _ => Ok(d),
                }
            })
            .collect();
    for ((found, old), digest) in to_hash.iter().zip(digests) {
        match digest {
            Ok(d) => {
                report.hashed_files += 1;
                report.hashed_bytes += d.size;
                classify(ctx, &found.rel, *old, d, &mut report);
            }
            // Not read, or held back: reported, and the previous entry (if any) stands.
            Err(reason) => {
                let path = found.rel.as_str().to_owned();
                report.skipped.push(Skipped { path, reason });
            }
        }
    }

    // Previous entries without a file: no longer selected, not seen, or deleted.
    for (path, old) in missing {
        if ctx.selection.decide(path, false) != Decision::Synced {
            report.changes.push(Change {
                kind: ChangeKind::Unselected,
                entry: old.clone(),
            });
            continue;
        }
        if old.entry.is_tombstone() || is_hidden(path, &blind) {
            continue;
        }
        let entry = match tombstone(ctx, &old.entry) {
            Ok(entry) => entry,
            Err(e) => {
                report.skipped.push(Skipped {
                    path: path.to_string(),
                    reason: SkipReason::CounterExhausted(e),
                });
                continue;
            }
        };
        report.changes.push(Change {
            kind: ChangeKind::Deleted,
            entry: LocalEntry {
                entry,
                stat: None,
                recorded_at_ns: ctx.now_ns,
            },
        });
    }

    // Freeing 20,000 paths is a few milliseconds of a warm rescan: on all cores too.
    walked.into_runs().into_par_iter().for_each(drop);
    report.sort();
    report
}

/// What the merge-join of the walk with the index found.
#[derive(Debug, Default)]
struct Joined<'a> {
    /// Files the stat cache vouches for.
    unchanged: u64,
    /// Files to read, with their previous entries.
    to_hash: Vec<(&'a Found, Option<&'a LocalEntry>)>,
    /// Previous entries met by no file, in path order.
    missing: Vec<(&'a RelPath, &'a LocalEntry)>,
}

impl<'a> Joined<'a> {
    fn append(&mut self, other: Joined<'a>) {
        self.unchanged += other.unchanged;
        self.to_hash.extend(other.to_hash);
        self.missing.extend(other.missing);
    }
}

/// Merge-join the walk's runs (each sorted, in path order one after the other) with the index,
/// the runs in parallel: each meets the index entries from its first path up to the next run's
/// first path, the first run also those before it.
fn join<'a>(
    runs: &'a [Vec<Found>],
    prev: &'a BTreeMap<RelPath, LocalEntry>,
    blind: &HashSet<RelPath>,
) -> Joined<'a> {
    let runs: Vec<&'a [Found]> = runs
        .iter()
        .filter(|r| !r.is_empty())
        .map(Vec::as_slice)
        .collect();
    debug_assert!(
        runs.iter()
            .flat_map(|r| r.iter())
            .map(|f| &f.rel)
            .is_sorted(),
        "the walk is in path order"
    );
    if runs.is_empty() {
        return Joined {
            missing: prev.iter().collect(),
            ..Joined::default()
        };
    }
    let parts: Vec<Joined<'a>> = (0..runs.len())
        .into_par_iter()
        .map(|i| {
            let from = match i {
                0 => Bound::Unbounded,
                _ => Bound::Included(&runs[i][0].rel),
            };
            let to = match runs.get(i + 1) {
                Some(next) => Bound::Excluded(&next[0].rel),
                None => Bound::Unbounded,
            };
            join_run(runs[i], prev.range::<RelPath, _>((from, to)), blind)
        })
        .collect();
    let mut joined = Joined::default();
    for part in parts {
        joined.append(part);
    }
    joined
}

/// Merge-join one sorted run of files with the sorted index entries of its range.
fn join_run<'a>(
    run: &'a [Found],
    entries: impl Iterator<Item = (&'a RelPath, &'a LocalEntry)>,
    blind: &HashSet<RelPath>,
) -> Joined<'a> {
    let mut joined = Joined::default();
    let mut entries = entries.peekable();
    for found in run {
        // One comparison per step: the index's keys are cold in the cache on a large rescan.
        let mut old = None;
        while let Some(&(path, entry)) = entries.peek() {
            match path.cmp(&found.rel) {
                Ordering::Less => joined.missing.push((path, entry)),
                Ordering::Equal => old = Some(entry),
                Ordering::Greater => break,
            }
            entries.next();
            if old.is_some() {
                break;
            }
        }
        if blind.contains(&found.rel) {
            continue; // a name collision: the previous entry stands
        }
        match old {
            Some(old) if is_trusted(old, found) => joined.unchanged += 1,
            _ => joined.to_hash.push((found, old)),
        }
    }
    joined.missing.extend(entries);
    joined
}

/// True if `path` or one of its parent directories was not seen by this scan.
fn is_hidden(path: &RelPath, blind: &HashSet<RelPath>) -> bool {
    if blind.is_empty() {
        return false;
    }
    let mut cur = Some(path.clone());
    while let Some(p) = cur {
        if blind.contains(&p) {
            return true;
        }
        cur = p.parent();
    }
    false
}

/// True if `d` is content the index does not hold for this path yet (the secret guard checks
/// only those: an unchanged file was checked when it changed, or predates the guard).
fn is_new_content(old: Option<&LocalEntry>, d: &Digest) -> bool {
    old.is_none_or(|o| o.entry.is_tombstone() || o.entry.content != d.content)
}

/// The secret guard on one freshly hashed file: a text file of at most
/// [`MAX_CHECKED_BYTES`](crate::secrets::MAX_CHECKED_BYTES) outside `secret_allow` is read again
/// and checked (a small file's bytes, `small`, come from the hashing read itself). The bytes checked must be the ones hashed (they are hashed again), or the check
/// would judge other bytes than the ones sent.
fn secret_check(
    rules: &SecretRules,
    chunker: &Chunker,
    root: &Path,
    found: &walk::Found,
    d: &Digest,
    small: Option<&[u8]>,
) -> Result<(), SkipReason> {
    if d.size == 0 || d.size > crate::secrets::MAX_CHECKED_BYTES || rules.allows(found.rel.as_str())
    {
        return Ok(());
    }
    let read;
    let bytes = match small {
        // The very bytes hashed.
        Some(bytes) => bytes,
        None => {
            read = hashing::read_to_check(chunker, root, found, d).map_err(
                |failure| match failure {
                    ReadFailure::Io(e) => SkipReason::Unreadable(e.to_string()),
                    ReadFailure::Replaced | ReadFailure::Changed => SkipReason::ChangedWhileReading,
                },
            )?;
            &read[..]
        }
    };
    match rules.check(bytes) {
        Some(Finding { line, kind }) => {
            tracing::debug!(path = %found.rel, line, %kind, "secret found: not taken in");
            Err(SkipReason::Secret { line, kind })
        }
        None => Ok(()),
    }
}

/// True if the stat cache may vouch for `found` without reading it.
fn is_trusted(old: &LocalEntry, found: &Found) -> bool {
    old.entry.kind == EntryKind::File
        && old.stat == Some(found.sig)
        && old.entry.mode == found.mode
        && found.sig.mtime_ns < old.recorded_at_ns.saturating_sub(RACY_WINDOW_NS)
}

/// Turn a fresh digest into a change, a refreshed stat entry, or nothing.
fn classify(
    ctx: &ScanContext<'_>,
    rel: &RelPath,
    old: Option<&LocalEntry>,
    d: Digest,
    report: &mut ScanReport,
) {
    let mode = d.mode;
    let mtime_ns = competing_time(&d.sig, ctx.now_ns);
    let stat = Some(d.sig);
    let local_entry = |entry| LocalEntry {
        entry,
        stat,
        recorded_at_ns: ctx.now_ns,
    };
    let (kind, mut version, parent) = match old.map(|o| &o.entry) {
        None => (ChangeKind::Added, Default::default(), None),
        Some(o) if o.is_tombstone() => (ChangeKind::Added, o.version.clone(), None),
        Some(o) if o.content == d.content && o.mode == mode => {
            report.refreshed.push(local_entry(o.clone()));
            return;
        }
        Some(o) if o.content == d.content => {
            (ChangeKind::MetadataOnly, o.version.clone(), Some(o.content))
        }
        Some(o) => (ChangeKind::Modified, o.version.clone(), Some(o.content)),
    };
    if let Err(e) = version.increment(ctx.local.peer) {
        report.skipped.push(Skipped {
            path: rel.to_string(),
            reason: SkipReason::CounterExhausted(e),
        });
        return;
    }
    let entry = FileEntry {
        path: rel.clone(),
        kind: EntryKind::File,
        size: d.size,
        mtime_ns,
        mode,
        content: d.content,
        chunks: d.chunks,
        chunker: ctx.chunker,
        version,
        parent,
        changed_by: ctx.local.clone(),
    };
    report.changes.push(Change {
        kind,
        entry: local_entry(entry),
    });
}

/// The tombstone recording that `old` (a file) was deleted by this peer at `now`.
fn tombstone(ctx: &ScanContext<'_>, old: &FileEntry) -> Result<FileEntry, CounterExhausted> {
    let mut version = old.version.clone();
    version.increment(ctx.local.peer)?;
    Ok(FileEntry {
        path: old.path.clone(),
        kind: EntryKind::Tombstone,
        size: 0,
        mtime_ns: ctx.now_ns,
        mode: Mode::default(),
        content: Hash::ZERO,
        chunks: Vec::new(),
        chunker: old.chunker,
        version,
        parent: Some(old.content),
        changed_by: ctx.local.clone(),
    })
}

/// The time a newly observed version competes with in a conflict (recorded as its entry's
/// `mtime_ns`): its mtime, bounded by when it was observed. The inode change time is set by the
/// kernel at the write (and again by any `touch -d`), so the content existed by then; the scan's
/// clock bounds it too. An mtime dated in the future (a tool, a wrong `touch`) thus competes with
/// the moment the file really changed, and a real edit made after it wins (docs/CONFLICTS.md).
/// A backdated mtime is kept: it is older than both bounds.
fn competing_time(sig: &StatSig, now_ns: i64) -> i64 {
    sig.mtime_ns.min(sig.ctime_ns).min(now_ns)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use std::collections::BTreeSet;
    use std::fs;

    use super::*;
    use crate::config::SyncConfig;
    use crate::entry::StatSig;
    use crate::peer::{AgentLabel, MachineName, PeerId};
    use crate::secrets::SecretKind;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn ctx<'a>(root: &'a Path, selection: &'a Selection, now_ns: i64) -> ScanContext<'a> {
        ScanContext {
            root,
            selection,
            local: Attribution {
                peer: PeerId([7; 32]),
                agent: AgentLabel::new("unit"),
                machine: MachineName::default(),
            },
            now_ns,
            chunker: ChunkerParams::DEFAULT,
            secrets: None,
        }
    }

    fn workspace() -> (tempfile::TempDir, Selection) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".botsync")).unwrap();
        fs::create_dir_all(dir.path().join("memory")).unwrap();
        (dir, Selection::new(&SyncConfig::default()).unwrap())
    }

    fn index(report: &ScanReport) -> BTreeMap<RelPath, LocalEntry> {
        report
            .changes
            .iter()
            .map(|c| (c.entry.entry.path.clone(), c.entry.clone()))
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]

        /// The walk's runs are joined with the index in parallel, each with its own range of
        /// it: files deleted or added anywhere (first or last of a run, between two runs, a
        /// whole directory) are found exactly, and every other file is trusted.
        #[test]
        fn deletions_and_additions_across_runs_are_found_exactly(
            deleted in proptest::collection::btree_set(0usize..906, 0..40),
            added in proptest::collection::btree_set(0usize..906, 0..10),
            drop_dir_b in proptest::prelude::any::<bool>(),
        ) {
            let (dir, selection) = workspace();
            // 600 files (three runs), 5, 300 (two runs), and one at the root.
            let mut paths = Vec::new();
            for (d, n) in [("a", 600), ("b", 5), ("c", 300)] {
                fs::create_dir_all(dir.path().join("memory").join(d)).unwrap();
                for i in 0..n {
                    paths.push(format!("memory/{d}/n{i:03}.md"));
                }
            }
            paths.push("MEMORY.md".to_owned());
            for p in &paths {
                fs::write(dir.path().join(p), p.as_bytes()).unwrap();
            }
            let first = scan(&ctx(dir.path(), &selection, NOW), &BTreeMap::new()).unwrap();
            let prev = index(&first);
            proptest::prop_assert_eq!(prev.len(), paths.len());

            let mut gone: BTreeSet<String> = deleted.iter().map(|&i| paths[i].clone()).collect();
            if drop_dir_b {
                fs::remove_dir_all(dir.path().join("memory/b")).unwrap();
                gone.extend(paths.iter().filter(|p| p.starts_with("memory/b/")).cloned());
            }
            for p in &gone {
                let _ = fs::remove_file(dir.path().join(p));
            }
            // A new name right after an existing one, in the same directory.
            let new: BTreeSet<String> = added
                .iter()
                .map(|&i| paths[i].replace(".md", "-new.md"))
                // Only `MEMORY.md` is selected at the root, not `MEMORY-new.md`.
                .filter(|p| p.starts_with("memory/"))
                .filter(|p| !(drop_dir_b && p.starts_with("memory/b/")))
                .collect();
            for p in &new {
                fs::write(dir.path().join(p), b"new").unwrap();
            }

            let report = scan(&ctx(dir.path(), &selection, NOW + 1), &prev).unwrap();
            let of_kind = |kind: ChangeKind| -> BTreeSet<String> {
                report
                    .changes
                    .iter()
                    .filter(|c| c.kind == kind)
                    .map(|c| c.entry.entry.path.as_str().to_owned())
                    .collect()
            };
            proptest::prop_assert_eq!(of_kind(ChangeKind::Deleted), gone.clone());
            proptest::prop_assert_eq!(of_kind(ChangeKind::Added), new.clone());
            proptest::prop_assert_eq!(report.changes.len(), gone.len() + new.len());
            proptest::prop_assert_eq!(report.unchanged as usize, paths.len() - gone.len());
            proptest::prop_assert_eq!(report.hashed_files as usize, new.len());
        }
    }

    #[test]
    fn a_file_that_vanishes_before_it_is_read_keeps_its_entry() {
        let (dir, selection) = workspace();
        fs::write(dir.path().join("memory/a.md"), b"one").unwrap();
        let c = ctx(dir.path(), &selection, NOW);
        let first = scan(&c, &BTreeMap::new()).unwrap();
        let prev = index(&first);

        fs::write(dir.path().join("memory/a.md"), b"two!").unwrap();
        let walked = walk::walk(dir.path(), &selection).unwrap();
        fs::remove_file(dir.path().join("memory/a.md")).unwrap();
        let report = compare(&ctx(dir.path(), &selection, NOW + 1), &prev, walked);

        assert!(report.changes.is_empty(), "{:?}", report.changes);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].path, "memory/a.md");
        assert!(matches!(
            report.skipped[0].reason,
            SkipReason::Unreadable(_)
        ));
        // The next scan sees the deletion for what it is.
        let later = scan(&ctx(dir.path(), &selection, NOW + 2), &prev).unwrap();
        assert_eq!(later.changes[0].kind, ChangeKind::Deleted);
    }

    #[test]
    fn stat_cache_trusts_only_files_older_than_the_racy_window() {
        let (dir, selection) = workspace();
        fs::write(dir.path().join("memory/a.md"), b"one").unwrap();
        let walked = walk::walk(dir.path(), &selection).unwrap();
        let found = walked.files().next().unwrap();
        let first = compare(
            &ctx(dir.path(), &selection, NOW),
            &BTreeMap::new(),
            walk::walk(dir.path(), &selection).unwrap(),
        );
        let mut entry = first.changes[0].entry.clone();

        entry.recorded_at_ns = found.sig.mtime_ns;
        assert!(!is_trusted(&entry, found), "written in the recording tick");
        entry.recorded_at_ns = found.sig.mtime_ns + RACY_WINDOW_NS;
        assert!(!is_trusted(&entry, found), "inside the window");
        entry.recorded_at_ns = found.sig.mtime_ns + RACY_WINDOW_NS + 1;
        assert!(is_trusted(&entry, found));
        let mut other = entry.clone();
        other.stat = Some(StatSig {
            size: 99,
            ..entry.stat.unwrap()
        });
        assert!(
            !is_trusted(&other, found),
            "a different size is never trusted"
        );
    }

    #[test]
    fn the_competing_time_is_bounded_by_the_change_and_the_scan() {
        let sig = |mtime_ns, ctime_ns| StatSig {
            size: 1,
            mtime_ns,
            ctime_ns,
            ino: 1,
            dev: 1,
        };
        // An ordinary write: mtime and ctime agree, both before the scan.
        assert_eq!(competing_time(&sig(NOW - 9, NOW - 9), NOW), NOW - 9);
        // Dated in the future after the write: the change time bounds it.
        assert_eq!(competing_time(&sig(i64::MAX, NOW - 7), NOW), NOW - 7);
        // Backdated (restored from an archive): kept.
        assert_eq!(competing_time(&sig(NOW - 1_000, NOW - 3), NOW), NOW - 1_000);
        // A file system whose clock runs ahead of ours: our clock bounds it.
        assert_eq!(competing_time(&sig(NOW + 60, NOW + 60), NOW), NOW);
    }

    #[test]
    fn a_file_from_the_future_is_recorded_at_its_change_time() {
        let (dir, selection) = workspace();
        let p = dir.path().join("memory/future.md");
        fs::write(&p, b"from tomorrow").unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        let tomorrow = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
        f.set_modified(tomorrow).unwrap();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap();
        let report = scan(&ctx(dir.path(), &selection, now), &BTreeMap::new()).unwrap();
        let entry = &report.changes[0].entry;
        assert_eq!(entry.entry.mtime_ns, entry.stat.unwrap().ctime_ns);
        assert!(entry.entry.mtime_ns <= now);
        assert!(
            entry.stat.unwrap().mtime_ns > now,
            "the stat cache keeps the real mtime"
        );
    }

    #[test]
    fn a_file_holding_a_secret_is_held_back_and_an_allowed_one_is_taken() {
        let (dir, selection) = workspace();
        let rules = SecretRules::new(&[], &[], &["memory/keys/**".to_owned()]).unwrap();
        let key = "notes\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n";
        fs::create_dir_all(dir.path().join("memory/keys")).unwrap();
        fs::write(dir.path().join("memory/deploy.md"), key).unwrap();
        fs::write(dir.path().join("memory/keys/box.md"), key).unwrap();
        fs::write(
            dir.path().join("memory/ids.md"),
            "tasks 2f835e81-2bbb-81b6-9700-e18108a40b1f\n",
        )
        .unwrap();
        let mut c = ctx(dir.path(), &selection, NOW);
        c.secrets = Some(&rules);
        let report = scan(&c, &BTreeMap::new()).unwrap();
        let taken: Vec<&str> = report
            .changes
            .iter()
            .map(|c| c.entry.entry.path.as_str())
            .collect();
        assert_eq!(taken, ["memory/ids.md", "memory/keys/box.md"]);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].path, "memory/deploy.md");
        assert_eq!(
            report.skipped[0].reason,
            SkipReason::Secret {
                line: 2,
                kind: SecretKind::PrivateKey
            }
        );
        assert!(report.skipped[0].reason.leaves_changes_unsynced());
        assert_eq!(
            report.skipped[0].to_string(),
            "memory/deploy.md: holds a secret: line 2 has a private key"
        );

        // Once the secret is taken out, the file is taken in.
        let prev = index(&report);
        fs::write(
            dir.path().join("memory/deploy.md"),
            "notes\nkey: see .secrets/\n",
        )
        .unwrap();
        let report = scan(&c, &prev).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(report.changes.len(), 1);
        assert_eq!(report.changes[0].kind, ChangeKind::Added);
    }

    #[test]
    fn a_secret_deep_in_a_file_of_many_chunks_is_found_and_a_large_file_is_not_read() {
        let (dir, selection) = workspace();
        let mut text = "a line of notes that says nothing at all\n".repeat(20_000);
        text.push_str("AKIAIOSFODNN7EXAMPLE\n");
        assert!(text.len() as u64 > u64::from(ChunkerParams::DEFAULT.min) * 4);
        fs::write(dir.path().join("memory/long.md"), &text).unwrap();
        let mut big = "x".repeat(crate::secrets::MAX_CHECKED_BYTES as usize);
        big.push_str("\nAKIAIOSFODNN7EXAMPLE\n");
        fs::write(dir.path().join("memory/big.md"), &big).unwrap();
        let rules = SecretRules::default();
        let mut c = ctx(dir.path(), &selection, NOW);
        c.secrets = Some(&rules);
        let report = scan(&c, &BTreeMap::new()).unwrap();
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
        assert_eq!(report.skipped[0].path, "memory/long.md");
        assert_eq!(
            report.skipped[0].reason,
            SkipReason::Secret {
                line: 20_001,
                kind: SecretKind::AwsAccessKey
            }
        );
        // Past the size cap a file is data: taken in unchecked.
        assert_eq!(report.changes.len(), 1);
        assert_eq!(report.changes[0].entry.entry.path.as_str(), "memory/big.md");
    }

    #[test]
    fn a_known_file_whose_content_did_not_change_is_not_checked_again() {
        let (dir, selection) = workspace();
        let path = dir.path().join("memory/old.md");
        fs::write(&path, "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234\n").unwrap();
        // Indexed before the guard existed.
        let prev = index(&scan(&ctx(dir.path(), &selection, NOW), &BTreeMap::new()).unwrap());
        let rules = SecretRules::default();
        let mut c = ctx(dir.path(), &selection, NOW + 10 * RACY_WINDOW_NS);
        c.secrets = Some(&rules);
        // Touched: hashed again, same content, not a change and not held back.
        fs::write(&path, "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf1234\n").unwrap();
        let report = scan(&c, &prev).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert!(report.changes.is_empty());
    }
}
