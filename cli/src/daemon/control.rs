//! The daemon's control socket: how every verb reaches a running daemon.
//!
//! A Unix socket at `.botsync/daemon.sock`, mode 0600, answering only processes of the
//! daemon's own user (checked with `SO_PEERCRED`; the client checks the socket's owner too).
//! One request per connection, JSON lines both ways:
//!
//! ```text
//! client → daemon   {"version":1,"agent":"claude","request":{"verb":"sync","peer":null,...}}
//! daemon → client   {"type":"progress","peer":"mini","event":{"received":{"bytes":65536}}}   (0 or more)
//! daemon → client   {"type":"item","doc":{...}}   (0 or more: a streaming verb's items, `feed --follow`)
//! daemon → client   {"type":"reply","exit_code":0,"doc":{...},"human":"...","warnings":[],"error":null}
//! ```
//!
//! The reply's `doc` is exactly what the verb prints with `--json`. A client that closes its end
//! stops a streaming verb (the daemon reads EOF). A request of another
//! version is answered with an error naming both versions.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use botsync_engine::AgentLabel;
use botsync_engine::layout::Layout;
use botsync_proto::session::{Progress, ProgressEvent};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::DaemonState;
use super::pidlock::PidLock;
use crate::verb::{self, Ctx, Reply, Request};

/// The control protocol version this build speaks.
pub const CONTROL_VERSION: u32 = 1;

/// Longest request line accepted.
const MAX_REQUEST: usize = 1 << 20;

/// How long a verb waits for a daemon that holds the lock but has no socket yet (starting).
const STARTING_WAIT: Duration = Duration::from_secs(10);

/// A request as sent on the socket.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    version: u32,
    #[serde(default)]
    agent: String,
    /// The caller's `AI_IDENTITY` and machine name (the daemon's environment is not its).
    #[serde(default)]
    caller: crate::commands::feed::CallerEnv,
    request: Request,
}

/// One line from the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Progress {
        peer: String,
        event: EventView,
    },
    /// One item of a streaming verb (`feed --follow`).
    Item {
        doc: serde_json::Value,
    },
    Reply(Reply),
}

/// A session progress event as it travels on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum EventView {
    Planned { files: u64, bytes: u64 },
    Sent { bytes: u64 },
    Received { bytes: u64 },
    Applied { path: String },
}

impl From<ProgressEvent> for EventView {
    fn from(e: ProgressEvent) -> Self {
        match e {
            ProgressEvent::Planned { files, bytes } => EventView::Planned { files, bytes },
            ProgressEvent::Sent { bytes } => EventView::Sent { bytes },
            ProgressEvent::Received { bytes } => EventView::Received { bytes },
            ProgressEvent::Applied { path } => EventView::Applied { path },
        }
    }
}

impl From<EventView> for ProgressEvent {
    fn from(e: EventView) -> Self {
        match e {
            EventView::Planned { files, bytes } => ProgressEvent::Planned { files, bytes },
            EventView::Sent { bytes } => ProgressEvent::Sent { bytes },
            EventView::Received { bytes } => ProgressEvent::Received { bytes },
            EventView::Applied { path } => ProgressEvent::Applied { path },
        }
    }
}

/// A verb's connection to the running daemon.
#[derive(Debug)]
pub struct Client {
    stream: StdStream,
    pid: Option<u32>,
    log: PathBuf,
}

impl Client {
    /// Connect to the daemon of the workspace at `root`; `None` if no daemon runs (the verb
    /// then opens the workspace itself).
    pub fn connect(root: &Path) -> Result<Option<Client>> {
        let layout = Layout::new(root);
        let socket = layout.control_socket();
        let lock = layout.daemon_pid();
        let deadline = Instant::now() + STARTING_WAIT;
        loop {
            if socket.exists() {
                check_owner(&socket)?;
                if let Ok(stream) = StdStream::connect(&socket) {
                    return Ok(Some(Client {
                        stream,
                        pid: PidLock::holder(&lock),
                        log: layout.daemon_log(),
                    }));
                }
            }
            // No answer: either no daemon (a stale socket is the dead daemon's leftover) or
            // one that is still starting.
            if !PidLock::is_held(&lock) {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the botsync daemon of this workspace (pid {}) holds it but does not answer on {}; \
                     see {} or stop it",
                    PidLock::holder(&lock)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "?".into()),
                    socket.display(),
                    layout.daemon_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send `request` and wait for its reply, passing progress events and streamed items on.
    pub fn call(
        mut self,
        request: &Request,
        agent: &AgentLabel,
        mut on_progress: impl FnMut(&str, ProgressEvent),
        mut on_item: impl FnMut(&serde_json::Value),
    ) -> Result<Reply> {
        let envelope = Envelope {
            version: CONTROL_VERSION,
            agent: agent.as_str().to_owned(),
            caller: crate::commands::feed::CallerEnv::here(),
            request: request.clone(),
        };
        let mut line = serde_json::to_vec(&envelope)?;
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .context("sending the request to the daemon")?;
        let reader = BufReader::new(&self.stream);
        for line in reader.lines() {
            let line = line.context("reading the daemon's reply")?;
            match serde_json::from_str::<Line>(&line) {
                Ok(Line::Progress { peer, event }) => on_progress(&peer, event.into()),
                Ok(Line::Item { doc }) => on_item(&doc),
                Ok(Line::Reply(reply)) => return Ok(reply),
                Err(e) => bail!(
                    "the daemon sent a line this botsync does not understand ({e}); restart it with this version"
                ),
            }
        }
        bail!(
            "the daemon{} closed the connection without answering; see {}",
            self.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            self.log.display()
        )
    }
}

/// The daemon's side: the bound socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Bind the socket at `path`, replacing a stale one (the caller holds the pid lock, so no
    /// live daemon owns it), mode 0600.
    pub fn bind(path: &Path) -> Result<Server> {
        match std::fs::remove_file(path) {
            Ok(()) => debug!(path = %path.display(), "removed a stale control socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing stale socket {}", path.display()));
            }
        }
        let listener = UnixListener::bind(path).with_context(|| {
            format!(
                "cannot create the control socket {} (a path longer than about 100 bytes is too long for a socket)",
                path.display()
            )
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Answer requests until the task is dropped.
    pub async fn run(self, state: Arc<DaemonState>) {
        let uid = rustix::process::geteuid().as_raw();
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == uid => {}
                Ok(cred) => {
                    warn!(
                        uid = cred.uid(),
                        "refused a control connection from another user"
                    );
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "refused a control connection without credentials");
                    continue;
                }
            }
            tokio::spawn(answer(stream, Arc::clone(&state)));
        }
    }

    /// The socket file (removed at shutdown).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

async fn answer(stream: UnixStream, state: Arc<DaemonState>) {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    let reply = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => None,
        Err(e) => Some(Reply::failed(&anyhow::anyhow!("unreadable request: {e}"))),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    let reply = match reply {
        Some(r) => r,
        None => match serde_json::from_str::<Envelope>(&line) {
            Err(e) => Reply::failed(&anyhow::anyhow!(
                "the daemon could not read the request ({e}); is the daemon older than this botsync? restart it"
            )),
            Ok(env) if env.version != CONTROL_VERSION => Reply::failed(&anyhow::anyhow!(
                "the daemon speaks control version {CONTROL_VERSION}, this botsync {}; restart the daemon with this botsync",
                env.version
            )),
            Ok(env) => {
                let progress_tx = tx.clone();
                let factory: verb::ProgressFactory = Arc::new(move |peer: &str| {
                    Arc::new(Forward {
                        peer: peer.to_owned(),
                        tx: progress_tx.clone(),
                    }) as Arc<dyn Progress>
                });
                let mut ctx = Ctx::in_daemon(
                    Arc::clone(&state),
                    AgentLabel::new(&env.agent),
                    tokio::runtime::Handle::current(),
                    factory,
                );
                ctx.caller = env.caller.clone();
                ctx.items = Some(Arc::new(Forward {
                    peer: String::new(),
                    tx: tx.clone(),
                }));
                let request = env.request;
                let work = tokio::task::spawn_blocking(move || verb::exec(request, &ctx));
                // Progress flows while the verb runs.
                let mut work = std::pin::pin!(work);
                // A caller that hangs up ends the stream: its end of the socket reads as EOF.
                let mut gone = [0u8; 1];
                let mut listening = true;
                loop {
                    tokio::select! {
                        done = &mut work => break done.unwrap_or_else(|e| Reply::failed(&anyhow::anyhow!("the verb's task failed: {e}"))),
                        Some(l) = rx.recv() => { if write_line(&mut write, &l).await.is_err() { return; } }
                        n = reader.read(&mut gone), if listening => {
                            if matches!(n, Ok(0) | Err(_)) {
                                // Closing our receiver tells a streaming verb to stop; a
                                // plain verb runs to its end and its reply is dropped.
                                rx.close();
                                listening = false;
                            }
                        }
                    }
                }
            }
        },
    };
    drop(tx);
    while let Ok(l) = rx.try_recv() {
        if write_line(&mut write, &l).await.is_err() {
            return;
        }
    }
    let _ = write_line(&mut write, &Line::Reply(reply)).await;
    let _ = write.shutdown().await;
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, l: &Line) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(l).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes).await
}

/// Progress of a session run for a client, forwarded to it.
struct Forward {
    peer: String,
    tx: mpsc::UnboundedSender<Line>,
}

impl verb::ItemSink for Forward {
    fn send(&self, doc: serde_json::Value) -> bool {
        self.tx.send(Line::Item { doc }).is_ok()
    }

    fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

impl Progress for Forward {
    fn event(&self, event: ProgressEvent) {
        let _ = self.tx.send(Line::Progress {
            peer: self.peer.clone(),
            event: event.into(),
        });
    }
}

/// Refuse a socket that another user owns: it could be anyone's daemon.
fn check_owner(socket: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(socket)
        .with_context(|| format!("inspecting {}", socket.display()))?;
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        bail!(
            "{} belongs to user {}, not to you (uid {uid}); remove it if no daemon of yours runs",
            socket.display(),
            meta.uid()
        );
    }
    Ok(())
}
