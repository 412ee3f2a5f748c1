//! One daemon per workspace: an exclusive `flock` on `.botsync/daemon.pid`, held for the
//! daemon's life, with its pid written inside so a second one can name it.
//!
//! The kernel drops the lock when the process dies however it dies, so a lock that can be
//! taken proves that no daemon runs, and whatever socket file is left is stale.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, flock};

use crate::exit::UsageError;

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct PidLock {
    file: File,
}

impl PidLock {
    /// Take the lock at `path` for this process, or say which daemon holds it.
    pub fn acquire(path: &Path) -> Result<PidLock> {
        let mut file = open(path)?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = read_pid(&mut file)
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "another process".into());
            return Err(UsageError::new(format!(
                "a botsync daemon ({holder}) already serves this workspace; every verb talks to it, \
                 or stop it first (`kill {}`)",
                read_pid(&mut file).map(|p| p.to_string()).unwrap_or_else(|| "PID".into())
            ))
            .into());
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidLock { file })
    }

    /// True if some process holds the lock at `path` now (a daemon runs or is starting).
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        match flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {
                let _ = flock(&file, FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        }
    }

    /// The pid written in the lock file at `path`, if any.
    pub fn holder(path: &Path) -> Option<u32> {
        File::open(path).ok().and_then(|mut f| read_pid(&mut f))
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Empty the file first: a reader between our exit and the next daemon sees no pid.
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

/// Exclusive use of a workspace's index by one process at a time: verbs that open the workspace
/// themselves (no daemon runs) and the daemon take turns here instead of failing on sled's own
/// lock. Held until dropped.
#[derive(Debug)]
pub struct IndexTurn {
    file: File,
}

impl IndexTurn {
    /// Take the turn at `path`, waiting for the process that has it; `waiting` is called once
    /// if we have to wait.
    pub fn take(path: &Path, waiting: impl FnOnce()) -> Result<IndexTurn> {
        let file = open(path)?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            waiting();
            flock(&file, FlockOperation::LockExclusive)
                .with_context(|| format!("waiting for {}", path.display()))?;
        }
        Ok(IndexTurn { file })
    }
}

impl Drop for IndexTurn {
    fn drop(&mut self) {
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.pid");
        let first = PidLock::acquire(&path).unwrap();
        assert!(PidLock::is_held(&path));
        assert_eq!(PidLock::holder(&path), Some(std::process::id()));
        let err = PidLock::acquire(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!PidLock::is_held(&path));
        assert_eq!(PidLock::holder(&path), None);
        PidLock::acquire(&path).unwrap();
    }

    #[test]
    fn index_turns_are_taken_one_after_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.lock");
        let first = IndexTurn::take(&path, || panic!("nobody holds it yet")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let second = std::thread::spawn(move || {
            let waited = std::cell::Cell::new(false);
            let turn = IndexTurn::take(&p, || waited.set(true)).unwrap();
            tx.send(waited.get()).unwrap();
            drop(turn);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "the second waits"
        );
        drop(first);
        assert!(rx.recv().unwrap(), "the second was told it waited");
        second.join().unwrap();
    }
}
