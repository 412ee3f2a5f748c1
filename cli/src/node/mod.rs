//! This machine's side of botsync: the opened workspace, its identity and peers, and a QUIC
//! endpoint; shared by `sync`, `diff`, `serve` and `demo`.

pub mod cookie;
pub mod feed;
pub mod identity;
pub mod last_sync;
pub mod limits;
pub mod mesh_config;
pub mod own_writes;
pub mod peers;
pub mod pending;
pub mod replica;
pub mod state_sync;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use botsync_engine::layout::Layout;
use botsync_engine::workspace::Workspace;
use botsync_engine::{AgentLabel, Attribution, MachineName};
use botsync_proto::endpoint::{Endpoint, EndpointOptions};
use botsync_proto::identity::Identity;
use botsync_proto::tls::AllowedPeers;

use self::peers::Peers;
use self::replica::LiveReplica;
use crate::context::STATE_DIR;
use crate::exit::UsageError;

/// Environment variable: seconds a dial waits for the peer's answer.
pub const CONNECT_TIMEOUT_ENV: &str = "BOTSYNC_CONNECT_TIMEOUT_SECS";

/// Refuse an index path that is not a directory (the store would fail with a bare "File
/// exists"), saying how to get a working one back.
pub fn check_index_dir(layout: &Layout) -> Result<()> {
    let db = layout.db();
    match std::fs::symlink_metadata(&db) {
        Ok(meta) if !meta.is_dir() => Err(UsageError::new(format!(
            "{} is a file, not botsync's index directory; move it away (`mv {} {}.bad`) and run the verb again: the index is rebuilt by a rescan",
            db.display(),
            db.display(),
            db.display()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// An opened local workspace with its identity.
#[derive(Debug)]
pub struct Node {
    /// The workspace root.
    pub root: PathBuf,
    /// Our identity.
    pub identity: Arc<Identity>,
    /// The workspace as a session replica.
    pub replica: Arc<LiveReplica>,
    /// Our display name.
    pub name: String,
}

impl Node {
    /// Open the workspace at `root` as `agent`.
    pub fn open(root: &Path, agent: AgentLabel) -> Result<Node> {
        let layout = Layout::new(root);
        check_index_dir(&layout)?;
        let identity = identity::load(&layout)?;
        let local = Attribution {
            peer: identity.peer_id(),
            agent,
            machine: MachineName::default(),
        };
        let (ws, outcome) = Workspace::open(root, local).map_err(|e| match e {
            botsync_engine::workspace::WorkspaceError::Config(_)
            | botsync_engine::workspace::WorkspaceError::Rules(_) => {
                anyhow::Error::new(UsageError::new(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })?;
        if let botsync_engine::store::OpenOutcome::Rebuilt { reason } = outcome {
            tracing::warn!(%reason, "index was rebuilt from a rescan");
        }
        let name = ws.local().machine.as_str().to_owned();
        Ok(Node {
            root: root.to_path_buf(),
            identity: Arc::new(identity),
            replica: Arc::new(LiveReplica::new(ws)),
            name,
        })
    }

    /// The configured peers.
    pub fn peers(&self) -> Result<Peers> {
        Peers::load(&self.root.join(STATE_DIR))
    }

    /// The set of peer ids allowed to connect, from `peers.json`.
    pub fn allowed(&self) -> Result<AllowedPeers> {
        let allowed = AllowedPeers::new();
        allowed.replace(self.peers()?.peers.iter().map(|p| p.id));
        Ok(allowed)
    }

    /// A QUIC endpoint bound to `addr`. `BOTSYNC_CONNECT_TIMEOUT_SECS` overrides how long a dial
    /// waits for an answer (default 10 s).
    pub fn bind(&self, addr: SocketAddr) -> Result<Endpoint> {
        self.bind_with(addr, None)
    }

    /// [`Node::bind`], with dials waiting at most `dial` (a quick probe, as `status` makes).
    pub fn bind_with(
        &self,
        addr: SocketAddr,
        dial: Option<std::time::Duration>,
    ) -> Result<Endpoint> {
        let mut options = EndpointOptions::default();
        if let Some(secs) = std::env::var(CONNECT_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            options.connect_timeout = std::time::Duration::from_secs(secs.max(1));
        }
        if let Some(dial) = dial {
            options.connect_timeout = options.connect_timeout.min(dial);
        }
        Endpoint::bind_with(addr, Arc::clone(&self.identity), self.allowed()?, options).with_context(|| {
            format!("cannot listen on {addr}: is another botsync serve running? pick another port with --listen")
        })
    }
}
