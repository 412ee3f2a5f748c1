//! The daemon's file-system watcher: `notify` events, filtered to what may be a local change,
//! passed on to the scheduler, which debounces them into a rescan.
//!
//! `.botsync/` is not watched (the index writes there all the time); events inside it and on
//! apply's temporary files are dropped here, on the watcher's thread. A refresh's cookie
//! (`node/cookie.rs`) in the workspace root is reported to the replica, not as a change. A
//! lost-events signal from the kernel (inotify queue overflow) becomes [`FsSignal::Overflow`]:
//! the scheduler answers it with a full rescan.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use botsync_engine::apply::TEMP_PREFIX;
use botsync_engine::layout::STATE_DIR;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::warn;

use crate::node::replica::LiveReplica;

/// Test hook: drop every event, and report one overflow after this many, as the kernel does
/// when its queue fills (the watcher test cannot fill a real queue reliably on a shared
/// machine). Only the overflow's full rescan can then find the change.
pub const DROP_EVENTS_ENV: &str = "BOTSYNC_TEST_DROP_WATCH_EVENTS";

/// Test hook: the watcher sleeps this many milliseconds before handling each event, so events
/// wait in the kernel's queue as they do on a loaded machine (the barrier test, `cookie.rs`).
pub const DELAY_EVENTS_ENV: &str = "BOTSYNC_TEST_DELAY_WATCH_EVENTS_MS";

/// What the watcher saw (our own applies filtered out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsSignal {
    /// These workspace-relative paths (`/`-separated) may have changed.
    Changed(Vec<String>),
    /// Events were lost: only a full rescan knows what changed.
    Overflow,
}

/// A running watcher; stops when dropped.
#[derive(Debug)]
pub struct Watcher {
    _inner: RecommendedWatcher,
}

impl Watcher {
    /// Watch everything under `root`, sending signals to `tx`. A change that is not the
    /// replica's own apply is noted in the replica at once, on the watcher's thread: a session
    /// that starts a moment after an edit rescans that path even before the debounced rescan
    /// runs.
    pub fn start(
        root: &Path,
        replica: Arc<LiveReplica>,
        tx: mpsc::UnboundedSender<FsSignal>,
    ) -> Result<Watcher> {
        let root_owned = root.to_path_buf();
        let drop_first: u64 = std::env::var(DROP_EVENTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let delay = std::env::var(DELAY_EVENTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        let seen = AtomicU64::new(0);
        let handler = move |res: notify::Result<Event>| {
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            if let Ok(ev) = &res
                && ev
                    .paths
                    .iter()
                    .filter_map(|p| p.strip_prefix(&root_owned).ok()?.to_str())
                    .any(|rel| replica.note_cookie(rel))
            {
                return;
            }
            let signal = match res {
                Ok(ev) if ev.need_rescan() => Some(FsSignal::Overflow),
                // Reads (ours included: the scanner opens every changed file) change nothing.
                Ok(ev) if is_read(&ev.kind) => None,
                Ok(ev) => {
                    let paths: Vec<String> = ev
                        .paths
                        .iter()
                        .filter_map(|p| relevant(&root_owned, p))
                        .collect();
                    (!paths.is_empty()).then_some(FsSignal::Changed(paths))
                }
                Err(e) => {
                    warn!(error = %e, "file watcher error; rescanning everything");
                    Some(FsSignal::Overflow)
                }
            };
            let Some(signal) = signal else { return };
            let signal = match signal {
                FsSignal::Changed(paths) => {
                    let theirs: Vec<String> = paths
                        .into_iter()
                        .filter(|p| !replica.is_own_write(p))
                        .collect();
                    if theirs.is_empty() {
                        return;
                    }
                    FsSignal::Changed(theirs)
                }
                FsSignal::Overflow => FsSignal::Overflow,
            };
            if drop_first > 0 {
                if seen.fetch_add(1, Ordering::SeqCst) + 1 == drop_first {
                    let _ = tx.send(FsSignal::Overflow);
                }
                return;
            }
            match &signal {
                FsSignal::Changed(paths) => replica.note_changed(paths.iter().map(String::as_str)),
                FsSignal::Overflow => replica.mark_dirty(),
            }
            let _ = tx.send(signal);
        };
        let mut inner =
            notify::recommended_watcher(handler).context("starting the file watcher")?;
        inner
            .watch(root, RecursiveMode::Recursive)
            .with_context(|| {
                format!(
                    "watching {} (raise fs.inotify.max_user_watches if the workspace is very large)",
                    root.display()
                )
            })?;
        // The index and the chunk store write under `.botsync/` all the time (a sync stages
        // every chunk it receives there): unwatched, the kernel queues none of those events and
        // this thread never wakes for them. A directory created there later is not watched
        // either (its parent is not). `relevant` still drops any that arrive.
        let _ = inner.unwatch(&root.join(STATE_DIR));
        Ok(Watcher { _inner: inner })
    }
}

/// Opening, reading, or closing a file without writing it.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if !matches!(a, AccessKind::Close(AccessMode::Write)))
}

/// The workspace-relative form of `path`, unless it is our own state or an apply's temp file.
fn relevant(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let rel = rel.to_str()?.to_owned();
    if rel == STATE_DIR || rel.starts_with(&format!("{STATE_DIR}/")) {
        return None;
    }
    let name = rel.rsplit('/').next().unwrap_or(&rel);
    if name.starts_with(TEMP_PREFIX) {
        return None;
    }
    Some(rel)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn state_and_temp_files_are_not_local_changes() {
        let root = PathBuf::from("/w");
        assert_eq!(
            relevant(&root, Path::new("/w/memory/a.md")).as_deref(),
            Some("memory/a.md")
        );
        assert_eq!(relevant(&root, Path::new("/w/.botsync/db/conf")), None);
        assert_eq!(relevant(&root, Path::new("/w/.botsync")), None);
        assert_eq!(
            relevant(&root, Path::new("/w/memory/.botsync-tmp-123")),
            None
        );
        assert_eq!(
            relevant(&root, Path::new("/w/.botsyncx")).as_deref(),
            Some(".botsyncx")
        );
        assert_eq!(relevant(&root, Path::new("/elsewhere/a")), None);
    }
}
