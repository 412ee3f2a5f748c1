//! [`Cookies`]: the watcher barrier (watchman's "cookie"). Before a refresh trusts what the
//! watcher has reported, it creates a file in the watched tree and waits until the watcher has
//! seen it. inotify delivers one instance's events in order and the watcher handles them one by
//! one, so by then every event queued before the cookie's has been noted: the write a user made
//! just before `botsync push` is rescanned, not taken for "already in sync" while its event
//! still waits in the kernel's queue.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use botsync_engine::apply::TEMP_PREFIX;

/// How long a refresh waits for its cookie. A live watcher sees it within milliseconds; past
/// this the refresh trusts nothing the watcher said and rescans everything.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(3);

/// The cookies of one process's watched workspace.
#[derive(Debug, Default)]
pub struct Cookies {
    /// The number of the last cookie made.
    made: AtomicU64,
    /// The highest cookie number the watcher reported.
    seen: Mutex<u64>,
    woken: Condvar,
}

/// A cookie's file name: an apply temp file's prefix (never synced, never a local change, and
/// swept if a crash leaves it), then this process and the cookie's number.
fn name(n: u64) -> String {
    format!("{TEMP_PREFIX}cookie-{}-{n}", std::process::id())
}

impl Cookies {
    /// The cookie number of `file_name`, if it is one of this process's cookies.
    pub fn parse(file_name: &str) -> Option<u64> {
        let rest = file_name
            .strip_prefix(TEMP_PREFIX)?
            .strip_prefix("cookie-")?;
        let (pid, n) = rest.split_once('-')?;
        (pid.parse::<u32>().ok()? == std::process::id())
            .then(|| n.parse().ok())
            .flatten()
    }

    /// The watcher saw cookie `n` (its creation or its removal).
    pub fn seen(&self, n: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if n > *seen {
            *seen = n;
            self.woken.notify_all();
        }
    }

    /// Create a cookie in `dir` (watched), wait up to `timeout` for the watcher to report it,
    /// and remove it. True if the watcher reported it: everything it had queued before has been
    /// noted. False if it did not (or the cookie could not be made): nothing it reported can be
    /// trusted as complete.
    pub fn barrier(&self, dir: &Path, timeout: Duration) -> bool {
        let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        let path = dir.join(name(n));
        if let Err(e) = std::fs::File::create(&path) {
            tracing::debug!(error = %e, "cannot make a watcher cookie; rescanning everything");
            return false;
        }
        let deadline = Instant::now() + timeout;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        while *seen < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            seen = self
                .woken
                .wait_timeout(seen, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let reported = *seen >= n;
        drop(seen);
        let _ = std::fs::remove_file(&path);
        if !reported {
            tracing::warn!(
                waited_ms = timeout.as_millis() as u64,
                "the file watcher did not report its cookie; rescanning everything"
            );
        }
        reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_processs_cookies_parse() {
        assert_eq!(Cookies::parse(&name(7)), Some(7));
        let other = format!("{TEMP_PREFIX}cookie-{}-7", std::process::id() + 1);
        assert_eq!(Cookies::parse(&other), None);
        assert_eq!(Cookies::parse(&format!("{TEMP_PREFIX}123")), None);
        assert_eq!(Cookies::parse("memory/a.md"), None);
    }

    #[test]
    fn a_barrier_passes_once_its_cookie_is_seen_and_times_out_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let cookies = std::sync::Arc::new(Cookies::default());
        // A stand-in watcher: reports every cookie file it finds.
        let watcher = {
            let (cookies, dir) = (cookies.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    for e in std::fs::read_dir(&dir).unwrap().flatten() {
                        if let Some(n) = Cookies::parse(&e.file_name().to_string_lossy()) {
                            cookies.seen(n);
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        assert!(cookies.barrier(dir.path(), Duration::from_secs(10)));
        watcher.join().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "removed");
        // Nobody watching: the barrier gives up and says so.
        assert!(!cookies.barrier(dir.path(), Duration::from_millis(50)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
