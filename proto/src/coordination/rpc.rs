//! The bodies of `Coordinate` and `Coordinated`: the lock table's Raft messages and the
//! coordinators' own requests, as JSON documents (docs/PROTOCOL.md, "Coordination bodies").
//!
//! A body is peer input like any frame: [`decode_request`] and [`decode_reply`] turn any bytes
//! into a message or an error, never a panic; what a peer's entries and snapshots carry is
//! checked as it decodes (a lock table's names, keys and tokens by `LockTable`'s decoder) and
//! again as it is applied (`LockTable::apply` refuses names that could share a key).

use std::io::Cursor;

use botsync_engine::PeerId;
use botsync_engine::locks::{Answer, Command, LockTable};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::limits::MAX_COORD_BODY as MAX_BODY;

/// A Raft node id: the first 8 bytes of the peer id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The lock table's Raft types.
    pub LockRaft:
        D = Command,
        R = Answer,
);

/// The node id of `peer`.
pub fn node_id(peer: &PeerId) -> NodeId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&peer.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// A request between coordinators (the body of a `Coordinate` message).
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one request per stream; boxing buys nothing here
pub enum Rpc {
    /// Raft: a vote request.
    Vote(VoteRequest<NodeId>),
    /// Raft: entries to append (or a heartbeat).
    Append(AppendEntriesRequest<LockRaft>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<LockRaft>),
    /// A lock command to propose (sent to the leader, or by a non-voter to a voter).
    Write(Command),
    /// The lock table as the answering voter has applied it.
    Status,
    /// Whether the answering peer's copy of the table has formed (a new voter asks before it
    /// forms one of its own).
    Formed,
}

/// The answer to an [`Rpc`] (the body of a `Coordinated` message).
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    /// To [`Rpc::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Rpc::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Rpc::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To [`Rpc::Write`]: the command's answer, or why it could not be committed.
    Write(Result<Answer, String>),
    /// To [`Rpc::Status`].
    Status(Result<LockTable, String>),
    /// To [`Rpc::Formed`].
    Formed(bool),
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than [`MAX_BODY`].
    #[error("a coordination body of {0} bytes is over the {MAX_BODY}-byte limit")]
    TooLong(usize),
    /// Not a document of the expected kind.
    #[error("not a coordination {what}: {reason}")]
    Malformed {
        /// `request` or `answer`.
        what: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// Could not be encoded (a bug: every value of these types encodes).
    #[error("encoding a coordination body failed: {0}")]
    Encode(String),
}

/// Decode a peer's request.
pub fn decode_request(body: &[u8]) -> Result<Rpc, BodyError> {
    decode(body, "request")
}

/// Decode a peer's answer.
pub fn decode_reply(body: &[u8]) -> Result<RpcReply, BodyError> {
    decode(body, "answer")
}

/// Decode a Raft snapshot's data: the lock table, checked as it decodes.
pub fn decode_table(data: &[u8]) -> Result<LockTable, BodyError> {
    decode(data, "snapshot")
}

/// Encode a request, an answer or a snapshot's table.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, BodyError> {
    let body = serde_json::to_vec(value).map_err(|e| BodyError::Encode(e.to_string()))?;
    if body.len() > MAX_BODY {
        return Err(BodyError::TooLong(body.len()));
    }
    Ok(body)
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8], what: &'static str) -> Result<T, BodyError> {
    if body.len() > MAX_BODY {
        return Err(BodyError::TooLong(body.len()));
    }
    serde_json::from_slice(body).map_err(|e| BodyError::Malformed {
        what,
        reason: e.to_string(),
    })
}
