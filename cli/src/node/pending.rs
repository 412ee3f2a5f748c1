//! [`PendingScan`]: what the next refresh of a watched workspace must look at: nothing, the
//! paths the watcher reported, or everything.

use std::collections::BTreeSet;
use std::sync::Mutex;

use botsync_engine::RelPath;

/// Past this many reported paths one full rescan is cheaper than many partial ones.
pub const MAX_PATHS: usize = 256;

/// What the next refresh must scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Nothing changed since the last rescan.
    Clean,
    /// Only these paths (files or directories) may have changed.
    Paths(BTreeSet<RelPath>),
    /// Anything may have changed.
    Everything,
}

/// The pending work of one workspace, shared by the watcher and the refreshes.
#[derive(Debug)]
pub struct PendingScan(Mutex<Pending>);

impl Default for PendingScan {
    /// Nothing is known yet: everything.
    fn default() -> Self {
        PendingScan(Mutex::new(Pending::Everything))
    }
}

impl PendingScan {
    /// Anything may have changed (a lost event, a failed or incomplete rescan).
    pub fn everything(&self) {
        *self.lock() = Pending::Everything;
    }

    /// These workspace-relative paths may have changed. A name that is not a valid workspace
    /// path (it can only be found by the full walk's rules) makes it everything.
    pub fn paths<'a>(&self, paths: impl IntoIterator<Item = &'a str>) {
        let mut pending = self.lock();
        for p in paths {
            let set = match &mut *pending {
                Pending::Everything => return,
                Pending::Clean => {
                    *pending = Pending::Paths(BTreeSet::new());
                    match &mut *pending {
                        Pending::Paths(s) => s,
                        _ => return,
                    }
                }
                Pending::Paths(s) => s,
            };
            match RelPath::new(p) {
                Ok(rel) if !rel.is_root() => {
                    set.insert(rel);
                }
                _ => {
                    *pending = Pending::Everything;
                    return;
                }
            }
            if set.len() > MAX_PATHS {
                *pending = Pending::Everything;
                return;
            }
        }
    }

    /// Take the pending work, leaving it clean.
    pub fn take(&self) -> Pending {
        std::mem::replace(&mut *self.lock(), Pending::Clean)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A plain value replaced whole: a poisoned lock holds no broken state.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_accumulate_until_everything_is_cheaper() {
        let p = PendingScan::default();
        assert_eq!(p.take(), Pending::Everything);
        assert_eq!(p.take(), Pending::Clean);
        p.paths(["memory/a.md", "memory/a.md", "MEMORY.md"]);
        match p.take() {
            Pending::Paths(s) => assert_eq!(s.len(), 2),
            other => panic!("{other:?}"),
        }
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| format!("memory/{i}.md")).collect();
        p.paths(many.iter().map(String::as_str));
        assert_eq!(p.take(), Pending::Everything);
    }

    #[test]
    fn a_root_or_invalid_path_means_everything() {
        let p = PendingScan::default();
        p.take();
        p.paths([""]);
        assert_eq!(p.take(), Pending::Everything);
        p.paths(["memory/../x"]);
        assert_eq!(p.take(), Pending::Everything);
        p.everything();
        p.paths(["memory/a.md"]);
        assert_eq!(p.take(), Pending::Everything, "everything absorbs paths");
    }
}
