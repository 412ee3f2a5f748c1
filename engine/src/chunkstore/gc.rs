//! Garbage collection of the chunk store: what is older than the retention period and not kept
//! by the caller goes, and so do temporary files left by interrupted writes.
//!
//! It decides nothing about which versions matter: the caller's `keep` predicate does.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::{
    ChunkStore, ChunkStoreError, MANIFESTS, STAGING, STALE_TEMP, TEMP_PREFIX, duration_ns,
    system_time_ns,
};
use crate::error::{IoContext, IoError};
use crate::hash::Hash;

/// What [`ChunkStore::gc`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Chunk and manifest files looked at.
    pub examined: u64,
    /// Files removed (older than the retention period and not kept).
    pub removed: u64,
    /// Bytes freed.
    pub bytes_removed: u64,
    /// Files that could not be examined or removed; the collection went on without them.
    pub failures: Vec<IoError>,
}

impl ChunkStore {
    /// Remove chunk and manifest files older than `retention` at `now_ns` for which `keep`
    /// (asked with the chunk id or the manifest's content hash) returns false, and temporary
    /// files left by interrupted writes. Failures are collected in the report, not fatal.
    pub fn gc(
        &self,
        retention: Duration,
        now_ns: i64,
        keep: impl Fn(&Hash) -> bool,
    ) -> Result<GcReport, ChunkStoreError> {
        let mut report = GcReport::default();
        let horizon = now_ns.saturating_sub(duration_ns(retention));
        let temp_horizon = now_ns.saturating_sub(duration_ns(STALE_TEMP));
        let entries = fs::read_dir(&self.dir).io_context("listing the chunk store", &self.dir)?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    report.failures.push(IoError {
                        action: "listing the chunk store",
                        path: self.dir.clone(),
                        source: e,
                    });
                    continue;
                }
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) {
                collect_if_old(&path, temp_horizon, &mut report);
            } else if name == MANIFESTS || name == STAGING {
                self.gc_fanout(&path, horizon, &keep, &mut report);
            } else if is_fanout_name(&name) {
                gc_bucket(&path, &name, horizon, &keep, &mut report);
            }
        }
        Ok(report)
    }

    fn gc_fanout(
        &self,
        root: &Path,
        horizon: i64,
        keep: &dyn Fn(&Hash) -> bool,
        report: &mut GcReport,
    ) {
        let Ok(buckets) = fs::read_dir(root) else {
            return;
        };
        for bucket in buckets.flatten() {
            let name = bucket.file_name();
            let name = name.to_string_lossy();
            if is_fanout_name(&name) {
                gc_bucket(&bucket.path(), &name, horizon, keep, report);
            }
        }
    }
}

fn gc_bucket(
    dir: &Path,
    bucket: &str,
    horizon: i64,
    keep: &dyn Fn(&Hash) -> bool,
    report: &mut GcReport,
) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.failures.push(IoError {
                action: "listing chunks",
                path: dir.into(),
                source: e,
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(id) = format!("{bucket}{}", name.to_string_lossy()).parse::<Hash>() else {
            continue;
        };
        report.examined += 1;
        if !keep(&id) {
            collect_if_old(&entry.path(), horizon, report);
        }
    }
}

/// Remove `path` if it was last modified before `horizon` (ns since the epoch).
fn collect_if_old(path: &Path, horizon: i64, report: &mut GcReport) {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            report.failures.push(IoError {
                action: "examining",
                path: path.into(),
                source: e,
            });
            return;
        }
    };
    let modified = meta.modified().map(system_time_ns).unwrap_or(i64::MAX);
    if modified >= horizon {
        return;
    }
    match fs::remove_file(path) {
        Ok(()) => {
            report.removed += 1;
            report.bytes_removed += meta.len();
        }
        Err(e) => report.failures.push(IoError {
            action: "removing",
            path: path.into(),
            source: e,
        }),
    }
}

pub(super) fn is_fanout_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_RETENTION;
    use super::*;
    use crate::chunkstore::tests::{now_ns, store};

    #[test]
    fn gc_removes_only_old_unkept_objects() {
        let (_tmp, cs) = store();
        let old = cs.put(b"old").unwrap();
        let kept = cs.put(b"kept").unwrap();
        let stray = cs.dir().join(format!("{TEMP_PREFIX}0000000000000000"));
        fs::write(&stray, b"partial").unwrap();
        // Nothing is old yet.
        let report = cs.gc(DEFAULT_RETENTION, now_ns(), |_| false).unwrap();
        assert_eq!((report.examined, report.removed), (2, 0));
        // Forty days later, only the kept chunk survives; the stray temp file is collected.
        let later = now_ns() + duration_ns(Duration::from_secs(40 * 24 * 3600));
        let report = cs.gc(DEFAULT_RETENTION, later, |id| *id == kept).unwrap();
        assert_eq!(report.removed, 2);
        assert_eq!(report.bytes_removed, 3 + 7);
        assert!(report.failures.is_empty());
        assert!(!cs.has(&old) && cs.has(&kept) && !stray.exists());
    }
}
