//! Partial rescans: only the paths a file-system watcher reported, compared with the index
//! entries there. A daemon whose watcher saw one note change rescans that note, not the
//! workspace; whatever a partial walk cannot vouch for sends the caller back to the full scan.

use std::collections::BTreeMap;

use super::{STATE_DIR, ScanContext, ScanError, ScanReport, compare, walk};
use crate::entry::LocalEntry;
use crate::path::RelPath;

/// Scopes beyond which a partial rescan gives way to the full one. Each scope lists its parent
/// directories to check its spelling, so thousands of files in one directory (a checkout, a
/// generator's output) made the partial rescan quadratic: 12,288 scopes under one directory
/// took minutes, where one full walk (the stat cache skips what did not change) takes a
/// fraction of a second.
pub const MAX_PARTIAL_SCOPES: usize = 256;

/// Scan only what is at each of `scopes` (directories, walked with what is below them, or single
/// files) and compare it with the entries of `prev` there. `Ok(None)` when some scope cannot be
/// walked on its own (see `walk::walk_under`) or there are more than [`MAX_PARTIAL_SCOPES`]:
/// the caller scans everything instead. The report holds the scopes' changes in path order, as
/// [`super::scan`]'s does.
pub fn scan_under(
    ctx: &ScanContext<'_>,
    prev: &BTreeMap<RelPath, LocalEntry>,
    scopes: &[RelPath],
) -> Result<Option<ScanReport>, ScanError> {
    if !ctx.root.join(STATE_DIR).is_dir() {
        return Err(ScanError::NotAWorkspace {
            root: ctx.root.to_path_buf(),
        });
    }
    let Some(scopes) = outermost(scopes) else {
        return Ok(None);
    };
    let mut report = ScanReport::default();
    for scope in scopes {
        let walked = match walk::walk_under(ctx.root, ctx.selection, scope) {
            Ok(Some(w)) => w,
            Ok(None) | Err(_) => return Ok(None),
        };
        let below = entries_at(prev, scope);
        report.absorb(compare(ctx, &below, walked));
    }
    report.sort();
    Ok(Some(report))
}

/// The scopes that are not below another one, each once; `None` if there are more than
/// [`MAX_PARTIAL_SCOPES`] distinct ones.
fn outermost(scopes: &[RelPath]) -> Option<Vec<&RelPath>> {
    let mut sorted: Vec<&RelPath> = scopes.iter().collect();
    sorted.sort();
    sorted.dedup();
    if sorted.len() > MAX_PARTIAL_SCOPES {
        return None;
    }
    let mut out: Vec<&RelPath> = Vec::with_capacity(sorted.len());
    for s in sorted {
        if !out.iter().any(|o| is_within(s, o)) {
            out.push(s);
        }
    }
    Some(out)
}

/// True if `path` is `scope` or below it.
fn is_within(path: &RelPath, scope: &RelPath) -> bool {
    path.as_str()
        .strip_prefix(scope.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The entries of `prev` at `scope` and below it. Paths below a directory are contiguous in
/// path order except for siblings that sort between `dir` and `dir/` (`dir-x`, `dir.y`): those
/// are stepped over, never taken.
fn entries_at(
    prev: &BTreeMap<RelPath, LocalEntry>,
    scope: &RelPath,
) -> BTreeMap<RelPath, LocalEntry> {
    // Everything at or below `scope` sorts before `scope` followed by '0' ('/' + 1).
    let end = format!("{}0", scope.as_str());
    prev.range(scope.clone()..)
        .take_while(|(p, _)| p.as_str() < end.as_str())
        .filter(|(p, _)| is_within(p, scope))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

impl ScanReport {
    /// Add the findings of a scan of another part of the workspace.
    fn absorb(&mut self, other: ScanReport) {
        self.changes.extend(other.changes);
        self.refreshed.extend(other.refreshed);
        self.unchanged += other.unchanged;
        self.hashed_files += other.hashed_files;
        self.hashed_bytes += other.hashed_bytes;
        self.skipped.extend(other.skipped);
    }
}
