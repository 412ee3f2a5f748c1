//! [`Layout`]: where everything lives in a workspace's `.botsync/` directory (PRODUCT.md §3).
//!
//! The one list of these names: the engine opens the index and the chunk store through it, the
//! CLI's node layer the identity, the peers, the config, the daemon's socket and lock. Pure path
//! arithmetic: nothing here touches the disk.
//!
//! ```
//! use botsync_engine::layout::Layout;
//!
//! let l = Layout::new("/home/me/agent");
//! assert_eq!(l.config(), std::path::Path::new("/home/me/agent/.botsync/config.json"));
//! ```

use std::path::{Path, PathBuf};

/// Name of the state directory that marks a workspace; never synced.
pub const STATE_DIR: &str = ".botsync";

/// The directories inside `.botsync/` that a workspace always has.
pub const SUBDIRS: [&str; 4] = ["db", "store", "conflicts", "tmp"];

/// The paths of one workspace's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
    state: PathBuf,
}

impl Layout {
    /// The layout of the workspace at `root`.
    pub fn new(root: impl AsRef<Path>) -> Layout {
        let root = root.as_ref().to_path_buf();
        let state = root.join(STATE_DIR);
        Layout { root, state }
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `.botsync/` itself, the workspace marker.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The sled index.
    pub fn db(&self) -> PathBuf {
        self.state.join("db")
    }

    /// The chunk store of past versions and staged chunks.
    pub fn store(&self) -> PathBuf {
        self.state.join("store")
    }

    /// Losing versions kept for review.
    pub fn conflicts(&self) -> PathBuf {
        self.state.join("conflicts")
    }

    /// Scratch space.
    pub fn tmp(&self) -> PathBuf {
        self.state.join("tmp")
    }

    /// What is synced and how.
    pub fn config(&self) -> PathBuf {
        self.state.join("config.json")
    }

    /// The configured peers.
    pub fn peers(&self) -> PathBuf {
        self.state.join("peers.json")
    }

    /// This peer's key and certificate (mode 0700).
    pub fn identity(&self) -> PathBuf {
        self.state.join("identity")
    }

    /// The private key (mode 0600).
    pub fn identity_key(&self) -> PathBuf {
        self.identity().join("key.pem")
    }

    /// The certificate.
    pub fn identity_cert(&self) -> PathBuf {
        self.identity().join("cert.pem")
    }

    /// The running daemon's control socket (mode 0600).
    pub fn control_socket(&self) -> PathBuf {
        self.state.join("daemon.sock")
    }

    /// The daemon's lock file, holding its pid.
    pub fn daemon_pid(&self) -> PathBuf {
        self.state.join("daemon.pid")
    }

    /// Taken by whichever process has the index open (the daemon, or a verb run without one).
    pub fn index_lock(&self) -> PathBuf {
        self.state.join("index.lock")
    }

    /// Where a daemon started in the background writes its log.
    pub fn daemon_log(&self) -> PathBuf {
        self.state.join("daemon.log")
    }
}
