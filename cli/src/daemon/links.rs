//! [`Links`]: the daemon's kept connections, one per configured peer.
//!
//! Each link dials its peer from the daemon's one endpoint, keeps the connection (QUIC
//! keep-alive), announces our root on it, and redials with a growing backoff when it drops: an
//! offline peer is retried, never spun on. Sessions this daemon starts run on the link's
//! connection, one at a time per peer; a session that fails drops the connection so the next
//! one dials afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use botsync_engine::{Hash, PeerId};
use botsync_proto::endpoint::Endpoint;
use botsync_proto::session::link::notify_changed;
use botsync_proto::session::{Progress, SessionOptions, SessionReport, client};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::node::last_sync::{self, SyncRecord};
use crate::node::peers::Peer;
use crate::node::replica::LiveReplica;

/// First wait before redialing a peer that could not be reached.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between dials of an unreachable peer.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// All links of the daemon.
#[derive(Debug)]
pub struct Links {
    endpoint: Arc<Endpoint>,
    replica: Arc<LiveReplica>,
    links: Mutex<HashMap<PeerId, Arc<Link>>>,
}

/// One peer's link.
#[derive(Debug)]
struct Link {
    peer: Mutex<Peer>,
    /// The kept connection; dialing happens under this lock so there is one at a time.
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    /// Sessions with this peer take turns.
    session: tokio::sync::Mutex<()>,
    /// An automatic sync is waiting for its turn: further requests join it.
    queued: AtomicBool,
    state: Mutex<LinkState>,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, Default, Clone)]
struct LinkState {
    connected: bool,
    last_error: Option<String>,
    their_root: Option<Hash>,
    last_sync: Option<SyncRecord>,
}

/// A link as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    /// The peer's configured name.
    pub name: String,
    /// True while a kept connection is open.
    pub connected: bool,
    /// Why the last dial failed, while not connected.
    pub last_error: Option<String>,
    /// True if the peer's last announced root equals ours.
    pub same_root: Option<bool>,
    /// The last sync with it.
    pub last_sync: Option<SyncRecord>,
}

impl Links {
    /// Links over `endpoint` for a daemon serving `replica`; none until [`Links::set_peers`].
    pub fn new(endpoint: Arc<Endpoint>, replica: Arc<LiveReplica>) -> Arc<Links> {
        Arc::new(Links {
            endpoint,
            replica,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Keep a link to exactly these peers: new ones start dialing, removed ones close.
    pub fn set_peers(self: &Arc<Self>, peers: &[Peer]) {
        let mut links = self.lock();
        links.retain(|id, link| {
            let keep = peers.iter().any(|p| p.id == *id);
            if !keep {
                link.stop();
            }
            keep
        });
        for p in peers {
            match links.get(&p.id) {
                Some(link) => *lock(&link.peer) = p.clone(),
                None => {
                    let link = Arc::new(Link::new(p.clone()));
                    let task = tokio::spawn(Arc::clone(self).keep(Arc::clone(&link)));
                    *lock(&link.keeper) = Some(task);
                    links.insert(p.id, link);
                }
            }
        }
    }

    /// Run one session with `peer` on its kept connection (dialing it if needed).
    pub async fn session(
        &self,
        peer: &Peer,
        opts: &SessionOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<SessionReport> {
        let link = self.link(peer);
        let _turn = link.session.lock().await;
        link.queued.store(false, Ordering::SeqCst);
        if !opts.dry_run {
            super::regenerate::before_sync(&self.replica).await;
        }
        // Rescan (if the watcher saw anything) while the connection is checked or dialed.
        let pending = client::start_refresh(&self.replica);
        let conn = link.connection(&self.endpoint).await?;
        let result = client::run_with(
            &conn,
            peer.id,
            Arc::clone(&self.replica),
            opts,
            progress,
            pending,
        )
        .await;
        let result = match result {
            Ok(report) if opts.dry_run => Ok(report),
            Ok(report) => {
                let record = SyncRecord::now(true, summarize(&report));
                self.remember(&peer.name, &record);
                let mut st = lock(&link.state);
                st.last_sync = Some(record);
                // A two-way sync leaves both sides at one root.
                if !opts.dry_run && opts.mode == botsync_proto::messages::SessionMode::Sync {
                    st.their_root = Some(self.replica.workspace().snapshot().0);
                }
                Ok(report)
            }
            Err(e) => {
                // The next session dials afresh.
                e.close_code().close(&conn);
                link.conn.lock().await.take();
                if !opts.dry_run {
                    let record = SyncRecord::now(false, e.to_string());
                    self.remember(&peer.name, &record);
                    lock(&link.state).last_sync = Some(record);
                }
                Err(e)
            }
        };
        let result = result.with_context(|| format!("session with peer {}", peer.name));
        if !opts.dry_run {
            use botsync_proto::replica::Replica as _;
            let names = crate::commands::history::PeerNames::from_pairs(
                self.peers()
                    .into_iter()
                    .map(|p| (p.id, p.name))
                    .chain([(self.replica.local_peer(), "here".to_owned())]),
            );
            crate::commands::history::log_session(
                self.replica.workspace(),
                &peer.name,
                opts.mode,
                &opts.agent,
                &names,
                &result,
            );
        }
        result
    }

    /// Start a sync with `peer` in the background unless one is already waiting.
    pub fn sync_soon(self: &Arc<Self>, peer: &Peer, opts: SessionOptions, why: &'static str) {
        let link = self.link(peer);
        if link.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let links = Arc::clone(self);
        let peer = peer.clone();
        tokio::spawn(async move {
            match links
                .session(&peer, &opts, Arc::new(botsync_proto::session::NoProgress))
                .await
            {
                Ok(r) => info!(peer = %peer.name, why, summary = %summarize(&r), "automatic sync"),
                Err(e) => {
                    warn!(peer = %peer.name, why, error = %crate::exit::one_line(&e), "automatic sync failed")
                }
            }
        });
    }

    /// Tell every connected peer our new root.
    pub fn announce(&self, root: Hash) {
        for link in self.lock().values() {
            let link = Arc::clone(link);
            tokio::spawn(async move {
                let conn = link.conn.lock().await.clone();
                if let Some(conn) = conn
                    && let Err(e) = notify_changed(&conn, root).await
                {
                    debug!(error = %e, "could not announce our root");
                }
            });
        }
    }

    /// Remember the root `peer` announced; returns its configured entry if it is a peer.
    pub fn announced(&self, peer: PeerId, root: Hash) -> Option<Peer> {
        let links = self.lock();
        let link = links.get(&peer)?;
        lock(&link.state).their_root = Some(root);
        Some(lock(&link.peer).clone())
    }

    /// The configured peers with links.
    pub fn peers(&self) -> Vec<Peer> {
        self.lock()
            .values()
            .map(|l| lock(&l.peer).clone())
            .collect()
    }

    /// Every link, for `status`.
    pub fn views(&self) -> Vec<LinkView> {
        let ours = self.replica.workspace().snapshot().0;
        let mut v: Vec<LinkView> = self
            .lock()
            .values()
            .map(|l| {
                let st = lock(&l.state).clone();
                LinkView {
                    name: lock(&l.peer).name.clone(),
                    connected: st.connected,
                    last_error: st.last_error,
                    same_root: st.their_root.map(|r| r == ours),
                    last_sync: st.last_sync,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Close every kept connection (shutdown).
    pub fn close_all(&self) {
        for link in self.lock().values() {
            link.stop();
        }
    }

    /// Make `record` the last sync with `peer` (a verb's follow-up session, such as the feed's
    /// sync message, must not replace the sync the user asked for).
    pub fn set_last_sync(&self, peer: &Peer, record: SyncRecord) {
        self.remember(&peer.name, &record);
        lock(&self.link(peer).state).last_sync = Some(record);
    }

    /// Persist the last sync with `peer` for `status` (a failure to write is only logged).
    fn remember(&self, peer: &str, record: &SyncRecord) {
        let state = self
            .replica
            .workspace()
            .root()
            .join(crate::context::STATE_DIR);
        if let Err(e) = last_sync::record(&state, peer, record.clone()) {
            debug!(error = %format!("{e:#}"), "could not record the last sync");
        }
    }

    /// The link's state for `status`: connected, and why the last dial failed if it did.
    pub fn reachability(&self, peer: &Peer) -> (bool, Option<String>) {
        let links = self.lock();
        match links.get(&peer.id) {
            Some(l) => {
                let st = lock(&l.state);
                (st.connected, st.last_error.clone())
            }
            None => (false, None),
        }
    }

    fn link(&self, peer: &Peer) -> Arc<Link> {
        let mut links = self.lock();
        Arc::clone(
            links
                .entry(peer.id)
                .or_insert_with(|| Arc::new(Link::new(peer.clone()))),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Arc<Link>>> {
        lock(&self.links)
    }

    /// Keep `link` connected: dial, announce our root, wait for the connection to end, back off.
    async fn keep(self: Arc<Self>, link: Arc<Link>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match link.connection(&self.endpoint).await {
                Ok(conn) => {
                    backoff = BACKOFF_MIN;
                    let root = self.replica.workspace().snapshot().0;
                    if let Err(e) = notify_changed(&conn, root).await {
                        debug!(error = %e, "could not announce our root");
                    }
                    let reason = conn.closed().await;
                    debug!(peer = %lock(&link.peer).name, %reason, "kept connection ended");
                    let mut kept = link.conn.lock().await;
                    if kept
                        .as_ref()
                        .is_some_and(|c| c.stable_id() == conn.stable_id())
                    {
                        kept.take();
                    }
                    lock(&link.state).connected = false;
                }
                Err(e) => {
                    debug!(peer = %lock(&link.peer).name, error = %format!("{e:#}"), "dial failed")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

impl Link {
    fn new(peer: Peer) -> Link {
        Link {
            peer: Mutex::new(peer),
            conn: tokio::sync::Mutex::new(None),
            session: tokio::sync::Mutex::new(()),
            queued: AtomicBool::new(false),
            state: Mutex::new(LinkState::default()),
            keeper: Mutex::new(None),
        }
    }

    /// The kept connection, dialed now if there is none.
    async fn connection(&self, endpoint: &Endpoint) -> Result<quinn::Connection> {
        let mut kept = self.conn.lock().await;
        if let Some(c) = kept.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let peer = lock(&self.peer).clone();
        let dialed = async {
            let addr = peer.resolve()?;
            let conn = endpoint
                .connect(addr, peer.id)
                .await
                .with_context(|| format!("connecting to peer {}", peer.name))?;
            Ok::<_, anyhow::Error>(conn.into_parts().0)
        }
        .await;
        let mut st = lock(&self.state);
        match dialed {
            Ok(conn) => {
                st.connected = true;
                st.last_error = None;
                *kept = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                st.connected = false;
                st.last_error = Some(crate::exit::one_line(&e));
                Err(e)
            }
        }
    }

    fn stop(&self) {
        if let Some(task) = lock(&self.keeper).take() {
            task.abort();
        }
        if let Ok(mut kept) = self.conn.try_lock()
            && let Some(c) = kept.take()
        {
            botsync_proto::close::CloseCode::Shutdown.close(&c);
        }
    }
}

/// What a session did, in a few words.
pub fn summarize(r: &SessionReport) -> String {
    if r.in_sync {
        return "already in sync".into();
    }
    let moved = |items: &[botsync_engine::plan::ItemReport]| {
        items.iter().filter(|i| i.action.writes_file()).count()
    };
    format!("{} in, {} out", moved(&r.pulled), moved(&r.pushed))
}

/// Every mutex here guards plain values replaced whole: a poisoned one holds no broken state.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
