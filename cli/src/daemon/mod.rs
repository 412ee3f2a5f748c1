//! The daemon (`botsync serve`, and the background process of `auto on`): the one owner of the
//! workspace while it runs.
//!
//! It opens the workspace once and keeps the index, the Merkle tree and the peers in memory;
//! answers peers' sessions on its endpoint; keeps a connection to every peer ([`links`]);
//! watches the files ([`watcher`]) so that a sync with nothing new to scan costs no rescan; and,
//! with `auto` on, syncs after local changes, when a peer announces a new root, and on a
//! heartbeat. Every verb reaches it through the control socket ([`control`]). One daemon per
//! workspace ([`pidlock`]). SIGINT/SIGTERM: stop taking work, let a running apply finish, close
//! the connections with `shutdown`, remove the socket.

pub mod control;
pub mod keep;
pub mod links;
pub mod malloc;
pub mod pidlock;
pub mod regenerate;
pub mod watcher;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use botsync_engine::layout::Layout;
use botsync_proto::budget::{Budget, Limits};
use botsync_proto::close::CloseCode;
use botsync_proto::endpoint::Endpoint;
use botsync_proto::messages::SessionMode;
use botsync_proto::session::SessionOptions;
use botsync_proto::session::link::{LinkEvent, serve_connection};
use botsync_proto::session::server::ServeOptions;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::links::{LinkView, Links};
use self::pidlock::PidLock;
use self::watcher::{FsSignal, Watcher};
use crate::node::Node;

/// What the daemon shares with the verbs it runs.
#[derive(Debug)]
pub struct DaemonState {
    /// The opened workspace.
    pub node: Arc<Node>,
    /// Our process id.
    pub pid: u32,
    /// The address peers reach us on.
    pub listening: SocketAddr,
    /// The kept connections.
    pub links: Arc<Links>,
    /// The replicated lock table.
    pub coord: Arc<crate::coord::Coordinator>,
    auto: AtomicBool,
    endpoint: Arc<Endpoint>,
    wake: mpsc::UnboundedSender<Wake>,
}

/// The daemon as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonView {
    /// Its pid.
    pub pid: u32,
    /// Where it listens.
    pub listening: String,
    /// Whether it syncs on its own.
    pub auto: bool,
    /// Rescans since it started (each walked the tree or the watched paths).
    pub rescans: u64,
    /// Of those, the ones that walked only the paths the watcher reported.
    pub partial_rescans: u64,
    /// Whether the local index is in memory now: it leaves after `daemon.unload_index_secs`
    /// to twice that unused, and is read back from disk on its next use.
    pub index_in_memory: bool,
    /// Its links.
    pub peers: Vec<LinkView>,
}

/// Longest a rescan waits for a burst of file-system events to end.
const MAX_DEBOUNCE: Duration = Duration::from_secs(3);

/// Something for the scheduler to look at.
#[derive(Debug)]
enum Wake {
    PeersChanged,
    AutoChanged,
}

impl DaemonState {
    /// For `status`.
    pub fn view(&self) -> DaemonView {
        let (rescans, partial_rescans) = self.node.replica.rescans();
        DaemonView {
            pid: self.pid,
            listening: self.listening.to_string(),
            auto: self.auto.load(Ordering::SeqCst),
            rescans,
            partial_rescans,
            index_in_memory: self.node.replica.workspace().index_in_memory(),
            peers: self.links.views(),
        }
    }

    /// `peers.json` changed (through `add`/`remove`): new links, new allowed set.
    pub fn peers_changed(&self) {
        let _ = self.wake.send(Wake::PeersChanged);
    }

    /// `auto on|off` (already saved in config.json).
    pub fn set_auto(&self, on: bool) {
        self.auto.store(on, Ordering::SeqCst);
        let _ = self.wake.send(Wake::AutoChanged);
    }

    /// A sync a verb asked for ended (its record is kept by the link).
    pub fn record_sync(
        &self,
        peer: &str,
        result: Result<&botsync_proto::session::SessionReport, String>,
    ) {
        match result {
            Ok(r) => info!(peer, summary = %links::summarize(r), "sync done"),
            Err(e) => warn!(peer, error = %e, "sync failed"),
        }
    }

    fn auto(&self) -> bool {
        self.auto.load(Ordering::SeqCst)
    }

    fn reload_peers(&self) {
        match self.node.peers() {
            Ok(p) => {
                self.endpoint
                    .allowed()
                    .replace(p.peers.iter().map(|p| p.id));
                self.links.set_peers(&p.peers);
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot reload peers.json; keeping the previous peers")
            }
        }
    }

    fn sync_options(&self) -> SessionOptions {
        let mut opts = SessionOptions::new(SessionMode::Sync, &self.node.name);
        opts.deadlines =
            crate::node::limits::deadlines(&self.node.replica.workspace().config().limits);
        opts
    }
}

/// Run the daemon for `node` on `listen` until SIGINT or SIGTERM, holding the workspace's
/// daemon `lock` (taken by the caller before it opened the workspace). `announce` is called
/// once with the bound address, as soon as peers and verbs can reach us.
pub fn run(
    lock: PidLock,
    node: Arc<Node>,
    listen: SocketAddr,
    announce: impl FnOnce(SocketAddr),
) -> Result<()> {
    if !malloc::tune() {
        warn!("the allocator refused a fixed mmap threshold; memory may grow with uptime");
    }
    let layout = Layout::new(&node.root);
    let limits = crate::node::limits::limits(&node.replica.workspace().config().limits)?;
    let rt = crate::commands::sync::runtime()?;
    rt.block_on(async move {
        let endpoint = Arc::new(node.bind(listen)?);
        let listening = endpoint.local_addr()?;
        let links = Links::new(Arc::clone(&endpoint), Arc::clone(&node.replica));
        let coord =
            crate::coord::Coordinator::start(Arc::clone(&node), Arc::clone(&endpoint)).await?;
        let (wake, wakes) = mpsc::unbounded_channel();
        let config = node.replica.workspace().config().daemon;
        let state = Arc::new(DaemonState {
            node: Arc::clone(&node),
            pid: std::process::id(),
            listening,
            links,
            coord: Arc::clone(&coord),
            auto: AtomicBool::new(config.auto),
            endpoint: Arc::clone(&endpoint),
            wake,
        });
        let (fs_tx, fs_rx) = mpsc::unbounded_channel();
        let watcher = Watcher::start(&node.root, Arc::clone(&node.replica), fs_tx)?;
        node.replica.set_watched(true);
        let control = control::Server::bind(&layout.control_socket())?;
        let socket = control.path().to_path_buf();
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let stop_keeping = Arc::new(AtomicBool::new(false));
        let tasks = [
            tokio::spawn(accept_peers(
                Arc::clone(&endpoint),
                Arc::clone(&node),
                link_tx,
                Some(Arc::clone(&coord)),
                limits,
            )),
            tokio::spawn(control.run(Arc::clone(&state))),
            tokio::spawn(schedule(Arc::clone(&state), fs_rx, link_rx, wakes)),
            tokio::spawn(regenerate::run(Arc::clone(&state))),
            tokio::spawn(keep::run(Arc::clone(&state), Arc::clone(&stop_keeping))),
            tokio::spawn(malloc::give_back_periodically()),
        ];
        state.reload_peers();
        info!(%listening, pid = state.pid, auto = state.auto(), "daemon started");
        announce(listening);

        let signal = shutdown_signal().await;
        info!(signal, "shutting down");
        stop_keeping.store(true, Ordering::Relaxed);
        for t in &tasks {
            t.abort();
        }
        drop(watcher);
        // Stop answering verbs first: a verb that finds no socket opens the workspace itself,
        // once our lock is gone.
        let _ = std::fs::remove_file(&socket);
        state.links.close_all();
        coord.shutdown().await;
        endpoint.close(CloseCode::Shutdown);
        // A rescan or apply in progress finishes (every file old or new, the index in step);
        // none starts after this.
        let replica = Arc::clone(&node.replica);
        let quiet = tokio::task::spawn_blocking(move || {
            let _turn = replica.quiesce();
            replica.workspace().store().flush()
        });
        match tokio::time::timeout(Duration::from_secs(30), quiet).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "flushing the index at shutdown failed"),
            _ => warn!(
                "an apply did not finish within 30 s of the shutdown signal; the next start rescans"
            ),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(lock);
    Ok(())
}

/// Accept peers' connections and answer the sessions they start, until the endpoint closes.
pub async fn accept_peers(
    endpoint: Arc<Endpoint>,
    node: Arc<Node>,
    events: mpsc::UnboundedSender<LinkEvent>,
    coord: Option<Arc<crate::coord::Coordinator>>,
    limits: Limits,
) {
    // One budget for every peer's connections: connections, sessions and request streams are
    // capped per peer and in total, and each phase of a session has its deadline
    // (`limits` in config.json over the protocol's defaults).
    let budget = Budget::new(limits);
    while let Some(incoming) = endpoint.accept().await {
        // peers.json may have been edited by hand: the next handshake sees the new set.
        match node.peers() {
            Ok(p) => endpoint.allowed().replace(p.peers.iter().map(|p| p.id)),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot reload peers.json; keeping the previous peer set")
            }
        }
        let node = Arc::clone(&node);
        let events = events.clone();
        let budget = budget.clone();
        let coord = coord.clone();
        tokio::spawn(async move {
            let conn = match incoming.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("refused connection: {e}");
                    return;
                }
            };
            let coordination = conn.is_coordination();
            let (quinn, peer) = conn.into_parts();
            if coordination {
                match coord {
                    Some(coord) => botsync_proto::coordination::serve(quinn, peer, coord).await,
                    None => CloseCode::ProtocolError.close(&quinn),
                }
                return;
            }
            let opts = ServeOptions::new(&node.name, budget);
            match serve_connection(quinn, peer, Arc::clone(&node.replica), opts, events).await {
                Ok(n) => debug!(peer = %peer, sessions = n, "connection ended"),
                Err(e) => warn!(peer = %peer, "session failed: {e}"),
            }
        });
    }
}

/// The daemon's clock: debounced rescans after file-system events, the periodic full rescan,
/// announcements of our root, and (with `auto`) the syncs.
async fn schedule(
    state: Arc<DaemonState>,
    mut fs: mpsc::UnboundedReceiver<FsSignal>,
    mut link_events: mpsc::UnboundedReceiver<LinkEvent>,
    mut wakes: mpsc::UnboundedReceiver<Wake>,
) {
    let replica = Arc::clone(&state.node.replica);
    let config = replica.workspace().config().daemon;
    let debounce = Duration::from_millis(config.debounce_ms);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(config.heartbeat_secs));
    let mut full_rescan = tokio::time::interval(Duration::from_secs(config.rescan_secs));
    // The tidy-up: expired notes of our own writes, and the index if unused (when allowed).
    let unload = config.unload_index_secs > 0;
    let tidy_secs = if unload { config.unload_index_secs } else { 60 };
    let mut tidy = tokio::time::interval(Duration::from_secs(tidy_secs));
    tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Both fire at once: the first full rescan is the start-up scan, the first heartbeat the
    // start-up sync.
    let mut roots = replica.subscribe();
    let mut rescan_at: Option<Instant> = None;
    let mut burst: Option<Instant> = None;
    // The designated mesh config files are not in the Merkle tree: an edit of one starts a sync
    // itself (with `auto`), after the same debounce as a rescan.
    let mesh_paths = replica.mesh_paths();
    let mut mesh_edited = false;
    loop {
        let deadline = rescan_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(signal) = fs.recv() => {
                // The watcher noted the paths in the replica already; rescan once the burst is
                // over.
                // A file written without pause (a log) still gets rescanned every few seconds.
                debug!(?signal, "file-system change");
                match &signal {
                    // Events were lost: only a full rescan knows what changed.
                    FsSignal::Overflow => replica.mark_dirty(),
                    FsSignal::Changed(paths) => {
                        mesh_edited |= paths.iter().any(|p| mesh_paths.contains(p));
                    }
                }
                let now = Instant::now();
                let first = *burst.get_or_insert(now);
                rescan_at = Some((now + debounce).min(first + MAX_DEBOUNCE.max(debounce)));
            }
            _ = tokio::time::sleep_until(deadline), if rescan_at.is_some() => {
                rescan_at = None;
                burst = None;
                refresh(&replica).await;
                if std::mem::take(&mut mesh_edited) && state.auto() {
                    sync_all(&state, "mesh config edited");
                }
            }
            _ = full_rescan.tick() => {
                replica.mark_dirty();
                refresh(&replica).await;
            }
            _ = tidy.tick() => tidy_up(&replica, unload).await,
            _ = heartbeat.tick() => {
                if state.auto() {
                    sync_all(&state, "heartbeat");
                }
            }
            Ok(()) = roots.changed() => {
                let change = *roots.borrow_and_update();
                state.links.announce(change.root);
                if change.local && state.auto() {
                    sync_all(&state, "local change");
                }
            }
            Some(event) = link_events.recv() => match event {
                LinkEvent::Changed { peer, root } => {
                    let ours = replica.workspace().snapshot().0;
                    if let Some(p) = state.links.announced(peer, root)
                        && state.auto()
                        && root != ours
                    {
                        state.links.sync_soon(&p, state.sync_options(), "peer changed");
                    }
                }
                LinkEvent::Served { peer, report } => {
                    debug!(peer = %peer, applied = report.applied.len(), "answered a session");
                    let name = state
                        .links
                        .peers()
                        .into_iter()
                        .find(|p| p.id == peer)
                        .map_or_else(|| peer.short(), |p| p.name);
                    let names = crate::commands::history::PeerNames::of(&state.node);
                    crate::commands::history::log_served(replica.workspace(), &name, &names, &report);
                }
            },
            Some(wake) = wakes.recv() => match wake {
                Wake::PeersChanged => state.reload_peers(),
                Wake::AutoChanged => {
                    if state.auto() {
                        sync_all(&state, "auto on");
                    }
                }
            },
        }
    }
}

async fn refresh(replica: &Arc<crate::node::replica::LiveReplica>) {
    use botsync_proto::replica::Replica as _;
    let r = Arc::clone(replica);
    match tokio::task::spawn_blocking(move || r.refresh()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "rescan failed; retried at the next change"),
        Err(e) => warn!(error = %e, "rescan task failed"),
    }
}

/// Forget the expired notes of our own writes and, with `unload`, let the index leave memory
/// if nothing used it since the last look; on a blocking thread (a million entries take a while
/// to free), the pages then given back.
async fn tidy_up(replica: &Arc<crate::node::replica::LiveReplica>, unload: bool) {
    let r = Arc::clone(replica);
    let unloaded = tokio::task::spawn_blocking(move || {
        r.forget_old_writes();
        let dropped = if unload {
            r.workspace().unload_index_if_unused()
        } else {
            0
        };
        malloc::give_back();
        dropped
    })
    .await;
    if let Ok(entries) = unloaded
        && entries > 0
    {
        info!(entries, "index unused: left memory until its next use");
    }
}

fn sync_all(state: &Arc<DaemonState>, why: &'static str) {
    for p in state.links.peers() {
        state.links.sync_soon(&p, state.sync_options(), why);
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon runs until killed.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Start a daemon for the workspace at `root` in the background (for `auto on`), its output in
/// `.botsync/daemon.log`; returns its pid once it answers on its control socket.
pub fn spawn_background(root: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let layout = Layout::new(root);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.daemon_log())
        .with_context(|| format!("opening {}", layout.daemon_log().display()))?;
    let exe = std::env::current_exe().context("finding the botsync binary")?;
    let mut child = std::process::Command::new(exe)
        .arg("-w")
        .arg(root)
        .arg("serve")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the daemon")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the daemon exited at start ({status}); see {}",
                layout.daemon_log().display()
            );
        }
        if layout.control_socket().exists() && control::Client::connect(root)?.is_some() {
            return Ok(child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A daemon nobody can reach is stopped, not left behind.
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "the daemon did not answer within 15 s and was stopped; see {}, then run `botsync serve` to watch it start",
        layout.daemon_log().display()
    )
}
