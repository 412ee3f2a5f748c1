//! Making a batch's writes durable with one `syncfs` per file system instead of one `fsync` per
//! file and per directory.
//!
//! Apply needs two barriers per batch (see [`super::batch`]): every temp file's data durable
//! before any rename, and every rename or unlink durable before the index records it. Per-file
//! `fsync` gives both, but costs a journal commit per file: tens of seconds for 20,000 small
//! files. `syncfs(2)` writes back every dirty inode and block of one file system and commits its
//! journal, a superset of what the `fsync`s of the batch's files (or directories) would have
//! done. Issued at the same two points, it keeps the same "old or new" guarantee:
//!
//! - a rename is issued only after the `syncfs` that made the new data durable returned
//!   success, so a crash after the rename finds complete, verified bytes behind the name;
//! - the index is committed only after the `syncfs` that made the renames durable returned
//!   success, so the index never records a file that a crash could take back.
//!
//! `syncfs` is used only where it is known to be as strong as `fsync`, otherwise each file or
//! directory is fsynced as before:
//!
//! - Linux 5.8 or later: older kernels return success from `syncfs` even when writeback failed,
//!   whereas `fsync` reports the error;
//! - a local file system whose `sync_fs` commits everything (ext2/3/4, XFS, Btrfs, F2FS, tmpfs):
//!   FUSE, for one, may acknowledge `syncfs` without asking its server to flush anything;
//! - and the call succeeds. On failure (an I/O error anywhere on that file system, perhaps in a
//!   file that is not ours) the members are fsynced one by one, so that each gets its own result.
//!
//! `syncfs` also writes back whatever else is dirty on that file system (the chunk store's newly
//! received chunks, other programs' files), so it only pays off when it replaces many `fsync`s:
//! a group of fewer than [`SYNCFS_MIN_TARGETS`] targets is fsynced one by one (a single 64 MiB
//! file is quicker to fsync than the whole file system).
//!
//! Files are grouped by the device they are on (`st_dev`), so a workspace spanning mounts gets
//! one `syncfs` per file system. This module only syncs; it does not decide when.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;

use crate::chunkstore::parallel_sync;

/// Something whose writes a barrier must make durable.
#[derive(Debug, Clone, Copy)]
pub(super) enum Durable<'a> {
    /// An open file (its data and metadata).
    File(&'a File),
    /// A directory (the entries renamed into or unlinked from it).
    Dir(&'a Path),
}

/// How a barrier was carried out, for tracing and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SyncCounts {
    /// `syncfs` calls that succeeded.
    pub(super) syncfs: usize,
    /// Files and directories fsynced one by one.
    pub(super) fsync: usize,
}

/// Make the writes of every target durable; one result per target, in order. `dev` gives each
/// target's device (`st_dev`).
pub(super) fn barrier(
    targets: &[Durable<'_>],
    dev: impl Fn(usize) -> u64,
) -> (Vec<io::Result<()>>, SyncCounts) {
    // A fault point (tests only): the disk fails every flush of this barrier.
    fail::fail_point!("apply::sync", |arg| (
        targets
            .iter()
            .map(|_| Err(crate::error::injected(arg.clone())))
            .collect(),
        SyncCounts::default()
    ));
    let mut by_dev: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..targets.len() {
        by_dev.entry(dev(i)).or_default().push(i);
    }
    let mut results: Vec<io::Result<()>> = (0..targets.len()).map(|_| Ok(())).collect();
    let mut counts = SyncCounts::default();
    let mut one_by_one = Vec::new();
    for members in by_dev.values() {
        if members.len() < SYNCFS_MIN_TARGETS {
            one_by_one.extend_from_slice(members);
            continue;
        }
        // Any member stands for its file system.
        match members.first().map(|&i| sync_file_system(targets[i])) {
            Some(Ok(())) => counts.syncfs += 1,
            _ => one_by_one.extend_from_slice(members),
        }
    }
    if !one_by_one.is_empty() {
        counts.fsync = one_by_one.len();
        let synced = parallel_sync(&one_by_one, |&i| fsync(targets[i]));
        for (&i, result) in one_by_one.iter().zip(synced) {
            results[i] = result;
        }
    }
    (results, counts)
}

/// `fsync` one target.
pub(super) fn fsync(target: Durable<'_>) -> io::Result<()> {
    match target {
        Durable::File(f) => f.sync_all(),
        Durable::Dir(d) => File::open(d).and_then(|f| f.sync_all()),
    }
}

/// `syncfs` the file system holding `target`, if that is known to be as strong as `fsync`.
fn sync_file_system(target: Durable<'_>) -> io::Result<()> {
    if !kernel_reports_syncfs_errors() {
        return Err(io::Error::other(
            "syncfs does not report writeback errors before linux 5.8",
        ));
    }
    let opened;
    let fd = match target {
        Durable::File(f) => f.as_fd(),
        Durable::Dir(d) => {
            opened = File::open(d)?;
            opened.as_fd()
        }
    };
    let stat = rustix::fs::fstatfs(fd)?;
    // `f_type`'s integer type differs between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let magic = i64::from(stat.f_type as i64);
    if !SYNCFS_FILE_SYSTEMS.contains(&magic) {
        return Err(io::Error::other(format!(
            "file system type {magic:#x} is not known to sync fully"
        )));
    }
    rustix::fs::syncfs(fd)?;
    Ok(())
}

/// True on Linux 5.8 and later, where `syncfs` returns writeback errors.
fn kernel_reports_syncfs_errors() -> bool {
    static REPORTS: OnceLock<bool> = OnceLock::new();
    *REPORTS.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| release_at_least(&release, (5, 8)))
            .unwrap_or(false)
    })
}

/// Whether a kernel release string (`6.1.0-18-amd64`) is at least `min`; `None` if unparsable.
fn release_at_least(release: &str, min: (u32, u32)) -> Option<bool> {
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= min)
}

/// The fewest targets on one file system for which one `syncfs` replaces their `fsync`s.
pub(super) const SYNCFS_MIN_TARGETS: usize = 8;

/// `statfs` magic numbers of file systems whose `syncfs` writes back and commits everything:
/// ext2/3/4, XFS, Btrfs, F2FS, tmpfs (nothing to write back).
const SYNCFS_FILE_SYSTEMS: [i64; 5] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0x0102_1994];

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert_eq!(release_at_least("6.1.0-18-amd64", (5, 8)), Some(true));
        assert_eq!(release_at_least("5.8.0", (5, 8)), Some(true));
        assert_eq!(release_at_least("5.4.0-150-generic", (5, 8)), Some(false));
        assert_eq!(release_at_least("4.19.0\n", (5, 8)), Some(false));
        assert_eq!(release_at_least("garbage", (5, 8)), None);
    }

    #[test]
    fn every_target_gets_a_result_and_is_synced_once_per_device() {
        let tmp = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..SYNCFS_MIN_TARGETS)
            .map(|i| tmp.path().join(format!("f{i}")))
            .collect();
        let files: Vec<File> = paths
            .iter()
            .map(|p| {
                fs::write(p, b"data").unwrap();
                File::open(p).unwrap()
            })
            .collect();
        let dev = fs::metadata(tmp.path()).unwrap().dev();
        let mut targets: Vec<Durable<'_>> = files.iter().map(Durable::File).collect();
        targets.push(Durable::Dir(tmp.path()));
        let (results, counts) = barrier(&targets, |_| dev);
        assert_eq!(results.len(), targets.len());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // Either one syncfs covered the whole file system, or each target was fsynced.
        assert!(
            counts
                == SyncCounts {
                    syncfs: 1,
                    fsync: 0
                }
                || counts
                    == SyncCounts {
                        syncfs: 0,
                        fsync: targets.len()
                    },
            "{counts:?}"
        );
    }

    #[test]
    fn a_few_targets_are_fsynced_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        let targets = [Durable::Dir(tmp.path()); SYNCFS_MIN_TARGETS - 1];
        let (results, counts) = barrier(&targets, |_| 7);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            counts,
            SyncCounts {
                syncfs: 0,
                fsync: targets.len()
            }
        );
    }

    #[test]
    fn a_failing_fallback_is_reported_per_target() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        let targets = [Durable::Dir(&gone), Durable::Dir(tmp.path())];
        // Distinct devices: the missing directory cannot stand for the existing one.
        let (results, _) = barrier(&targets, |i| i as u64);
        assert_eq!(
            results[0].as_ref().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(results[1].is_ok());
    }
}
