//! The daemon's coordinator: the lock table (the seed's `sync_locks`) replicated across the
//! mesh with Raft (`openraft`), over coordination connections between daemons. The safety
//! argument and its limits are in docs/LOCKS.md; this code follows it.
//!
//! - **Voters** are the configured `lock_voters` (peer names, `self` or this workspace's own
//!   name), or by default this peer and every configured peer. Raft starts on a voter's first
//!   lock request (or when a leader reaches it) with that voter set; more than one voter doing so
//!   with the same set is safe.
//! - **A write** (acquire, renew, release) is proposed to the local Raft node; a follower sends
//!   it to the leader it knows; a peer that is not a voter sends it to a voter. It is stamped
//!   with the time of the peer that proposed it.
//! - **Status** is read from the table as this voter has applied it (a non-voter asks a voter).

mod members;
mod network;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use botsync_engine::PeerId;
use botsync_engine::locks::{Answer, Command, LockTable};
use botsync_proto::coordination::rpc::{self, LockRaft, NodeId, Rpc, RpcReply, node_id};
use botsync_proto::coordination::{Answer as Reply, Handler};
use botsync_proto::endpoint::Endpoint;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft};
use tracing::{debug, info};

use self::network::Net;
use self::store::{LogStore, StateMachine};
use crate::node::Node;
use crate::node::peers::Peer;

/// How long a write may wait for a leader and a majority.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(8);

/// How long one forwarded write or status read may take (a leader that went away must not eat
/// the whole deadline: an election elsewhere may already have replaced it).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a voter about to form the table waits for the others to say whether they have.
const FORMED_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the lock table is, seen from one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// This peer's Raft node holds it (formed now if it was not).
    Here,
    /// Other voters formed it and this peer is not (yet) a member: ask them.
    Elsewhere,
}

/// The voter set and this peer's part in it.
#[derive(Debug, Clone)]
pub struct Voters {
    /// Node id → peer id of every voter (this peer included if it votes).
    pub members: BTreeMap<NodeId, PeerId>,
    /// Names of the voters as this peer calls them.
    pub names: Vec<String>,
}

/// The daemon's coordinator.
pub struct Coordinator {
    me: PeerId,
    node: Arc<Node>,
    raft: Option<(Raft<LockRaft>, StateMachine)>,
    /// True if the configuration makes this peer a voter (a peer configured out of the voters
    /// keeps its Raft node while the table still counts it, see `members`).
    configured_voter: bool,
    net: Net,
    reconciler: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("voter", &self.raft.is_some())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Start the coordinator of `node`, reaching other daemons through `endpoint`.
    pub async fn start(node: Arc<Node>, endpoint: Arc<Endpoint>) -> Result<Arc<Coordinator>> {
        let me = node.identity.peer_id();
        let configured = &node.replica.workspace().config().lock_voters;
        let configured_voter =
            configured.is_empty() || configured.iter().any(|v| v == "self" || *v == node.name);
        let net = Net::new(endpoint, Arc::clone(&node));
        let log = node
            .replica
            .workspace()
            .store()
            .raft_log()
            .context("opening the lock log")?;
        // A peer that was a voter keeps its Raft node until the table has moved to the
        // configured voters: leaving at once could take the majority away from the others.
        let was_voter = log.last().context("reading the lock log")?.is_some();
        let raft = if configured_voter || was_voter {
            let sm = StateMachine::new(log.clone()).map_err(|e| anyhow!(e))?;
            let config = Config {
                cluster_name: "botsync-locks".into(),
                heartbeat_interval: 250,
                election_timeout_min: 1000,
                election_timeout_max: 2000,
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
                ..Config::default()
            }
            .validate()
            .context("the lock table's Raft settings")?;
            let raft = Raft::new(
                node_id(&me),
                Arc::new(config),
                net.clone(),
                LogStore::new(log),
                sm.clone(),
            )
            .await
            .map_err(|e| anyhow!("starting the lock table: {e}"))?;
            Some((raft, sm))
        } else {
            None
        };
        info!(voter = raft.is_some(), "lock table ready");
        let reconciler = raft.as_ref().map(|(raft, _)| {
            let (raft, node) = (raft.clone(), Arc::clone(&node));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(members::RECONCILE_EVERY).await;
                    let wanted = match voters(&node) {
                        Ok(v) => v,
                        Err(e) => {
                            debug!(error = %e, "the configured lock voters cannot be read");
                            continue;
                        }
                    };
                    match members::reconcile(&raft, node_id(&me), &wanted).await {
                        Ok(members::Step::Waiting(ids)) => {
                            debug!(?ids, "new lock voters have not answered yet");
                        }
                        Ok(_) => {}
                        Err(e) => debug!(error = %e, "the lock voters could not change yet"),
                    }
                }
            })
        });
        Ok(Arc::new(Coordinator {
            me,
            node,
            raft,
            configured_voter,
            net,
            reconciler: std::sync::Mutex::new(reconciler),
        }))
    }

    /// The voters, by the names this peer gives them (as configured now).
    pub fn voter_names(&self) -> Vec<String> {
        voters(&self.node).map(|v| v.names).unwrap_or_default()
    }

    /// Propose `cmd` and wait until the mesh has committed and applied it.
    pub async fn write(&self, cmd: Command) -> Result<Answer> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        // A peer configured out of the voters keeps its Raft node only to vote while the table
        // moves away from it; its own requests go to the configured voters.
        let Some((raft, _)) = self.raft.as_ref().filter(|_| self.configured_voter) else {
            return self.write_via_voters(&cmd, deadline).await;
        };
        if self.ensure_initialized(raft).await? == Table::Elsewhere {
            return self.write_via_voters(&cmd, deadline).await;
        }
        let no_majority = self.no_majority();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, raft.client_write(cmd.clone())).await;
            match attempt {
                Err(_) => bail!("{no_majority}"),
                Ok(Ok(resp)) => return Ok(resp.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    match f.leader_id {
                        Some(leader) if leader != node_id(&self.me) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let within = left.min(FORWARD_TIMEOUT);
                            match self
                                .net
                                .call(leader, &Rpc::Write(cmd.clone()), within)
                                .await
                            {
                                Ok(RpcReply::Write(r)) => return r.map_err(|e| anyhow!(e)),
                                Ok(_) => {
                                    bail!("the lock leader answered a write with something else")
                                }
                                Err(e) => debug!(error = %e, "the leader did not answer; retrying"),
                            }
                        }
                        _ => debug!("no lock leader yet; waiting for an election"),
                    }
                }
                Ok(Err(e)) => bail!("the lock table refused the write: {e}"),
            }
            if Instant::now() >= deadline {
                bail!("{no_majority}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The lock table as this voter has applied it (a non-voter asks the voters in turn).
    pub async fn table(&self) -> Result<LockTable> {
        if let Some((raft, sm)) = self.raft.as_ref().filter(|_| self.configured_voter)
            && self.ensure_initialized(raft).await? == Table::Here
        {
            // The leader's table holds every committed write; a follower's may lag it by a
            // heartbeat. Ask the leader, and fall back to ours if it does not answer.
            if let Some(leader) = raft.current_leader().await
                && leader != node_id(&self.me)
            {
                match self.net.call(leader, &Rpc::Status, FORWARD_TIMEOUT).await {
                    Ok(RpcReply::Status(Ok(t))) => return Ok(t),
                    other => debug!(?other, "the lock leader did not give its table; using ours"),
                }
            }
            return Ok(sm.table());
        }
        let mut last = None;
        for peer in self.voter_peers() {
            match self
                .net
                .call_peer(&peer, &Rpc::Status, FORWARD_TIMEOUT)
                .await
            {
                Ok(RpcReply::Status(Ok(t))) => return Ok(t),
                Ok(RpcReply::Status(Err(e))) => last = Some(e),
                Ok(_) => last = Some(format!("{} answered with something else", peer.name)),
                Err(e) => last = Some(e.to_string()),
            }
        }
        bail!(
            "no lock voter answered ({}); the voters are {}",
            last.unwrap_or_else(|| "none is configured".into()),
            self.voter_names().join(", ")
        )
    }

    /// The table's voters as this peer has applied them, by name (`None` on a peer that holds
    /// no copy of the table). They differ from [`Coordinator::voter_names`] while a change of the
    /// configured voters is under way.
    pub fn members(&self) -> Option<Vec<String>> {
        let (raft, _) = self.raft.as_ref()?;
        let ids = members::current(raft);
        if ids.is_empty() {
            return None;
        }
        let names = self.node.peers().map(|p| p.peers).unwrap_or_default();
        Some(
            ids.into_iter()
                .map(|id| {
                    if id == node_id(&self.me) {
                        self.node.name.clone()
                    } else {
                        names
                            .iter()
                            .find(|p| node_id(&p.id) == id)
                            .map_or_else(|| format!("{id:016x}"), |p| p.name.clone())
                    }
                })
                .collect(),
        )
    }

    /// Stop Raft (daemon shutdown).
    pub async fn shutdown(&self) {
        if let Some(task) = self.reconciler.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
        if let Some((raft, _)) = &self.raft {
            let _ = raft.shutdown().await;
        }
    }

    async fn write_via_voters(&self, cmd: &Command, deadline: Instant) -> Result<Answer> {
        let mut last = String::from("no voter is configured");
        while Instant::now() < deadline {
            for peer in self.voter_peers() {
                let left = deadline.saturating_duration_since(Instant::now());
                let within = left.min(FORWARD_TIMEOUT);
                match self
                    .net
                    .call_peer(&peer, &Rpc::Write(cmd.clone()), within)
                    .await
                {
                    Ok(RpcReply::Write(Ok(a))) => return Ok(a),
                    Ok(RpcReply::Write(Err(e))) => last = e,
                    Ok(_) => last = format!("{} answered with something else", peer.name),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bail!("{} (last: {last})", self.no_majority())
    }

    async fn ensure_initialized(&self, raft: &Raft<LockRaft>) -> Result<Table> {
        if raft.is_initialized().await.map_err(|e| anyhow!("{e}"))? {
            return Ok(Table::Here);
        }
        // Only a configured voter forms the table, and only if no other voter has: a peer that
        // joins a mesh whose table already formed waits for its leader to add it.
        if !self.configured_voter || self.formed_elsewhere().await {
            return Ok(Table::Elsewhere);
        }
        // Voters that form the table together must compute the same set (docs/LOCKS.md,
        // "Forming the table").
        let members: BTreeMap<NodeId, BasicNode> = voters(&self.node)?
            .members
            .iter()
            .map(|(id, peer)| (*id, BasicNode::new(peer.to_copy_safe())))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => Ok(Table::Here),
            // Another voter formed the table first, with the same voters: nothing to do.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {
                Ok(Table::Here)
            }
            Err(e) => Err(anyhow!("starting the lock table: {e}")),
        }
    }

    /// True if another configured voter answers that its copy of the table has formed.
    async fn formed_elsewhere(&self) -> bool {
        let mut asks = tokio::task::JoinSet::new();
        for peer in self.voter_peers() {
            let net = self.net.clone();
            asks.spawn(async move { net.call_peer(&peer, &Rpc::Formed, FORMED_TIMEOUT).await });
        }
        while let Some(answer) = asks.join_next().await {
            if let Ok(Ok(RpcReply::Formed(true))) = answer {
                return true;
            }
        }
        false
    }

    fn voter_peers(&self) -> Vec<Peer> {
        voters(&self.node)
            .map(|v| v.members)
            .unwrap_or_default()
            .keys()
            .filter(|id| **id != node_id(&self.me))
            .filter_map(|id| self.net.peer(*id).ok())
            .collect()
    }

    fn no_majority(&self) -> String {
        let n = voters(&self.node).map_or(1, |v| v.members.len());
        format!(
            "the lock table did not answer within {} s: a majority ({} of {n}) of its voters ({}) must be running and reachable; start them (`botsync serve`) and retry",
            WRITE_DEADLINE.as_secs(),
            n / 2 + 1,
            self.voter_names().join(", ")
        )
    }

    async fn answer(&self, rpc: Rpc) -> RpcReply {
        let Some((raft, sm)) = &self.raft else {
            return refuse_raft(rpc);
        };
        match rpc {
            Rpc::Vote(r) => RpcReply::Vote(raft.vote(r).await),
            Rpc::Append(r) => RpcReply::Append(raft.append_entries(r).await),
            Rpc::Snapshot(r) => RpcReply::Snapshot(raft.install_snapshot(r).await),
            Rpc::Write(cmd) => RpcReply::Write(self.write(cmd).await.map_err(|e| format!("{e:#}"))),
            Rpc::Status => RpcReply::Status(match self.ensure_initialized(raft).await {
                Ok(Table::Here) => Ok(sm.table()),
                Ok(Table::Elsewhere) => {
                    Err("this peer has not joined the lock table yet; ask another voter".into())
                }
                Err(e) => Err(format!("{e:#}")),
            }),
            Rpc::Formed => RpcReply::Formed(raft.is_initialized().await.unwrap_or(false)),
        }
    }
}

impl Handler for Coordinator {
    fn handle(self: Arc<Self>, _peer: PeerId, body: Vec<u8>) -> Reply {
        Box::pin(async move {
            let rpc = rpc::decode_request(&body).map_err(|e| e.to_string())?;
            let reply = self.answer(rpc).await;
            rpc::encode(&reply).map_err(|e| e.to_string())
        })
    }
}

/// A Raft RPC sent to a peer that does not vote.
fn refuse_raft(rpc: Rpc) -> RpcReply {
    let why = || {
        "this peer is not a lock voter: check lock_voters in the config of both peers".to_owned()
    };
    match rpc {
        Rpc::Vote(_) | Rpc::Append(_) | Rpc::Snapshot(_) | Rpc::Write(_) => {
            RpcReply::Write(Err(why()))
        }
        Rpc::Status => RpcReply::Status(Err(why())),
        Rpc::Formed => RpcReply::Formed(false),
    }
}

/// The voters as configured (`lock_voters`), or this peer and every configured peer.
fn voters(node: &Node) -> Result<Voters> {
    let me = node.identity.peer_id();
    let peers = node.peers()?.peers;
    let configured = &node.replica.workspace().config().lock_voters;
    let mut members = BTreeMap::new();
    let mut names = Vec::new();
    if configured.is_empty() {
        members.insert(node_id(&me), me);
        names.push(node.name.clone());
        for p in &peers {
            members.insert(node_id(&p.id), p.id);
            names.push(p.name.clone());
        }
    } else {
        for name in configured {
            if name == "self" || *name == node.name {
                members.insert(node_id(&me), me);
                names.push(node.name.clone());
            } else if let Some(p) = peers.iter().find(|p| p.name == *name) {
                members.insert(node_id(&p.id), p.id);
                names.push(p.name.clone());
            } else {
                bail!(
                    "lock_voters in .botsync/config.json names {name:?}, which is neither this workspace (\"self\") nor a configured peer; `botsync peers` lists them"
                );
            }
        }
    }
    Ok(Voters { members, names })
}
