//! The errors of binding, dialing and accepting: each names the address, the peer and what to
//! do next, so the CLI can print it as one line.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use botsync_engine::PeerId;
use quinn::ConnectionError;

use crate::tls::{RemoteIdError, TlsError};

/// Errors binding or configuring an [`Endpoint`](super::Endpoint).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The UDP socket could not be bound.
    #[error("cannot bind udp {addr}: {source}; is another botsync serve already using that port?")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The identity could not be turned into a TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TLS configuration lacks what QUIC requires (a bug: our configurations always qualify).
    #[error("tls configuration unusable for quic: {reason}")]
    QuicTls {
        /// What quinn said.
        reason: String,
    },
    /// quinn refused the largest accepted UDP payload (outside 1200..=65527).
    #[error("udp payload size {bytes} is outside quic's range 1200..=65527: fix the mtu options")]
    PayloadSize {
        /// The size asked for.
        bytes: u16,
    },
    /// `bind` was called outside a tokio runtime.
    #[error("the quic endpoint needs a tokio runtime; bind it from inside one")]
    NoRuntime,
    /// The socket's address could not be read.
    #[error("cannot read the endpoint's local address: {0}")]
    LocalAddr(#[source] io::Error),
}

/// Why dialing a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The dial could not be configured.
    #[error(transparent)]
    Config(#[from] EndpointError),
    /// quinn refused to start the dial (for example an unusable address).
    #[error("cannot dial {addr}: {source}")]
    Start {
        /// The address dialed.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectError,
    },
    /// Nothing answered in time.
    #[error("no answer from peer {peer} at {addr} within {} s: is botsync serve running there and udp {} open?", .after.as_secs(), .addr.port())]
    Timeout {
        /// The address dialed.
        addr: SocketAddr,
        /// The peer expected there.
        peer: PeerId,
        /// The timeout that expired.
        after: Duration,
    },
    /// Someone answered, but with another id.
    #[error("peer at {addr} presented id {}, which is not the expected {}: check the id in peers.json, or whether another machine now answers at that address", .presented.to_copy_safe(), .expected.to_copy_safe())]
    UnexpectedPeer {
        /// The address dialed.
        addr: SocketAddr,
        /// The id peers.json names for that address.
        expected: PeerId,
        /// The id its certificate proves.
        presented: PeerId,
    },
    /// The peer presented the expected certificate but could not sign with its key.
    #[error("peer at {addr} presented the certificate of {} but could not prove it holds its key: someone may be impersonating that peer", .claimed.to_copy_safe())]
    Impersonation {
        /// The address dialed.
        addr: SocketAddr,
        /// The id of the certificate presented.
        claimed: PeerId,
    },
    /// The peer proved its id, then refused ours.
    #[error("peer {peer} at {addr} refused our id {}: on that machine run `botsync add NAME HOST --id {}`", .ours.to_copy_safe(), .ours.to_copy_safe())]
    RefusedByPeer {
        /// The address dialed.
        addr: SocketAddr,
        /// The peer (its id was verified).
        peer: PeerId,
        /// Our own id, which the peer does not allow.
        ours: PeerId,
    },
    /// The peer refused the connection as over its resource budget (close code `busy`).
    #[error(
        "peer {peer} at {addr} is busy (it serves too many connections or sessions now); retry later"
    )]
    Busy {
        /// The address dialed.
        addr: SocketAddr,
        /// The peer expected there.
        peer: PeerId,
    },
    /// The handshake failed for another reason.
    #[error("handshake with peer {peer} at {addr} failed: {source}")]
    Handshake {
        /// The address dialed.
        addr: SocketAddr,
        /// The peer expected there.
        peer: PeerId,
        /// quinn's reason.
        #[source]
        source: ConnectionError,
    },
    /// The finished connection carries no readable certificate.
    #[error("connection to {addr} carries no usable peer identity: {source}")]
    NoIdentity {
        /// The address dialed.
        addr: SocketAddr,
        /// What is missing.
        #[source]
        source: RemoteIdError,
    },
}

impl From<TlsError> for ConnectError {
    fn from(e: TlsError) -> ConnectError {
        ConnectError::Config(EndpointError::Tls(e))
    }
}

/// Why an incoming connection was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The listener's TLS configuration could not be built.
    #[error(transparent)]
    Config(EndpointError),
    /// The peer's id is not in the allowed set.
    #[error("peer at {addr} presented id {}, which is not in peers.json: if you trust it, run `botsync add NAME {} --id {}`", .presented.to_copy_safe(), .addr.ip(), .presented.to_copy_safe())]
    UnknownPeer {
        /// Where the attempt came from.
        addr: SocketAddr,
        /// The id its certificate proves.
        presented: PeerId,
    },
    /// The peer presented an allowed certificate but could not sign with its key.
    #[error("peer at {addr} presented the certificate of {} but could not prove it holds its key: someone may be impersonating that peer", .claimed.to_copy_safe())]
    Impersonation {
        /// Where the attempt came from.
        addr: SocketAddr,
        /// The id of the certificate presented.
        claimed: PeerId,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {addr} did not finish within {} s", .after.as_secs())]
    Timeout {
        /// Where the attempt came from.
        addr: SocketAddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// The handshake failed for another reason.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// Where the attempt came from.
        addr: SocketAddr,
        /// quinn's reason.
        #[source]
        source: ConnectionError,
    },
    /// The finished connection carries no readable certificate.
    #[error("connection from {addr} carries no usable peer identity: {source}")]
    NoIdentity {
        /// Where the attempt came from.
        addr: SocketAddr,
        /// What is missing.
        #[source]
        source: RemoteIdError,
    },
}
