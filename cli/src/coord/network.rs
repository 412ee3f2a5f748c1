//! How coordinators reach each other: one coordination connection (ALPN `botsync-coord/1`,
//! the same pinned TLS as sync) per peer, dialed on first use and redialed after a failure, and
//! each request on its own stream (proto `coordination::call`). Raft's RPCs ride it through
//! [`RaftNetwork`]; so do forwarded writes and status reads.

// openraft's error types are large by design and its traits fix them as return types.
#![allow(clippy::result_large_err)]
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use botsync_engine::PeerId;
use botsync_proto::coordination;
use botsync_proto::coordination::rpc::{self, LockRaft, NodeId, Rpc, RpcReply, node_id};
use botsync_proto::endpoint::Endpoint;
use botsync_proto::tls::COORD_ALPN;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::sync::Mutex;

use crate::node::Node;
use crate::node::peers::Peer;

/// The coordinators' connections.
#[derive(Clone)]
pub struct Net {
    endpoint: Arc<Endpoint>,
    node: Arc<Node>,
    conns: Arc<Mutex<HashMap<PeerId, quinn::Connection>>>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

/// Why a request to another coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The peer is not (or no longer) in peers.json.
    #[error("node {0:x} is not a configured peer")]
    UnknownNode(NodeId),
    /// Dialing or the request failed.
    #[error("{peer}: {message}")]
    Failed {
        /// The peer's name.
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// The answer was not a coordination reply.
    #[error("{peer} answered with something that is not a coordination reply: {message}")]
    BadReply {
        /// The peer's name.
        peer: String,
        /// Why.
        message: String,
    },
}

impl Net {
    /// Connections made through `endpoint` to the peers of `node`.
    pub fn new(endpoint: Arc<Endpoint>, node: Arc<Node>) -> Net {
        Net {
            endpoint,
            node,
            conns: Arc::default(),
        }
    }

    /// The configured peer whose node id is `id`.
    pub fn peer(&self, id: NodeId) -> Result<Peer, NetError> {
        self.node
            .peers()
            .ok()
            .and_then(|p| p.peers.into_iter().find(|p| node_id(&p.id) == id))
            .ok_or(NetError::UnknownNode(id))
    }

    /// Send `rpc` to the coordinator of node `id` and return its reply within `within`.
    pub async fn call(
        &self,
        id: NodeId,
        rpc: &Rpc,
        within: Duration,
    ) -> Result<RpcReply, NetError> {
        let peer = self.peer(id)?;
        self.call_peer(&peer, rpc, within).await
    }

    /// Send `rpc` to `peer`'s coordinator; dialing included, it may take at most `within`.
    pub async fn call_peer(
        &self,
        peer: &Peer,
        rpc: &Rpc,
        within: Duration,
    ) -> Result<RpcReply, NetError> {
        match tokio::time::timeout(within, self.exchange(peer, rpc)).await {
            Ok(r) => r,
            Err(_) => {
                // A peer that went away keeps its connection open until the idle timeout: dial
                // afresh next time.
                self.conns.lock().await.remove(&peer.id);
                Err(NetError::Failed {
                    peer: peer.name.clone(),
                    message: format!("no answer within {} ms", within.as_millis()),
                })
            }
        }
    }

    async fn exchange(&self, peer: &Peer, rpc: &Rpc) -> Result<RpcReply, NetError> {
        let failed = |message: String| NetError::Failed {
            peer: peer.name.clone(),
            message,
        };
        let conn = self.connection(peer).await.map_err(failed)?;
        let body = rpc::encode(rpc).map_err(|e| failed(e.to_string()))?;
        match coordination::call(&conn, body).await {
            Ok(reply) => rpc::decode_reply(&reply).map_err(|e| NetError::BadReply {
                peer: peer.name.clone(),
                message: e.to_string(),
            }),
            Err(e) => {
                // The next request dials afresh.
                self.conns.lock().await.remove(&peer.id);
                Err(failed(e.to_string()))
            }
        }
    }

    async fn connection(&self, peer: &Peer) -> Result<quinn::Connection, String> {
        {
            let conns = self.conns.lock().await;
            if let Some(c) = conns.get(&peer.id)
                && c.close_reason().is_none()
            {
                return Ok(c.clone());
            }
        }
        // Dial without holding the map: a dead voter's handshake waits for its timeout, and
        // the votes and appends to the live ones must not wait behind it (with the map held,
        // two of three voters could not elect a leader while the third was down).
        let addr = peer.resolve().map_err(|e| format!("{e:#}"))?;
        let conn = self
            .endpoint
            .connect_for(addr, peer.id, COORD_ALPN)
            .await
            .map_err(|e| e.to_string())?;
        let (quinn, _) = conn.into_parts();
        let mut conns = self.conns.lock().await;
        // Two calls may have dialed at once: keep the first live one (ours closes when dropped).
        if let Some(c) = conns.get(&peer.id)
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        conns.insert(peer.id, quinn.clone());
        Ok(quinn)
    }
}

impl RaftNetworkFactory<LockRaft> for Net {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Client {
        Client {
            target,
            net: self.clone(),
        }
    }
}

/// Raft's view of one other coordinator.
#[derive(Debug)]
pub struct Client {
    target: NodeId,
    net: Net,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Client {
    async fn send<E: std::error::Error>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<RpcReply, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let within = option.hard_ttl();
        self.net
            .call(self.target, &rpc, within)
            .await
            .map_err(|e| match e {
                NetError::BadReply { .. } => RPCError::Network(NetworkError::new(&e)),
                e => RPCError::Unreachable(Unreachable::new(&e)),
            })
    }

    fn remote<T, E: std::error::Error>(
        &self,
        r: Result<T, RaftError<NodeId, E>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        let e = NetError::BadReply {
            peer: format!("node {:x}", self.target),
            message: "a reply of another kind".into(),
        };
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<LockRaft> for Client {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<LockRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.send(Rpc::Append(rpc), &option).await? {
            RpcReply::Append(r) => self.remote(r),
            _ => Err(self.mismatch()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<LockRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.send(Rpc::Snapshot(rpc), &option).await? {
            RpcReply::Snapshot(r) => self.remote(r),
            _ => Err(self.mismatch()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.send(Rpc::Vote(rpc), &option).await? {
            RpcReply::Vote(r) => self.remote(r),
            _ => Err(self.mismatch()),
        }
    }
}
