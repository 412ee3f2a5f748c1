//! Shared helpers for the engine's integration tests: a throw-away workspace on a real file
//! system, with the verbs a user's story needs (write, remove, rename, touch, chmod) and a scan
//! that keeps its own index like the real caller does.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; tests fail loudly

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use botsync_engine::chunk::Chunker;
use botsync_engine::chunktree::content_hash;
use botsync_engine::config::SyncConfig;
use botsync_engine::rules::Selection;
use botsync_engine::scan::{ChangeKind, ScanContext, ScanReport, scan};
use botsync_engine::{
    AgentLabel, Attribution, ChunkerParams, Hash, LocalEntry, MachineName, PeerId, RelPath,
};

pub mod applying;
pub mod round;

/// How far the test clock moves per scan: far more than the racy window, so files written
/// before a scan are trusted by the stat cache after it.
pub const SCAN_TICK_NS: i64 = 10_000_000_000;

/// A workspace in a temporary directory, with `.botsync/` and an in-memory index.
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
    /// The selection config used by [`Workspace::scan`].
    pub config: SyncConfig,
    /// The index as the caller of `scan` would keep it.
    pub index: BTreeMap<RelPath, LocalEntry>,
    /// Who scans.
    pub local: Attribution,
    clock_ns: i64,
}

impl Workspace {
    /// A fresh workspace with the default config, scanned by peer `[1; 32]`, agent "tester".
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".botsync")).unwrap();
        Workspace {
            dir,
            config: SyncConfig::default(),
            index: BTreeMap::new(),
            local: Attribution {
                peer: PeerId([1; 32]),
                agent: AgentLabel::new("tester"),
                machine: MachineName::default(),
            },
            clock_ns: wall_clock_ns(),
        }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute path of a workspace path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Create or overwrite a file, creating its parent directories.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    /// Append to a file.
    pub fn append(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.path(rel))
            .unwrap();
        f.write_all(bytes.as_ref()).unwrap();
    }

    /// Delete a file.
    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).unwrap();
    }

    /// Rename a file, creating the target's parent directories.
    pub fn rename(&self, from: &str, to: &str) {
        let to = self.path(to);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::rename(self.path(from), to).unwrap();
    }

    /// Set a file's mtime to one hour ago without touching its content (like `touch -d`).
    pub fn touch(&self, rel: &str) {
        let f = fs::File::options()
            .write(true)
            .open(self.path(rel))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }

    /// Set or clear the owner-executable bit.
    pub fn set_executable(&self, rel: &str, executable: bool) {
        let p = self.path(rel);
        let mut perms = fs::metadata(&p).unwrap().permissions();
        let mode = if executable {
            perms.mode() | 0o100
        } else {
            perms.mode() & !0o100
        };
        perms.set_mode(mode);
        fs::set_permissions(p, perms).unwrap();
    }

    /// Scan with the test clock advanced by [`SCAN_TICK_NS`], and apply the report to the index.
    pub fn scan(&mut self) -> ScanReport {
        self.clock_ns += SCAN_TICK_NS;
        self.scan_at(self.clock_ns)
    }

    /// Scan as if the scan started at `now_ns`, and apply the report to the index.
    pub fn scan_at(&mut self, now_ns: i64) -> ScanReport {
        let report = self.try_scan_at(now_ns).unwrap();
        self.apply(&report);
        report
    }

    /// Scan at `now_ns` without applying or unwrapping.
    pub fn try_scan_at(&self, now_ns: i64) -> Result<ScanReport, botsync_engine::scan::ScanError> {
        let selection = Selection::new(&self.config).unwrap();
        let ctx = ScanContext {
            root: self.root(),
            selection: &selection,
            local: self.local.clone(),
            now_ns,
            chunker: ChunkerParams::DEFAULT,
            secrets: None,
        };
        scan(&ctx, &self.index)
    }

    /// Apply a report to the index as the real caller does.
    pub fn apply(&mut self, report: &ScanReport) {
        for change in &report.changes {
            let path = change.entry.entry.path.clone();
            if change.kind == ChangeKind::Unselected {
                self.index.remove(&path);
            } else {
                self.index.insert(path, change.entry.clone());
            }
        }
        for entry in &report.refreshed {
            self.index.insert(entry.entry.path.clone(), entry.clone());
        }
    }

    /// The index entry of a path.
    pub fn entry(&self, rel: &str) -> &LocalEntry {
        &self.index[&RelPath::new(rel).unwrap()]
    }

    /// True if this process can read files whatever their permissions (it runs as root).
    pub fn is_root_user(&self) -> bool {
        fs::metadata(self.path(".botsync")).unwrap().uid() == 0
    }
}

/// Nanoseconds since the epoch now.
/// Create and open a real engine workspace at `dir`, changes attributed to peer `[peer; 32]`.
pub fn open_workspace(dir: &Path, peer: u8) -> botsync_engine::workspace::Workspace {
    open_workspace_indexed(dir, peer, botsync_engine::workspace::IndexKind::OnDisk)
}

/// [`open_workspace`], with its index where `index` says.
pub fn open_workspace_indexed(
    dir: &Path,
    peer: u8,
    index: botsync_engine::workspace::IndexKind,
) -> botsync_engine::workspace::Workspace {
    botsync_engine::workspace::Workspace::init(dir, Some("test")).unwrap();
    let local = Attribution {
        peer: PeerId([peer; 32]),
        agent: AgentLabel::new("t"),
        machine: MachineName::default(),
    };
    botsync_engine::workspace::Workspace::open_with(dir, local, index)
        .unwrap()
        .0
}

/// A new workspace whose config.json is `config`, opened as peer `peer`.
pub fn open_workspace_with(
    dir: &Path,
    peer: u8,
    config: &botsync_engine::config::SyncConfig,
) -> botsync_engine::workspace::Workspace {
    botsync_engine::workspace::Workspace::init(dir, Some("test")).unwrap();
    config.save(&dir.join(".botsync/config.json")).unwrap();
    open_workspace(dir, peer)
}

pub fn wall_clock_ns() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

/// The content hash botsync gives these bytes.
pub fn content_of(bytes: &[u8]) -> Hash {
    content_hash(&Chunker::default().chunk_reader(bytes).unwrap())
}

/// The changes of a report as sorted (kind, path) pairs, for exact comparisons.
pub fn changes(report: &ScanReport) -> Vec<(ChangeKind, String)> {
    let mut v: Vec<_> = report
        .changes
        .iter()
        .map(|c| (c.kind, c.entry.entry.path.as_str().to_owned()))
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}
