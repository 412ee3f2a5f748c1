//! Verbs as data: a [`Request`] names a verb and its arguments, a [`Reply`] is what it printed
//! (the `--json` document and the human text). The same [`exec`] runs a request in this process
//! (no daemon) or inside the daemon (sent over the control socket), so a verb behaves the same
//! either way and the daemon's replies are exactly the documents `--json` prints.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use botsync_engine::AgentLabel;
use botsync_engine::layout::Layout;
use botsync_proto::session::{NoProgress, Progress};
use serde::{Deserialize, Serialize};

use crate::commands::sync::How;
use crate::daemon::DaemonState;
use crate::daemon::pidlock::IndexTurn;
use crate::exit;
use crate::node::Node;

/// A verb that runs against an opened workspace, here or in the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    /// `status`.
    Status,
    /// `scan`.
    Scan,
    /// `id`.
    Id,
    /// `peers [--reset]`.
    Peers {
        /// Keep the peers file as a backup and start an empty list.
        #[serde(default)]
        reset: bool,
    },
    /// `add NAME HOST[:PORT] --id ID`.
    Add {
        /// Local name.
        name: String,
        /// `HOST[:PORT]` as typed.
        host: String,
        /// The id as typed.
        id: String,
    },
    /// `remove NAME`.
    Remove {
        /// Local name.
        name: String,
    },
    /// `sync`, `push`, `pull`, `diff`.
    Sync {
        /// One peer, or all.
        peer: Option<String>,
        /// Which way.
        mode: Mode,
        /// Plan only, or let deletions pass the threshold.
        #[serde(flatten)]
        how: How,
        /// Print every item (`diff`).
        itemize: bool,
    },
    /// `verify [--repair]`.
    Verify {
        /// Repair what is damaged.
        repair: bool,
    },
    /// `auto on|off`.
    Auto {
        /// On or off.
        on: bool,
    },
    /// `conflicts list|show|resolve`.
    Conflicts(crate::commands::conflicts::ConflictsRequest),
    /// `history [PATH]`.
    History {
        /// One file, as typed.
        path: Option<String>,
        /// Records of each kind.
        limit: usize,
    },
    /// `restore PATH[@VERSION]`.
    Restore {
        /// `PATH[@VERSION]` as typed.
        target: String,
        /// Say what would be restored, change nothing.
        #[serde(default)]
        dry_run: bool,
    },
    /// `state set|get|list|del`.
    State(crate::commands::state::StateRequest),
    /// `say MESSAGE`.
    Say(crate::commands::feed::SayRequest),
    /// `feed [--follow]`.
    Feed(crate::commands::feed::FeedRequest),
    /// `handoff`, `handoff done`, `handoffs`.
    Handoff(crate::commands::handoff::HandoffRequest),
    /// `lock acquire|release|renew|status`.
    Lock(crate::commands::lock::LockRequest),
    /// `check [PEER]`.
    Check {
        /// One peer, or all.
        peer: Option<String>,
    },
    /// `parity [PEER]`.
    Parity {
        /// One peer, or all.
        peer: Option<String>,
    },
}

/// Which way a sync moves changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Both ways.
    Sync,
    /// Ours to them.
    Push,
    /// Theirs to us.
    Pull,
}

impl Mode {
    /// The wire's session mode.
    pub fn wire(self) -> botsync_proto::messages::SessionMode {
        use botsync_proto::messages::SessionMode;
        match self {
            Mode::Sync => SessionMode::Sync,
            Mode::Push => SessionMode::Push,
            Mode::Pull => SessionMode::Pull,
        }
    }
}

/// What a verb printed: its exit code, its `--json` document and its human text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The process exit code (PRODUCT.md §6).
    pub exit_code: i32,
    /// The document printed with `--json`.
    pub doc: serde_json::Value,
    /// The text printed without `--json` (not with `-q`).
    pub human: String,
    /// Lines for stderr, printed in both modes (one per failed peer).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Set when the verb failed as a whole: the one-line error.
    #[serde(default)]
    pub error: Option<String>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(doc: impl Serialize, human: String) -> Result<Reply> {
        Ok(Reply::ok_doc(serde_json::to_value(doc)?, human))
    }

    /// A successful reply whose document is built already: [`Reply::ok`] would copy it whole
    /// (the report of a sync of 20,000 files is tens of MiB as a document).
    pub fn ok_doc(doc: serde_json::Value, human: String) -> Reply {
        Reply {
            exit_code: exit::OK,
            doc,
            human,
            warnings: Vec::new(),
            error: None,
        }
    }

    /// The reply for a verb that failed with `err`.
    pub fn failed(err: &anyhow::Error) -> Reply {
        let code = exit::code_for(err);
        let line = exit::one_line(err);
        Reply {
            exit_code: code,
            doc: serde_json::json!({ "ok": false, "exit_code": code, "error": line }),
            human: String::new(),
            warnings: Vec::new(),
            error: Some(line),
        }
    }
}

/// Makes a progress sink for a session with one peer (a bar on a terminal, events over the
/// control socket in the daemon, nothing otherwise).
pub type ProgressFactory = Arc<dyn Fn(&str) -> Arc<dyn Progress> + Send + Sync>;

/// Where a streaming verb (`feed --follow`) sends its items: to the caller over the control
/// socket, while the caller is there.
pub trait ItemSink: Send + Sync {
    /// Send one item; false if the caller has gone.
    fn send(&self, item: serde_json::Value) -> bool;
    /// True while the caller listens.
    fn is_open(&self) -> bool;
}

/// Where a request runs: the workspace, who asks, and the daemon if it is the daemon that runs it.
pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// The agent asking.
    pub agent: AgentLabel,
    /// The runtime to block on for network work.
    pub rt: tokio::runtime::Handle,
    /// Progress sinks per peer.
    pub progress: ProgressFactory,
    /// Set inside the daemon.
    pub daemon: Option<Arc<DaemonState>>,
    /// Called once if opening the workspace must wait for another process that has it.
    pub on_wait: Arc<dyn Fn() + Send + Sync>,
    /// The caller's `AI_IDENTITY` and machine name, for what it posts to the feed.
    pub caller: crate::commands::feed::CallerEnv,
    /// Set when the caller takes streamed items (over the control socket).
    pub items: Option<Arc<dyn ItemSink>>,
    node: OnceLock<Arc<Node>>,
    /// Without a daemon: our turn on the index, taken when the workspace is first opened and
    /// held until the verb is done.
    turn: OnceLock<IndexTurn>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("root", &self.root)
            .field("daemon", &self.daemon.is_some())
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// A context that opens the workspace itself when a verb needs it (no daemon runs).
    pub fn direct(root: &Path, agent: AgentLabel, rt: tokio::runtime::Handle) -> Ctx {
        Ctx {
            root: root.to_path_buf(),
            agent,
            rt,
            progress: Arc::new(|_| Arc::new(NoProgress) as Arc<dyn Progress>),
            daemon: None,
            on_wait: Arc::new(|| {}),
            caller: crate::commands::feed::CallerEnv::here(),
            items: None,
            node: OnceLock::new(),
            turn: OnceLock::new(),
        }
    }

    /// The daemon's context: its opened node.
    pub fn in_daemon(
        state: Arc<DaemonState>,
        agent: AgentLabel,
        rt: tokio::runtime::Handle,
        progress: ProgressFactory,
    ) -> Ctx {
        let node = OnceLock::new();
        let _ = node.set(Arc::clone(&state.node));
        Ctx {
            root: state.node.root.clone(),
            agent,
            rt,
            progress,
            daemon: Some(state),
            on_wait: Arc::new(|| {}),
            caller: crate::commands::feed::CallerEnv::default(),
            items: None,
            node,
            turn: OnceLock::new(),
        }
    }

    /// The opened workspace (opened at the first call when no daemon runs).
    pub fn node(&self) -> Result<Arc<Node>> {
        if let Some(n) = self.node.get() {
            return Ok(Arc::clone(n));
        }
        if self.turn.get().is_none() {
            // Another verb run without a daemon may have the index: wait for it, never fail.
            let turn = IndexTurn::take(&Layout::new(&self.root).index_lock(), || (self.on_wait)())?;
            let _ = self.turn.set(turn);
        }
        let node = Arc::new(Node::open(&self.root, self.agent.clone())?);
        Ok(Arc::clone(self.node.get_or_init(|| node)))
    }
}

/// Run `request`; a failure becomes a failed [`Reply`].
pub fn exec(request: Request, ctx: &Ctx) -> Reply {
    let result = match request {
        Request::Status => crate::commands::status::status(ctx),
        Request::Scan => crate::commands::scan::scan(ctx),
        Request::Id => crate::commands::init::id(ctx),
        Request::Peers { reset } => crate::commands::peers::list(ctx, reset),
        Request::Add { name, host, id } => crate::commands::peers::add(ctx, &name, &host, &id),
        Request::Remove { name } => crate::commands::peers::remove(ctx, &name),
        Request::Sync {
            peer,
            mode,
            how,
            itemize,
        } => crate::commands::sync::run(ctx, peer.as_deref(), mode, how, itemize),
        Request::Auto { on } => crate::commands::auto::set(ctx, on),
        Request::Verify { repair } => crate::commands::verify::run(ctx, repair),
        Request::Conflicts(c) => crate::commands::conflicts::run(ctx, c),
        Request::History { path, limit } => {
            crate::commands::history::history(ctx, path.as_deref(), limit)
        }
        Request::Restore { target, dry_run } => {
            crate::commands::history::restore(ctx, &target, dry_run)
        }
        Request::State(s) => crate::commands::state::run(ctx, s),
        Request::Say(s) => crate::commands::feed::say(ctx, &s),
        Request::Feed(f) => crate::commands::feed::feed(ctx, &f),
        Request::Handoff(h) => crate::commands::handoff::run(ctx, h),
        Request::Lock(l) => crate::commands::lock::run(ctx, l),
        Request::Check { peer } => crate::commands::check::check(ctx, peer.as_deref()),
        Request::Parity { peer } => crate::commands::parity::run(ctx, peer.as_deref()),
    };
    result.unwrap_or_else(|e| Reply::failed(&e))
}
